#!/usr/bin/env bash
# Soak benchmark: fedgate under steady mixed federation traffic for a long time (default
# 10 minutes), reloaded every 10 s, with a plugin reloaded every 60 s and one of its two
# upstream endpoints killed and restarted every 20 s. Samples the gateway's memory and
# descriptors every 10 s and checks at the end that they stay flat and that no request
# failed other than those the soak provoked. Not part of CI.
#
#   bash bench/soak.sh                    # 10 minutes
#   DURATION=90 bash bench/soak.sh        # a quick check (the first 60 s are warm-up)
#   RATE=1500 CONNECTIONS=64 bash bench/soak.sh --build
#
# What runs, all on 127.0.0.1 (ports chosen free at start):
#   - fedgate (target/release/fedgate) with bench/conf/soak/fedgate.toml: an inbox route
#     verifying HTTP signatures in observe mode against a trust-store RSA key made here
#     with openssl; plugins request-policy and upstream-slo on every route and
#     activitypub-metrics on the inbox route; one upstream of two endpoints with active
#     health checks, outlier detection, a circuit breaker and retries;
#   - two `fedgate demo-upstream` servers, the endpoints; the second is killed (SIGKILL)
#     every FLAP_PERIOD s and started again FLAP_DOWN s later;
#   - bench/soak.py client: RATE requests/s over CONNECTIONS keep-alive connections, a mix
#     of deliveries signed as Mastodon signs them (each signed when sent), actor GETs,
#     deliveries with a bad signature, an unknown key, a wrong digest or no signature, and
#     GETs request-policy refuses (its Python venv is target/soak-venv, with cryptography).
#   Every RELOAD_EVERY s the config is rewritten with another rate-limit value and fedgate
#   gets SIGHUP; every PLUGIN_EVERY s that reload also changes a plugin, alternately by
#   replacing activitypub-metrics' component with a changed file (renamed over the old)
#   and by changing request-policy's section.
#
# Output in target/soak/ (kept after the run): samples.csv (t_s, VmRSS in KiB, open fds,
# threads, client requests/non-2xx/failed so far, fedgate_requests_total, reloads),
# events.log (reloads, outages), metrics-start.txt and metrics-end.txt, fedgate.log,
# requests.bin (every request's times, class and status), the rendered config in run/.
# The report (bench/soak.py report) prints the curve and PASS/FAIL for: RSS after the
# warm-up within RSS_TOLERANCE % of its median, descriptors flat, no unexpected status,
# no request without a response, no failure across a reload, the reload counters, the
# request totals and the signature results; the script exits 1 when any check fails.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

DURATION=${DURATION:-600}          # seconds of load (a number, or with s/m/h: 90s, 10m)
RATE=${RATE:-600}                  # offered requests/s, all classes together
CONNECTIONS=${CONNECTIONS:-32}     # client keep-alive connections
MIX=${MIX:-}                       # request classes and weights (bench/soak.py); empty: default
SAMPLE_EVERY=${SAMPLE_EVERY:-10}   # seconds between two samples of RSS and fds
RELOAD_EVERY=${RELOAD_EVERY:-10}   # seconds between two SIGHUPs
PLUGIN_EVERY=${PLUGIN_EVERY:-60}   # seconds between two plugin reloads
FLAP_PERIOD=${FLAP_PERIOD:-20}     # seconds between two kills of the flapping endpoint
FLAP_DOWN=${FLAP_DOWN:-8}          # seconds it stays down each time
WARMUP=${WARMUP:-60}               # seconds excluded from the RSS and fd checks
RSS_TOLERANCE=${RSS_TOLERANCE:-5}  # % the RSS may deviate from its post-warm-up median
FD_TOLERANCE=${FD_TOLERANCE:-}     # descriptors the count may grow after the warm-up;
                                   # empty: CONNECTIONS / 2, at least 16
SOAK_DIR=${SOAK_DIR:-$REPO_DIR/target/soak}
DEFAULT_FEDGATE=$REPO_DIR/target/release/fedgate
FEDGATE=${FEDGATE:-$DEFAULT_FEDGATE}
VENV=${SOAK_VENV:-$REPO_DIR/target/soak-venv}
WASM_DIR=$REPO_DIR/target/wasm32-wasip2/release
PLUGINS=(request_policy activitypub_metrics upstream_slo)
BUILD=0

usage() {
  cat <<EOF
usage: bash bench/soak.sh [--build]

  --build    rebuild fedgate and the plugins first (otherwise built only when missing)

Environment: DURATION ($DURATION s), RATE ($RATE/s), CONNECTIONS ($CONNECTIONS), MIX,
SAMPLE_EVERY ($SAMPLE_EVERY), RELOAD_EVERY ($RELOAD_EVERY), PLUGIN_EVERY ($PLUGIN_EVERY),
FLAP_PERIOD ($FLAP_PERIOD), FLAP_DOWN ($FLAP_DOWN), WARMUP ($WARMUP),
RSS_TOLERANCE ($RSS_TOLERANCE %), FD_TOLERANCE (CONNECTIONS / 2, at least 16),
SOAK_DIR (target/soak),
FEDGATE (target/release/fedgate), SOAK_VENV (target/soak-venv).
EOF
}

exec 3>&2
die() { echo "soak: $*" >&3; exit 1; }
log() { echo "soak: $*" >&3; }

while [ $# -gt 0 ]; do
  case $1 in
    --build) BUILD=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done

# seconds VALUE: 90, 90s, 10m or 1h as a number of seconds.
seconds() {
  case $1 in
    *h) echo $((${1%h} * 3600)) ;;
    *m) echo $((${1%m} * 60)) ;;
    *s) echo $((${1%s})) ;;
    *) echo $(($1)) ;;
  esac
}
[[ $DURATION =~ ^[0-9]+[smh]?$ ]] || die "DURATION must be seconds (90, 90s, 10m), not '$DURATION'"
DURATION=$(seconds "$DURATION")
for v in DURATION RATE CONNECTIONS SAMPLE_EVERY RELOAD_EVERY PLUGIN_EVERY FLAP_PERIOD FLAP_DOWN; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
[ "$FLAP_DOWN" -lt "$FLAP_PERIOD" ] || die "FLAP_DOWN must be shorter than FLAP_PERIOD"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a number of seconds, not '$WARMUP'"
[ -n "$FD_TOLERANCE" ] || FD_TOLERANCE=$((CONNECTIONS / 2 > 16 ? CONNECTIONS / 2 : 16))

# ---------------------------------------------------------------------------------------
# Tools, binaries, plugins, Python
# ---------------------------------------------------------------------------------------

ensure_packages() {
  local missing=() sudo=()
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  command -v openssl >/dev/null || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "missing ${missing[*]}; run as root or install sudo"
    sudo=(sudo)
  fi
  log "installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" 2>/dev/null || {
      local sudo=()
      [ "$(id -u)" -eq 0 ] || sudo=(sudo)
      "${sudo[@]}" apt-get update -qq
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv "$VENV"
    }
  fi
  "$VENV/bin/python" -c 'import cryptography' 2>/dev/null ||
    "$VENV/bin/pip" install -q --disable-pip-version-check 'cryptography==50.0.2'
}

ensure_builds() {
  local p missing=0
  if [ "$BUILD" = 1 ] || { [ ! -x "$FEDGATE" ] && [ "$FEDGATE" = "$DEFAULT_FEDGATE" ]; }; then
    (cd "$REPO_DIR" && cargo build --release -p fedgate)
  fi
  [ -x "$FEDGATE" ] || die "no fedgate binary at $FEDGATE"
  for p in "${PLUGINS[@]}"; do [ -f "$WASM_DIR/$p.wasm" ] || missing=1; done
  if [ "$BUILD" = 1 ] || [ "$missing" = 1 ]; then
    rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
    (cd "$REPO_DIR" && cargo build --release --target wasm32-wasip2 \
      --manifest-path plugins/Cargo.toml --target-dir target)
  fi
  for p in "${PLUGINS[@]}"; do
    [ -f "$WASM_DIR/$p.wasm" ] || die "no plugin component at $WASM_DIR/$p.wasm"
  done
}

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

# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------

FG_PID= STABLE_PID= FLAP_PID= CLIENT_PID= REPORTING=0

alive() {
  local state
  [ -n "$1" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d ' ' -f 1) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# stop_pid PID [SIGNAL]: SIGNAL (TERM), then KILL if still there after 5 s; reaps it.
stop_pid() {
  local pid=$1 sig=${2:-TERM} _
  [ -n "$pid" ] || return 0
  if alive "$pid"; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      alive "$pid" || break
      sleep 0.1
    done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$CLIENT_PID"
  stop_pid "$FG_PID"
  stop_pid "$FLAP_PID"
  stop_pid "$STABLE_PID"
  if [ "$REPORTING" = 0 ] && [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ] &&
    [ -s "$SOAK_DIR/fedgate.log" ]; then
    echo "--- $SOAK_DIR/fedgate.log (last lines)" >&3
    tail -n 5 "$SOAK_DIR/fedgate.log" >&3
  fi
  exit "$rc"
}

http_ok() { curl --noproxy '*' -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

wait_ready() {
  local url=$1 pid=$2 log=$3 _
  for _ in $(seq 1 100); do
    http_ok "$url" && return 0
    alive "$pid" || { tail -n 20 "$log" >&3 || true; die "process $pid exited before $url answered"; }
    sleep 0.1
  done
  tail -n 20 "$log" >&3 || true
  die "timed out waiting for $url"
}

start_flapping() {
  "$FEDGATE" demo-upstream --listen "127.0.0.1:$FLAP_PORT" >>"$SOAK_DIR/flapping.log" 2>&1 3>&- &
  FLAP_PID=$!
}

# event KIND [DETAIL]: a line of events.log, stamped with the epoch in microseconds.
event() { echo "$EPOCHREALTIME $*" >>"$SOAK_DIR/events.log"; }

# elapsed_ms: milliseconds since the load started.
elapsed_ms() { local now=${EPOCHREALTIME/./}; echo $(((now - T0_US) / 1000)); }

# ---------------------------------------------------------------------------------------
# Config, reloads, samples
# ---------------------------------------------------------------------------------------

# render_config RATE POLICY_MAX_BODY: writes run/fedgate.toml from the template, through a
# temporary file renamed over it.
render_config() {
  sed -e "s|@PORT@|$PORT|g" -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" \
    -e "s|@STABLE_PORT@|$STABLE_PORT|g" -e "s|@FLAPPING_PORT@|$FLAP_PORT|g" \
    -e "s|@RATE@|$1|g" -e "s|@POLICY_MAX_BODY@|$2|g" \
    "$BENCH_DIR/conf/soak/fedgate.toml" >"$RUN/fedgate.toml.next"
  if grep -n '@[A-Z_][A-Z_]*@' "$RUN/fedgate.toml.next" >&3; then
    die "bench/conf/soak/fedgate.toml: placeholders left unfilled"
  fi
  mv "$RUN/fedgate.toml.next" "$RUN/fedgate.toml"
}

# replace_component NAME GENERATION: a new activitypub-metrics file: the built component
# with a custom section naming the generation appended (a valid component, other bytes),
# written beside the old one and renamed over it.
replace_component() {
  python3 - "$WASM_DIR/$1.wasm" "$RUN/plugins/$1.wasm.next" "$2" <<'PY'
import sys
src, dst, gen = sys.argv[1], sys.argv[2], sys.argv[3]
def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
name = b"fedgate-soak-generation"
payload = leb(len(name)) + name + gen.encode()
with open(src, "rb") as f:
    data = f.read()
with open(dst, "wb") as f:
    f.write(data + b"\x00" + leb(len(payload)) + payload)
PY
  mv "$RUN/plugins/$1.wasm.next" "$RUN/plugins/$1.wasm"
}

RELOADS=0 PLUGIN_RELOADS=0
RATE_VALUES=(50000 60000)
POLICY_VALUES=(1048576 1048575)
POLICY_GEN=0

# reload: a SIGHUP after rewriting the config with the other rate value, and, once every
# PLUGIN_EVERY s, a plugin change with it.
reload() {
  local plugin=$1 detail=config
  RELOADS=$((RELOADS + 1))
  if [ "$plugin" = 1 ]; then
    PLUGIN_RELOADS=$((PLUGIN_RELOADS + 1))
    if [ $((PLUGIN_RELOADS % 2)) = 1 ]; then
      replace_component activitypub_metrics "$PLUGIN_RELOADS"
      detail="plugin=ap file"
    else
      POLICY_GEN=$((POLICY_GEN + 1))
      detail="plugin=policy config"
    fi
  fi
  render_config "${RATE_VALUES[$((RELOADS % 2))]}" "${POLICY_VALUES[$((POLICY_GEN % 2))]}"
  # Stamped first: the reload starts after this moment.
  event reload "$detail"
  kill -HUP "$FG_PID"
}

# descriptors PID: "ALL SOCKETS", the open descriptors of PID and how many are sockets.
descriptors() {
  find "/proc/$1/fd" -mindepth 1 -maxdepth 1 -printf '%l\n' 2>/dev/null |
    awk '/^socket:/ { s++ } END { printf "%d %d", NR, s }'
}

# sample T: a line of samples.csv for T s into the load.
sample() {
  local t=$1 rss fds sockets threads stats metrics
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$FG_PID/status")
  threads=$(awk '/^Threads:/ { print $2 }' "/proc/$FG_PID/status")
  read -r fds sockets <<<"$(descriptors "$FG_PID")"
  stats=$(python3 -c '
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    s = {}
print(s.get("requests", 0), s.get("non2xx", 0), s.get("failed", 0))' "$SOAK_DIR/client-stats.json")
  metrics=$(curl --noproxy '*' -fsS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
    /^fedgate_requests_total[{ ]/ { r += $NF }
    /^fedgate_config_reloads_total[{ ]/ && /result="success"/ { c += $NF }
    /^fedgate_plugin_reloads_total[{ ]/ && /result="success"/ { p += $NF }
    END { printf "%d,%d,%d", r, c, p }') || metrics=",,"
  echo "$t,$rss,$fds,$sockets,$threads,${stats// /,},$metrics" >>"$SOAK_DIR/samples.csv"
  printf 'soak: t=%4ss RSS %6.1f MiB, %3s fds, %s requests\n' "$t" \
    "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$fds" "${stats%% *}" >&3
}

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

ensure_packages
ensure_builds
ensure_venv
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

rm -rf "$SOAK_DIR"
RUN=$SOAK_DIR/run
mkdir -p "$RUN/plugins" "$RUN/keys"
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$RUN/keys/relay.key.pem" 2>/dev/null
openssl pkey -in "$RUN/keys/relay.key.pem" -pubout -out "$RUN/keys/relay.pub.pem"
for p in "${PLUGINS[@]}"; do cp "$WASM_DIR/$p.wasm" "$RUN/plugins/"; done

read -r PORT ADMIN_PORT STABLE_PORT FLAP_PORT <<<"$(free_ports 4)"

"$FEDGATE" demo-upstream --listen "127.0.0.1:$STABLE_PORT" >"$SOAK_DIR/stable.log" 2>&1 3>&- &
STABLE_PID=$!
start_flapping
wait_ready "http://127.0.0.1:$STABLE_PORT/health" "$STABLE_PID" "$SOAK_DIR/stable.log"
wait_ready "http://127.0.0.1:$FLAP_PORT/health" "$FLAP_PID" "$SOAK_DIR/flapping.log"

render_config "${RATE_VALUES[0]}" "${POLICY_VALUES[0]}"
"$FEDGATE" check --config "$RUN/fedgate.toml" >"$SOAK_DIR/check.txt" 2>&1 || {
  cat "$SOAK_DIR/check.txt" >&3
  die "fedgate check refuses $RUN/fedgate.toml"
}
"$FEDGATE" run --config "$RUN/fedgate.toml" >"$SOAK_DIR/fedgate.log" 2>&1 3>&- &
FG_PID=$!
wait_ready "http://127.0.0.1:$ADMIN_PORT/ready" "$FG_PID" "$SOAK_DIR/fedgate.log"
http_ok "http://127.0.0.1:$PORT/users/alice" || die "fedgate does not forward GET /users/alice"

echo "fedgate soak, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; $("$FEDGATE" --version 2>&1 | head -n 1)"
echo "  ${DURATION} s at ${RATE} requests/s over ${CONNECTIONS} connections; reload every ${RELOAD_EVERY} s," \
  "plugin reload every ${PLUGIN_EVERY} s, endpoint 127.0.0.1:$FLAP_PORT down ${FLAP_DOWN} s of every ${FLAP_PERIOD} s"
echo "  fedgate pid $FG_PID on 127.0.0.1:$PORT (admin $ADMIN_PORT); output in $SOAK_DIR"

echo "t_s,rss_kib,fds,sockets,threads,client_requests,client_non2xx,client_failed,gateway_requests,config_reloads,plugin_reloads" \
  >"$SOAK_DIR/samples.csv"
curl --noproxy '*' -fsS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$SOAK_DIR/metrics-start.txt"

# The client goes on TAIL s past the end, so the last sample is taken under load too.
TAIL=3
client_args=(--url "http://127.0.0.1:$PORT" --duration "$((DURATION + TAIL))" --rate "$RATE"
  --connections "$CONNECTIONS" --key "$RUN/keys/relay.key.pem" --out "$SOAK_DIR")
[ -z "$MIX" ] || client_args+=(--mix "$MIX")
T0_US=${EPOCHREALTIME/./}
event load_start
"$VENV/bin/python" "$BENCH_DIR/soak.py" client "${client_args[@]}" >"$SOAK_DIR/client.log" 2>&1 3>&- &
CLIENT_PID=$!
sample 0

# The schedule, in milliseconds since the load started. The first reload comes
# RELOAD_EVERY / 2 s in (half-way between two samples at the default settings); the first
# plugin change goes with the first reload after PLUGIN_EVERY s; the endpoint goes down 2 s
# into each flap period from the second one on.
next_sample=$((SAMPLE_EVERY * 1000))
next_reload=$((RELOAD_EVERY * 500))
next_plugin=$((PLUGIN_EVERY * 1000))
next_kill=$((FLAP_PERIOD * 1000 + 2000))
next_up=0
end=$((DURATION * 1000))
while :; do
  now=$(elapsed_ms)
  alive "$FG_PID" || die "fedgate exited during the soak (log: $SOAK_DIR/fedgate.log)"
  alive "$CLIENT_PID" || { cat "$SOAK_DIR/client.log" >&3; die "the client exited early"; }
  if [ "$now" -ge "$next_sample" ]; then
    sample $((next_sample / 1000))
    next_sample=$((next_sample + SAMPLE_EVERY * 1000))
  fi
  # The sample at DURATION is the last; nothing is reloaded or killed after it.
  [ "$now" -lt "$end" ] || break
  if [ "$now" -ge "$next_reload" ]; then
    if [ "$now" -ge "$next_plugin" ]; then
      reload 1
      next_plugin=$((next_plugin + PLUGIN_EVERY * 1000))
    else
      reload 0
    fi
    next_reload=$((next_reload + RELOAD_EVERY * 1000))
  fi
  if [ "$now" -ge "$next_kill" ]; then
    # Stamped first: requests cut off by the kill end after this moment.
    event flap_down "127.0.0.1:$FLAP_PORT"
    kill -KILL "$FLAP_PID" 2>/dev/null || true
    wait "$FLAP_PID" 2>/dev/null || true
    next_up=$((next_kill + FLAP_DOWN * 1000))
    next_kill=$((next_kill + FLAP_PERIOD * 1000))
  fi
  if [ "$next_up" -gt 0 ] && [ "$now" -ge "$next_up" ]; then
    start_flapping
    event flap_up "127.0.0.1:$FLAP_PORT"
    next_up=0
  fi
  sleep 0.2
done
# A last sample in the schedule when DURATION is not a multiple of SAMPLE_EVERY.
[ $(((next_sample - SAMPLE_EVERY * 1000) / 1000)) -eq "$DURATION" ] || sample "$DURATION"

# The client stops sending TAIL s later and writes its records.
for _ in $(seq 1 $(((TAIL + 30) * 10))); do alive "$CLIENT_PID" || break; sleep 0.1; done
alive "$CLIENT_PID" && die "the client did not finish within 30 s of its end"
wait "$CLIENT_PID" || { cat "$SOAK_DIR/client.log" >&3; die "the client failed"; }
CLIENT_PID=
event load_end
curl --noproxy '*' -fsS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$SOAK_DIR/metrics-end.txt"
# Once the client's connections are closed: what the gateway holds idle.
sleep 2
read -r fds sockets <<<"$(descriptors "$FG_PID")"
echo "rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$FG_PID/status") fds=$fds sockets=$sockets" \
  >"$SOAK_DIR/idle.txt"
stop_pid "$FG_PID"
FG_PID=
REPORTING=1

rc=0
python3 "$BENCH_DIR/soak.py" report --dir "$SOAK_DIR" --warmup "$WARMUP" \
  --interval "$SAMPLE_EVERY" --reload-every "$RELOAD_EVERY" --plugin-every "$PLUGIN_EVERY" \
  --rss-tolerance "$RSS_TOLERANCE" --fd-tolerance "$FD_TOLERANCE" || rc=$?
exit "$rc"
