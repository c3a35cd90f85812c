#!/usr/bin/env python3
"""Every flag and FULCRUM_* variable that deploy/ hands a binary is one that binary knows.

A misspelt flag stops a process at start; a misspelt environment variable is silently
ignored, and the process runs with a default nobody chose. Both are caught here by
reading each binary's own `--help`, for the Kubernetes renders, compose.yaml, the
Dockerfile's ENV lines and the systemd units.

    check_flags.py BIN_DIR RENDERED.yaml... [--pending RENDERED.yaml...]

Renders after --pending (prod with the components for features still landing) are only
reported: a flag there that the binaries do not know yet is listed, not failed.
"""

import re
import subprocess
import sys
from pathlib import Path

import yaml

COMPOSE = "deploy/compose.yaml"
DOCKERFILE = "deploy/docker/Dockerfile"
SYSTEMD = "deploy/systemd"
# Read straight from the environment by main.rs, so not in --help.
UNLISTED_ENV = {
    "fulcrum-control": {"FULCRUM_TOKEN", "FULCRUM_JOIN_TOKEN"},
    "fulcrum-proxy": {"FULCRUM_JOIN_TOKEN"},
}
# Which binary a Kubernetes container, compose service or Dockerfile stage runs.
K8S_CONTAINERS = {"control-plane": "fulcrum-control", "data-plane": "fulcrum-proxy"}
COMPOSE_SERVICES = {
    "control": "fulcrum-control",
    "proxy-1": "fulcrum-proxy",
    "proxy-2": "fulcrum-proxy",
    "mock-upstream": "mock-upstream",
    "setup": "fulcrumctl",
}
DOCKER_STAGES = {
    "control": "fulcrum-control",
    "proxy": "fulcrum-proxy",
    "ctl": "fulcrumctl",
    "mock-upstream": "mock-upstream",
}


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    bin_dir = Path(argv[1])
    renders, pending = [], []
    target = renders
    for arg in argv[2:]:
        if arg == "--pending":
            target = pending
        else:
            target.append(arg)

    known = {}
    for binary in set(K8S_CONTAINERS.values()) | set(COMPOSE_SERVICES.values()):
        path = bin_dir / binary
        if not path.exists():
            print(f"flags: {path} not built; cannot check what deploy/ passes it", file=sys.stderr)
            return 1
        known[binary] = parse_help(path, binary)

    uses = []  # (where, binary, kind, name)
    for render in renders:
        uses += k8s_uses(render)
    uses += compose_uses()
    uses += dockerfile_uses()
    uses += systemd_uses()

    problems = [
        f"{where}: {binary} has no {kind} {name}"
        for where, binary, kind, name in uses
        if name not in known[binary][kind]
    ]
    for render in pending:
        for where, binary, kind, name in k8s_uses(render):
            if name not in known[binary][kind]:
                print(f"flags: pending: {where} passes {name}, which {binary} does not have yet")

    for problem in problems:
        print(f"flags: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"flags: {len(uses)} flags and variables in deploy/ are known to their binaries")
    return 0


def parse_help(path, binary):
    text = subprocess.run(
        [str(path), "--help"], check=True, capture_output=True, text=True
    ).stdout
    return {
        "flag": set(re.findall(r"(--[a-z][a-z0-9-]*)", text)),
        "variable": set(re.findall(r"\b(FULCRUM_[A-Z0-9_]+)", text)) | UNLISTED_ENV.get(binary, set()),
    }


def k8s_uses(render):
    uses = []
    with open(render, encoding="utf-8") as f:
        for obj in yaml.safe_load_all(f):
            if not obj or obj["kind"] not in ("Deployment", "StatefulSet"):
                continue
            for c in obj["spec"]["template"]["spec"]["containers"]:
                binary = K8S_CONTAINERS.get(c["name"])
                if binary is None:
                    continue
                where = f"{Path(render).name} {obj['kind']} {obj['metadata']['name']}"
                uses += flag_uses(where, binary, c.get("command", []) + c.get("args", []))
                uses += env_uses(where, binary, [e["name"] for e in c.get("env", [])])
    return uses


def compose_uses():
    uses = []
    with open(COMPOSE, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    for service, spec in compose["services"].items():
        binary = COMPOSE_SERVICES.get(service)
        if binary is None:
            raise SystemExit(f"flags: {COMPOSE} service {service}: add it to COMPOSE_SERVICES")
        where = f"{COMPOSE} {service}"
        command = spec.get("command", [])
        uses += flag_uses(where, binary, command if isinstance(command, list) else command.split())
        uses += env_uses(where, binary, list(spec.get("environment", {}) or {}))
    return uses


def dockerfile_uses():
    uses = []
    text = re.sub(r"\\\n", " ", Path(DOCKERFILE).read_text(encoding="utf-8"))
    stage = None
    for line in text.splitlines():
        m = re.match(r"\s*FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            stage = m.group(1)
            continue
        binary = DOCKER_STAGES.get(stage)
        if binary is None:
            continue
        where = f"{DOCKERFILE} stage {stage}"
        if re.match(r"\s*ENV\s", line):
            uses += env_uses(where, binary, re.findall(r"(FULCRUM_[A-Z0-9_]+)=", line))
        elif re.match(r"\s*CMD\s", line):
            uses += flag_uses(where, binary, re.findall(r'"(--[^"=]+)', line))
    return uses


def systemd_uses():
    uses = []
    for unit in sorted(Path(SYSTEMD).glob("*.service")):
        for line in unit.read_text(encoding="utf-8").splitlines():
            m = re.match(r"ExecStart=\S*/(fulcrum-control|fulcrum-proxy)\s+(.*)", line)
            if m:
                uses += flag_uses(str(unit), m.group(1), m.group(2).split())
    return uses


def flag_uses(where, binary, args):
    return [
        (where, binary, "flag", arg.split("=", 1)[0])
        for arg in args
        if isinstance(arg, str) and arg.startswith("--")
    ]


def env_uses(where, binary, names):
    return [(where, binary, "variable", n) for n in names if n.startswith("FULCRUM_")]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
