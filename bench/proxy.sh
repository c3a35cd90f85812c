#!/usr/bin/env bash
# Data-plane benchmark: fulcrum-proxy in front of the mock upstream, side by side with the
# same load sent straight to the mock and through nginx (plain reverse proxy, if installed).
#
#   bash bench/proxy.sh [--install] [--no-build] [--help]
#
# Environment:
#   DURATION=10s       measured run per row (wrk -d)
#   WARMUP=3s          unmeasured run before each row
#   CONNECTIONS="32 128"
#   WRK_THREADS=1      wrk threads (all on CPU 0)
#   MODES="json json-log stream gemini-json gemini-stream"  json: plain POST; stream: the
#                      same with "stream":true; gemini-*: the same OpenAI requests routed to
#                      a gemini provider (translated both ways; fulcrum rows only). These
#                      run with request_logging off, as nginx runs with access_log off;
#                      *-log: the same with request_logging on (fulcrum rows only), to
#                      measure what request records cost; json-paced: the json load at the
#                      highest connection count, each connection waiting PACE_MS between
#                      requests, so that no target runs saturated (the latency target)
#                      json-paced-log: the same with request_logging on (the logging-cost
#                      target compares the proxy's CPU per request at the same request rate)
#                      json-jitter: json-paced with each think time drawn from PACE_MS/2
#                      to 3*PACE_MS/2 (same mean), so the connections do not stay in
#                      lockstep: wrk starts them together and a fixed think time keeps
#                      them sending 128 requests at once, a burst real clients rarely make
#                      json-rate: open loop at RATE req/s over the highest connection
#                      count, Poisson arrivals, latency from each request's due time
#                      (tests/src/bin/load_rate.rs); the latency verdict's row
#   PACE_MS=8          think time per connection in the json-paced rows (128 connections:
#                      at most 16,000 req/s offered)
#   RATE=12000         requests per second in the json-rate rows (about json-paced's rate)
#   LATENCY_RUNS=5     rounds of the json-rate, json-paced and json-jitter rows, the
#                      targets taking turns in each; the latency added is the median over
#                      rounds of (target p99 − direct p99 of the same round)
#   KEYS=1000          provider keys loaded into the control plane
#   READY_RUNS=5       fulcrum-proxy starts timed for "ready after exec"
#   LOAD_CPU=0 PROXY_CPU=1   CPUs for wrk + mock (+ control plane) and for the proxy under test
#
# Output: a Markdown report on stdout and in bench/results/proxy-<date>.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-"32 128"}
WRK_THREADS=${WRK_THREADS:-1}
MODES=${MODES:-"json json-rate json-paced json-jitter json-log json-paced-log stream gemini-json gemini-stream"}
PACE_MS=${PACE_MS:-8}
RATE=${RATE:-12000}
LATENCY_RUNS=${LATENCY_RUNS:-5}
KEYS=${KEYS:-1000}
READY_RUNS=${READY_RUNS:-5}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}

INSTALL=0
BUILD=1
for arg in "$@"; do
    case "$arg" in
        --install) INSTALL=1 ;;
        --no-build) BUILD=0 ;;
        -h | --help)
            sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

# The median of numbers on stdin, one per line (of an even count: the mean of the middle two).
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "none"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
log() { echo "[bench] $*" >&2; }
die() {
    echo "[bench] error: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- tools
apt_install() {
    [ "$(id -u)" -eq 0 ] || die "installing $* needs root: sudo apt-get install -y $*"
    log "apt-get install -y $*"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ "$INSTALL" -eq 1 ]; then
    missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    [ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
fi
if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt_install wrk
    else
        die "wrk is missing: apt-get install wrk (or run this script with --install as root)"
    fi
fi
NGINX=$(command -v nginx || true)
[ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; } || true
command -v taskset >/dev/null || die "taskset is missing (package util-linux)"
command -v curl >/dev/null || die "curl is missing"

NCPU=$(nproc)
if [ "$NCPU" -lt 2 ]; then
    log "only $NCPU CPU: pinning everything to CPU 0"
    LOAD_CPU=0
    PROXY_CPU=0
fi

if [ "$BUILD" -eq 1 ]; then
    log "cargo build --release (fulcrum-control, fulcrum-proxy, fulcrumctl, mock-upstream)"
    (cd "$ROOT" && cargo build --release --quiet -p fulcrum-control -p fulcrum-proxy -p fulcrumctl -p fulcrum-tests --bins)
fi
for b in fulcrum-control fulcrum-proxy fulcrumctl mock-upstream load-rate; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: build it or drop --no-build"
done

# ---------------------------------------------------------------- processes and cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fulcrum-bench.XXXXXX")
PIDS=()
SAMPLER_PID=
cleanup() {
    local pid
    [ -z "$SAMPLER_PID" ] || kill "$SAMPLER_PID" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port below the ephemeral range (32768+) that nothing listens on.
used_ports=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        case "$used_ports" in *" $p "*) continue ;; esac
        if ! ss -Htln "sport = :$p" 2>/dev/null | grep -q . &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            used_ports+="$p "
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# Waits until URL answers 200 (at most $2 seconds).
wait_http_200() {
    local url=$1 limit=${2:-30} i
    for i in $(seq $((limit * 20))); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)" = 200 ] && return 0
        sleep 0.05
    done
    return 1
}

# /proc/PID/status field (kB) summed over the PIDs given.
status_kb() {
    local field=$1 pid total=0 v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# Samples VmRSS of the PIDs every 100 ms into FILE until killed: on the load CPU, with
# bash builtins only (the wait is a read from a FIFO that nobody writes). Before, an awk
# and a sleep started every 100 ms stalled the CPU they ran on for about a millisecond
# each time: 1% of the run, which is what a p99 shows.
SAMPLER_FIFO=
start_sampler() {
    local file=$1
    shift
    if [ -z "$SAMPLER_FIFO" ]; then
        SAMPLER_FIFO="$TMP/sampler.fifo"
        mkfifo "$SAMPLER_FIFO"
    fi
    (
        exec 9<>"$SAMPLER_FIFO"
        while :; do
            total=0
            for pid in "$@"; do
                while read -r field value _; do
                    [ "$field" != VmRSS: ] || total=$((total + value))
                done <"/proc/$pid/status" 2>/dev/null || true
            done
            echo "$total" >>"$file"
            read -r -t 0.1 -u 9 _ || true
        done
    ) &
    SAMPLER_PID=$!
    taskset -pc "$LOAD_CPU" "$SAMPLER_PID" >/dev/null 2>&1 || true
}
stop_sampler() {
    [ -z "$SAMPLER_PID" ] || { kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; }
    SAMPLER_PID=
}

# utime + stime (clock ticks) summed over the PIDs given.
cpu_ticks() {
    local pid total=0 v
    for pid in "$@"; do
        v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------- mock upstream
taskset -c "$LOAD_CPU" "$BIN/mock-upstream" --listen 127.0.0.1:0 --threads 1 >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
MOCK_ADDR=
for _ in $(seq 100); do
    MOCK_ADDR=$(sed -n 's/^listening on //p' "$TMP/mock.log" | head -n1)
    [ -n "$MOCK_ADDR" ] && break
    sleep 0.05
done
[ -n "$MOCK_ADDR" ] || die "mock-upstream did not start: $(cat "$TMP/mock.log")"
log "mock upstream on $MOCK_ADDR (CPU $LOAD_CPU, 1 thread)"

# ---------------------------------------------------------------- control plane with the keys
GRPC_PORT=$(free_port)
CP_HTTP_PORT=$(free_port)
export FULCRUM_TOKEN="fca_bench_admin_$RANDOM$RANDOM$RANDOM"
export FULCRUM_JOIN_TOKEN="fcj_bench_join_$RANDOM$RANDOM$RANDOM"
mkdir -p "$TMP/control"
taskset -c "$LOAD_CPU" "$BIN/fulcrum-control" --data-dir "$TMP/control" \
    --grpc-listen "127.0.0.1:$GRPC_PORT" --http-listen "127.0.0.1:$CP_HTTP_PORT" \
    >"$TMP/control.log" 2>&1 &
PIDS+=($!)
wait_http_200 "http://127.0.0.1:$CP_HTTP_PORT/healthz" 30 ||
    die "control plane not healthy: $(tail -n 20 "$TMP/control.log")"
log "control plane on 127.0.0.1:$GRPC_PORT (gRPC)"

ctl() { "$BIN/fulcrumctl" --endpoint "http://127.0.0.1:$GRPC_PORT" "$@"; }
ctl providers add up --type openai --base-url "http://$MOCK_ADDR/v1" >/dev/null
for i in $(seq 1 "$KEYS"); do
    printf 'sk-bench-%06d-%016x\n' "$i" "$((RANDOM * 32768 * 32768 + RANDOM * 32768 + RANDOM))"
done >"$TMP/keys.txt"
ctl keys add --provider up --file "$TMP/keys.txt" >/dev/null
# The translated rows: OpenAI requests for bench-gemini go to the mock's Gemini API.
ctl providers add gem --type gemini --base-url "http://$MOCK_ADDR/v1beta" >/dev/null
ctl keys add --provider gem --file "$TMP/keys.txt" >/dev/null
ctl routes set bench-gemini --to gem:gemini-2.5-flash >/dev/null
CLIENT_TOKEN=$(ctl -o json tokens create bench | sed -n 's/.*"token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' | head -n1)
[ -n "$CLIENT_TOKEN" ] || die "could not read the client token from 'fulcrumctl tokens create -o json'"
log "provider 'up' with $KEYS keys and a client token loaded"

# ---------------------------------------------------------------- fulcrum-proxy: ready time
# One CPU for the proxy, so one serving thread, as nginx gets one worker.
PROXY_PORT=$(free_port)
PROXY_PID=
start_proxy() {
    taskset -c "$PROXY_CPU" "$BIN/fulcrum-proxy" --worker-threads 1 \
        --control-plane "http://127.0.0.1:$GRPC_PORT" --listen "127.0.0.1:$PROXY_PORT" \
        --node-id "bench-$1" >>"$TMP/proxy.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
}
stop_proxy() {
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}
# One raw HTTP/1.0 GET /readyz over bash's /dev/tcp: prints the status code, or nothing.
readyz_code() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT" || return 0
    printf 'GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    IFS=' ' read -r -t 1 _ line _ <&3 || true
    exec 3>&- 3<&-
    echo "$line"
}
READY_MS=()
for run in $(seq 1 "$READY_RUNS"); do
    t0=$(date +%s%N)
    start_proxy "ready$run"
    ready=
    while :; do
        if [ "$(readyz_code 2>/dev/null)" = 200 ]; then
            ready=$(date +%s%N)
            break
        fi
        kill -0 "$PROXY_PID" 2>/dev/null || die "fulcrum-proxy exited: $(tail -n 20 "$TMP/proxy.log")"
        [ $(($(date +%s%N) - t0)) -lt 30000000000 ] || die "fulcrum-proxy not ready after 30 s: $(tail -n 20 "$TMP/proxy.log")"
    done
    READY_MS+=("$(((ready - t0) / 1000000))")
    [ "$run" -eq "$READY_RUNS" ] || stop_proxy
done
READY_SORTED=$(printf '%s\n' "${READY_MS[@]}" | sort -n | tr '\n' ' ')
READY_MEDIAN=$(printf '%s\n' "${READY_MS[@]}" | median)
log "fulcrum-proxy ready after exec (ms): $READY_SORTED(median $READY_MEDIAN)"
IDLE_RSS_KB=$(status_kb VmRSS "$PROXY_PID")
log "fulcrum-proxy on 127.0.0.1:$PROXY_PORT (CPU $PROXY_CPU, --worker-threads 1), idle RSS $(kib_to_mib "$IDLE_RSS_KB") MiB"

# ---------------------------------------------------------------- nginx (optional)
NGINX_PORT=
NGINX_PIDS=()
if [ -n "$NGINX" ]; then
    NGINX_PORT=$(free_port)
    ND="$TMP/nginx"
    mkdir -p "$ND/logs" "$ND/tmp"
    chmod 755 "$TMP" "$ND"
    chmod 777 "$ND/tmp"
    cat >"$ND/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $ND/nginx.pid;
error_log $ND/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $ND/tmp/body;
    proxy_temp_path $ND/tmp/proxy;
    fastcgi_temp_path $ND/tmp/fastcgi;
    uwsgi_temp_path $ND/tmp/uwsgi;
    scgi_temp_path $ND/tmp/scgi;
    keepalive_requests 1000000;
    upstream mock {
        server $MOCK_ADDR;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    taskset -c "$PROXY_CPU" "$NGINX" -p "$ND" -c "$ND/nginx.conf" -e "$ND/logs/error.log" >"$ND/logs/stdout.log" 2>&1 &
    NGINX_MASTER=$!
    PIDS+=("$NGINX_MASTER")
    for _ in $(seq 100); do
        mapfile -t NGINX_PIDS < <(echo "$NGINX_MASTER"; pgrep -P "$NGINX_MASTER" || true)
        [ "${#NGINX_PIDS[@]}" -ge 2 ] && break
        sleep 0.05
    done
    if ! kill -0 "$NGINX_MASTER" 2>/dev/null; then
        log "nginx did not start, skipping it: $(cat "$ND/logs/error.log" "$ND/logs/stdout.log" 2>/dev/null | tail -n 5)"
        NGINX_PORT=
    else
        log "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') on 127.0.0.1:$NGINX_PORT (CPU $PROXY_CPU, 1 worker)"
    fi
else
    log "nginx is not installed: skipping the nginx rows (apt-get install nginx, or run with --install as root)"
fi

# ---------------------------------------------------------------- smoke checks
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
SBODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"stream":true}'
GBODY='{"model":"bench-gemini","messages":[{"role":"user","content":"hello"}]}'
GSBODY='{"model":"bench-gemini","messages":[{"role":"user","content":"hello"}],"stream":true}'
DIRECT_AUTH="sk-bench-direct-0000000000000000"

smoke() { # name url auth body
    local code
    code=$(curl -s -o "$TMP/smoke-$1.out" -w '%{http_code}' --max-time 5 -X POST "$2/v1/chat/completions" \
        -H "Authorization: Bearer $3" -H 'Content-Type: application/json' -d "$4" || true)
    if [ "$code" != 200 ]; then
        log "WARNING: $1 answered HTTP ${code:-none}: $(head -c 300 "$TMP/smoke-$1.out" 2>/dev/null)"
        return 1
    fi
}
smoke direct "http://$MOCK_ADDR" "$DIRECT_AUTH" "$BODY" || die "the mock upstream does not answer"
FULCRUM_OK=1
smoke fulcrum "http://127.0.0.1:$PROXY_PORT" "$CLIENT_TOKEN" "$BODY" || FULCRUM_OK=0
smoke fulcrum-stream "http://127.0.0.1:$PROXY_PORT" "$CLIENT_TOKEN" "$SBODY" || FULCRUM_OK=0
smoke fulcrum-gemini "http://127.0.0.1:$PROXY_PORT" "$CLIENT_TOKEN" "$GBODY" || FULCRUM_OK=0
smoke fulcrum-gemini-stream "http://127.0.0.1:$PROXY_PORT" "$CLIENT_TOKEN" "$GSBODY" || FULCRUM_OK=0
if [ -n "$NGINX_PORT" ]; then
    smoke nginx "http://127.0.0.1:$NGINX_PORT" "$DIRECT_AUTH" "$BODY" || log "nginx rows will show errors"
fi
[ "$FULCRUM_OK" -eq 1 ] || log "fulcrum-proxy failed the smoke request; its rows are measured anyway (see non-2xx). Log: $(tail -n 5 "$TMP/proxy.log")"

# ---------------------------------------------------------------- load
write_lua() { # file auth body [think time ms [jitter]]
    local body=${3//\"/\\\"}
    cat >"$1" <<EOF
wrk.method = "POST"
wrk.body = "$body"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $2"
EOF
    if [ -n "${5:-}" ]; then
        # Uniform around the mean, so that connections drift out of lockstep.
        printf 'function delay()\n  return math.random(%s, %s)\nend\n' "$(($4 / 2))" "$(($4 * 3 / 2))" >>"$1"
    elif [ -n "${4:-}" ]; then
        printf 'function delay()\n  return %s\nend\n' "$4" >>"$1"
    fi
}

# wrk durations like 10s / 2m / 500ms -> seconds (for load-rate)
secs() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "ms") n /= 1000; else if (u == "m") n *= 60; else if (u == "h") n *= 3600
        print n }'
}

# wrk latency like 812.00us / 1.23ms / 1.02s / 2.00m -> ms
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}

ROWS=()           # Markdown table rows
declare -A RPS P50 P99 PEAK CPU_US
declare -A P99S   # every p99 of a target/mode/conns, for the median over LATENCY_RUNS
RUN_LABEL=        # " #N" while the latency rows repeat
run_row() { # target mode conns url auth body pids...
    local target=$1 mode=$2 conns=$3 url=$4 auth=$5 body=$6
    shift 6
    local lua="$TMP/$target-$mode.lua" out="$TMP/wrk-$target-$mode-$conns.txt"
    local pace= jitter=
    case "$mode" in *-paced | *-paced-*) pace=$PACE_MS ;; *-jitter) pace=$PACE_MS jitter=1 ;; esac
    local samples="$TMP/rss-$target-$mode-$conns.txt"
    local ticks0 t0 ticks1 t1 cpu="-"
    : >"$samples"
    # The latency rows go without samples (VmHWM still gives the peak): nothing but the
    # load and the proxy should run while a p99 is measured.
    local sample=1
    case "$mode" in json-rate | json-paced | json-jitter) sample=0 ;; esac
    if [ "$mode" = json-rate ]; then
        # Open loop: load-rate warms up and measures in one process, so the proxy's CPU
        # time counts from the start of the warmup, and is divided by every request sent.
        log "$target $mode c=$conns: $RATE req/s (Poisson), warmup $WARMUP, run $DURATION"
        ticks0=$(cpu_ticks "$@")
        t0=$(date +%s%N)
        taskset -c "$LOAD_CPU" "$BIN/load-rate" --url "$url/v1/chat/completions" --rate "$RATE" \
            --connections "$conns" --warmup "$(secs "$WARMUP")" --duration "$(secs "$DURATION")" \
            --body "$body" --header "Content-Type: application/json" --header "Authorization: Bearer $auth" \
            >"$out" 2>&1 || true
        t1=$(date +%s%N)
        # Same report lines as wrk's, so that one parser reads both.
        awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
            END { if (v["rate"] == "") exit
                printf "%d requests in (measured)\nRequests/sec: %s\n", v["requests"], v["rate"]
                printf "Requests sent with the warmup: %d\n", v["due"] - v["not_sent"]
                printf "50%% %sus\n99%% %sus\n", v["p50_us"], v["p99_us"]
                if (v["non2xx"] > 0) printf "Non-2xx or 3xx responses: %d\n", v["non2xx"]
                if (v["errors"] + v["not_sent"] > 0) printf "Socket errors: %d failed, %d never sent\n", v["errors"], v["not_sent"] }' \
            "$out" >"$out.wrk"
        mv "$out.wrk" "$out"
    else
        write_lua "$lua" "$auth" "$body" "$pace" "$jitter"
        log "$target $mode c=$conns: warmup $WARMUP, run $DURATION"
        taskset -c "$LOAD_CPU" wrk -t "$WRK_THREADS" -c "$conns" -d "$WARMUP" -s "$lua" "$url/v1/chat/completions" >/dev/null 2>&1 || true
        [ "$#" -eq 0 ] || [ "$sample" -eq 0 ] || start_sampler "$samples" "$@"
        ticks0=$(cpu_ticks "$@")
        t0=$(date +%s%N)
        taskset -c "$LOAD_CPU" wrk -t "$WRK_THREADS" -c "$conns" -d "$DURATION" --latency -s "$lua" \
            "$url/v1/chat/completions" >"$out" 2>&1 || true
        t1=$(date +%s%N)
    fi
    ticks1=$(cpu_ticks "$@")
    stop_sampler
    local cpu_us="-"
    if [ "$#" -gt 0 ]; then
        cpu=$(awk -v d=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", 100 * d / hz / (ns / 1e9) }')
        local sent
        sent=$(awk '/^Requests sent with the warmup:/ { print $NF; exit } /requests in/ { n = $1 } END { if (n != "") print n }' "$out" | head -n1)
        cpu_us=$(awk -v d=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$sent" 'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "-" }')
    fi
    local rps p50 p99 non2xx errors rss="-" hwm="-" reqs
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    errors=$(sed -n 's/^ *Socket errors: *//p' "$out")
    if [ "$#" -gt 0 ]; then
        local peak
        if [ "$sample" -eq 1 ]; then
            peak=$(sort -n "$samples" | tail -n1)
            rss=$(kib_to_mib "${peak:-0}")
        fi
        hwm=$(kib_to_mib "$(status_kb VmHWM "$@")")
        PEAK[$target]=$(awk -v a="${PEAK[$target]:-0}" -v b="$hwm" 'BEGIN { print (b > a) ? b : a }')
    fi
    RPS[$target/$mode/$conns]=${rps:-0}
    CPU_US[$target/$mode/$conns]=$cpu_us
    P50[$target/$mode/$conns]=$p50
    P99[$target/$mode/$conns]=$p99
    P99S[$target/$mode/$conns]+="${p99:-none} "
    ROWS+=("| $target | $mode$RUN_LABEL | $conns | ${rps:-0} | $p50 | $p99 | ${reqs:-0} | ${non2xx:-0} | ${errors:-none} | $cpu | $cpu_us | $rss | $hwm |")
    if [ -z "$rps" ]; then
        log "wrk printed no result for $target $mode c=$conns: $(head -c 500 "$out")"
    fi
}

# The revision fulcrum-proxy has applied, from its /metrics.
proxy_revision() {
    curl -s --max-time 2 "http://127.0.0.1:$PROXY_PORT/metrics" | awk '$1 == "fulcrum_config_revision" { print $2 }'
}
# Sets a setting and waits (at most 10 s) until fulcrum-proxy runs with it.
set_setting() { # name value
    local before i
    before=$(proxy_revision)
    ctl settings set "$1" "$2" >/dev/null
    for i in $(seq 200); do
        [ "$(proxy_revision)" != "$before" ] && return 0
        sleep 0.05
    done
    die "fulcrum-proxy did not apply $1=$2"
}

# Like nginx's access_log off; the *-log rows turn records on.
set_setting request_logging false
for mode in $MODES; do
    case "$mode" in
        json | json-log | json-paced | json-paced-log | json-jitter | json-rate) body=$BODY ;;
        stream | stream-log) body=$SBODY ;;
        gemini-json) body=$GBODY ;;
        gemini-stream) body=$GSBODY ;;
        *) die "unknown mode $mode (json, json-paced, json-jitter, json-rate, json-log, json-paced-log, stream, stream-log, gemini-json, gemini-stream)" ;;
    esac
    case "$mode" in *-log) set_setting request_logging true ;; esac
    for c in $CONNECTIONS; do
        # Paced load measures latency below saturation, at the highest connection count.
        case "$mode" in *-paced | *-paced-* | *-jitter | *-rate) [ "$c" = "$(printf '%s\n' $CONNECTIONS | sort -n | tail -n1)" ] || continue ;; esac
        # The latency rows repeat, the targets taking turns, so that a drift of this
        # machine's speed during one row does not decide the verdict.
        runs=1
        case "$mode" in json-paced | json-jitter | json-rate) runs=$LATENCY_RUNS ;; esac
        for run in $(seq "$runs"); do
            RUN_LABEL=
            [ "$runs" -eq 1 ] || RUN_LABEL=" #$run"
            case "$mode" in
                gemini-* | *-log) ;; # nothing to compare with: only Fulcrum translates and logs
                *)
                    run_row direct "$mode" "$c" "http://$MOCK_ADDR" "$DIRECT_AUTH" "$body"
                    [ -z "$NGINX_PORT" ] || run_row nginx "$mode" "$c" "http://127.0.0.1:$NGINX_PORT" "$DIRECT_AUTH" "$body" "${NGINX_PIDS[@]}"
                    ;;
            esac
            run_row fulcrum "$mode" "$c" "http://127.0.0.1:$PROXY_PORT" "$CLIENT_TOKEN" "$body" "$PROXY_PID"
        done
        RUN_LABEL=
    done
    case "$mode" in *-log) set_setting request_logging false ;; esac
done
LOG_DROPPED=$(curl -s --max-time 2 "http://127.0.0.1:$PROXY_PORT/metrics" | awk '$1 == "fulcrum_log_records_dropped_total" { print $2 }')
kill -0 "$PROXY_PID" 2>/dev/null || log "WARNING: fulcrum-proxy is no longer running: $(tail -n 5 "$TMP/proxy.log")"
PROXY_WARNINGS=$(grep -ciE 'warn|error' "$TMP/proxy.log" || true)

# ---------------------------------------------------------------- report
verdict() { awk -v ok="$1" 'BEGIN { print (ok == 1) ? "PASS" : "MISS" }'; }
max_c=$(printf '%s\n' $CONNECTIONS | sort -n | tail -n1)
# The targets are judged on the plain (json) rows, or on the first mode measured.
JM=$(printf '%s\n' $MODES | grep -x json || printf '%s\n' $MODES | head -n1)

TARGETS=()
if [ -n "$NGINX_PORT" ]; then
    worst=
    detail=
    for c in $CONNECTIONS; do
        # Latency-only modes run at the highest connection count alone.
        [ -n "${RPS[fulcrum/$JM/$c]:-}" ] || continue
        r=$(awk -v a="${RPS[fulcrum/$JM/$c]}" -v b="${RPS[nginx/$JM/$c]:-0}" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
        detail+="c=$c: $r; "
        worst=$(awk -v a="${worst:-9e9}" -v b="$r" 'BEGIN { print (b < a) ? b : a }')
    done
    TARGETS+=("| fulcrum req/s ÷ nginx req/s ($JM rows, lowest over connections) | ≥ 0.80 | $worst (${detail%; }) | $(verdict "$(awk -v w="$worst" 'BEGIN { print (w >= 0.8) }')") |")
else
    TARGETS+=("| fulcrum req/s ÷ nginx req/s | ≥ 0.80 | nginx not installed | SKIP |")
fi
# Latency added is judged below saturation when measured: a saturated closed loop's
# latency is connections ÷ throughput, a throughput figure in disguise. The open-loop
# rows (json-rate) decide; without them the paced rows do. Paced wrk rows measure how
# long a target takes to work off a burst of 128 requests sent at once (a fixed think
# time keeps wrk's connections in lockstep): shown, not judged, when json-rate ran.
LM=$JM
printf '%s\n' $MODES | grep -qx json-paced && LM=json-paced
printf '%s\n' $MODES | grep -qx json-rate && LM=json-rate
# What `target` adds to the p99 in each round (its p99 − direct's p99 in the same round,
# the rows of a round run back to back), one per line.
added_p99s() { # target mode
    local -a t d
    read -ra t <<<"${P99S[$1/$2/$max_c]:-}"
    read -ra d <<<"${P99S[direct/$2/$max_c]:-}"
    local i
    for i in "${!t[@]}"; do
        awk -v x="${t[$i]}" -v y="${d[$i]:-none}" \
            'BEGIN { if (x ~ /^[0-9.]+$/ && y ~ /^[0-9.]+$/) printf "%.2f\n", x - y }'
    done
}
# Judged on the median over rounds of what each round adds: a stretch in which the host
# slows everything lands in one or two rounds, and moves their direct row as much as the
# proxy's, so a median of paired differences holds where a difference of medians drifts.
latency_target() { # mode label judged(1|0)
    local added n99= runs per direct
    added=$(added_p99s fulcrum "$1" | median)
    per=$(added_p99s fulcrum "$1" | tr '\n' ' ')
    direct=${P99S[direct/$1/$max_c]:-}
    if [ -n "$NGINX_PORT" ]; then
        n99="; nginx adds $(added_p99s nginx "$1" | median) ms (rounds: $(added_p99s nginx "$1" | tr '\n' ' ' | sed 's/ $//'))"
    fi
    runs=$(added_p99s fulcrum "$1" | wc -l)
    local v=-
    [ "$3" -eq 0 ] || v=$(verdict "$(awk -v x="$added" 'BEGIN { print (x ~ /^-?[0-9.]+$/ && x <= 1) }')")
    TARGETS+=("| fulcrum p99 − direct p99 at $max_c connections ($2, ${RPS[fulcrum/$1/$max_c]} req/s; median over $runs rounds of the difference in each) | ≤ 1 ms | $added ms (rounds: ${per% }; direct p99 per round: ${direct% } ms$n99) | $v |")
}
case "$LM" in
    json-rate) latency_target json-rate "json-rate: open loop, Poisson arrivals" 1 ;;
    *) latency_target "$LM" "$LM" 1 ;;
esac
if [ "$LM" = json-rate ] && printf '%s\n' $MODES | grep -qx json-paced; then
    latency_target json-paced "for comparison, json-paced: bursts of $max_c in lockstep" 0
fi
if printf '%s\n' $MODES | grep -qx json-jitter; then
    latency_target json-jitter "for comparison, json-jitter: think times out of lockstep" 0
fi
if [ "$LM" != "$JM" ]; then
    s99=$(awk -v a="${P99[fulcrum/$JM/$max_c]}" -v b="${P99[direct/$JM/$max_c]}" 'BEGIN { printf "%.2f", a - b }')
    TARGETS+=("| (for comparison, saturated: fulcrum p99 − direct p99 at $max_c connections, $JM) | - | $s99 ms (${P99[fulcrum/$JM/$max_c]} − ${P99[direct/$JM/$max_c]}) | - |")
fi
TARGETS+=("| fulcrum peak RSS under load (VmHWM), $KEYS keys | ≤ 30 MiB | ${PEAK[fulcrum]} MiB (idle after load of keys: $(kib_to_mib "$IDLE_RSS_KB") MiB) | $(verdict "$(awk -v p="${PEAK[fulcrum]}" 'BEGIN { print (p <= 30) }')") |")
for pair in json:gemini-json stream:gemini-stream; do
    plain=${pair%%:*} translated=${pair#*:}
    printf '%s\n' $MODES | grep -qx "$plain" || continue
    printf '%s\n' $MODES | grep -qx "$translated" || continue
    ratio=$(awk -v a="${CPU_US[fulcrum/$translated/$max_c]}" -v b="${CPU_US[fulcrum/$plain/$max_c]}" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
    TARGETS+=("| CPU per request, OpenAI client to gemini provider ÷ pass-through ($translated vs $plain, $max_c connections) | ≤ 2.0 | $ratio (${CPU_US[fulcrum/$translated/$max_c]} vs ${CPU_US[fulcrum/$plain/$max_c]} µs) | $(verdict "$(awk -v r="$ratio" 'BEGIN { print (r > 0 && r <= 2) }')") |")
done
# The cost of request records: the proxy's CPU per request with request_logging off ÷ on
# is the share of its throughput left with records on, where the proxy is the bottleneck.
# The paced pair compares them at the same request rate, which is the fair comparison:
# a proxy's CPU per request falls as its load rises (more work per wakeup), and in the
# saturated pair the control plane storing the records shares CPU 0 with wrk and the
# mock, so the logging row runs at a lower rate whatever the proxy does.
for pair in json-paced-log:json-paced json-log:json stream-log:stream; do
    on=${pair%%:*} off=${pair#*:}
    printf '%s\n' $MODES | grep -qx "$on" || continue
    printf '%s\n' $MODES | grep -qx "$off" || continue
    worst=
    detail=
    for c in $CONNECTIONS; do
        [ -n "${CPU_US[fulcrum/$on/$c]:-}" ] || continue
        r=$(awk -v a="${CPU_US[fulcrum/$off/$c]}" -v b="${CPU_US[fulcrum/$on/$c]}" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
        q=$(awk -v a="${RPS[fulcrum/$on/$c]}" -v b="${RPS[fulcrum/$off/$c]}" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
        detail+="c=$c: ${CPU_US[fulcrum/$off/$c]} ÷ ${CPU_US[fulcrum/$on/$c]} µs = $r, req/s ratio $q; "
        worst=$(awk -v a="${worst:-9e9}" -v b="$r" 'BEGIN { print (b < a) ? b : a }')
    done
    TARGETS+=("| fulcrum throughput with request_logging on ÷ off: proxy CPU µs/req off ÷ on ($on vs $off rows, lowest over connections) | ≥ 0.90 | $worst (${detail%; }) | $(verdict "$(awk -v w="$worst" 'BEGIN { print (w >= 0.9) }')") |")
done
TARGETS+=("| fulcrum-proxy exec → first 200 on /readyz (median of $READY_RUNS) | ≤ 200 ms | $READY_MEDIAN ms (runs: ${READY_SORTED% }) | $(verdict "$(awk -v r="$READY_MEDIAN" 'BEGIN { print (r <= 200) }')") |")

DATE=$(date +%Y%m%d-%H%M%S)
mkdir -p "$ROOT/bench/results"
REPORT="$ROOT/bench/results/proxy-$DATE.md"
{
    echo "# Data-plane proxy benchmark ($(date -u +'%Y-%m-%d %H:%M UTC'))"
    echo
    echo "- commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty tree)'), $(uname -sr), $NCPU CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- wrk -t$WRK_THREADS, $DURATION per row after $WARMUP warmup; wrk + mock-upstream (1 thread) + control plane on CPU $LOAD_CPU; proxy under test on CPU $PROXY_CPU"
    echo "- fulcrum-proxy: --worker-threads 1, $KEYS keys on one openai provider; nginx: $([ -n "$NGINX_PORT" ] && "$NGINX" -v 2>&1 | sed 's/.*: //' || echo 'not installed'), worker_processes 1, upstream keepalive 64"
    echo "- body: $BODY (stream rows add \"stream\":true)"
    echo
    echo "| target | mode | conns | req/s | p50 ms | p99 ms | requests | non-2xx | socket errors | proxy CPU % | proxy CPU µs/req | RSS peak sampled MiB | VmHWM MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "| target | goal | measured | verdict |"
    echo "|---|---|---|---|"
    printf '%s\n' "${TARGETS[@]}"
    echo
    echo "fulcrum-proxy log: $PROXY_WARNINGS warning/error lines during the run; ${LOG_DROPPED:-?} request records dropped (log buffer full)."
} | tee "$REPORT"
if [ "$PROXY_WARNINGS" -gt 0 ]; then
    log "fulcrum-proxy warnings/errors (first 5):"
    grep -iE 'warn|error' "$TMP/proxy.log" | head -n 5 >&2
fi
log "report written to ${REPORT#"$ROOT"/}"
