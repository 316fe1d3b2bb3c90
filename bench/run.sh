#!/usr/bin/env bash
# Reverse-proxy benchmark: fedgate, nginx and HAProxy in front of the same nginx upstream,
# each proxy pinned to the same single core with one worker, all driven by the same wrk
# load, one after the other, in one run. Prints requests/s, p50, p99, CPU time per request
# of the proxy process and errors, then fedgate's throughput and p99 against the others.
#
#   bash bench/run.sh                          # the proxy comparisons, 5 rounds of 10 s each
#   bash bench/run.sh --duration 30s --connections 100 --json results.json
#   SCENARIOS=get bash bench/run.sh --build
#
# Traffic only ever goes to 127.0.0.1. See bench/README.md for what is measured and how to
# add scenarios.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

# Settings: environment first, command-line flags override.
DURATION=${DURATION:-10s}        # measured run per proxy (wrk -d)
WARMUP=${WARMUP:-3s}             # unmeasured run just before it (pools filled, caches warm)
CONNECTIONS=${CONNECTIONS:-50}   # keep-alive connections (wrk -c)
THREADS=${THREADS:-1}            # wrk threads (wrk -t)
ROUNDS=${ROUNDS:-5}              # rounds per scenario; each measures every proxy once
PROXY_CPU=${PROXY_CPU:-0}        # core every proxy under test is pinned to
LOAD_CPU=${LOAD_CPU:-1}          # core shared by wrk and the upstream
SCENARIOS=${SCENARIOS:-get post get_paced post_paced} # scenario_<name> functions below, in order
HEADERS=${HEADERS:-full}         # full: nginx and HAProxy add what fedgate adds; minimal: XFF only
RATE=${RATE:-25000}              # offered requests/s of the paced scenarios (h2load --rps), in all
DEFAULT_FEDGATE=$REPO_DIR/target/release/fedgate
FEDGATE=${FEDGATE:-$DEFAULT_FEDGATE}
SKIP_FEDGATE=${SKIP_FEDGATE:-0}  # 1: measure only the baseline, nginx and HAProxy
FEDGATE_BASELINE=${FEDGATE_BASELINE:-} # another fedgate binary (an earlier build) to measure beside it
JSON_OUT=${JSON_OUT:-}           # also write the results as JSON to this file
KEEP_WORK=${KEEP_WORK:-0}        # 1: keep the temporary directory (configs, logs, wrk output)
BUILD=0

usage() {
  cat <<EOF
usage: bash bench/run.sh [options]

  --build               rebuild fedgate (cargo build --release -p fedgate) before running
  --json FILE           also write the results as JSON to FILE       (env JSON_OUT)
  --duration D          measured wrk run per proxy, e.g. 10s, 1m     (env DURATION, $DURATION)
  --warmup D            unmeasured wrk run before each measured one  (env WARMUP, $WARMUP)
  --connections N       keep-alive connections                       (env CONNECTIONS, $CONNECTIONS)
  --threads N           wrk threads                                  (env THREADS, $THREADS)
  --rounds N            rounds per scenario, each measuring every proxy once, one after
                        the other; the summary gives medians      (env ROUNDS, $ROUNDS)
  --scenarios "A B"     scenarios to run, from: $(list_scenarios)  (env SCENARIOS)
  --rate N              offered load of the paced scenarios, requests/s over all
                        connections                                 (env RATE, $RATE)
  --headers full|minimal
                        full: nginx and HAProxy add every field fedgate adds by default
                        (X-Forwarded-Proto/-Host, Via, X-Request-Id, traceparent), so all
                        three do the same forwarding work; minimal: they add only
                        X-Forwarded-For, fedgate still adds its full set  (env HEADERS, $HEADERS)
  --skip-fedgate        measure only the baseline, nginx and HAProxy (env SKIP_FEDGATE=1)
  --fedgate-baseline BIN
                        also measure another fedgate binary (an earlier build) in the
                        proxy comparisons, as "fedgate-base", taking turns with the others,
                        and print fedgate's ratio to it   (env FEDGATE_BASELINE)
  --keep                keep the temporary directory with configs and logs (env KEEP_WORK=1)

Other environment: PROXY_CPU (core for the proxies, $PROXY_CPU), LOAD_CPU (core for wrk and
the upstream, $LOAD_CPU), FEDGATE (binary, default target/release/fedgate).
EOF
}

# The script's own stderr, kept as fd 3: traps run inside whatever redirection is active
# when the signal arrives, and their messages must not end up in a wrk output file.
exec 3>&2
die() { echo "bench: $*" >&3; exit 1; }
warn() { echo "bench: warning: $*" >&3; }

# ---------------------------------------------------------------------------------------
# Scenarios. Each scenario_NAME function prints one table. `compare` runs the baseline and
# all three proxies on one request shape; `fedgate_row` runs one fedgate configuration and
# is the building block for fedgate-only comparisons (plugins on/off, signatures on/off):
# render another template from bench/conf/ and compare the rows with `print_ratio`.
# ---------------------------------------------------------------------------------------

# A GET with a small response: the bare cost of proxying a request.
scenario_get() {
  compare get /users/alice
}

# A remote instance delivering a 2 KiB ActivityPub Create activity to an inbox: the
# request body has to be streamed through as well.
scenario_post() {
  compare post /users/alice/inbox -s "$BENCH_DIR/post-inbox.lua"
}

# The same two requests at a fixed offered load instead of as fast as each proxy answers:
# h2load sends RATE requests/s over the same connections whatever the proxy's speed, so
# every proxy serves the same traffic and its latency is its own service time and
# scheduling, not the length of the queue at saturation. With wrk's closed loop a faster
# proxy also loads the shared load core harder (wrk and the upstream handle more requests
# per second there), which lengthens every latency wrk measures through it.
scenario_get_paced() {
  LOAD=h2load compare get_paced /users/alice
}

scenario_post_paced() {
  LOAD=h2load compare post_paced /users/alice/inbox -d "$BENCH_DIR/create-activity.json" \
    -H 'Content-Type: application/activity+json' -H 'Accept: application/activity+json' \
    -H 'Date: Wed, 01 May 2024 12:00:00 GMT' \
    -H 'Digest: SHA-256=yIagDgT6kbHgBZJ9vu//py00QNiL2OSVnSVipRZQF4g='
}

# The same inbox POST through fedgate alone, with plugins on the route and without:
# plugins0 has none; plugins1 the activitypub-metrics observer (counts each delivery by
# activity type and instance off the request path, from the gateway's federation view);
# plugins2 request-policy inline (four header and size rules) in front of it; plugins4 all
# four shipped plugins (request-policy inline; activitypub-metrics, moderation-events and
# upstream-slo observing). noop2 runs two inline plugins that only answer "continue"
# (tests/plugins' hostile in mode ok, no body buffered): the cost of two empty hook calls.
# The configurations run side by side and take turns, like the proxies of `compare`.
# `plugins` drives them as fast as each answers (throughput, CPU per request);
# `plugins_paced` offers them the same fixed load (latency at equal load).
scenario_plugins() {
  plugin_rows plugins -s "$BENCH_DIR/post-inbox.lua"
}

scenario_plugins_paced() {
  LOAD=h2load plugin_rows plugins_paced -d "$BENCH_DIR/create-activity.json" \
    -H 'Content-Type: application/activity+json' -H 'Accept: application/activity+json' \
    -H 'Date: Wed, 01 May 2024 12:00:00 GMT' \
    -H 'Digest: SHA-256=yIagDgT6kbHgBZJ9vu//py00QNiL2OSVnSVipRZQF4g='
}

# plugin_rows SCENARIO [load options...]: the plugin configurations, measured in turns.
plugin_rows() {
  local scenario=$1 path=/users/alice/inbox round label i n
  shift
  local order=(plugins0 plugins1 plugins2 plugins4 noop2)
  local wasm="$REPO_DIR/target/wasm32-wasip2/release"
  local ap policy noop moderation slo
  ap=$(printf '[plugins.ap]\npath = "%s/activitypub_metrics.wasm"\n' "$wasm")
  moderation=$(printf '[plugins.moderation]\npath = "%s/moderation_events.wasm"\n' "$wasm")
  slo=$(printf '[plugins.slo]\npath = "%s/upstream_slo.wasm"\n' "$wasm")
  noop=$(printf '[plugins.%s]\npath = "%s/hostile.wasm"\n' a "$wasm" b "$wasm")
  policy=$(printf '%s\n' \
    '[plugins.policy]' "path = \"$wasm/request_policy.wasm\"" '[plugins.policy.config]' \
    'required_headers = ["host", "accept"]' \
    'denied_user_agents = ["*bot*", "python-requests/*"]' \
    'allowed_content_types = ["application/activity+json", "application/ld+json"]' \
    'max_body_size = "1MiB"')
  [ "$SKIP_FEDGATE" != 1 ] || die "the plugin scenarios measure fedgate only"
  table_header "$scenario" "$path"
  fedgate_start plugins0 "$BENCH_DIR/conf/fedgate.toml"
  fedgate_start plugins1 "$BENCH_DIR/conf/fedgate.toml" \
    "$(printf 'plugins = ["ap"]\nbuffer_body = "64KiB"\n%s' "$ap")"
  fedgate_start plugins2 "$BENCH_DIR/conf/fedgate.toml" \
    "$(printf 'plugins = ["policy", "ap"]\nbuffer_body = "64KiB"\n%s\n%s' "$ap" "$policy")"
  fedgate_start plugins4 "$BENCH_DIR/conf/fedgate.toml" \
    "$(printf 'plugins = ["policy", "ap", "moderation", "slo"]\nbuffer_body = "64KiB"\n%s\n%s\n%s\n%s' \
      "$ap" "$moderation" "$slo" "$policy")"
  fedgate_start noop2 "$BENCH_DIR/conf/fedgate.toml" "$(printf 'plugins = ["a", "b"]\n%s' "$noop")"
  n=${#order[@]}
  for round in $(seq 1 "$ROUNDS"); do
    ROUND=$round
    for i in $(seq 0 $((n - 1))); do
      label=${order[$(((round - 1 + i) % n))]}
      fedgate_measure "$scenario" "$label" "$path" "$@"
    done
  done
  # The plugins did their work: the POSTs were counted as Create activities (observers
  # count once a batch is delivered: at most 100 ms after the last response), and none
  # was dropped for a full queue.
  sleep 0.5
  for label in plugins1 plugins2 plugins4; do
    NOTES+=("$label: $(curl --noproxy '*' -fsS --max-time 5 \
      "http://127.0.0.1:${FG_ADMIN[$label]}/metrics" |
      awk '/^federation_activities_total[{]/ && /type="Create"/ { n += $NF }
        /^fedgate_plugin_observed_exchanges_total[{]/ && /result="dropped"/ { d += $NF }
        END { printf "federation_activities_total counted %d Create activities; observers dropped %d exchanges", n, d }')")
  done
  for label in "${order[@]}"; do fedgate_stop "$label"; done
  print_medians "$scenario" "${order[@]}"
  echo
  for label in plugins1 plugins2 plugins4 noop2; do
    print_ratio "$scenario" "$label" plugins0
  done
  print_notes
}

# The inbox POST through fedgate alone on a route that enforces HTTP signatures, against the
# same route with signatures off, side by side. The request is signed once at the start
# (draft-cavage, RSA-2048, as Mastodon signs: (request-target) host date digest
# content-type) with OpenSSL and the unit tests' key; the window is widened to
# 12 hours (`max_age`; the default, Mastodon's, accepts a Date for 65 minutes) so that Date
# stays valid however long the run takes. Each request is verified in full: parse, key lookup, RSA
# verification, digest of the 2 KiB body.
scenario_signatures() {
  local path=/users/alice/inbox round label i order=(sigoff sigon)
  local keys="$REPO_DIR/gateway/src/signature/testdata" date digest text sig lua
  [ "$SKIP_FEDGATE" != 1 ] || die "the signatures scenario measures fedgate only"
  date=$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')
  digest="SHA-256=$(openssl dgst -sha256 -binary "$BENCH_DIR/create-activity.json" | base64 -w0)"
  text=$(printf '(request-target): post %s\nhost: local.example\ndate: %s\ndigest: %s\ncontent-type: application/activity+json' \
    "$path" "$date" "$digest")
  sig=$(printf '%s' "$text" | openssl dgst -sha256 -sign "$keys/rsa-2048.key.pem" | base64 -w0)
  lua="$WORK/signed-inbox.lua"
  {
    printf 'dofile("%s")\n' "$BENCH_DIR/post-inbox.lua"
    printf 'wrk.headers["Host"] = "local.example"\n'
    printf 'wrk.headers["Date"] = "%s"\n' "$date"
    printf 'wrk.headers["Digest"] = "%s"\n' "$digest"
    printf 'wrk.headers["Signature"] = [[keyId="https://remote.example/users/bob#main-key",algorithm="rsa-sha256",headers="(request-target) host date digest content-type",signature="%s"]]\n' "$sig"
  } >"$lua"
  table_header signatures "$path"
  fedgate_start sigoff "$BENCH_DIR/conf/fedgate.toml" 'buffer_body = "64KiB"'
  fedgate_start sigon "$BENCH_DIR/conf/fedgate.toml" "$(printf '%s\n' \
    'signatures = "enforce"' '[signatures]' 'max_age = "12h"' '[[signatures.keys]]' \
    'key_id = "https://remote.example/users/bob#main-key"' "pem_file = \"$keys/rsa-2048.pub.pem\"")" skip
  # The signed request passes, and the same request unsigned does not.
  local signed_check=(-H "Host: local.example" -H "Date: $date" -H "Digest: $digest"
    -H "Content-Type: application/activity+json" --data-binary "@$BENCH_DIR/create-activity.json")
  curl --noproxy '*' -fsS --max-time 2 -o /dev/null "${signed_check[@]}" \
    -H "Signature: keyId=\"https://remote.example/users/bob#main-key\",algorithm=\"rsa-sha256\",headers=\"(request-target) host date digest content-type\",signature=\"$sig\"" \
    "http://127.0.0.1:${FG_PORT[sigon]}$path" || die "sigon refuses the signed request"
  [ "$(curl --noproxy '*' -sS --max-time 2 -o /dev/null -w '%{http_code}' "${signed_check[@]}" \
    "http://127.0.0.1:${FG_PORT[sigon]}$path")" = 401 ] || die "sigon does not refuse an unsigned request"
  for round in $(seq 1 "$ROUNDS"); do
    ROUND=$round
    for i in 0 1; do
      label=${order[$(((round - 1 + i) % 2))]}
      fedgate_measure signatures "$label" "$path" -s "$lua"
    done
  done
  # Every measured request verified: no 401s, and the valid count matches.
  NOTES+=("sigon: $(curl --noproxy '*' -fsS --max-time 5 "http://127.0.0.1:${FG_ADMIN[sigon]}/metrics" |
    awk '/^fedgate_signature_verifications_total[{]/ { split($0, a, "result=\""); split(a[2], b, "\""); n[b[1]] += $NF }
         END { for (r in n) printf "%s=%d ", r, n[r] }')signature checks")
  for label in "${order[@]}"; do fedgate_stop "$label"; done
  print_medians signatures "${order[@]}"
  echo
  print_ratio signatures sigon sigoff
  print_notes
}

# A GET through fedgate alone with the resilience machinery on the upstream (a circuit
# breaker with both triggers, retries with their budget, active health checks every second
# and outlier detection) against the same route without
# it, side by side: the cost of the happy path, where nothing fails. The resilience
# configuration is the one an operator would run (resilience_toml below).
scenario_resilience() {
  local path=/users/alice round label i order=(resoff reson)
  [ "$SKIP_FEDGATE" != 1 ] || die "the resilience scenario measures fedgate only"
  table_header resilience "$path"
  fedgate_start resoff "$BENCH_DIR/conf/fedgate.toml"
  fedgate_start reson "$BENCH_DIR/conf/fedgate.toml" "$(resilience_toml)"
  for round in $(seq 1 "$ROUNDS"); do
    ROUND=$round
    for i in 0 1; do
      label=${order[$(((round - 1 + i) % 2))]}
      fedgate_measure resilience "$label" "$path"
    done
  done
  NOTES+=("reson: $(curl --noproxy '*' -fsS --max-time 5 "http://127.0.0.1:${FG_ADMIN[reson]}/metrics" |
    awk '/^fedgate_circuit_breaker_state[{]/ { s = $NF } /^fedgate_retries_total[{]/ { r += $NF }
         END { printf "breaker state %d, %d retries", s, r }')")
  for label in "${order[@]}"; do fedgate_stop "$label"; done
  print_medians resilience "${order[@]}"
  echo
  print_ratio resilience reson resoff
  print_notes
}

# The resilience settings of the `resilience` scenario, appended to bench/conf/fedgate.toml.
resilience_toml() {
  printf '%s\n' \
    '[upstreams.backend.circuit_breaker]' 'consecutive_failures = 5' 'failure_rate = 0.5' \
    'min_requests = 20' 'window = "10s"' \
    '[upstreams.backend.retries]' 'max_retries = 2' 'per_try_timeout = "2s"' \
    '[upstreams.backend.health_check]' 'path = "/"' 'interval = "1s"' \
    '[upstreams.backend.outlier_detection]' 'consecutive_failures = 5'
}

list_scenarios() {
  declare -F | awk '$3 ~ /^scenario_/ { sub(/^scenario_/, "", $3); printf "%s%s", sep, $3; sep = " " }'
}

# compare SCENARIO PATH [wrk options...]: ROUNDS rounds, each measuring the baseline and
# every proxy once, back to back. A machine shared with other work drifts in speed over a
# run; measuring the proxies in alternation, and comparing them round by round, keeps that
# drift out of the ratios.
compare() {
  local scenario=$1 path=$2 round proxies=(direct)
  shift 2
  [ "$SKIP_FEDGATE" = 1 ] || proxies+=(fedgate)
  [ "$SKIP_FEDGATE" = 1 ] || [ -z "$FEDGATE_BASELINE" ] || proxies+=(fedgate-base)
  proxies+=(nginx haproxy)
  table_header "$scenario" "$path"
  # Like nginx and HAProxy, fedgate keeps running across the rounds: every proxy is
  # measured with warm connection pools and caches.
  if [ "$SKIP_FEDGATE" != 1 ]; then
    fedgate_start fedgate "$BENCH_DIR/conf/fedgate.toml"
    check_forwarding fedgate "${FG_PORT[fedgate]}"
    if [ -n "$FEDGATE_BASELINE" ]; then
      FEDGATE_BIN=$FEDGATE_BASELINE fedgate_start fedgate-base "$BENCH_DIR/conf/fedgate.toml"
      check_forwarding fedgate-base "${FG_PORT[fedgate-base]}"
    fi
  fi
  local order=("${proxies[@]:1}") n i proxy
  n=${#order[@]}
  for round in $(seq 1 "$ROUNDS"); do
    ROUND=$round
    measure "$scenario" direct "$UP_PORT" 0 "$path" "$@"
    # The proxies take turns going first: a machine whose speed drifts within a round
    # favours no proxy across the rounds.
    for i in $(seq 0 $((n - 1))); do
      proxy=${order[$(((round - 1 + i) % n))]}
      case $proxy in
        fedgate | fedgate-base) fedgate_measure "$scenario" "$proxy" "$path" "$@" ;;
        nginx) measure "$scenario" nginx "$NG_PORT" "$NG_PID" "$path" "$@" ;;
        haproxy) measure "$scenario" haproxy "$HA_PORT" "$HA_PID" "$path" "$@" ;;
      esac
    done
  done
  [ "$SKIP_FEDGATE" = 1 ] || fedgate_stop fedgate
  [ "$SKIP_FEDGATE" = 1 ] || [ -z "$FEDGATE_BASELINE" ] || fedgate_stop fedgate-base
  print_medians "$scenario" "${proxies[@]}"
  echo
  if [ "$SKIP_FEDGATE" != 1 ]; then
    print_ratio "$scenario" fedgate haproxy
    print_ratio "$scenario" fedgate nginx
    [ -z "$FEDGATE_BASELINE" ] || print_ratio "$scenario" fedgate fedgate-base
  fi
  print_notes
}

# ---------------------------------------------------------------------------------------
# Setup helpers
# ---------------------------------------------------------------------------------------

# find_bin NAME: the binary on PATH or in /usr/sbin (not on PATH for ordinary users).
find_bin() {
  command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true
}

# Installs whatever of nginx, HAProxy, wrk, curl and python3 is missing (Debian packages).
ensure_packages() {
  local missing=() sudo=()
  [ -n "$(find_bin nginx)" ] || missing+=(nginx-light)
  [ -n "$(find_bin haproxy)" ] || missing+=(haproxy)
  [ -n "$(find_bin wrk)" ] || missing+=(wrk)
  [ -n "$(find_bin h2load)" ] || missing+=(nghttp2-client)
  [ -n "$(find_bin curl)" ] || missing+=(curl)
  [ -n "$(find_bin python3)" ] || missing+=(python3)
  [ -n "$(find_bin taskset)" ] || missing+=(util-linux)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "missing ${missing[*]}; run as root or install sudo"
    sudo=(sudo)
  fi
  echo "bench: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# free_ports N: N distinct free TCP ports on 127.0.0.1. All sockets stay bound until every
# port is chosen, so the kernel cannot hand out the same port twice.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# render TEMPLATE OUT KEY=VALUE...: replaces @KEY@ in TEMPLATE, refusing leftovers so a
# typo in a template fails here rather than as a confusing proxy start-up error.
render() {
  local template=$1 out=$2 kv key value args=()
  shift 2
  for kv in "$@"; do
    key=${kv%%=*}
    value=${kv#*=}
    value=$(printf '%s' "$value" | sed 's/[\\|&]/\\&/g')
    args+=(-e "s|@${key}@|${value}|g")
  done
  sed "${args[@]}" "$template" >"$out"
  if grep -n '@[A-Z_][A-Z_]*@' "$out" >&2; then
    die "$template: placeholders left unfilled in $out"
  fi
}

# Every long-running process started here, so the exit trap can stop them all.
PIDS=()
STARTED_PID=

# start_bg LOG CPU COMMAND...: starts COMMAND pinned to CPU in the background. taskset
# execs the command, so $! is the pid of the server itself. Sets STARTED_PID.
start_bg() {
  local log=$1 cpu=$2
  shift 2
  taskset -c "$cpu" "$@" >"$log" 2>&1 3>&- &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

# alive PID: PID exists and has not exited. kill -0 alone is not enough: a child that has
# exited stays a zombie, and answers kill -0, until it is waited for.
alive() {
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d ' ' -f 1) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# stop_pid PID: SIGTERM, then SIGKILL if it has not exited after 5 s; then reaps it.
stop_pid() {
  local pid=$1 p keep=() _
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      warn "pid $pid still running 5 s after SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=(${keep[@]+"${keep[@]}"})
}

# http_ok URL: true when URL answers 2xx. --noproxy: an http_proxy in the environment
# must never send this traffic anywhere but loopback.
http_ok() {
  curl --noproxy '*' -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
}

# wait_ready URL PID LOG: waits up to 10 s for URL to answer 2xx, failing early (with the
# log) if the process has already died.
wait_ready() {
  local url=$1 pid=$2 log=$3 i
  for i in $(seq 1 100); do
    http_ok "$url" && return 0
    if ! alive "$pid"; then
      tail -n 20 "$log" >&2 || true
      die "process $pid exited before $url answered (log: $log)"
    fi
    sleep 0.1
  done
  tail -n 20 "$log" >&2 || true
  die "timed out after $i tries waiting for $url (log: $log)"
}

# check_forwards NAME PORT: NAME answers with the upstream's own body, so it really is
# forwarding (and to the right place), not answering by itself.
check_forwards() {
  local body
  body=$(curl --noproxy '*' -fsS --max-time 2 "http://127.0.0.1:$2/users/alice") ||
    die "$1 (port $2) does not answer GET /users/alice with 2xx"
  [ "$body" = "$UP_BODY" ] || die "$1 (port $2) answers, but not with the upstream's body: $body"
}

# check_forwarding NAME PORT: NAME adds every field fedgate adds by default, to the request
# (the upstream's /__forwarded echoes them) and to the response. With --headers full this is
# what makes the comparison one of equal work rather than of configurations.
check_forwarding() {
  local echoed field head
  echoed=$(curl --noproxy '*' -fsS --max-time 2 "http://127.0.0.1:$2/__forwarded") ||
    die "$1 (port $2) does not answer GET /__forwarded with 2xx"
  for field in xff proto host via id trace; do
    [[ " $echoed" =~ \ $field=[^\ ] ]] ||
      die "$1 (port $2) does not add the request field behind '$field=': $echoed"
  done
  head=$(curl --noproxy '*' -fsS --max-time 2 -D - -o /dev/null "http://127.0.0.1:$2/users/alice" |
    tr 'A-Z' 'a-z') || die "$1 (port $2) does not answer GET /users/alice with 2xx"
  for field in via x-request-id; do
    grep -q "^$field: ." <<<"$head" || die "$1 (port $2) does not add $field to the response"
  done
}

# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------

# children PID: direct children of PID (nginx serves from a worker forked by its master).
children() {
  if compgen -G "/proc/$1/task/*/children" >/dev/null; then
    cat "/proc/$1/task/"*/children 2>/dev/null || true
  else
    ps -o pid= --ppid "$1" 2>/dev/null || true
  fi
}

# cpu_ticks PID: utime + stime (fields 14 and 15 of /proc/PID/stat, in clock ticks) of PID
# and its children. Both fields already cover every thread of a process. Field 2, the
# command name, may contain spaces, so fields are counted from after its ")" (field 3 is
# then the first).
cpu_ticks() {
  local total=0 p t kids
  read -r -a kids <<<"$(children "$1" | tr '\n' ' ')"
  for p in "$1" ${kids[@]+"${kids[@]}"}; do
    t=$(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')
    total=$((total + t))
  done
  echo "$total"
}

# run_wrk OUT DURATION URL [options...]: wrk on the load core with the common settings,
# its output to OUT. wrk runs in the background and the shell waits for it: wrk handles
# SIGINT itself and exits 0, which would make a foreground wait swallow Ctrl-C and carry
# on with the next proxy; the `wait` builtin instead returns at once and the INT trap
# ends the run.
run_wrk() {
  local out=$1 duration=$2 url=$3 pid rc=0
  shift 3
  taskset -c "$LOAD_CPU" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$duration" "$@" "$url" \
    >"$out" 2>&1 3>&- &
  pid=$!
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  stop_pid "$pid"
  return "$rc"
}

# run_h2load OUT DURATION URL [options...]: h2load (HTTP/1.1) on the load core at RATE
# requests/s spread over the connections, each request's latency logged to OUT.log.
run_h2load() {
  local out=$1 duration=$2 url=$3 pid rc=0 rps
  shift 3
  rps=$(awk -v r="$RATE" -v c="$CONNECTIONS" 'BEGIN { printf "%.3f", r / c }')
  taskset -c "$LOAD_CPU" "$H2LOAD" --h1 -t"$THREADS" -c"$CONNECTIONS" --rps="$rps" \
    -D "$duration" --log-file="$out.log" "$@" "$url" >"$out" 2>&1 3>&- &
  pid=$!
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  stop_pid "$pid"
  return "$rc"
}

# parse_h2load FILE: "requests rps p50_ms p99_ms errors" from h2load's summary and its
# per-request log (FILE.log: start time, status, microseconds to the end of the response).
# Errors are failed, errored and timed-out requests plus non-2xx/3xx statuses.
parse_h2load() {
  local summary
  summary=$(awk '
    /^finished in / { rps = $4 }
    /^requests: / { done = $6; errors += $10 }
    /^status codes: / { errors += $7 + $9 }
    END {
      if (done == "" || rps == "") exit 1
      printf "%d %.0f %d\n", done, rps, errors
    }' "$1") || return 1
  cut -f 3 "$1.log" | sort -n | awk -v s="$summary" '
    { v[NR] = $1 }
    END {
      if (NR == 0) exit 1
      split(s, f, " ")
      p50 = v[int(NR * 0.50) > 0 ? int(NR * 0.50) : 1]
      p99 = v[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1]
      printf "%d %.0f %.3f %.3f %d\n", f[1], f[2], p50 / 1000, p99 / 1000, f[3]
    }'
}

# run_load / parse_load: the load generator of the scenario, wrk (closed loop, as fast as
# the proxy answers) unless LOAD is h2load (a fixed offered rate).
run_load() {
  if [ "${LOAD:-wrk}" = h2load ]; then run_h2load "$@"; else run_wrk "$@"; fi
}
parse_load() {
  if [ "${LOAD:-wrk}" = h2load ]; then parse_h2load "$@"; else parse_wrk "$@"; fi
}

# parse_wrk FILE: "requests rps p50_ms p99_ms errors" from wrk --latency output. Latencies
# come as 812.00us, 1.36ms, 2.01s (or m, h); all are converted to milliseconds. Errors are
# non-2xx/3xx responses plus socket errors (connect, read, write, timeout).
parse_wrk() {
  awk '
    function ms(v,   n, unit) {
      n = v + 0; unit = v; sub(/^[0-9.]+/, "", unit)
      if (unit == "us") return n / 1000
      if (unit == "ms") return n
      if (unit == "s")  return n * 1000
      if (unit == "m")  return n * 60000
      if (unit == "h")  return n * 3600000
      return -1
    }
    /^ *50% / { p50 = ms($2) }
    /^ *99% / { p99 = ms($2) }
    / requests in / { requests = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { gsub(",", ""); errors += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { errors += $NF }
    END {
      if (requests == "" || rps == "" || p50 == "" || p99 == "" || p50 < 0 || p99 < 0) exit 1
      printf "%d %.0f %.3f %.3f %d\n", requests, rps, p50, p99, errors
    }' "$1"
}

# Result rows, tab-separated: scenario proxy path requests rps p50_ms p99_ms cpu_us errors
# round.
RESULTS=()
ROUND=1
NOTES=()
# Requests wrk completed in the last measure's warm-up and measured runs.
LAST_WARMUP_REQUESTS=0
LAST_REQUESTS=0

table_header() {
  echo
  local load="wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
  [ "${LOAD:-wrk}" != h2load ] ||
    load="h2load --h1 -t$THREADS -c$CONNECTIONS -D $DURATION at $RATE req/s in all"
  echo "== $1: $2 ($load after a $WARMUP warm-up," \
    "$ROUNDS rounds; proxy on CPU $PROXY_CPU, load and upstream on CPU $LOAD_CPU)"
  printf '%-18s %5s %10s %9s %9s %12s %8s\n' proxy round 'req/s' 'p50 ms' 'p99 ms' 'CPU µs/req' errors
}

# measure SCENARIO PROXY PORT PID PATH [wrk options...]: a warm-up run, then the measured
# run with the CPU time of PID (0: not measured, for the direct baseline) read around it.
# Prints the row and appends it to RESULTS.
measure() {
  local scenario=$1 proxy=$2 port=$3 pid=$4 path=$5
  shift 5
  local url="http://127.0.0.1:$port$path" out="$WORK/wrk-$scenario-$proxy"
  local before=0 after=0 kids_before kids_after parsed requests rps p50 p99 errors cpu

  run_load "$out.warmup.txt" "$WARMUP" "$url" "$@" || {
    cat "$out.warmup.txt" >&2
    die "$scenario/$proxy: wrk warm-up failed"
  }
  LAST_WARMUP_REQUESTS=$(awk '/ requests in / { print $1 } /^requests: / { print $6 }' "$out.warmup.txt")
  if parsed=$(awk '/Non-2xx or 3xx responses:|Socket errors:/ || (/^requests: / && $10 > 0)' "$out.warmup.txt") &&
    [ -n "$parsed" ]; then
    NOTES+=("$proxy: errors during warm-up: $(echo "$parsed" | tr -s ' \n' ' ')")
  fi

  if [ "$pid" -gt 0 ]; then
    kids_before=$(children "$pid" | tr '\n' ' ')
    before=$(cpu_ticks "$pid")
  fi
  if [ "${LOAD:-wrk}" = h2load ]; then set -- "$@"; else set -- --latency "$@"; fi
  run_load "$out.txt" "$DURATION" "$url" "$@" || {
    cat "$out.txt" >&2
    die "$scenario/$proxy: wrk failed"
  }
  if [ "$pid" -gt 0 ]; then
    after=$(cpu_ticks "$pid")
    kids_after=$(children "$pid" | tr '\n' ' ')
    # A worker that died and was replaced mid-run takes its CPU time with it.
    [ "$kids_before" = "$kids_after" ] ||
      NOTES+=("$proxy: worker processes changed during the run; CPU figure is low")
  fi

  parsed=$(parse_load "$out.txt") || {
    cat "$out.txt" >&2
    die "$scenario/$proxy: could not parse wrk output"
  }
  read -r requests rps p50 p99 errors <<<"$parsed"
  [ "$requests" -gt 0 ] || die "$scenario/$proxy: no request completed"
  if [ "$pid" -gt 0 ]; then
    cpu=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" \
      'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
  else
    cpu=-
  fi
  [ "$errors" -eq 0 ] || NOTES+=("$proxy: $errors errors in the measured run ($out.txt, kept with --keep)")

  LAST_REQUESTS=$requests
  RESULTS+=("$scenario"$'\t'"$proxy"$'\t'"$path"$'\t'"$requests"$'\t'"$rps"$'\t'"$p50"$'\t'"$p99"$'\t'"$cpu"$'\t'"$errors"$'\t'"$ROUND")
  printf '%-18s %5s %10s %9s %9s %12s %8s\n' "$proxy" "$ROUND" "$rps" "$p50" "$p99" "$cpu" "$errors"
}

# fedgate instances by label: port, admin port, pid.
declare -A FG_PORT FG_ADMIN FG_PID

# fedgate_start LABEL TEMPLATE [EXTRA]: starts fedgate with TEMPLATE (placeholders @PORT@,
# @ADMIN_PORT@, @UPSTREAM_PORT@, @DIR@), with the text EXTRA appended (keys of its last
# table, then tables of its own), on the proxy core and waits until it forwards.
fedgate_start() {
  local label=$1 template=$2 extra=${3:-} check=${4:-get}
  local dir="$WORK/fedgate-$label-$RANDOM" port admin
  mkdir -p "$dir"
  # Fresh ports for every start: no dependence on how quickly the last one was released.
  read -r port admin <<<"$(free_ports 2)"
  render "$template" "$dir/fedgate.toml" \
    PORT="$port" ADMIN_PORT="$admin" UPSTREAM_PORT="$UP_PORT" DIR="$dir"
  printf '%s\n' "$extra" >>"$dir/fedgate.toml"
  local bin=${FEDGATE_BIN:-$FEDGATE}
  "$bin" check --config "$dir/fedgate.toml" >"$dir/check.txt" 2>&1 || {
    cat "$dir/check.txt" >&2
    die "$template: fedgate check failed"
  }
  start_bg "$dir/fedgate.log" "$PROXY_CPU" "$bin" run --config "$dir/fedgate.toml"
  FG_PID[$label]=$STARTED_PID FG_PORT[$label]=$port FG_ADMIN[$label]=$admin
  wait_ready "http://127.0.0.1:$admin/ready" "$STARTED_PID" "$dir/fedgate.log"
  # A route that admits only signed requests is checked by its scenario instead.
  [ "$check" = skip ] || check_forwards "$label" "$port"
}

# fedgate_measure SCENARIO LABEL PATH [wrk options...]: measures a started fedgate like
# any other proxy and checks that its /metrics counted the traffic.
fedgate_measure() {
  local scenario=$1 label=$2 path=$3 admin before counted
  shift 3
  admin=${FG_ADMIN[$label]}
  before=$(fedgate_counted "$admin")
  measure "$scenario" "$label" "${FG_PORT[$label]}" "${FG_PID[$label]}" "$path" "$@"
  # The figures are only meaningful with the metrics doing their work: confirm they saw
  # the load. wrk does not count requests still in flight when it stops, so /metrics may
  # show a few more.
  counted=$(fedgate_counted "$admin")
  NOTES+=("$label: /metrics counted $((counted - before)) requests; the client completed $((LAST_WARMUP_REQUESTS + LAST_REQUESTS)) (warm-up and run)")
}

# fedgate_counted ADMIN_PORT: the sum of fedgate_requests_total.
fedgate_counted() {
  curl --noproxy '*' -fsS --max-time 5 "http://127.0.0.1:$1/metrics" |
    awk '/^fedgate_requests_total[{ ]/ { n += $NF } END { printf "%d", n }'
}

fedgate_stop() {
  stop_pid "${FG_PID[$1]}"
  unset "FG_PID[$1]" "FG_PORT[$1]" "FG_ADMIN[$1]"
}

# fedgate_row SCENARIO LABEL TEMPLATE PATH [wrk options...]: starts fedgate with TEMPLATE,
# measures it once under LABEL and stops it again.
fedgate_row() {
  local scenario=$1 label=$2 template=$3 path=$4
  shift 4
  fedgate_start "$label" "$template"
  fedgate_measure "$scenario" "$label" "$path" "$@"
  fedgate_stop "$label"
}

# field_values SCENARIO PROXY COLUMN: a column (1-based, as in RESULTS) of every round's
# row, one value per line, in round order.
field_values() {
  local row f
  for row in ${RESULTS[@]+"${RESULTS[@]}"}; do
    IFS=$'\t' read -r -a f <<<"$row"
    if [ "${f[0]}" = "$1" ] && [ "${f[1]}" = "$2" ]; then
      echo "${f[$(($3 - 1))]}"
    fi
  done
}

# median [FORMAT]: the median of the numbers on stdin, printed with FORMAT (default %.3f);
# "-" when there are none, or any is "-".
median() {
  sort -g | awk -v fmt="${1:-%.3f}" '
    $1 == "-" { dash = 1 }
    { v[NR] = $1 }
    END {
      if (NR == 0 || dash) { print "-"; exit }
      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf fmt "\n", m
    }'
}

# print_medians SCENARIO PROXY...: one row per proxy with the median of each column.
print_medians() {
  local scenario=$1 proxy
  shift
  [ "$ROUNDS" -gt 1 ] || return 0
  echo "median of $ROUNDS rounds:"
  for proxy in "$@"; do
    printf '%-18s %5s %10s %9s %9s %12s %8s\n' "$proxy" - \
      "$(field_values "$scenario" "$proxy" 5 | median %.0f)" \
      "$(field_values "$scenario" "$proxy" 6 | median)" \
      "$(field_values "$scenario" "$proxy" 7 | median)" \
      "$(field_values "$scenario" "$proxy" 8 | median %.1f)" \
      "$(field_values "$scenario" "$proxy" 9 | awk '{ n += $1 } END { print n + 0 }')"
  done
}

# round_ratios SCENARIO A B FIELD: A's value of result field FIELD divided by B's, one line
# per round.
round_ratios() {
  paste <(field_values "$1" "$2" "$4") <(field_values "$1" "$3" "$4") |
    awk '$1 != "" && $2 > 0 { printf "%.2f\n", $1 / $2 }'
}

# print_ratio SCENARIO A B: A's throughput relative to B's, round by round (each round
# measures both within a few seconds of each other) and as the median of those ratios,
# then the median p99 side by side with the per-round p99 ratios, and the median CPU per
# request side by side.
print_ratio() {
  local scenario=$1 a=$2 b=$3 ratios p99_ratios p99_a p99_b cpu_a cpu_b
  ratios=$(round_ratios "$scenario" "$a" "$b" 5)
  [ -n "$ratios" ] || return 0
  # p99 round by round as well: one round with a stall on the machine moves a proxy's
  # median p99, the per-round ratios show whether it is that or a difference every round.
  p99_ratios=$(round_ratios "$scenario" "$a" "$b" 7)
  p99_a=$(field_values "$scenario" "$a" 7 | median)
  p99_b=$(field_values "$scenario" "$b" 7 | median)
  cpu_a=$(field_values "$scenario" "$a" 8 | median %.1f)
  cpu_b=$(field_values "$scenario" "$b" 8 | median %.1f)
  awk -v a="$a" -v b="$b" -v r="$(echo "$ratios" | median %.2f)" -v rs="$(echo $ratios)" \
    -v pa="$p99_a" -v pb="$p99_b" -v ca="$cpu_a" -v cb="$cpu_b" \
    -v pr="$(echo "$p99_ratios" | median %.2f)" -v prs="$(echo $p99_ratios)" 'BEGIN {
      printf "%s/%s: throughput %.2fx (rounds: %s), p99 %.3f vs %.3f ms (%+.0f%%; ratio %.2f, rounds: %s), CPU %s vs %s µs/req\n",
        a, b, r, rs, pa, pb, (pa / pb - 1) * 100, pr, prs, ca, cb
    }'
}

print_notes() {
  local n
  for n in ${NOTES[@]+"${NOTES[@]}"}; do echo "  note: $n"; done
  NOTES=()
}

write_json() {
  # Values go through the environment rather than into the Python source, so no version
  # string or path can break the quoting.
  B_DURATION=$DURATION B_WARMUP=$WARMUP B_ROUNDS=$ROUNDS B_CONNECTIONS=$CONNECTIONS B_THREADS=$THREADS \
    B_PROXY_CPU=$PROXY_CPU B_LOAD_CPU=$LOAD_CPU B_CLK_TCK=$CLK_TCK \
    B_NGINX=$NGINX_VERSION B_HAPROXY=$HAPROXY_VERSION B_WRK=$WRK_VERSION \
    B_FEDGATE=$FEDGATE_VERSION B_HEADERS=$HEADERS \
    python3 - "$1" ${RESULTS[@]+"${RESULTS[@]}"} <<'PY'
import json, os, sys
e = os.environ
meta = {
    "duration": e["B_DURATION"], "warmup": e["B_WARMUP"], "rounds": int(e["B_ROUNDS"]),
    "connections": int(e["B_CONNECTIONS"]), "threads": int(e["B_THREADS"]),
    "headers": e["B_HEADERS"], "proxy_cpu": e["B_PROXY_CPU"], "load_cpu": e["B_LOAD_CPU"], "clk_tck": int(e["B_CLK_TCK"]),
    "versions": {"nginx": e["B_NGINX"], "haproxy": e["B_HAPROXY"], "wrk": e["B_WRK"],
                 "fedgate": e["B_FEDGATE"]},
}
results = []
for row in sys.argv[2:]:
    scenario, proxy, path, requests, rps, p50, p99, cpu, errors, rnd = row.split("\t")
    results.append({
        "scenario": scenario, "proxy": proxy, "round": int(rnd), "path": path,
        "requests": int(requests),
        "rps": float(rps), "p50_ms": float(p50), "p99_ms": float(p99),
        "cpu_us_per_req": None if cpu == "-" else float(cpu), "errors": int(errors),
    })
with open(sys.argv[1], "w") as f:
    json.dump({"meta": meta, "results": results}, f, indent=2)
    f.write("\n")
PY
}

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

while [ $# -gt 0 ]; do
  case $1 in
    --build) BUILD=1 ;;
    --json) JSON_OUT=${2:?--json needs a file}; shift ;;
    --duration) DURATION=${2:?}; shift ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --connections) CONNECTIONS=${2:?}; shift ;;
    --threads) THREADS=${2:?}; shift ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --scenarios) SCENARIOS=${2:?}; shift ;;
    --headers) HEADERS=${2:?}; shift ;;
    --rate) RATE=${2:?}; shift ;;
    --skip-fedgate) SKIP_FEDGATE=1 ;;
    --fedgate-baseline) FEDGATE_BASELINE=${2:?}; shift ;;
    --keep) KEEP_WORK=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done

[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "connections must be a positive integer"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "threads must be a positive integer"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "rounds must be a positive integer"
[[ $RATE =~ ^[1-9][0-9]*$ ]] || die "rate must be a positive integer"
[ "$RATE" -ge "$CONNECTIONS" ] || die "rate must be at least one request/s per connection"
case $HEADERS in
  full) FULL_HEADERS=1 ;;
  minimal) FULL_HEADERS=0 ;;
  *) die "headers must be full or minimal, not '$HEADERS'" ;;
esac
[ "$CONNECTIONS" -ge "$THREADS" ] || die "wrk needs at least one connection per thread"
for s in $SCENARIOS; do
  declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s' (have: $(list_scenarios))"
done
if [ -n "$JSON_OUT" ]; then
  # Fail before the run, not after it, if the file cannot be written.
  [ -d "$(dirname "$JSON_OUT")" ] || die "--json: no directory $(dirname "$JSON_OUT")"
  JSON_OUT=$(cd "$(dirname "$JSON_OUT")" && pwd)/$(basename "$JSON_OUT")
fi

ensure_packages
NGINX=$(find_bin nginx)
HAPROXY=$(find_bin haproxy)
WRK=$(find_bin wrk)
H2LOAD=$(find_bin h2load)
CLK_TCK=$(getconf CLK_TCK)

taskset -c "$PROXY_CPU" true 2>/dev/null || die "PROXY_CPU=$PROXY_CPU is not a usable core"
taskset -c "$LOAD_CPU" true 2>/dev/null || die "LOAD_CPU=$LOAD_CPU is not a usable core"
[ "$PROXY_CPU" != "$LOAD_CPU" ] ||
  warn "proxy and load share core $PROXY_CPU: the proxies compete with wrk and the upstream"

if [ "$SKIP_FEDGATE" != 1 ]; then
  # Build when asked, or when the workspace's own binary is missing; a binary named
  # through FEDGATE is used as it is.
  if [ "$BUILD" = 1 ] || { [ ! -x "$FEDGATE" ] && [ "$FEDGATE" = "$DEFAULT_FEDGATE" ]; }; then
    (cd "$REPO_DIR" && cargo build --release -p fedgate)
  fi
  if [[ " $SCENARIOS " == *" plugins"* ]]; then
    # The plugin components, built as the test command builds them.
    for ws in plugins tests/plugins; do
      (cd "$REPO_DIR" && cargo build -q --release --target wasm32-wasip2 \
        --manifest-path "$ws/Cargo.toml" --target-dir target)
    done
  fi
  [ -x "$FEDGATE" ] || die "no fedgate binary at $FEDGATE"
  [ -z "$FEDGATE_BASELINE" ] || [ -x "$FEDGATE_BASELINE" ] || die "no fedgate binary at $FEDGATE_BASELINE"
  FEDGATE_VERSION=$("$FEDGATE" --version 2>&1) || die "$FEDGATE does not run: $FEDGATE_VERSION"
  FEDGATE_VERSION=${FEDGATE_VERSION%%$'\n'*}
else
  FEDGATE_VERSION=skipped
fi
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
HAPROXY_VERSION=$("$HAPROXY" -v 2>&1 | head -n 1 | awk '{ print $3 }')
# wrk -v exits 1 after printing its version.
WRK_VERSION=$({ "$WRK" -v 2>&1 || true; } | head -n 1 | awk '{ print $2 }')

# 50 client connections, as many upstream ones, per proxy: well within the usual limit,
# but larger --connections values need more descriptors than a default soft limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fedgate-bench.XXXXXX")

# Stops every process started here and removes the temporary directory, on any exit:
# normal, failure (set -e), Ctrl-C or SIGTERM. On failure the servers' logs are shown.
cleanup() {
  local rc=$? pid log
  trap - EXIT INT TERM
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do stop_pid "$pid"; done
  # A failure shows the servers' logs; an interrupt (130, 143) does not need them.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; then
    for log in "$WORK"/*/*.log "$WORK"/*.log; do
      [ -s "$log" ] || continue
      echo "--- $log" >&3
      tail -n 10 "$log" >&3
    done
  fi
  if [ "$KEEP_WORK" = 1 ]; then
    echo "bench: kept $WORK" >&3
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&3; exit 130' INT
trap 'echo "bench: terminated" >&3; exit 143' TERM

read -r UP_PORT NG_PORT HA_PORT <<<"$(free_ports 3)"

echo "fedgate reverse-proxy benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores:" \
  "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "fedgate: $FEDGATE_VERSION; nginx $NGINX_VERSION; HAProxy $HAPROXY_VERSION; wrk $WRK_VERSION"
if [ "$FULL_HEADERS" = 1 ]; then
  echo "headers: full (nginx and HAProxy add every field fedgate adds by default)"
else
  echo "headers: minimal (nginx and HAProxy add only X-Forwarded-For; fedgate its full set)"
fi

# The upstream, on the load core.
mkdir -p "$WORK/upstream"
render "$BENCH_DIR/conf/upstream-nginx.conf" "$WORK/upstream/nginx.conf" \
  DIR="$WORK/upstream" PORT="$UP_PORT"
start_bg "$WORK/upstream/stderr.log" "$LOAD_CPU" \
  "$NGINX" -p "$WORK/upstream/" -e "$WORK/upstream/error.log" -c "$WORK/upstream/nginx.conf"
UP_PID=$STARTED_PID
wait_ready "http://127.0.0.1:$UP_PORT/" "$UP_PID" "$WORK/upstream/error.log"
UP_BODY=$(curl --noproxy '*' -fsS --max-time 2 "http://127.0.0.1:$UP_PORT/users/alice")

# nginx and HAProxy run for the whole benchmark; idle, they cost the others nothing.
mkdir -p "$WORK/nginx" "$WORK/haproxy"
render "$BENCH_DIR/conf/nginx-proxy.conf" "$WORK/nginx/nginx.conf" \
  DIR="$WORK/nginx" PORT="$NG_PORT" UPSTREAM_PORT="$UP_PORT" \
  HEADERS_CONF="$BENCH_DIR/conf/nginx-headers-$HEADERS.conf"
start_bg "$WORK/nginx/stderr.log" "$PROXY_CPU" \
  "$NGINX" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
NG_PID=$STARTED_PID
render "$BENCH_DIR/conf/haproxy.cfg" "$WORK/haproxy/haproxy.cfg" \
  PORT="$HA_PORT" UPSTREAM_PORT="$UP_PORT" FULL_HEADERS="$FULL_HEADERS"
# -db: stay in the foreground, a single process, so $! is the process doing the work.
start_bg "$WORK/haproxy/haproxy.log" "$PROXY_CPU" "$HAPROXY" -db -f "$WORK/haproxy/haproxy.cfg"
HA_PID=$STARTED_PID
wait_ready "http://127.0.0.1:$NG_PORT/" "$NG_PID" "$WORK/nginx/error.log"
wait_ready "http://127.0.0.1:$HA_PORT/" "$HA_PID" "$WORK/haproxy/haproxy.log"
check_forwards nginx "$NG_PORT"
check_forwards haproxy "$HA_PORT"
[ "$FULL_HEADERS" = 0 ] || {
  check_forwarding nginx "$NG_PORT"
  check_forwarding haproxy "$HA_PORT"
}

for s in $SCENARIOS; do
  "scenario_$s"
done

if [ -n "$JSON_OUT" ]; then
  write_json "$JSON_OUT"
  echo
  echo "results written to $JSON_OUT"
fi
