#!/bin/sh
# One-shot setup for the compose trial (deploy/compose.yaml), run by the `setup` service
# in the fulcrumctl image (busybox sh). Safe to run again: it adds only what is missing.
#
#   1. waits for the control plane to answer,
#   2. adds an OpenAI-type provider whose base URL is the mock upstream, and one key,
#   3. creates a client token (printed once, the only time it can be),
#   4. waits until every data plane is ready and, with the new token, sends one chat
#      request through each of them.
#
# Needs FULCRUM_TOKEN (the admin token) and FULCRUM_ENDPOINT in the environment; the rest
# has defaults that match compose.yaml.
set -eu

PROVIDER="${SETUP_PROVIDER:-mock}"
MOCK_BASE_URL="${SETUP_MOCK_BASE_URL:-http://mock-upstream:9000/v1}"
# The mock accepts any key; this one is no secret.
MOCK_KEY="${SETUP_MOCK_KEY:-sk-mock-0000000000000000000000000000}"
CLIENT_TOKEN_NAME="${SETUP_CLIENT_TOKEN_NAME:-trial}"
DATA_PLANES="${SETUP_DATA_PLANES:-http://proxy-1:8000 http://proxy-2:8000}"
WAIT_SECS="${SETUP_WAIT_SECS:-60}"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Repeats "$@" once a second until it succeeds or WAIT_SECS pass.
wait_for() {
  what="$1"
  shift
  waited=0
  until "$@" >/dev/null 2>&1; do
    waited=$((waited + 1))
    [ "$waited" -lt "$WAIT_SECS" ] || die "$what not reached after ${WAIT_SECS}s"
    sleep 1
  done
}

[ -n "${FULCRUM_TOKEN:-}" ] || die "FULCRUM_TOKEN (the admin token) is not set"

say "waiting for the control plane at ${FULCRUM_ENDPOINT:-http://127.0.0.1:50051}"
wait_for "the control plane" fulcrumctl status

if fulcrumctl providers get "$PROVIDER" >/dev/null 2>&1; then
  say "provider $PROVIDER exists"
else
  fulcrumctl providers add "$PROVIDER" --type openai --base-url "$MOCK_BASE_URL"
fi

# keys add reports a key that is already there as a duplicate and adds nothing.
printf '%s\n' "$MOCK_KEY" | fulcrumctl keys add --provider "$PROVIDER" --file -

token=""
if fulcrumctl -o json tokens list | grep -q "\"name\": *\"$CLIENT_TOKEN_NAME\""; then
  say "client token $CLIENT_TOKEN_NAME exists (revoke it and run setup again for a new one)"
else
  token="$(fulcrumctl -o json tokens create "$CLIENT_TOKEN_NAME" \
    | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' | head -n 1)"
  [ -n "$token" ] || die "tokens create printed no token"
fi

for url in $DATA_PLANES; do
  say "waiting for $url/readyz"
  wait_for "$url/readyz" wget -q -O /dev/null "$url/readyz"
done

if [ -z "$token" ]; then
  say "done"
  exit 0
fi

body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
for url in $DATA_PLANES; do
  # The config reaches each data plane a moment after the write; retry until it has it.
  wait_for "a chat answer from $url" wget -q -O /dev/null \
    --header "Authorization: Bearer $token" --header "content-type: application/json" \
    --post-data "$body" "$url/v1/chat/completions"
  say "first request through $url: ok"
done

say "done. Your client token (shown only now; this is a local trial):"
printf '\n    %s\n\n' "$token"
