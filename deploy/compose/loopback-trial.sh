#!/usr/bin/env bash
# The compose trial without Docker: the same four processes that deploy/compose.yaml
# runs (control plane, two data planes, mock upstream), started from the built binaries on
# loopback with the environment the images and compose.yaml give them, and the setup
# script run against them as the `setup` service runs it. deploy/check.sh runs this,
# because no Docker engine runs on the machines this project builds on.
#
#   bash deploy/compose/loopback-trial.sh BIN_DIR
#
# It checks what an operator relies on:
# - setup.sh works whatever the start order (it starts first here, the mock last), sends
#   a first request through both data planes, prints a client token, and a second run
#   adds nothing;
# - the token works; `fulcrumctl status` lists both data planes by node id;
# - a data plane stops on SIGTERM within its grace period;
# - with the control plane stopped the other data plane keeps serving, and it reconnects
#   when a control plane starts again on the same store (the upgrade path).
set -euo pipefail
BIN="${1:?usage: loopback-trial.sh BIN_DIR}"
BIN="$(cd "$BIN" && pwd)"
SETUP="$(cd "$(dirname "$0")" && pwd)/setup.sh"
for b in fulcrum-control fulcrum-proxy fulcrumctl mock-upstream; do
  [ -x "$BIN/$b" ] || { echo "trial: $BIN/$b is not built" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fulcrum-trial.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "trial: FAILED: $*" >&2
  for log in "$WORK"/*.log; do
    echo "--- $(basename "$log") (last lines)" >&2
    tail -n 15 "$log" >&2
  done
  exit 1
}

# Free loopback ports, chosen by the kernel.
read -r P_MOCK P_GRPC P_HTTP P_DP1 P_DP2 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

ADMIN="fca_trial_$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
JOIN="fcj_trial_$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
export RUST_BACKTRACE=0 RUST_LOG=info

# What compose.yaml and the Dockerfile's ENV give each container.
start_control() {
  env FULCRUM_DATA_DIR="$WORK/control-data" FULCRUM_GRPC_LISTEN="127.0.0.1:$P_GRPC" \
    FULCRUM_HTTP_LISTEN="127.0.0.1:$P_HTTP" FULCRUM_LOG_FORMAT=json \
    FULCRUM_TOKEN="$ADMIN" FULCRUM_JOIN_TOKEN="$JOIN" \
    "$BIN/fulcrum-control" >>"$WORK/control.log" 2>&1 &
  CONTROL_PID=$!
  PIDS+=("$CONTROL_PID")
}
start_proxy() { # $1 node id, $2 port
  env FULCRUM_LISTEN="127.0.0.1:$2" FULCRUM_LOG_FORMAT=json \
    FULCRUM_CONTROL_PLANE="http://127.0.0.1:$P_GRPC" FULCRUM_JOIN_TOKEN="$JOIN" \
    FULCRUM_GRACE_PERIOD_SECS=30 FULCRUM_WORKER_THREADS=1 FULCRUM_NODE_ID="$1" \
    "$BIN/fulcrum-proxy" >>"$WORK/$1.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
}
run_setup() {
  env -i PATH="$BIN:/usr/bin:/bin" FULCRUM_ENDPOINT="http://127.0.0.1:$P_GRPC" \
    FULCRUM_TOKEN="$ADMIN" RUST_BACKTRACE=0 \
    SETUP_MOCK_BASE_URL="http://127.0.0.1:$P_MOCK/v1" \
    SETUP_DATA_PLANES="http://127.0.0.1:$P_DP1 http://127.0.0.1:$P_DP2" \
    sh "$SETUP"
}
chat() { # $1 port; prints the HTTP status, the body goes to $WORK/answer.json
  curl -sS -o "$WORK/answer.json" -w '%{http_code}' --max-time 10 \
    "http://127.0.0.1:$1/v1/chat/completions" -H "Authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}' || true
}
ctl() { FULCRUM_ENDPOINT="http://127.0.0.1:$P_GRPC" FULCRUM_TOKEN="$ADMIN" "$BIN/fulcrumctl" "$@"; }

echo "trial: setup first, then the data planes, the control plane, the mock last"
run_setup >"$WORK/setup.out" 2>"$WORK/setup.log" &
SETUP_PID=$!
PIDS+=("$SETUP_PID")
sleep 1
start_proxy proxy-1 "$P_DP1"
DP1_PID=$PROXY_PID
start_proxy proxy-2 "$P_DP2"
sleep 1
start_control
sleep 1
"$BIN/mock-upstream" --listen "127.0.0.1:$P_MOCK" >"$WORK/mock.log" 2>&1 &
PIDS+=("$!")

wait "$SETUP_PID" || fail "setup.sh exited non-zero: $(cat "$WORK/setup.out")"
grep -q "first request through http://127.0.0.1:$P_DP1: ok" "$WORK/setup.out" \
  || fail "setup.sh sent no first request through proxy-1"
grep -q "first request through http://127.0.0.1:$P_DP2: ok" "$WORK/setup.out" \
  || fail "setup.sh sent no first request through proxy-2"
TOKEN="$(grep -o 'fk-[0-9a-f]*' "$WORK/setup.out" | head -n 1)"
[ -n "$TOKEN" ] || fail "setup.sh printed no client token"
echo "trial: setup ok (provider, key, token, a first request through each data plane)"

run_setup >"$WORK/setup2.out" 2>>"$WORK/setup.log" || fail "setup.sh failed on its second run"
grep -q "provider mock exists" "$WORK/setup2.out" || fail "second setup did not find the provider"
if grep -q 'fk-' "$WORK/setup2.out"; then fail "second setup created another token"; fi
echo "trial: a second setup adds nothing"

[ "$(chat "$P_DP2")" = 200 ] || fail "the printed token does not work through proxy-2"
grep -q '"choices"' "$WORK/answer.json" || fail "no chat completion: $(cat "$WORK/answer.json")"
ctl -o json status >"$WORK/status.json" || fail "fulcrumctl status failed"
for node in proxy-1 proxy-2; do
  grep -q "\"$node\"" "$WORK/status.json" || fail "status does not list $node"
done
echo "trial: the token works; status lists proxy-1 and proxy-2"

started=$SECONDS
kill -TERM "$DP1_PID"
wait "$DP1_PID" || fail "proxy-1 exited non-zero on SIGTERM"
[ $((SECONDS - started)) -le 30 ] || fail "proxy-1 took longer than its grace period to stop"
echo "trial: proxy-1 stopped on SIGTERM in $((SECONDS - started)) s (grace period 30 s)"

kill -TERM "$CONTROL_PID"
wait "$CONTROL_PID" || fail "the control plane exited non-zero on SIGTERM"
[ "$(chat "$P_DP2")" = 200 ] || fail "proxy-2 stopped serving while the control plane was away"
echo "trial: control plane stopped; proxy-2 still serves with its last config"

start_control
for _ in $(seq 1 60); do
  if ctl -o json status >"$WORK/status.json" 2>/dev/null && grep -q '"proxy-2"' "$WORK/status.json"; then
    break
  fi
  sleep 0.5
done
grep -q '"proxy-2"' "$WORK/status.json" || fail "proxy-2 did not reconnect to the restarted control plane"
ctl tokens list | grep -q '^trial ' || fail "the restarted control plane lost its store"
[ "$(chat "$P_DP2")" = 200 ] || fail "proxy-2 does not serve after the control plane came back"
echo "trial: control plane restarted on its store; proxy-2 reconnected and serves"
echo "trial: passed"
