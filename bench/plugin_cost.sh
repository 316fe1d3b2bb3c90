#!/usr/bin/env bash
# What plugins cost per request, in the proxy: the CPU time of the fedgate process (all
# its threads, observer threads included), in user space and in the kernel apart, over a
# fixed number of 2 KiB inbox POSTs, for each plugin configuration of the `plugins`
# scenario of bench/run.sh (and `buffered`: the body buffered as plugins get it, no plugin;
# `viewed`: buffered, and the federation view parsed by the blocklist, no plugin), and its
# difference from no plugin. Plugins run in user space;
# the user-space figure moves much less with the machine's load than throughput does
# (the kernel's share is mostly loopback TCP and wake-ups of the other side).
#
#   bash bench/plugin_cost.sh                      # 3 rounds of 100 000 requests
#   REQUESTS=200000 ROUNDS=5 bash bench/plugin_cost.sh
#   INSTRUCTIONS=1 bash bench/plugin_cost.sh       # instructions per request instead
#   INSTRUCTIONS=1 CONFIGS=none FEDGATE=path/to/fedgate bash bench/plugin_cost.sh
#                                                  # one configuration, another build
#
# CPU time on a shared virtual machine moves by a few microseconds from run to run. With
# INSTRUCTIONS=1 each configuration runs under valgrind's callgrind instead (plugins
# compiled once natively into a plugin cache first) and the figure is user-space
# instructions per request over REQUESTS (5 000 unless set) requests after a warm-up:
# nearly the same from run to run, and what plugins add is in user space.
#
# fedgate runs with one worker on PROXY_CPU (all its threads: the observer threads'
# work is counted too), h2load and the upstream (`fedgate demo-upstream`) on LOAD_CPU.
# Traffic only ever goes to 127.0.0.1.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
INSTRUCTIONS=${INSTRUCTIONS:-0}
if [ "$INSTRUCTIONS" = 1 ]; then REQUESTS=${REQUESTS:-5000}; fi
REQUESTS=${REQUESTS:-100000}
ROUNDS=${ROUNDS:-3}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CONNECTIONS=${CONNECTIONS:-50}
FEDGATE=${FEDGATE:-$REPO_DIR/target/release/fedgate}
WASM=$REPO_DIR/target/wasm32-wasip2/release

die() { echo "plugin_cost: $*" >&2; exit 1; }

tools=(h2load curl python3 taskset)
if [ "$INSTRUCTIONS" = 1 ]; then tools+=(valgrind callgrind_control); fi
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ -n "${missing[*]:-}" ]; then
  echo "plugin_cost: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    nghttp2-client curl python3 util-linux valgrind >/dev/null
fi
[ -x "$FEDGATE" ] || (cd "$REPO_DIR" && cargo build --release -p fedgate)
for ws in plugins tests/plugins; do
  (cd "$REPO_DIR" && cargo build -q --release --target wasm32-wasip2 \
    --manifest-path "$ws/Cargo.toml" --target-dir target)
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fedgate-plugin-cost.XXXXXX")
PIDS=()
cleanup() {
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready URL [TRIES]: polls every 50 ms, 200 times unless told.
wait_ready() {
  for _ in $(seq 1 "${2:-200}"); do
    curl --noproxy '*' -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  die "not ready: $1"
}

UP_PORT=$(free_port)
taskset -c "$LOAD_CPU" "$FEDGATE" demo-upstream --listen "127.0.0.1:$UP_PORT" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)

policy='[plugins.policy]
path = "'$WASM'/request_policy.wasm"
[plugins.policy.config]
required_headers = ["host", "accept"]
denied_user_agents = ["*bot*", "python-requests/*"]
allowed_content_types = ["application/activity+json", "application/ld+json"]
max_body_size = "1MiB"'
ap='[plugins.ap]
path = "'$WASM'/activitypub_metrics.wasm"'
moderation='[plugins.moderation]
path = "'$WASM'/moderation_events.wasm"'
slo='[plugins.slo]
path = "'$WASM'/upstream_slo.wasm"'
noop='[plugins.a]
path = "'$WASM'/hostile.wasm"
[plugins.b]
path = "'$WASM'/hostile.wasm"'

# label: the route's extra keys, then the plugin tables.
declare -A ROUTE TABLES
ROUTE[none]=''
ROUTE[buffered]='buffer_body = "64KiB"'
# The federation view parsed on the request path, as the blocklist does for every activity
# body of its routes (no entry matches): what the view costs on its own.
ROUTE[viewed]='buffer_body = "64KiB"'
TABLES[viewed]='[blocklist]
entries = ["blocked.example"]'
ROUTE[noop2]='plugins = ["a", "b"]'
TABLES[noop2]=$noop
ROUTE[ap]=$'plugins = ["ap"]\nbuffer_body = "64KiB"'
TABLES[ap]=$ap
ROUTE[policy_ap]=$'plugins = ["policy", "ap"]\nbuffer_body = "64KiB"'
TABLES[policy_ap]="$policy"$'\n'"$ap"
ROUTE[all4]=$'plugins = ["policy", "ap", "moderation", "slo"]\nbuffer_body = "64KiB"'
TABLES[all4]="$policy"$'\n'"$ap"$'\n'"$moderation"$'\n'"$slo"
# CONFIGS picks some of them, in its order (with `none` first: the others are compared to it).
read -r -a ORDER <<<"${CONFIGS:-none buffered viewed noop2 ap policy_ap all4}"

declare -A PORT ADMIN PID
for label in "${ORDER[@]}"; do
  PORT[$label]=$(free_port)
  ADMIN[$label]=$(free_port)
  cat >"$WORK/$label.toml" <<EOF
[server]
workers = 1
access_log = false
plugin_cache = "$WORK/cache"
[admin]
address = "127.0.0.1:${ADMIN[$label]}"
[reload]
watch = false
[[listeners]]
name = "bench"
address = "127.0.0.1:${PORT[$label]}"
[upstreams.backend]
endpoints = ["http://127.0.0.1:$UP_PORT"]
[[routes]]
name = "all"
path_prefix = "/"
upstream = "backend"
${ROUTE[$label]}
${TABLES[$label]:-}
EOF
  [ "$INSTRUCTIONS" = 1 ] && continue
  taskset -c "$PROXY_CPU" "$FEDGATE" run --config "$WORK/$label.toml" >"$WORK/$label.log" 2>&1 &
  PID[$label]=$!
  PIDS+=($!)
  wait_ready "http://127.0.0.1:${ADMIN[$label]}/ready"
done

load() {
  taskset -c "$LOAD_CPU" h2load --h1 -n "$1" -c "$CONNECTIONS" -t 1 \
    -d "$BENCH_DIR/create-activity.json" \
    -H 'Content-Type: application/activity+json' -H 'Accept: application/activity+json' \
    -H 'Date: Wed, 01 May 2024 12:00:00 GMT' \
    "http://127.0.0.1:$2/users/alice/inbox" >"$WORK/h2load.txt" 2>&1
  grep -q "$1 succeeded" "$WORK/h2load.txt" || { cat "$WORK/h2load.txt" >&2; die "requests failed"; }
}

if [ "$INSTRUCTIONS" = 1 ]; then
  mkdir -p "$WORK/cache"
  declare -A IR
  echo "== user-space instructions per 2 KiB inbox POST under callgrind: $REQUESTS requests" \
    "after 1 000 of warm-up"
  for label in "${ORDER[@]}"; do
    # Compiled natively first, so that valgrind loads the plugins from the cache.
    "$FEDGATE" run --config "$WORK/$label.toml" >"$WORK/$label.log" 2>&1 &
    pid=$!
    wait_ready "http://127.0.0.1:${ADMIN[$label]}/ready"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    taskset -c "$PROXY_CPU" valgrind --tool=callgrind --smc-check=all-non-file \
      --callgrind-out-file="$WORK/$label.cg" \
      "$FEDGATE" run --config "$WORK/$label.toml" >"$WORK/$label.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    # Slower to start under valgrind: up to a minute.
    wait_ready "http://127.0.0.1:${ADMIN[$label]}/ready" 1200
    load 1000 "${PORT[$label]}"
    sleep 1
    callgrind_control -z "$pid" >/dev/null
    load "$REQUESTS" "${PORT[$label]}"
    # Observers deliver up to 100 ms after the last response (slower under valgrind).
    sleep 2
    callgrind_control -d "$pid" >/dev/null
    sleep 1
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$WORK/$label.cg".*)
    # KEEP_CALLGRIND=DIR keeps the profiles, for callgrind_annotate.
    if [ -n "${KEEP_CALLGRIND:-}" ]; then
      mkdir -p "$KEEP_CALLGRIND"
      cp "$WORK/$label.cg".* "$KEEP_CALLGRIND/"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    IR[$label]=$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN { printf "%.0f", t / n }')
    printf '%-10s %14s instructions/request\n' "$label" "${IR[$label]}"
  done
  echo
  printf '%-10s %16s %16s %10s\n' config 'instructions/req' 'over none' 'ratio'
  for label in "${ORDER[@]}"; do
    awk -v l="$label" -v i="${IR[$label]}" -v b="${IR[none]}" 'BEGIN {
      printf "%-10s %16d %+16d %9.2fx\n", l, i, i - b, i / b }'
  done
  exit 0
fi

declare -A USER SYS
HZ=$(getconf CLK_TCK)
echo "== CPU time per 2 KiB inbox POST: $ROUNDS rounds of $REQUESTS requests," \
  "fedgate on CPU $PROXY_CPU, load and upstream on CPU $LOAD_CPU"
printf '%-10s %5s %14s %14s\n' config round 'user µs/req' 'kernel µs/req'
ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
for round in $(seq 1 "$ROUNDS"); do
  for label in "${ORDER[@]}"; do
    load 20000 "${PORT[$label]}" # warm-up: pools, instances and caches filled
    sleep 0.3
    read -r u0 s0 < <(ticks "${PID[$label]}")
    load "$REQUESTS" "${PORT[$label]}"
    # Observers deliver up to 100 ms after the last response: their work counts too.
    sleep 0.3
    read -r u1 s1 < <(ticks "${PID[$label]}")
    user=$(awk -v d=$((u1 - u0)) -v hz="$HZ" -v n="$REQUESTS" 'BEGIN { printf "%.3f", d / hz * 1e6 / n }')
    sys=$(awk -v d=$((s1 - s0)) -v hz="$HZ" -v n="$REQUESTS" 'BEGIN { printf "%.3f", d / hz * 1e6 / n }')
    USER[$label]+="$user "
    SYS[$label]+="$sys "
    printf '%-10s %5d %14.2f %14.2f\n' "$label" "$round" "$user" "$sys"
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
echo "median per request, and the difference from no plugin:"
printf '%-10s %14s %14s %14s %14s\n' config 'user µs/req' 'kernel µs/req' '+user µs/req' '+total µs/req'
base_u=$(echo "${USER[none]}" | median)
base_s=$(echo "${SYS[none]}" | median)
for label in "${ORDER[@]}"; do
  u=$(echo "${USER[$label]}" | median)
  k=$(echo "${SYS[$label]}" | median)
  awk -v l="$label" -v u="$u" -v k="$k" -v bu="$base_u" -v bk="$base_s" 'BEGIN {
    printf "%-10s %14.2f %14.2f %14.2f %14.2f\n", l, u, k, u - bu, u + k - bu - bk }'
done
