#!/usr/bin/env python3
"""What deploy/check.sh asks of a rendered overlay beyond schema validity.

kubernetes-validate says each object is well formed; these checks say the objects fit
Fulcrum and each other: hardened pods, probes on the right paths, a termination grace
period that covers the data plane's preStop pause and drain, one control-plane replica,
Services, autoscaler and disruption budget that point at something, the data planes
dialling the control plane's Service, no Secret committed outside the dev overlay.

    check_manifests.py RENDERED.yaml [--allow-secrets]

Prints every problem found and exits 1 if there is any.
"""

import re
import sys
from urllib.parse import urlparse

import yaml

# The data plane's shipper spends at most this long sending its last records after the
# drain (FINAL_FLUSH in data-plane/src/shipper.rs).
FINAL_FLUSH_SECS = 2
# The control plane drains gRPC calls for at most this long on SIGTERM (README).
CONTROL_DRAIN_SECS = 10


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[1]
    allow_secrets = "--allow-secrets" in argv[2:]
    with open(path, encoding="utf-8") as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    problems = check(objects, allow_secrets)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{path}: {len(objects)} objects, Fulcrum checks passed")
    return 0


def check(objects, allow_secrets):
    problems = []
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)

    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    for w in workloads:
        problems += check_pod(w)

    data_planes = [d for d in by_kind.get("Deployment", []) if component(d) == "data-plane"]
    control_planes = [s for s in by_kind.get("StatefulSet", []) if component(s) == "control-plane"]
    if len(data_planes) != 1:
        problems.append(f"expected one data-plane Deployment, found {len(data_planes)}")
    if len(control_planes) != 1:
        problems.append(f"expected one control-plane StatefulSet, found {len(control_planes)}")

    for sts in control_planes:
        problems += check_control_plane(sts)
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    for dep in data_planes:
        problems += check_data_plane(dep, hpas, by_kind.get("Service", []))

    problems += check_services(by_kind.get("Service", []), workloads)
    problems += check_hpas(hpas, by_kind.get("Deployment", []))
    problems += check_pdbs(by_kind.get("PodDisruptionBudget", []), workloads)

    if not allow_secrets:
        for s in by_kind.get("Secret", []):
            problems.append(
                f"Secret {name(s)} is rendered from git: outside the dev overlay secrets are "
                "created by hand (docs/deploy.md)"
            )
    return problems


def check_pod(workload):
    problems = []
    where = f"{workload['kind']} {name(workload)}"
    pod = workload["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext", {})
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken must be false (no API access needed)")
    if pod.get("enableServiceLinks") is not False:
        problems.append(f"{where}: enableServiceLinks must be false (service links add FULCRUM_* variables)")
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
    secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        cwhere = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cwhere}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cwhere}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{cwhere}: capabilities must drop ALL")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{cwhere}: runAsNonRoot must be true")
        resources = c.get("resources", {})
        for kind, res in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
            if res not in resources.get(kind, {}):
                problems.append(f"{cwhere}: resources.{kind}.{res} is not set")
        for m in c.get("volumeMounts", []):
            if m["name"] in secret_volumes and m.get("subPath"):
                problems.append(
                    f"{cwhere}: Secret volume {m['name']} mounted with subPath never sees a "
                    "renewed certificate; mount the whole volume"
                )
    return problems


def check_control_plane(sts):
    problems = []
    where = f"StatefulSet {name(sts)}"
    spec = sts["spec"]
    if spec.get("replicas", 1) != 1:
        problems.append(f"{where}: replicas must be 1 (sled allows one process per store)")
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    data_dir = flag(container, "--data-dir")
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    mounted = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    if data_dir is None:
        problems.append(f"{where}: no --data-dir flag")
    elif mounted.get(data_dir) not in claims:
        problems.append(f"{where}: --data-dir {data_dir} is not on a volumeClaimTemplate")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= CONTROL_DRAIN_SECS:
        problems.append(
            f"{where}: terminationGracePeriodSeconds {grace} leaves no time to flush sled "
            f"after the {CONTROL_DRAIN_SECS} s drain"
        )
    for probe in ("livenessProbe", "readinessProbe"):
        if probe_path(container, probe) != "/healthz":
            problems.append(f"{where}: {probe} must get /healthz")
    return problems


def check_data_plane(dep, hpas, services):
    problems = []
    where = f"Deployment {name(dep)}"
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    if probe_path(container, "readinessProbe") != "/readyz":
        problems.append(f"{where}: readinessProbe must get /readyz")
    if probe_path(container, "livenessProbe") != "/healthz":
        problems.append(f"{where}: livenessProbe must get /healthz")

    drain = flag(container, "--grace-period-secs")
    drain = int(drain) if drain is not None else 30  # the binary's default
    pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    if pause is None:
        problems.append(
            f"{where}: no preStop sleep: connections routed before the endpoint update "
            "reaches every node would be refused"
        )
        pause = 0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    needed = pause + drain + FINAL_FLUSH_SECS
    if grace <= needed:
        problems.append(
            f"{where}: terminationGracePeriodSeconds {grace} must exceed preStop {pause} s + "
            f"--grace-period-secs {drain} + final flush {FINAL_FLUSH_SECS} s = {needed}"
        )

    scaled = any(h["spec"]["scaleTargetRef"]["name"] == name(dep) for h in hpas)
    if scaled and "replicas" in dep["spec"]:
        problems.append(f"{where}: has replicas while an HPA scales it; every apply would reset the count")

    env = {e["name"]: e for e in container.get("env", [])}
    url = env.get("FULCRUM_CONTROL_PLANE", {}).get("value")
    control_services = [name(s) for s in services if component(s) == "control-plane"]
    host = urlparse(url).hostname if url else None
    if host is None or host.split(".")[0] not in control_services:
        problems.append(
            f"{where}: FULCRUM_CONTROL_PLANE {url!r} does not name a control-plane Service "
            f"({', '.join(control_services) or 'none'})"
        )
    return problems


def check_services(services, workloads):
    problems = []
    for svc in services:
        selector = svc["spec"].get("selector", {})
        targets = [w for w in workloads if matches(selector, pod_labels(w))]
        if not targets:
            problems.append(f"Service {name(svc)}: selector {selector} matches no pod template")
            continue
        ports = {p.get("name") for w in targets for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"].get("ports", []):
            target = p.get("targetPort", p["port"])
            if isinstance(target, str) and target not in ports:
                problems.append(f"Service {name(svc)}: targetPort {target} is no container port")
    return problems


def check_hpas(hpas, deployments):
    problems = []
    names = {name(d) for d in deployments}
    for h in hpas:
        spec = h["spec"]
        if h["apiVersion"] != "autoscaling/v2":
            problems.append(f"HPA {name(h)}: use autoscaling/v2")
        if spec["scaleTargetRef"]["name"] not in names:
            problems.append(f"HPA {name(h)}: scales {spec['scaleTargetRef']['name']}, which is not rendered")
        if spec.get("minReplicas", 1) > spec["maxReplicas"]:
            problems.append(f"HPA {name(h)}: minReplicas above maxReplicas")
    return problems


def check_pdbs(pdbs, workloads):
    problems = []
    for pdb in pdbs:
        selector = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(matches(selector, pod_labels(w)) for w in workloads):
            problems.append(f"PodDisruptionBudget {name(pdb)}: selector matches no pod template")
    return problems


# === helpers ===


def name(o):
    return o["metadata"]["name"]


def component(o):
    return o["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"].get("labels", {})


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def probe_path(container, probe):
    return container.get(probe, {}).get("httpGet", {}).get("path")


def flag(container, name_):
    """The value of `--name=value` or `--name value` in the container's args."""
    args = container.get("args", [])
    for i, arg in enumerate(args):
        m = re.fullmatch(re.escape(name_) + r"=(.*)", arg)
        if m:
            return m.group(1)
        if arg == name_ and i + 1 < len(args):
            return args[i + 1]
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv))
