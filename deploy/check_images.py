#!/usr/bin/env python3
"""What deploy/check.sh asks of the Dockerfile and compose file beyond hadolint and the
compose schema: that they agree with the workspace and with each other. No Docker engine
runs on the machines this project builds on, so these are the parts of an image build
that can be checked without one.

    check_images.py REPO_ROOT CARGO_METADATA.json [BINARY_DIR]

- every `--bin` the builder compiles is a bin target of the workspace, and every binary
  it copies out is one it compiled;
- the builder's Rust is at least the workspace's rust-version;
- every stage but the builder ends as a non-root numeric user;
- .dockerignore keeps target/ and .git/ out of the build context;
- every build target compose.yaml names is a stage, and every variable it requires
  (`${VAR:?...}`) is in .env.example;
- with BINARY_DIR (where the four binaries were built on this Debian 12 machine, the
  builder's Debian too): each needs no shared library beyond those
  gcr.io/distroless/cc-debian12 carries.

Prints every problem found and exits 1 if there is any.
"""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

DOCKERFILE = "deploy/docker/Dockerfile"
COMPOSE = "deploy/compose.yaml"
ENV_EXAMPLE = "deploy/.env.example"
BINARIES = ["fulcrum-control", "fulcrum-proxy", "fulcrumctl", "mock-upstream"]
# Shared libraries in gcr.io/distroless/cc-debian12 (glibc, libgcc_s, libstdc++, libssl3).
DISTROLESS_CC_LIBS = {
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libc.so.6", "libm.so.6",
    "libpthread.so.0", "libdl.so.2", "librt.so.1", "libgcc_s.so.1", "libstdc++.so.6",
    "libgomp.so.1", "libssl.so.3", "libcrypto.so.3",
}


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    metadata = json.loads(Path(argv[2]).read_text(encoding="utf-8"))
    binary_dir = Path(argv[3]) if len(argv) > 3 else None

    problems = []
    dockerfile = (root / DOCKERFILE).read_text(encoding="utf-8")
    stages = parse_stages(dockerfile)
    problems += check_builder(dockerfile, metadata, root)
    problems += check_users(stages)
    problems += check_dockerignore(root)
    problems += check_compose(root, stages)
    if binary_dir is not None:
        problems += check_libraries(binary_dir)

    for problem in problems:
        print(f"images: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"images: {DOCKERFILE} ({len(stages)} stages) and {COMPOSE} agree with the workspace")
    return 0


def parse_stages(dockerfile):
    """[(name, [instruction lines])] with continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    stages = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            stages.append((m.group(1) or f"stage{len(stages)}", []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def check_builder(dockerfile, metadata, root):
    problems = []
    workspace_bins = {
        t["name"]
        for p in metadata["packages"]
        for t in p["targets"]
        if "bin" in t["kind"]
    }
    built = set(re.findall(r"--bin\s+(\S+)", dockerfile))
    for b in sorted(built - workspace_bins):
        problems.append(f"{DOCKERFILE} builds --bin {b}, which no workspace package has")
    for b in BINARIES:
        if b not in built:
            problems.append(f"{DOCKERFILE} does not build {b}")
    copied = set(re.findall(r"target/release/([A-Za-z0-9_-]+)", dockerfile))
    for b in sorted(copied - built):
        problems.append(f"{DOCKERFILE} copies target/release/{b} but does not build it")

    m = re.search(r"^ARG RUST_VERSION=(\S+)", dockerfile, re.MULTILINE)
    cargo = tomllib.loads((root / "Cargo.toml").read_text(encoding="utf-8"))
    wanted = cargo["workspace"]["package"]["rust-version"]
    if not m:
        problems.append(f"{DOCKERFILE} has no ARG RUST_VERSION")
    elif version(m.group(1)) < version(wanted):
        problems.append(f"{DOCKERFILE} builds with Rust {m.group(1)}, the workspace needs {wanted}")
    return problems


def check_users(stages):
    problems = []
    for name, lines in stages:
        if name == "builder":
            continue
        users = [line.split(None, 1)[1] for line in lines if line.upper().startswith("USER ")]
        if not users:
            problems.append(f"stage {name}: no USER (a distroless base's default may change)")
            continue
        uid = users[-1].split(":")[0]
        if not uid.isdigit() or uid == "0":
            problems.append(f"stage {name}: USER {users[-1]} must be a numeric non-root uid")
    return problems


def check_dockerignore(root):
    path = root / ".dockerignore"
    if not path.exists():
        return [".dockerignore is missing: the build context would carry target/ and .git/"]
    entries = {line.strip().rstrip("/") for line in path.read_text(encoding="utf-8").splitlines()}
    return [f".dockerignore does not exclude {e}/" for e in ("target", ".git") if e not in entries]


def check_compose(root, stages):
    problems = []
    text = (root / COMPOSE).read_text(encoding="utf-8")
    compose = yaml.safe_load(text)
    stage_names = {name for name, _ in stages}
    for service, spec in compose["services"].items():
        build = spec.get("build")
        if isinstance(build, dict):
            if build.get("dockerfile") != DOCKERFILE or build.get("context") != "..":
                problems.append(f"{COMPOSE} service {service}: build from context .. with {DOCKERFILE}")
            if build.get("target") not in stage_names:
                problems.append(f"{COMPOSE} service {service}: target {build.get('target')} is no stage")
    example = (root / ENV_EXAMPLE).read_text(encoding="utf-8")
    declared = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.MULTILINE))
    for var in sorted(set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text)) - declared):
        problems.append(f"{COMPOSE} requires {var}, which {ENV_EXAMPLE} does not list")
    return problems


def check_libraries(binary_dir):
    problems = []
    for b in BINARIES:
        path = binary_dir / b
        if not path.exists():
            print(f"images: {path} not built; shared-library check skipped for it")
            continue
        dynamic = subprocess.run(
            ["readelf", "-d", str(path)], check=True, capture_output=True, text=True
        ).stdout
        needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
        for lib in sorted(needed - DISTROLESS_CC_LIBS):
            problems.append(f"{b} needs {lib}, which gcr.io/distroless/cc-debian12 does not have")
        print(f"images: {b} needs {', '.join(sorted(needed))}")
    return problems


def version(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
