#!/usr/bin/env bash
# Start-up benchmark: how long fedgate takes from exec to its first 200 on /ready with the
# four shipped plugins, in three ways, ROUNDS times each, one after the other:
#   - no cache: no server.plugin_cache, every start compiles the four components;
#   - first start: server.plugin_cache set to an empty directory (compiles and stores);
#   - cached restart: the same directory again (loads the stored machine code).
# Prints each start, the median, min and max per way, and the plugins' own load times
# (the "plugin loaded" log lines). Not part of CI.
#
#   bash bench/startup.sh              # 7 rounds
#   ROUNDS=15 bash bench/startup.sh --build
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
ROUNDS=${ROUNDS:-7}
FEDGATE=${FEDGATE:-$REPO_DIR/target/release/fedgate}
WASM_DIR=$REPO_DIR/target/wasm32-wasip2/release
WORK=${STARTUP_DIR:-$REPO_DIR/target/startup}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "startup: ROUNDS must be a positive integer" >&2; exit 1; }
if [ "${1:-}" = --build ] || [ ! -x "$FEDGATE" ]; then
  (cd "$REPO_DIR" && cargo build --release --locked -p fedgate)
fi
for p in request_policy activitypub_metrics moderation_events upstream_slo; do
  if [ "${1:-}" = --build ] || [ ! -f "$WASM_DIR/$p.wasm" ]; then
    (cd "$REPO_DIR" && cargo build --release --locked --target wasm32-wasip2 \
      --manifest-path plugins/Cargo.toml --target-dir target)
    break
  fi
done

rm -rf "$WORK" && mkdir -p "$WORK"
exec python3 - "$FEDGATE" "$BENCH_DIR/conf/startup/fedgate.toml" "$WASM_DIR" "$WORK" "$ROUNDS" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, time, urllib.request

fedgate, template, wasm, work, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def start(cache, tag):
    admin, listen = free_port(), free_port()
    cache_line = f'plugin_cache = "{cache}"' if cache else ""
    text = open(template).read().replace("@ADMIN@", str(admin)).replace("@LISTEN@", str(listen)) \
        .replace("@CACHE_LINE@", cache_line).replace("@WASM@", wasm)
    conf = os.path.join(work, f"{tag}.toml")
    open(conf, "w").write(text)
    log = open(os.path.join(work, f"{tag}.log"), "w")
    url = f"http://127.0.0.1:{admin}/ready"
    began = time.perf_counter()
    proc = subprocess.Popen([fedgate, "run", "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    while True:
        if proc.poll() is not None:
            sys.exit(f"startup: fedgate exited with {proc.returncode}; see {log.name}")
        if time.perf_counter() - began > 30:
            proc.kill()
            sys.exit(f"startup: not ready within 30 s; see {log.name}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        time.sleep(0.002)
    ready = (time.perf_counter() - began) * 1000
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    log.close()
    loads = []
    for line in open(log.name):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        f = j.get("fields", j)
        if f.get("message") == "plugin loaded":
            loads.append(int(f.get("load_ms", 0)))
    return ready, loads

results = {"no cache": [], "first start": [], "cached restart": []}
loads = {k: [] for k in results}
for r in range(1, rounds + 1):
    cache = os.path.join(work, f"cache-{r}")
    for way, c in (("no cache", None), ("first start", cache), ("cached restart", cache)):
        ms, l = start(c, f"{way.replace(' ', '-')}-{r}")
        results[way].append(ms)
        loads[way].append(max(l) if l else 0)
        print(f"round {r}  {way:15} ready after {ms:7.1f} ms   (slowest plugin load {max(l) if l else 0} ms)", flush=True)

print()
print(f"{'start':15} {'median ms':>10} {'min':>8} {'max':>8}   slowest plugin load, median ms")
for way, v in results.items():
    print(f"{way:15} {statistics.median(v):10.1f} {min(v):8.1f} {max(v):8.1f}   {statistics.median(loads[way]):.0f}")
PY
