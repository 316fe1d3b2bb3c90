#!/usr/bin/env bash
# Reverse-proxy benchmark: fedgate, nginx and HAProxy in front of the same upstream, each
# pinned to the same single core with one worker, driven by the same wrk load in one run.
#
#   bash bench/run.sh                 # GET and POST scenarios, 10 s each
#   DURATION=30s CONNECTIONS=100 bash bench/run.sh
#
# Prints requests/s, p50, p99 and CPU time per request of the proxy process, then the
# fedgate/HAProxy and fedgate/nginx ratios. Traffic only ever goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-50}
PROXY_CPU=${PROXY_CPU:-0}     # the core every proxy under test is pinned to
LOAD_CPU=${LOAD_CPU:-1}       # wrk and the upstream share the other core
JSON_OUT=${JSON_OUT:-}
FEDGATE=${FEDGATE:-target/release/fedgate}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

if [ ! -x "$FEDGATE" ] || [ "${1:-}" = "--build" ]; then
  cargo build --release -p fedgate
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { # url
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; return 1
}

UP_PORT=$(free_port); FG_PORT=$(free_port); FG_ADMIN=$(free_port); NG_PORT=$(free_port); HA_PORT=$(free_port)

# The upstream: nginx answering a fixed 100-byte body, on the load core.
mkdir -p "$WORK/up" "$WORK/ng"
BODY=$(printf 'x%.0s' $(seq 1 100))
cat > "$WORK/up/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/up;
  proxy_temp_path $WORK/up; fastcgi_temp_path $WORK/up; uwsgi_temp_path $WORK/up; scgi_temp_path $WORK/up;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { client_max_body_size 10m; client_body_buffer_size 64k; return 200 "$BODY"; }
  }
}
CONF
taskset -c "$LOAD_CPU" "$NGINX" -c "$WORK/up/nginx.conf" -p "$WORK/up" & PIDS+=($!)

# fedgate: one worker thread, full metrics, access log off (as for the peers).
cat > "$WORK/fedgate.toml" <<CONF
[server]
workers = 1
access_log = false
log_level = "warn"
[admin]
address = "127.0.0.1:$FG_ADMIN"
[reload]
watch = false
[[listeners]]
name = "bench"
address = "127.0.0.1:$FG_PORT"
[upstreams.backend]
endpoints = ["http://127.0.0.1:$UP_PORT"]
[[routes]]
name = "inbox"
path_prefix = "/users/alice/inbox"
methods = ["POST"]
upstream = "backend"
[[routes]]
name = "all"
path_prefix = "/"
upstream = "backend"
CONF
taskset -c "$PROXY_CPU" "$FEDGATE" run --config "$WORK/fedgate.toml" & FG_PID=$!; PIDS+=($FG_PID)

# nginx as a reverse proxy, one worker, upstream keep-alive.
cat > "$WORK/ng/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/ng/nginx.pid;
error_log $WORK/ng/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/ng;
  proxy_temp_path $WORK/ng; fastcgi_temp_path $WORK/ng; uwsgi_temp_path $WORK/ng; scgi_temp_path $WORK/ng;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NG_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      client_max_body_size 10m;
      client_body_buffer_size 64k;
    }
  }
}
CONF
taskset -c "$PROXY_CPU" "$NGINX" -c "$WORK/ng/nginx.conf" -p "$WORK/ng" & NG_PID=$!; PIDS+=($NG_PID)

# HAProxy, one thread, connection reuse.
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:$HA_PORT
  default_backend be
backend be
  server up 127.0.0.1:$UP_PORT maxconn 1000
CONF
taskset -c "$PROXY_CPU" "$HAPROXY" -f "$WORK/haproxy.cfg" -db & HA_PID=$!; PIDS+=($HA_PID)

wait_http "http://127.0.0.1:$UP_PORT/"
wait_http "http://127.0.0.1:$FG_ADMIN/ready"
wait_http "http://127.0.0.1:$NG_PORT/"
wait_http "http://127.0.0.1:$HA_PORT/"

# A 2 KiB ActivityPub Create activity posted to an inbox.
python3 - "$WORK/post.lua" <<'PY'
import json, sys
note = {"id": "https://remote.example/users/bob/statuses/1", "type": "Note",
        "attributedTo": "https://remote.example/users/bob", "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "content": "<p>" + "hello fediverse " * 90 + "</p>"}
act = {"@context": "https://www.w3.org/ns/activitystreams", "id": "https://remote.example/users/bob/statuses/1/activity",
       "type": "Create", "actor": "https://remote.example/users/bob", "object": note}
body = json.dumps(act)[:2048]
body = body + " " * (2048 - len(body))
with open(sys.argv[1], "w") as f:
    f.write('wrk.method = "POST"\n')
    f.write('wrk.headers["Content-Type"] = "application/activity+json"\n')
    f.write("wrk.body = %s\n" % json.dumps(body))
PY

# utime+stime of a process and its children (nginx's master forks the worker that serves).
cpu_ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
TICK=$(getconf CLK_TCK)
RESULTS=()

# run_one NAME PORT PID PATH [LUA]
run_one() {
  local name=$1 port=$2 pid=$3 path=$4 lua=${5:-} args=()
  [ -n "$lua" ] && args=(-s "$lua")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "${args[@]}" "http://127.0.0.1:$port$path" >/dev/null
  local before after out
  before=$( [ "$pid" -gt 0 ] && cpu_ticks "$pid" || echo 0 )
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${args[@]}" "http://127.0.0.1:$port$path")
  after=$( [ "$pid" -gt 0 ] && cpu_ticks "$pid" || echo 0 )
  python3 - "$name" "$before" "$after" "$TICK" <<PY
import re, sys
name, before, after, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = """$out"""
if "Requests/sec" not in out:
    sys.exit(f"{name}: wrk produced no result:\n{out}")
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)", v)
    n, u = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
total = int(re.search(r"(\d+) requests in", out).group(1))
p50 = ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
errs = 0
m = re.search(r"Non-2xx or 3xx responses: (\d+)", out); errs += int(m.group(1)) if m else 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
errs += sum(map(int, m.groups())) if m else 0
cpu = (after - before) / tick * 1e6 / total if before or after else float("nan")
print(f"{name}\t{rps:.0f}\t{p50:.3f}\t{p99:.3f}\t{cpu:.1f}\t{errs}")
PY
}

for scenario in get post; do
  if [ "$scenario" = get ]; then path=/users/alice; lua=""; else path=/users/alice/inbox; lua="$WORK/post.lua"; fi
  echo
  echo "== $scenario $path ($CONNECTIONS connections, $DURATION, proxies on CPU $PROXY_CPU, wrk+upstream on CPU $LOAD_CPU)"
  printf "%-10s %10s %9s %9s %12s %7s\n" proxy "req/s" "p50 ms" "p99 ms" "CPU us/req" errors
  rows=()
  for p in "direct:$UP_PORT:0" "fedgate:$FG_PORT:$FG_PID" "nginx:$NG_PORT:$NG_PID" "haproxy:$HA_PORT:$HA_PID"; do
    IFS=: read -r name port pid <<<"$p"
    row=$(run_one "$name" "$port" "$pid" "$path" "$lua")
    rows+=("$row")
    IFS=$'\t' read -r n rps p50 p99 cpu errs <<<"$row"
    printf "%-10s %10s %9s %9s %12s %7s\n" "$n" "$rps" "$p50" "$p99" "$cpu" "$errs"
  done
  python3 - "$scenario" "${rows[@]}" <<'PY'
import sys
scenario, rows = sys.argv[1], [r.split("\t") for r in sys.argv[2:]]
d = {r[0]: r for r in rows}
fg, ha, ng = d["fedgate"], d["haproxy"], d["nginx"]
print(f"ratio fedgate/haproxy throughput {float(fg[1])/float(ha[1]):.2f}x, p99 {fg[3]} vs {ha[3]} ms")
print(f"ratio fedgate/nginx   throughput {float(fg[1])/float(ng[1]):.2f}x, p99 {fg[3]} vs {ng[3]} ms")
PY
  RESULTS+=("${rows[@]/#/$scenario	}")
done

if [ -n "$JSON_OUT" ]; then
  python3 - "$JSON_OUT" "${RESULTS[@]}" <<'PY'
import json, sys
keys = ["scenario", "proxy", "rps", "p50_ms", "p99_ms", "cpu_us_per_req", "errors"]
rows = [dict(zip(keys, r.split("\t"))) for r in sys.argv[2:]]
json.dump(rows, open(sys.argv[1], "w"), indent=2)
PY
fi

# Show that fedgate recorded every request it served.
echo
curl -fsS "http://127.0.0.1:$FG_ADMIN/metrics" | grep -E '^fedgate_requests_total' || true
