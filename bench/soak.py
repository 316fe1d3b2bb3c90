"""Load client and report of bench/soak.sh.

  soak.py client --url URL --duration S --rate R --connections C --key PEM --out DIR
      Sends a mix of requests at R requests/s over C keep-alive connections for S seconds
      and records every one of them (start, end, class, status) in DIR/requests.bin, so
      the report can place each against the reloads and the endpoint's outages. Writes
      DIR/client-stats.json four times a second (what the sampler reads) and DIR/client.json at
      the end. Needs `cryptography` (signing).

  soak.py report --dir DIR [--warmup S] [--rss-tolerance PCT] ...
      Prints the curve, the checks and their verdicts from the files the run left in DIR;
      exits 1 when a check fails.

Request classes (weights in --mix, e.g. "signed=50,get=30,badsig=5,..."):

  signed      POST /users/NAME/inbox, an activity signed draft-cavage RSA-SHA256 (as
              Mastodon signs: (request-target) host date digest content-type) with the
              trust-store key; observe mode forwards it: 202
  get         GET /users/NAME, the actor document: 200
  badsig      signed, then one byte of the signature flipped: result invalid, still 202
  unknownkey  signed under a key id the trust store does not hold: unknown_key, 202
  baddigest   signed, then a byte appended to the body after the Digest: digest_mismatch, 202
  unsigned    no Signature at all: missing, 202
  denied      GET with a User-Agent request-policy refuses: 403 from the plugin
"""

import argparse
import array
import asyncio
import base64
import bisect
import datetime
import email.utils
import hashlib
import json
import os
import random
import statistics
import sys
import time

HOST = "soak.example"
KEY_ID = "https://remote.soak.example/users/relay#main-key"
ACTOR = "https://remote.soak.example/users/relay"
UNKNOWN_KEY_ID = "https://stranger.soak.example/users/nobody#main-key"
USERS = ["alice", "bob", "carol", "dave"]
ACTIVITY_TYPES = ["Create", "Create", "Create", "Like", "Announce", "Follow", "Undo", "Update"]

CLASSES = ["signed", "get", "badsig", "unknownkey", "baddigest", "unsigned", "denied"]
EXPECTED = {
    "signed": 202,
    "get": 200,
    "badsig": 202,
    "unknownkey": 202,
    "baddigest": 202,
    "unsigned": 202,
    "denied": 403,
}
# The verification result fedgate must count for each class on the inbox route.
SIG_RESULT = {
    "signed": "valid",
    "badsig": "invalid",
    "unknownkey": "unknown_key",
    "baddigest": "digest_mismatch",
    "unsigned": "missing",
}
DEFAULT_MIX = "signed=45,get=30,badsig=5,unknownkey=4,baddigest=4,unsigned=7,denied=5"

# Status 0 in requests.bin: no HTTP response (connect error, reset, timeout, bad answer).
FAILED = 0


# ---------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------


class Signer:
    def __init__(self, key_file):
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        with open(key_file, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        self.padding = padding.PKCS1v15()
        self.hash = hashes.SHA256()

    def signature(self, key_id, method, path, headers, covered):
        lines = []
        for name in covered:
            if name == "(request-target)":
                lines.append(f"(request-target): {method.lower()} {path}")
            else:
                lines.append(f"{name}: {headers[name]}")
        raw = self.key.sign("\n".join(lines).encode(), self.padding, self.hash)
        return raw


def activity(n, kind):
    """An activity of about 1.5 KiB with an id of its own."""
    aid = f"{ACTOR}/activities/{n}"
    obj = {
        "id": f"{ACTOR}/statuses/{n}",
        "type": "Note",
        "attributedTo": ACTOR,
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "content": f"<p>soak delivery {n}</p>" + "<p>lorem ipsum dolor sit amet</p>" * 30,
    }
    if kind in ("Like", "Announce", "Follow"):
        target = obj["id"] if kind != "Follow" else f"https://{HOST}/users/alice"
        doc = {"type": kind, "object": target}
    elif kind == "Undo":
        doc = {"type": "Undo", "object": {"type": "Like", "id": f"{aid}/like", "actor": ACTOR}}
    else:
        doc = {"type": kind, "object": obj}
    doc = {"@context": "https://www.w3.org/ns/activitystreams", "id": aid, "actor": ACTOR, **doc}
    return json.dumps(doc, separators=(",", ":")).encode()


def build_request(cls, n, signer):
    """The bytes of request number n of class cls."""
    user = USERS[n % len(USERS)]
    head = {"host": HOST, "user-agent": "fedgate-soak/1", "x-request-id": f"soak-{cls}-{n}"}
    if cls in ("get", "denied"):
        path = f"/users/{user}"
        head["accept"] = "application/activity+json"
        if cls == "denied":
            head["user-agent"] = "denied-bot/2.0"
        return encode("GET", path, head, b"")
    path = f"/users/{user}/inbox"
    body = activity(n, ACTIVITY_TYPES[n % len(ACTIVITY_TYPES)])
    head["date"] = email.utils.formatdate(usegmt=True)
    head["content-type"] = "application/activity+json"
    head["accept"] = "application/activity+json"
    head["digest"] = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    if cls != "unsigned":
        covered = ["(request-target)", "host", "date", "digest", "content-type"]
        key_id = UNKNOWN_KEY_ID if cls == "unknownkey" else KEY_ID
        raw = bytearray(signer.signature(key_id, "POST", path, head, covered))
        if cls == "badsig":
            raw[len(raw) // 2] ^= 0x01
        head["signature"] = (
            f'keyId="{key_id}",algorithm="rsa-sha256",'
            f'headers="{" ".join(covered)}",signature="{base64.b64encode(bytes(raw)).decode()}"'
        )
    if cls == "baddigest":
        # Still the same JSON document, other bytes: the Digest no longer matches them.
        body += b" "
    return encode("POST", path, head, body)


def encode(method, path, headers, body):
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class BadResponse(Exception):
    pass


async def read_response(reader):
    """Reads one response; returns (status, keep_alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise BadResponse(f"status line {lines[0]!r}")
    status = int(parts[1])
    length = None
    chunked = False
    close = parts[0] == "HTTP/1.0"
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection":
            close = "close" in value.lower()
    if chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    elif status not in (204, 304) and not (100 <= status < 200):
        await reader.read()
        close = True
    return status, not close


class Recorder:
    def __init__(self, classes):
        self.start = array.array("d")
        self.end = array.array("d")
        self.status = array.array("H")
        self.cls = array.array("B")
        self.classes = classes
        self.errors = {}
        self.completed = 0
        self.non2xx = 0
        self.failed = 0
        self.unexpected_status = 0

    def add(self, cls_index, t0, t1, status, error=None):
        self.start.append(t0)
        self.end.append(t1)
        self.status.append(status)
        self.cls.append(cls_index)
        if status == FAILED:
            self.failed += 1
            self.errors[error] = self.errors.get(error, 0) + 1
        else:
            self.completed += 1
            if not 200 <= status < 300:
                self.non2xx += 1
            if status != EXPECTED[self.classes[cls_index]]:
                self.unexpected_status += 1


async def client(args):
    weights = parse_mix(args.mix)
    classes = list(CLASSES)
    choice = [classes.index(c) for c, w in weights.items() for _ in range(w)]
    rng = random.Random(args.seed)
    rng.shuffle(choice)
    signer = Signer(args.key)
    host, port = args.url.removeprefix("http://").rstrip("/").split(":")
    port = int(port)
    rec = Recorder(classes)
    loop = asyncio.get_running_loop()
    t_start = time.time()
    deadline = t_start + args.duration
    ticket = 0
    interval = 1.0 / args.rate

    def next_ticket():
        nonlocal ticket
        n = ticket
        ticket += 1
        return n

    async def worker(w):
        reader = writer = None
        while True:
            n = next_ticket()
            due = t_start + n * interval
            if due >= deadline:
                break
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ci = choice[n % len(choice)]
            data = build_request(classes[ci], n, signer)
            t0 = time.time()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port, limit=1 << 20), args.timeout
                    )
                writer.write(data)
                await writer.drain()
                status, keep = await asyncio.wait_for(read_response(reader), args.timeout)
                rec.add(ci, t0, time.time(), status)
                if not keep:
                    writer.close()
                    writer = None
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, BadResponse, ValueError) as e:
                kind = type(e).__name__
                if isinstance(e, asyncio.IncompleteReadError) and not e.partial:
                    kind = "closed_before_response"
                rec.add(ci, t0, time.time(), FAILED, kind)
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    async def stats():
        while True:
            write_json_atomic(os.path.join(args.out, "client-stats.json"), {
                "time": time.time(),
                "requests": rec.completed + rec.failed,
                "non2xx": rec.non2xx,
                "failed": rec.failed,
                "unexpected_status": rec.unexpected_status,
            })
            await asyncio.sleep(0.25)

    stats_task = loop.create_task(stats())
    await asyncio.gather(*(worker(w) for w in range(args.connections)))
    stats_task.cancel()
    t_end = time.time()
    write_json_atomic(os.path.join(args.out, "client-stats.json"), {
        "time": t_end, "requests": rec.completed + rec.failed, "non2xx": rec.non2xx,
        "failed": rec.failed, "unexpected_status": rec.unexpected_status,
    })
    with open(os.path.join(args.out, "requests.bin"), "wb") as f:
        n = len(rec.start)
        f.write(n.to_bytes(8, "little"))
        rec.start.tofile(f)
        rec.end.tofile(f)
        rec.status.tofile(f)
        rec.cls.tofile(f)
    write_json_atomic(os.path.join(args.out, "client.json"), {
        "started": t_start, "ended": t_end, "rate": args.rate, "connections": args.connections,
        "mix": weights, "classes": classes, "errors": rec.errors,
        "requests": rec.completed + rec.failed, "failed": rec.failed,
    })


def parse_mix(text):
    weights = {}
    for part in text.split(","):
        name, _, w = part.partition("=")
        name = name.strip()
        if name not in CLASSES:
            sys.exit(f"soak.py: unknown request class {name!r} in --mix (have: {', '.join(CLASSES)})")
        weights[name] = int(w)
    if not any(weights.values()):
        sys.exit("soak.py: --mix has no weight above 0")
    return weights


def write_json_atomic(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def load_requests(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        cols = []
        for code in ("d", "d", "H", "B"):
            a = array.array(code)
            a.fromfile(f, n)
            cols.append(a)
    return cols


def load_events(path):
    """events.log: `EPOCH KIND [DETAIL...]`, one a line, written by soak.sh."""
    events = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                events.append((float(parts[0]), parts[1], " ".join(parts[2:])))
    return events


def parse_metrics(path):
    """Prometheus text: {(name, frozenset(labels)): value}."""
    out = {}
    try:
        f = open(path)
    except FileNotFoundError:
        return out
    with f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            try:
                key, value = line.rsplit(" ", 1)
                value = float(value)
            except ValueError:
                continue
            name, _, rest = key.partition("{")
            labels = {}
            if rest:
                for item in split_labels(rest.rstrip("}")):
                    k, _, v = item.partition("=")
                    labels[k] = v.strip('"')
            out[(name, frozenset(labels.items()))] = value
    return out


def split_labels(text):
    items, cur, quoted, escaped = [], "", False, False
    for ch in text:
        if escaped:
            cur += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            cur += ch
        elif ch == "," and not quoted:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    return items


def msum(metrics, name, **match):
    total = 0.0
    for (n, labels), v in metrics.items():
        if n != name:
            continue
        d = dict(labels)
        if all(d.get(k) == val for k, val in match.items()):
            total += v
    return total


def by_label(metrics, name, label, **match):
    out = {}
    for (n, labels), v in metrics.items():
        if n != name:
            continue
        d = dict(labels)
        if all(d.get(k) == val for k, val in match.items()):
            out[d.get(label, "")] = out.get(d.get(label, ""), 0.0) + v
    return out


def slope(xs, ys):
    """Least-squares slope of ys over xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * len(values))) - 1))]


def report(args):
    d = args.dir
    ok = True
    verdicts = []

    def verdict(name, passed, detail):
        nonlocal ok
        ok = ok and passed is not False
        verdicts.append((name, passed))
        word = "SKIP" if passed is None else "PASS" if passed else "FAIL"
        print(f"  {word}  {name}: {detail}")

    meta = json.load(open(os.path.join(d, "client.json")))
    classes = meta["classes"]
    starts, ends, statuses, cls = load_requests(os.path.join(d, "requests.bin"))
    events = load_events(os.path.join(d, "events.log"))
    t0 = next(t for t, k, _ in events if k == "load_start")
    before = parse_metrics(os.path.join(d, "metrics-start.txt"))
    after = parse_metrics(os.path.join(d, "metrics-end.txt"))

    # --- the curve ----------------------------------------------------------------------
    rows = []
    with open(os.path.join(d, "samples.csv")) as f:
        header = f.readline().strip().split(",")
        for line in f:
            vals = line.strip().split(",")
            if len(vals) == len(header):
                rows.append(dict(zip(header, vals)))
    print()
    print(f"== curve (every {args.interval} s; RSS = VmRSS of /proc/PID/status, fds = entries of"
          f" /proc/PID/fd, of which sockets)")
    print(f"{'t s':>6} {'RSS MiB':>9} {'fds':>6} {'sockets':>8} {'threads':>8} {'requests':>10}"
          f" {'errors':>8} {'non-2xx':>8} {'failed':>7} {'gw total':>10} {'reloads':>8}")
    for r in rows:
        errors = int(r["client_non2xx"]) + int(r["client_failed"])
        print(f"{int(r['t_s']):>6} {int(r['rss_kib']) / 1024:>9.1f} {r['fds']:>6} {r['sockets']:>8}"
              f" {r['threads']:>8} {r['client_requests']:>10} {errors:>8} {r['client_non2xx']:>8}"
              f" {r['client_failed']:>7} {r['gateway_requests']:>10}"
              f" {r['config_reloads']:>4}/{r['plugin_reloads']:<3}")
    print("  errors = non-2xx + failed (no response); non-2xx includes the injected 403s and flap"
          " 5xx, split below; reloads = config/plugin reloads so far")
    idle = {}
    try:
        with open(os.path.join(d, "idle.txt")) as f:
            idle = dict(kv.split("=", 1) for kv in f.read().split())
    except OSError:
        pass
    if idle:
        print(f"  after the load, its connections closed: RSS {int(idle['rss_kib']) / 1024:.1f} MiB,"
              f" {idle['fds']} fds ({idle['sockets']} sockets; before the load:"
              f" {rows[0]['fds']} fds, {rows[0]['sockets']} sockets)")

    print()
    print("== checks")
    post = [r for r in rows if int(r["t_s"]) >= args.warmup]
    if len(post) < 2:
        for name in ("RSS stable", "descriptors flat"):
            verdict(name, None, f"fewer than 2 samples after the {args.warmup:g} s warm-up"
                    f" (run at least {args.warmup + args.interval:g} s for these)")
    else:
        rss = [int(r["rss_kib"]) for r in post]
        med = statistics.median(rss)
        dev = max(abs(v - med) for v in rss) / med * 100
        verdict(f"RSS within {args.rss_tolerance:g} % of its post-warm-up median",
                dev <= args.rss_tolerance,
                f"{len(post)} samples from t={post[0]['t_s']} s: median {med / 1024:.1f} MiB,"
                f" min {min(rss) / 1024:.1f}, max {max(rss) / 1024:.1f} MiB, largest deviation"
                f" {dev:.2f} %; first {rss[0] / 1024:.1f} -> last {rss[-1] / 1024:.1f} MiB,"
                f" trend {slope([int(r['t_s']) for r in post], rss) * 60 / 1024:+.2f} MiB/min")
        # Sockets come and go with the load (the upstream pool grows with bursts and shrinks
        # after idle_timeout; the flapping endpoint's connections die with it): they are
        # flat when the later half of the run holds no more of them than the earlier half.
        # Every other descriptor (epoll, eventfd, files, pipes) must not move at all.
        fds = [int(r["fds"]) for r in post]
        socks = [int(r["sockets"]) for r in post]
        other = [f - k for f, k in zip(fds, socks)]
        half = len(post) // 2
        early = statistics.median(fds[:half])
        late = statistics.median(fds[half:] if len(post) % 2 == 0 else fds[half + 1:])
        growth = late - early
        tol = args.fd_tolerance
        verdict("descriptors flat",
                growth <= tol and max(other) - min(other) <= 2,
                f"post-warm-up {min(fds)}..{max(fds)} fds, median {early:g} in the first half and"
                f" {late:g} in the second ({growth:+g}, allowed +{tol}); non-socket descriptors"
                f" {min(other)}..{max(other)} (allowed spread 2); first {fds[0]} -> last {fds[-1]}")

    # --- responses ----------------------------------------------------------------------
    flaps = []  # (down, up) epochs
    down = None
    for t, k, _ in events:
        if k == "flap_down":
            down = t
        elif k == "flap_up" and down is not None:
            flaps.append((down, t))
            down = None
    if down is not None:
        flaps.append((down, float("inf")))
    reloads = [(t, detail) for t, k, detail in events if k == "reload"]

    def in_flap(t0_, t1_):
        return any(t1_ >= a and t0_ <= b + args.flap_grace for a, b in flaps)

    n = len(starts)
    per_class = {c: {"sent": 0, "expected": 0, "flap5xx": 0, "unexpected": {}, "failed": 0,
                     "lat": []} for c in classes}
    unexpected = []  # (start, end, class, status-or-0)
    injected_5xx = 0
    injected_403 = 0
    for i in range(n):
        c = classes[cls[i]]
        s = statuses[i]
        pc = per_class[c]
        pc["sent"] += 1
        if s == FAILED:
            pc["failed"] += 1
            unexpected.append((starts[i], ends[i], c, 0))
            continue
        pc["lat"].append(ends[i] - starts[i])
        if s == EXPECTED[c]:
            pc["expected"] += 1
            if s == 403:
                injected_403 += 1
        elif s in (502, 503) and in_flap(starts[i], ends[i]):
            pc["flap5xx"] += 1
            injected_5xx += 1
        else:
            pc["unexpected"][s] = pc["unexpected"].get(s, 0) + 1
            unexpected.append((starts[i], ends[i], c, s))

    non2xx = sum(1 for s in statuses if s != FAILED and not 200 <= s < 300)
    failed = sum(1 for s in statuses if s == FAILED)
    dur = (meta["ended"] - meta["started"]) or 1
    print()
    print(f"== responses: {n} requests in {dur:.0f} s ({n / dur:.0f}/s, offered {meta['rate']}/s"
          f" over {meta['connections']} connections)")
    print(f"{'class':>11} {'sent':>8} {'expected':>9} {'as expected':>12} {'flap 5xx':>9}"
          f" {'unexpected':>11} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for c in classes:
        pc = per_class[c]
        if not pc["sent"]:
            continue
        lat = pc["lat"]
        print(f"{c:>11} {pc['sent']:>8} {EXPECTED[c]:>9} {pc['expected']:>12} {pc['flap5xx']:>9}"
              f" {sum(pc['unexpected'].values()):>11} {pc['failed']:>7}"
              f" {pct(lat, .5) * 1000:>8.2f} {pct(lat, .99) * 1000:>8.2f}"
              f" {(max(lat) if lat else float('nan')) * 1000:>8.1f}")
    unexpected_statuses = {}
    for pc in per_class.values():
        for s, k in pc["unexpected"].items():
            unexpected_statuses[s] = unexpected_statuses.get(s, 0) + k
    print(f"  non-2xx responses: {non2xx}; injected: {injected_403 + injected_5xx}"
          f" ({injected_403} 403 from request-policy for the denied class,"
          f" {injected_5xx} 502/503 while the flapping endpoint was down or within"
          f" {args.flap_grace:g} s of its restart); unexpected: {sum(unexpected_statuses.values())}"
          + (f" {dict(sorted(unexpected_statuses.items()))}" if unexpected_statuses else ""))
    print("  bad signatures (badsig, unknownkey, baddigest, unsigned) are injected as well and"
          " must come back 2xx: observe mode forwards them")
    if meta["errors"]:
        print(f"  failed requests (no response) by kind: {meta['errors']}")
    verdict("no unexpected responses", not unexpected_statuses,
            f"{sum(unexpected_statuses.values())} responses with a status their class does not"
            f" expect (outside the flap windows for 502/503)")
    verdict("no failed requests", failed == 0,
            f"{failed} requests without an HTTP response (connect error, reset, timeout)")
    if unexpected:
        print("  first unexpected ones (t s, class, status; 0 = no response):")
        for s0, s1, c, s in unexpected[:10]:
            print(f"    {s0 - t0:8.2f} {c:>11} {s}")

    # --- reloads ------------------------------------------------------------------------
    print()
    sighups = len(reloads)
    plugin_reloads = [(t, det) for t, det in reloads if det.startswith("plugin=")]
    expected_plugin = {}
    for _, det in plugin_reloads:
        name = det.split()[0].removeprefix("plugin=")
        expected_plugin[name] = expected_plugin.get(name, 0) + 1

    def delta(name, **match):
        return msum(after, name, **match) - msum(before, name, **match)

    ok_reloads = delta("fedgate_config_reloads_total", result="success")
    bad_reloads = delta("fedgate_config_reloads_total", result="error")
    print(f"== reloads: {sighups} SIGHUPs sent (every {args.reload_every} s),"
          f" {len(plugin_reloads)} of them with a plugin change (every {args.plugin_every} s)")
    verdict("config reloads", ok_reloads == sighups and bad_reloads == 0,
            f"fedgate_config_reloads_total: success {ok_reloads:.0f} (expected {sighups}),"
            f" error {bad_reloads:.0f}")
    pr_ok = by_label(after, "fedgate_plugin_reloads_total", "plugin", result="success")
    pr_ok0 = by_label(before, "fedgate_plugin_reloads_total", "plugin", result="success")
    pr_err = delta("fedgate_plugin_reloads_total", result="error")
    got = {p: pr_ok.get(p, 0) - pr_ok0.get(p, 0) for p in set(pr_ok) | set(expected_plugin)}
    got = {p: v for p, v in got.items() if v or p in expected_plugin}
    verdict("plugin reloads",
            all(got.get(p, 0) == k for p, k in expected_plugin.items()) and pr_err == 0
            and sum(got.values()) == sum(expected_plugin.values()),
            f"fedgate_plugin_reloads_total success by plugin {fmt_counts(got)} (expected"
            f" {fmt_counts(expected_plugin)}), error {pr_err:.0f}")
    # Each reload runs from the SIGHUP to the gateway's "configuration reloaded" (or its
    # refusal) in fedgate.log. A request fails across a reload when it fails while one was
    # being applied or within the window after it.
    done_at = sorted(t for t, msg in log_lines(os.path.join(d, "fedgate.log"))
                     if msg == "configuration reloaded"
                     or msg.startswith("configuration reload rejected"))
    spans = []
    for t, _ in reloads:
        k = bisect.bisect_left(done_at, t)
        done = done_at[k] if k < len(done_at) else None
        spans.append((t, done if done is not None and done - t < args.reload_every else None))
    took = [b - a for a, b in spans if b is not None]
    window = args.reload_window
    spans = [(a, b if b is not None else a + window) for a, b in spans]
    across = [u for u in unexpected if any(u[1] >= a and u[0] <= b + window for a, b in spans)]
    # Requests in flight at some moment of a reload: they started before it ended and ended
    # after it started.
    spans.sort()
    ends_sorted = [b for _, b in spans]
    overlapping = 0
    for i in range(n):
        k = bisect.bisect_left(ends_sorted, starts[i])
        if k < len(spans) and spans[k][0] <= ends[i]:
            overlapping += 1
    if took:
        print(f"  a reload took {statistics.median(took) * 1000:.1f} ms (median),"
              f" {max(took) * 1000:.0f} ms at most (SIGHUP to \"configuration reloaded\");"
              f" {len(reloads) - len(took)} without that log line")
    verdict("no failed requests across reloads", not across,
            f"{len(across)} failed or unexpected while a reload was applied or within"
            f" {window:g} s after it; {overlapping} requests were in flight while one was applied")
    for s0, s1, c, s in across[:10]:
        print(f"    {s0 - t0:8.2f} {c:>11} {s}")

    # --- what fedgate counted -----------------------------------------------------------
    print()
    gw_total = delta("fedgate_requests_total")
    gw_by_status = by_label(after, "fedgate_requests_total", "status")
    gw_by_status0 = by_label(before, "fedgate_requests_total", "status")
    gw_status = {s: v - gw_by_status0.get(s, 0) for s, v in gw_by_status.items()}
    gw_status = {s: v for s, v in gw_status.items() if v}
    print("== fedgate /metrics (during the load)")
    print(f"  fedgate_requests_total: {gw_total:.0f} (client completed {n - failed}), by status"
          f" {fmt_counts(gw_status)}")
    verdict("request totals agree", abs(gw_total - (n - failed)) <= max(2, meta["connections"]),
            f"gateway {gw_total:.0f} against client {n - failed}")
    sig = {}
    for (name, labels), v in after.items():
        if name == "fedgate_signature_verifications_total":
            r = dict(labels).get("result")
            sig[r] = sig.get(r, 0) + v - before.get((name, labels), 0)
    want = {}
    for c, r in SIG_RESULT.items():
        want[r] = want.get(r, 0) + per_class.get(c, {"sent": 0})["sent"] - per_class.get(c, {"failed": 0})["failed"]
    got_sig = {r: int(sig.get(r, 0)) for r in set(want) | {k for k, v in sig.items() if v}}
    verdict("signature results", all(got_sig.get(r, 0) == k for r, k in want.items())
            and sum(got_sig.values()) == sum(want.values()),
            f"fedgate_signature_verifications_total by result {fmt_counts(got_sig)},"
            f" client sent {fmt_counts(want)}")
    acts = delta("federation_activities_total")
    deny = delta("policy_decisions_total", decision="deny")
    print(f"  plugins: federation_activities_total +{acts:.0f}, policy_decisions_total deny"
          f" +{deny:.0f} (denied class answered 403: {per_class.get('denied', {}).get('expected', 0)}),"
          f" invocations by plugin/result"
          f" {fmt_counts(invocations(after, before))}")
    not_ok = {k: v for k, v in invocations(after, before).items()
              if k.split("/")[1] not in ("ok", "deny")}
    print(f"  plugin calls that trapped, timed out or failed (fail_open: the request went on):"
          f" {fmt_counts(not_ok)}")
    hc = {k: v - by_label(before, "fedgate_health_checks_total", "result").get(k, 0)
          for k, v in by_label(after, "fedgate_health_checks_total", "result").items()}
    transitions = delta("fedgate_circuit_breaker_transitions_total", to="open")
    print(f"  flapping endpoint: {len(flaps)} outages; health checks {fmt_counts(hc)};"
          f" outlier ejections +{delta('fedgate_outlier_ejections_total'):.0f};"
          f" breaker openings +{transitions:.0f}, rejections"
          f" +{delta('fedgate_circuit_breaker_rejections_total'):.0f};"
          f" retries {fmt_counts(delta_by(after, before, 'fedgate_retries_total', 'result'))};"
          f" upstream errors {fmt_counts(delta_by(after, before, 'fedgate_upstream_errors_total', 'kind'))}")
    levels, notable = {}, {}
    for rec in log_records(os.path.join(d, "fedgate.log")):
        lvl = rec.get("level", "?")
        levels[lvl] = levels.get(lvl, 0) + 1
        if lvl in ("WARN", "ERROR"):
            key = f"{lvl} {rec.get('message', '')}"
            notable[key] = notable.get(key, 0) + 1
    print(f"  gateway log lines by level: {fmt_counts(levels)}")
    for key, k in sorted(notable.items(), key=lambda kv: -kv[1]):
        print(f"    {k:>6} x {key}")

    print()
    skipped = [n for n, p in verdicts if p is None]
    print(f"== verdict: {'PASS' if ok else 'FAIL'}"
          + ("" if ok else f" ({', '.join(n for n, p in verdicts if p is False)})")
          + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
    return 0 if ok else 1


def log_records(path):
    """The JSON lines of fedgate.log."""
    try:
        f = open(path, errors="replace")
    except OSError:
        return
    with f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec


def log_lines(path):
    """(epoch, message) of every line of fedgate.log."""
    for rec in log_records(path):
        ts = rec.get("timestamp")
        if not ts:
            continue
        try:
            t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        yield t, rec.get("message", "")


def delta_by(after, before, name, label):
    b = by_label(before, name, label)
    out = {k: v - b.get(k, 0) for k, v in by_label(after, name, label).items()}
    return {k: v for k, v in out.items() if v}


def invocations(after, before):
    out = {}
    for (name, labels), v in after.items():
        if name != "fedgate_plugin_invocations_total":
            continue
        dl = dict(labels)
        k = f"{dl.get('plugin')}/{dl.get('result')}"
        out[k] = out.get(k, 0) + v - before.get((name, labels), 0)
    return {k: v for k, v in out.items() if v}


def fmt_counts(d):
    if not d:
        return "{}"
    return "{" + ", ".join(f"{k}: {v:.0f}" if isinstance(v, float) else f"{k}: {v}"
                           for k, v in sorted(d.items())) + "}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--rate", type=float, default=600)
    c.add_argument("--connections", type=int, default=32)
    c.add_argument("--timeout", type=float, default=15)
    c.add_argument("--key", required=True)
    c.add_argument("--mix", default=DEFAULT_MIX)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("--dir", required=True)
    r.add_argument("--warmup", type=float, default=60)
    r.add_argument("--interval", type=int, default=10)
    r.add_argument("--reload-every", type=int, default=10)
    r.add_argument("--plugin-every", type=int, default=60)
    r.add_argument("--rss-tolerance", type=float, default=5)
    r.add_argument("--fd-tolerance", type=int, default=16)
    r.add_argument("--flap-grace", type=float, default=5)
    r.add_argument("--reload-window", type=float, default=2)
    a = p.parse_args()
    if a.cmd == "client":
        asyncio.run(client(a))
        return 0
    return report(a)


if __name__ == "__main__":
    sys.exit(main())
