//! Protocol abuse against the real gateway, over raw sockets: HTTP/2 rapid reset (as a
//! burst, and on streams the gateway has already accepted), CONTINUATION floods, SETTINGS
//! and PING floods, oversized and HPACK-amplified header lists, slowloris (HTTP/1.1 heads
//! sent a byte a second; an HTTP/2 preface or header block left unfinished) and stalled
//! HTTP/1.1 request bodies.
//!
//! HTTP/2 frames are written by hand (RFC 9113 §4.1: a 9-byte header, then the payload),
//! and header blocks are HPACK-encoded by hand (RFC 7541: literals without Huffman coding,
//! and, for amplification, references to one dynamic-table entry).
//!
//! Every test checks, besides what the abuse itself must cause, that a normal request on
//! a connection of its own is answered 200 within [`NORMAL_WITHIN`] while the abuse is
//! under way, and that the in-process gateway still serves HTTP/1.1, HTTP/2 and its admin
//! `/live` afterwards. Memory is the test process's `VmRSS` (the gateway runs in it), and
//! its growth across an attack must stay under [`RSS_GROWTH_LIMIT_KIB`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedgate_tests::h2raw::*;
use fedgate_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The bound on a normal request's whole answer while an attack is under way. Generous on
/// purpose (a slow 2-core machine, a debug build of the gateway, the attacker in the same
/// process): an unprotected gateway misses it by far more than that.
const NORMAL_WITHIN: Duration = Duration::from_secs(5);

/// How long a connection the gateway must drop may stay open after the abuse was sent.
const CLOSE_WITHIN: Duration = Duration::from_secs(15);

/// A write that cannot make progress for this long means the gateway has stopped reading
/// the connection (TCP backpressure).
const STALL: Duration = Duration::from_secs(3);

/// Allowed growth of the process's resident memory across one attack: 200 MiB.
const RSS_GROWTH_LIMIT_KIB: u64 = 200 * 1024;

/// `max_header_bytes` of the listener in the HTTP/2 header tests (also HTTP/2's
/// `SETTINGS_MAX_HEADER_LIST_SIZE`).
const MAX_HEADER_BYTES: usize = 16384;

// ---------------------------------------------------------------------------------------
// The gateway under attack.
// ---------------------------------------------------------------------------------------

/// A gateway with one listener (`listener` holds extra `[[listeners]]` keys) and two
/// upstreams: `victim`, behind the route `/victim` (`route` holds its extra keys), which is
/// what attacks aim at, and `a` for everything else, which normal requests use, so each
/// upstream's hits count one side only.
async fn gateway(
    a: &TestUpstream,
    victim: &TestUpstream,
    listener: &str,
    route: &str,
) -> TestGateway {
    // HEAD ends inside its `[[listeners]]` table: `listener` adds to it.
    TestGateway::start(&format!(
        r#"{listener}
{}
{}
[[routes]]
name = "victim"
path_prefix = "/victim"
upstream = "victim"
{route}
[[routes]]
name = "all"
upstream = "a"
"#,
        upstream_block("a", &[a.url()], ""),
        upstream_block("victim", &[victim.url()], ""),
    ))
    .await
}

/// A normal request, on a keep-alive HTTP/1.1 client of its own (so no connection the
/// attack touched), answered 200 by upstream `a` within [`NORMAL_WITHIN`]. Returns how long
/// it took.
async fn assert_served(gw: &TestGateway, when: &str) -> Duration {
    let started = Instant::now();
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let answer = tokio::time::timeout(NORMAL_WITHIN, send_with(&c, get(&gw.url("/normal")))).await;
    let (status, _, body) = answer.unwrap_or_else(|_| {
        panic!("{when}: a normal request was not answered within {NORMAL_WITHIN:?}")
    });
    assert_eq!(
        status, 200,
        "{when}: a normal request got {status}: {body:?}"
    );
    assert_eq!(body, "upstream a", "{when}");
    started.elapsed()
}

/// Normal requests, one after another, until `attack` has finished (and at least three):
/// each must be answered within [`NORMAL_WITHIN`]. Returns the attack's result, the number
/// of normal requests and the slowest answer.
async fn served_meanwhile<T>(
    gw: &TestGateway,
    attack: JoinHandle<T>,
    what: &str,
) -> (T, usize, Duration) {
    let mut count = 0;
    let mut slowest = Duration::ZERO;
    loop {
        slowest = slowest.max(assert_served(gw, &format!("during {what}")).await);
        count += 1;
        if attack.is_finished() && count >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (attack.await.expect("the attack task"), count, slowest)
}

/// After an attack: HTTP/1.1 and HTTP/2 (prior knowledge) requests on fresh connections are
/// answered 200 and the admin listener's `/live` too: the gateway is up and serving.
async fn assert_still_serving(gw: &TestGateway, when: &str) {
    assert_served(gw, when).await;
    let h2 = tokio::time::timeout(
        NORMAL_WITHIN,
        send_with(&h2_client(), get(&gw.url("/normal-h2"))),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("{when}: an HTTP/2 request was not answered within {NORMAL_WITHIN:?}")
    });
    assert_eq!(h2.0, 200, "{when}: HTTP/2 request");
    assert_eq!(h2.2, "upstream a", "{when}: HTTP/2 request");
    let live = tokio::time::timeout(
        NORMAL_WITHIN,
        send(get(&format!("http://{}/live", gw.admin))),
    )
    .await
    .unwrap_or_else(|_| panic!("{when}: /live was not answered within {NORMAL_WITHIN:?}"));
    assert_eq!(live.0, 200, "{when}: /live");
}

/// The process's resident set size (`VmRSS` of /proc/self/status), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Asserts that resident memory grew by less than [`RSS_GROWTH_LIMIT_KIB`] since `before`.
fn assert_rss_bounded(before: u64, what: &str) {
    let after = rss_kib();
    let growth = after.saturating_sub(before);
    eprintln!("{what}: VmRSS {before} KiB before, {after} KiB after (+{growth} KiB)");
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "{what}: resident memory grew by {growth} KiB (from {before} to {after} KiB), \
         the limit is {RSS_GROWTH_LIMIT_KIB} KiB"
    );
}

// ---------------------------------------------------------------------------------------
// HTTP/2 by hand.
// ---------------------------------------------------------------------------------------

/// What the gateway sent on an HTTP/2 connection, as far as the tests care.
#[derive(Debug, Default, Clone)]
struct Observed {
    frames: usize,
    /// GOAWAY: last stream id, error code, debug data.
    goaway: Option<(u32, u32, String)>,
    /// RST_STREAM frames by stream: the error code.
    resets: HashMap<u32, u32>,
    /// Response HEADERS by stream: the `:status`, when it could be read.
    statuses: HashMap<u32, Option<u16>>,
    /// The connection ended: a clean close, or the read error (a reset).
    ended: Option<String>,
    /// When GOAWAY arrived, the connection ended, and each stream's END_STREAM.
    goaway_at: Option<Instant>,
    ended_at: Option<Instant>,
    stream_ends: HashMap<u32, Instant>,
}

impl Observed {
    /// Whether the gateway is done with the connection: it sent GOAWAY or closed it.
    fn dropped(&self) -> bool {
        self.goaway.is_some() || self.ended.is_some()
    }
}

/// Reads everything the gateway sends on a connection, in a task of its own.
#[derive(Debug)]
struct Observer {
    seen: Arc<Mutex<Observed>>,
    task: JoinHandle<()>,
}

impl Observer {
    fn spawn(mut r: OwnedReadHalf) -> Observer {
        let seen = Arc::new(Mutex::new(Observed::default()));
        let state = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let next = read_frame(&mut r).await;
                let mut s = state.lock().unwrap();
                match next {
                    Ok(Some(f)) => {
                        s.frames += 1;
                        if matches!(f.kind, DATA | HEADERS) && f.flags & END_STREAM != 0 {
                            s.stream_ends.insert(f.stream, Instant::now());
                        }
                        match f.kind {
                            GOAWAY if f.payload.len() >= 8 => {
                                let p = &f.payload;
                                let last =
                                    u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                                let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                                let debug = String::from_utf8_lossy(&p[8..]).into_owned();
                                s.goaway = Some((last, code, debug));
                                s.goaway_at.get_or_insert_with(Instant::now);
                            }
                            RST_STREAM if f.payload.len() == 4 => {
                                let p = &f.payload;
                                s.resets
                                    .insert(f.stream, u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                            }
                            HEADERS => {
                                // The gateway sets neither PADDED nor PRIORITY.
                                let status = response_status(&f.payload);
                                s.statuses.entry(f.stream).or_insert(status);
                            }
                            _ => {}
                        }
                    }
                    Ok(None) => {
                        s.ended = Some("closed".into());
                        s.ended_at = Some(Instant::now());
                        return;
                    }
                    Err(e) => {
                        s.ended = Some(format!("read error: {e}"));
                        s.ended_at = Some(Instant::now());
                        return;
                    }
                }
            }
        });
        Observer { seen, task }
    }

    fn now(&self) -> Observed {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `done` holds of what was seen, for at most `within`: what was seen then,
    /// and whether `done` held.
    async fn wait(&self, within: Duration, done: impl Fn(&Observed) -> bool) -> (Observed, bool) {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.now();
            if done(&seen) {
                return (seen, true);
            }
            if Instant::now() >= deadline {
                return (seen, false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/2 connection by prior knowledge: preface, empty SETTINGS, the gateway's SETTINGS
/// acknowledged. Returns the raw halves (nothing else is read or written for the caller).
async fn h2_handshake(addr: SocketAddr) -> (OwnedReadHalf, OwnedWriteHalf) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut r, mut w) = stream.into_split();
    let mut hello = PREFACE.to_vec();
    put_frame(&mut hello, SETTINGS, 0, 0, &[]);
    w.write_all(&hello).await.unwrap();
    let settings = async {
        loop {
            let f = read_frame(&mut r)
                .await
                .expect("reading the gateway's preface")
                .expect("the gateway closed during the preface");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), settings)
        .await
        .expect("the gateway's SETTINGS within 10 s");
    w.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
    (r, w)
}

/// How a flood of writes ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WriteEnd {
    /// Everything was written.
    Written,
    /// A write failed: the gateway closed or reset the connection.
    Closed(String),
    /// A write made no progress for [`STALL`]: the gateway stopped reading.
    Stalled,
}

/// Writes `chunks` one after another until one fails or stalls: how many were written
/// whole, and how it ended.
async fn write_chunks(
    w: &mut OwnedWriteHalf,
    chunks: impl Iterator<Item = Vec<u8>>,
) -> (usize, WriteEnd) {
    let mut written = 0;
    for chunk in chunks {
        match tokio::time::timeout(STALL, w.write_all(&chunk)).await {
            Ok(Ok(())) => written += 1,
            Ok(Err(e)) => return (written, WriteEnd::Closed(e.to_string())),
            Err(_) => return (written, WriteEnd::Stalled),
        }
    }
    (written, WriteEnd::Written)
}

// ---------------------------------------------------------------------------------------
// 1. Rapid reset.
// ---------------------------------------------------------------------------------------

/// Streams the rapid-reset connection opens (and cancels at once).
const RAPID_STREAMS: usize = 10_000;
/// Streams per write.
const RAPID_BATCH: usize = 250;

/// Rapid reset as a burst (CVE-2023-44487): 10 000 streams, each HEADERS immediately
/// followed by its RST_STREAM(CANCEL), written 250 streams per write on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_cut_short_and_other_clients_are_served() {
    let a = TestUpstream::start("a").await;
    let victim = TestUpstream::start("victim").await;
    let gw = gateway(&a, &victim, "", "").await;
    assert_still_serving(&gw, "before the attack").await;
    let rss_before = rss_kib();

    let (r, mut w) = h2_handshake(gw.addr).await;
    let observer = Observer::spawn(r);
    let block = request_block("GET", "/victim/rapid-reset");
    let attack = tokio::spawn(async move {
        let batches = (0..RAPID_STREAMS / RAPID_BATCH).map(|b| {
            let mut out = Vec::with_capacity(RAPID_BATCH * (9 + block.len() + 13));
            for i in 0..RAPID_BATCH {
                let id = 1 + 2 * (b * RAPID_BATCH + i) as u32;
                put_frame(&mut out, HEADERS, END_HEADERS | END_STREAM, id, &block);
                put_frame(&mut out, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
            }
            out
        });
        let (batches, end) = write_chunks(&mut w, batches).await;
        (batches * RAPID_BATCH, end, w)
    });
    let ((opened, end, _w), normal, slowest) =
        served_meanwhile(&gw, attack, "an HTTP/2 rapid-reset flood").await;

    let (seen, dropped) = observer.wait(CLOSE_WITHIN, Observed::dropped).await;
    // Forwards the gateway had started before the streams' resets reached it may still be
    // arriving at the upstream: let them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reached = victim.hits();
    eprintln!(
        "rapid reset: {opened} streams opened and cancelled ({end:?}); the gateway sent \
         {} frames, {} responses, GOAWAY {:?}, end {:?} (dropped within {CLOSE_WITHIN:?}: \
         {dropped}); {reached} requests reached the upstream; {normal} normal requests \
         meanwhile, the slowest answered in {slowest:?}",
        seen.frames,
        seen.statuses.len(),
        seen.goaway,
        seen.ended,
    );
    assert!(
        opened > 0,
        "not one batch of the flood could be written: {end:?}"
    );
    // Either the gateway stops the connection (GOAWAY or close), or it keeps it but the
    // cancelled streams cost it next to nothing upstream.
    assert!(
        dropped || reached * 10 <= opened,
        "the rapid-reset connection was still open {CLOSE_WITHIN:?} after the flood and \
         {reached} of its {opened} cancelled streams reached the upstream"
    );
    if let Some((_, code, _)) = &seen.goaway {
        // NO_ERROR would claim the connection ended normally; a flood is an error.
        assert_ne!(
            *code, 0,
            "GOAWAY with NO_ERROR after a rapid-reset flood: {seen:?}"
        );
    }
    assert_rss_bounded(rss_before, "rapid reset");
    assert_still_serving(&gw, "after the rapid-reset flood").await;
}

/// Streams the paced rapid-reset connection opens, and how many at a time.
const PACED_STREAMS: usize = 5000;
const PACED_BATCH: usize = 10;
/// How long each of them lives before its RST_STREAM.
const PACED_LIFETIME: Duration = Duration::from_millis(5);

/// Rapid reset as it works against a server that accepts streams quickly: each stream is
/// accepted (the gateway starts forwarding it) before its RST_STREAM arrives, so no stream
/// is ever "reset while pending accept", the count h2 bounds. Ten streams at a time, each
/// cancelled 5 ms after its HEADERS, far below the 256 concurrent streams allowed, to an
/// upstream that never answers (so nothing completes by itself: every stream is cancelled).
/// The same bound as for the burst applies: the connection is dropped, or the upstream sees
/// far fewer requests than streams were opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_of_accepted_streams_is_cut_short_and_other_clients_are_served() {
    let a = TestUpstream::start("a").await;
    let victim = TestUpstream::start("victim").await;
    victim.set_fault(Fault::Hang);
    let gw = gateway(&a, &victim, "", "").await;
    assert_still_serving(&gw, "before the attack").await;
    let rss_before = rss_kib();

    let (r, mut w) = h2_handshake(gw.addr).await;
    let observer = Observer::spawn(r);
    let dropped_early = observer.seen.clone();
    let block = request_block("GET", "/victim/rapid-reset");
    let attack = tokio::spawn(async move {
        let mut opened = 0;
        let mut end = WriteEnd::Written;
        while opened < PACED_STREAMS {
            let (mut open, mut cancel) = (Vec::new(), Vec::new());
            for i in 0..PACED_BATCH {
                let id = 1 + 2 * (opened + i) as u32;
                put_frame(&mut open, HEADERS, END_HEADERS | END_STREAM, id, &block);
                put_frame(&mut cancel, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
            }
            let (n, e) = write_chunks(&mut w, std::iter::once(open)).await;
            if n == 0 {
                end = e;
                break;
            }
            tokio::time::sleep(PACED_LIFETIME).await;
            let (n, e) = write_chunks(&mut w, std::iter::once(cancel)).await;
            opened += PACED_BATCH;
            if n == 0 {
                end = e;
                break;
            }
            if dropped_early.lock().unwrap().dropped() {
                break;
            }
        }
        (opened, end, w)
    });
    let ((opened, end, _w), normal, slowest) =
        served_meanwhile(&gw, attack, "an HTTP/2 rapid reset of accepted streams").await;

    let (seen, dropped) = observer.wait(CLOSE_WITHIN, Observed::dropped).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reached = victim.hits();
    eprintln!(
        "paced rapid reset: {opened} streams opened and cancelled {PACED_LIFETIME:?} later \
         ({end:?}); GOAWAY {:?}, end {:?} (dropped within {CLOSE_WITHIN:?}: {dropped}); \
         {reached} requests reached the upstream over {} upstream connections; {normal} \
         normal requests meanwhile, the slowest answered in {slowest:?}",
        seen.goaway,
        seen.ended,
        victim.connections(),
    );
    assert!(opened > 0, "not one batch could be written: {end:?}");
    assert!(
        dropped || reached * 10 <= opened,
        "the rapid-reset connection was still open {CLOSE_WITHIN:?} after the flood and \
         {reached} of its {opened} cancelled streams reached the upstream (over {} upstream \
         connections)",
        victim.connections()
    );
    assert_rss_bounded(rss_before, "paced rapid reset");
    assert_still_serving(&gw, "after the paced rapid reset").await;
}

// ---------------------------------------------------------------------------------------
// 2. CONTINUATION flood.
// ---------------------------------------------------------------------------------------

/// Sends HEADERS (stream 1, END_STREAM, no END_HEADERS) and then up to `count` CONTINUATION
/// frames with `payload`, none ending the header block, while normal requests go on
/// meanwhile. Asserts the connection is dropped within [`CLOSE_WITHIN`] and nothing
/// reached the upstream; returns what the gateway sent.
async fn continuation_flood(
    gw: &TestGateway,
    victim: &TestUpstream,
    payload: Vec<u8>,
    count: usize,
    what: &str,
) -> Observed {
    let (r, mut w) = h2_handshake(gw.addr).await;
    let observer = Observer::spawn(r);
    let started = Instant::now();
    let frame_len = payload.len();
    const PER_WRITE: usize = 64;
    let attack = tokio::spawn(async move {
        let first = frame(
            HEADERS,
            END_STREAM,
            1,
            &request_block("GET", "/victim/continuation"),
        );
        let rest = (0..count.div_ceil(PER_WRITE)).map(|_| {
            let mut out = Vec::with_capacity(PER_WRITE * (9 + payload.len()));
            for _ in 0..PER_WRITE {
                put_frame(&mut out, CONTINUATION, 0, 1, &payload);
            }
            out
        });
        let (chunks, end) = write_chunks(&mut w, std::iter::once(first).chain(rest)).await;
        (chunks.saturating_sub(1) * PER_WRITE, end, w)
    });
    let ((sent, end, _w), normal, slowest) = served_meanwhile(gw, attack, what).await;
    let (seen, dropped) = observer.wait(CLOSE_WITHIN, Observed::dropped).await;
    let took = started.elapsed();
    eprintln!(
        "{what}: {sent} CONTINUATION frames of {frame_len} bytes written ({end:?}); GOAWAY \
         {:?}, end {:?}, dropped: {dropped} after {took:?}; {normal} normal requests \
         meanwhile, the slowest in {slowest:?}",
        seen.goaway, seen.ended
    );
    assert!(
        dropped,
        "{what}: the connection was still open {CLOSE_WITHIN:?} after the flood \
         ({sent} CONTINUATION frames written, {end:?}): {seen:?}"
    );
    assert!(
        seen.statuses.is_empty(),
        "{what}: the endless header block was answered: {seen:?}"
    );
    assert_eq!(
        victim.hits(),
        0,
        "{what}: the endless header block reached the upstream"
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_drops_the_connection_and_others_are_served() {
    let a = TestUpstream::start("a").await;
    let victim = TestUpstream::start("victim").await;
    let gw = gateway(
        &a,
        &victim,
        &format!("max_header_bytes = {MAX_HEADER_BYTES}"),
        "",
    )
    .await;
    assert_still_serving(&gw, "before the attack").await;
    let rss_before = rss_kib();

    // CONTINUATION frames full of header fields: 1000 frames of one 4000-byte field each,
    // about 4 MB of header block against a 16 KiB limit.
    let mut fields = Vec::new();
    hpack_literal(&mut fields, b"x-flood", &[b'f'; 4000]);
    continuation_flood(
        &gw,
        &victim,
        fields,
        1000,
        "a CONTINUATION flood of header fields",
    )
    .await;
    assert_still_serving(&gw, "after the CONTINUATION flood of header fields").await;

    // Empty CONTINUATION frames: no header bytes at all, only frames (100 000 of them).
    continuation_flood(
        &gw,
        &victim,
        Vec::new(),
        100_000,
        "a flood of empty CONTINUATION frames",
    )
    .await;
    assert_rss_bounded(rss_before, "CONTINUATION floods");
    assert_still_serving(&gw, "after the flood of empty CONTINUATION frames").await;
}

// ---------------------------------------------------------------------------------------
// 3. SETTINGS and PING floods.
// ---------------------------------------------------------------------------------------

/// Frames per write in the control-frame floods.
const CONTROL_PER_WRITE: usize = 2000;

/// Writes `total` copies of `one` (a control frame) without reading anything the gateway
/// sends back, while normal requests go on meanwhile; then checks memory and that the
/// gateway serves. Returns how the writes ended.
async fn control_flood(gw: &TestGateway, one: Vec<u8>, total: usize, what: &str) -> WriteEnd {
    // Warm up the gateway's HTTP/2 side before the baseline is taken.
    assert_still_serving(gw, &format!("before {what}")).await;
    let rss_before = rss_kib();
    let (r, mut w) = h2_handshake(gw.addr).await;
    let attack = tokio::spawn(async move {
        let chunk = one.repeat(CONTROL_PER_WRITE);
        let chunks = std::iter::repeat_n(chunk, total / CONTROL_PER_WRITE);
        let (n, end) = write_chunks(&mut w, chunks).await;
        (n * CONTROL_PER_WRITE, end, w)
    });
    let ((sent, end, w), normal, slowest) = served_meanwhile(gw, attack, what).await;
    eprintln!(
        "{what}: {sent} of {total} frames written without reading ({end:?}); {normal} normal \
         requests meanwhile, the slowest answered in {slowest:?}"
    );
    // Measured while the flooding connection is still open: whatever the gateway holds for
    // it is still held.
    assert_rss_bounded(rss_before, what);
    assert_still_serving(
        gw,
        &format!("during {what}, the flooding connection still open"),
    )
    .await;
    drop((r, w));
    assert_still_serving(gw, &format!("after {what}")).await;
    end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_settings_flood_without_reading_acks_leaves_the_gateway_responsive() {
    let a = TestUpstream::start("a").await;
    let victim = TestUpstream::start("victim").await;
    let gw = gateway(&a, &victim, "", "").await;
    // SETTINGS frames of two parameters each (INITIAL_WINDOW_SIZE and MAX_CONCURRENT_STREAMS,
    // which the gateway must apply each time), 200 000 of them, none acknowledged by reading.
    let mut payload = Vec::new();
    payload.extend_from_slice(&0x4u16.to_be_bytes());
    payload.extend_from_slice(&65535u32.to_be_bytes());
    payload.extend_from_slice(&0x3u16.to_be_bytes());
    payload.extend_from_slice(&100u32.to_be_bytes());
    control_flood(
        &gw,
        frame(SETTINGS, 0, 0, &payload),
        200_000,
        "a SETTINGS flood",
    )
    .await;
    assert_eq!(victim.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_ping_flood_without_reading_acks_leaves_the_gateway_responsive() {
    let a = TestUpstream::start("a").await;
    let victim = TestUpstream::start("victim").await;
    let gw = gateway(&a, &victim, "", "").await;
    // 200 000 PINGs (3.4 MB), none of the PING ACKs read.
    control_flood(&gw, frame(PING, 0, 0, b"fedgate!"), 200_000, "a PING flood").await;
    assert_eq!(victim.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// 4. Oversized and amplified header lists.
// ---------------------------------------------------------------------------------------

/// Writes a header block for stream 1 as HEADERS and CONTINUATION frames, split before
/// `splits` (offsets of field boundaries), the last frame with END_HEADERS.
fn header_frames(block: &[u8], splits: &[usize], flags: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bounds = vec![0];
    bounds.extend_from_slice(splits);
    bounds.push(block.len());
    for (i, pair) in bounds.windows(2).enumerate() {
        let (kind, mut f) = if i == 0 {
            (HEADERS, flags)
        } else {
            (CONTINUATION, 0)
        };
        if pair[1] == block.len() {
            f |= END_HEADERS;
        }
        assert!(pair[1] - pair[0] <= MAX_FRAME);
        put_frame(&mut out, kind, f, 1, &block[pair[0]..pair[1]]);
    }
    out
}

/// Splits `block` into frame-sized pieces at the field boundaries `fields` (offsets where
/// a field starts), so that every frame holds whole fields.
fn field_splits(fields: &[usize]) -> Vec<usize> {
    let mut splits = Vec::new();
    let mut start = 0;
    for w in fields.windows(2) {
        if w[1] - start > MAX_FRAME {
            splits.push(w[0]);
            start = w[0];
        }
    }
    splits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_list_over_max_header_bytes_is_refused_and_the_connection_still_works() {
    let a = TestUpstream::start("a").await;
    let victim = TestUpstream::start("victim").await;
    let gw = gateway(
        &a,
        &victim,
        &format!("max_header_bytes = {MAX_HEADER_BYTES}"),
        "",
    )
    .await;
    assert_still_serving(&gw, "before the attack").await;

    // 300 literal fields of 110 bytes: about 42 KiB of decoded header list (32 bytes of
    // overhead per field, RFC 9113 §6.5.2) against a limit of 16 KiB.
    let mut block = request_block("GET", "/victim/oversized");
    let mut starts = vec![0];
    for i in 0..300 {
        starts.push(block.len());
        hpack_literal(&mut block, format!("x-big-{i:04}").as_bytes(), &[b'v'; 100]);
    }
    starts.push(block.len());
    let decoded: usize = 300 * (10 + 100 + 32);
    assert!(decoded > 2 * MAX_HEADER_BYTES);
    let frames = header_frames(&block, &field_splits(&starts), END_STREAM);

    let (r, mut w) = h2_handshake(gw.addr).await;
    let observer = Observer::spawn(r);
    w.write_all(&frames).await.unwrap();
    // A normal request on the same connection, after the refused one.
    w.write_all(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &request_block("GET", "/after-oversized"),
    ))
    .await
    .unwrap();

    let (seen, settled) = observer
        .wait(CLOSE_WITHIN, |o| {
            o.dropped()
                || ((o.statuses.contains_key(&1) || o.resets.contains_key(&1))
                    && o.statuses.contains_key(&3))
        })
        .await;
    eprintln!(
        "oversized header list ({} bytes encoded, {decoded} decoded): {seen:?}",
        block.len()
    );
    assert!(
        settled,
        "neither stream was settled within {CLOSE_WITHIN:?}: {seen:?}"
    );
    let status1 = seen.statuses.get(&1).copied().flatten();
    let refused = matches!(status1, Some(431))
        || seen.resets.contains_key(&1)
        || seen.goaway.as_ref().is_some_and(|g| g.0 < 1)
        || seen.ended.is_some();
    assert!(
        refused,
        "the oversized header list was not refused: {seen:?}"
    );
    assert!(
        !status1.is_some_and(|s| (200..300).contains(&s)),
        "the oversized header list was answered {status1:?}"
    );
    assert_eq!(
        victim.hits(),
        0,
        "the oversized header list reached the upstream"
    );
    if !seen.dropped() {
        // The connection stayed: the next stream on it was served.
        assert_eq!(seen.statuses.get(&3), Some(&Some(200)), "{seen:?}");
        assert_eq!(
            a.seen().last().map(|s| s.target.clone()).as_deref(),
            Some("/after-oversized")
        );
    }
    drop(w);
    assert_still_serving(&gw, "after the oversized header list").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_hpack_amplified_header_list_is_refused_without_memory_growth() {
    let a = TestUpstream::start("a").await;
    let victim = TestUpstream::start("victim").await;
    let gw = gateway(
        &a,
        &victim,
        &format!("max_header_bytes = {MAX_HEADER_BYTES}"),
        "",
    )
    .await;
    assert_still_serving(&gw, "before the attack").await;
    let rss_before = rss_kib();

    // One 3000-byte field added to the dynamic table (literal with incremental indexing),
    // then referenced by its one-byte index (62: 0xbe) 80 000 times: about 80 KB on the wire
    // (a HEADERS and four CONTINUATION frames) for a decoded list of about 243 MB.
    const REFS: usize = 80_000;
    let mut block = request_block("GET", "/victim/amplified");
    block.push(0x40);
    hpack_str(&mut block, b"x-amp");
    hpack_str(&mut block, &[b'a'; 3000]);
    let entry = 5 + 3000 + 32;
    block.extend(std::iter::repeat_n(0xbe, REFS));
    let splits: Vec<usize> = (1..)
        .map(|k| k * MAX_FRAME)
        .take_while(|&s| s < block.len())
        .collect();
    let frames = header_frames(&block, &splits, END_STREAM);

    let (r, mut w) = h2_handshake(gw.addr).await;
    let observer = Observer::spawn(r);
    let attack = tokio::spawn(async move {
        let end = write_chunks(&mut w, std::iter::once(frames)).await.1;
        (end, w)
    });
    let ((end, _w), normal, slowest) =
        served_meanwhile(&gw, attack, "an HPACK amplification").await;
    let (seen, settled) = observer
        .wait(CLOSE_WITHIN, |o| {
            o.dropped() || o.statuses.contains_key(&1) || o.resets.contains_key(&1)
        })
        .await;
    eprintln!(
        "HPACK amplification ({} bytes encoded, {} decoded; {end:?}): {seen:?}; {normal} \
         normal requests meanwhile, the slowest in {slowest:?}",
        block.len(),
        REFS * entry
    );
    assert!(settled, "the amplified header block was neither refused nor answered within {CLOSE_WITHIN:?}: {seen:?}");
    let status1 = seen.statuses.get(&1).copied().flatten();
    assert!(
        !status1.is_some_and(|s| (200..300).contains(&s)),
        "the amplified header list was answered {status1:?}"
    );
    assert_eq!(
        victim.hits(),
        0,
        "the amplified header list reached the upstream"
    );
    assert_rss_bounded(rss_before, "HPACK amplification");
    assert_still_serving(&gw, "after the HPACK amplification").await;
}

/// The `:status` reader against RFC 7541's own examples (C.6.1: `:status 302` as a
/// Huffman-coded literal with incremental indexing) and the static table.
#[test]
fn status_decoding_reads_rfc7541_examples() {
    assert_eq!(response_status(&[0x48, 0x82, 0x64, 0x02]), Some(302));
    assert_eq!(response_status(&[0x88]), Some(200));
    assert_eq!(response_status(&[0x8d]), Some(404));
    let mut raw = vec![0x08];
    hpack_str(&mut raw, b"431");
    assert_eq!(response_status(&raw), Some(431));
    // '4' 011010, '3' 011001, '1' 00001, then 7 bits of padding.
    assert_eq!(response_status(&[0x48, 0x83, 0x69, 0x90, 0xff]), Some(431));
}

// ---------------------------------------------------------------------------------------
// 5. Slowloris (HTTP/1.1 heads).
// ---------------------------------------------------------------------------------------

/// Slow clients at once.
const SLOW_CLIENTS: usize = 200;

/// `header_read_timeout` of the slowloris listener.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// How one slow client ended: when the gateway closed it (after its first byte), and how
/// many bytes of its head it had sent by then.
#[derive(Debug)]
struct SlowEnd {
    closed_after: Option<Duration>,
    sent: usize,
    answer: Vec<u8>,
}

/// Sends `head` one byte per `every`, watching for the gateway's close in between; gives up
/// after `limit`.
async fn trickle(
    addr: SocketAddr,
    head: &'static [u8],
    every: Duration,
    limit: Duration,
) -> SlowEnd {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let mut sent = 0;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        if sent < head.len() {
            if s.write_all(&head[sent..sent + 1]).await.is_err() {
                return SlowEnd {
                    closed_after: Some(started.elapsed()),
                    sent,
                    answer,
                };
            }
            sent += 1;
        }
        let wait = tokio::time::sleep(every);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return SlowEnd { closed_after: Some(started.elapsed()), sent, answer },
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                _ = &mut wait => break,
            }
        }
    }
    SlowEnd {
        closed_after: None,
        sent,
        answer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_slowloris_heads_are_closed_after_header_read_timeout() {
    let a = TestUpstream::start("a").await;
    let victim = TestUpstream::start("victim").await;
    let gw = gateway(
        &a,
        &victim,
        &format!("header_read_timeout = \"{}s\"", HEAD_TIMEOUT.as_secs()),
        "",
    )
    .await;
    assert_still_serving(&gw, "before the attack").await;

    // 73 bytes at one a second: a client would need over a minute to finish the head.
    const HEAD: &[u8] =
        b"GET /victim/slowloris HTTP/1.1\r\nHost: abuse.example\r\nUser-Agent: slow\r\n\r\n";
    let limit = Duration::from_secs(40);
    let attack = tokio::spawn({
        let addr = gw.addr;
        async move {
            let clients: Vec<_> = (0..SLOW_CLIENTS)
                .map(|_| tokio::spawn(trickle(addr, HEAD, Duration::from_secs(1), limit)))
                .collect();
            let mut ends = Vec::new();
            for c in clients {
                ends.push(c.await.expect("a slow client"));
            }
            ends
        }
    });
    let (ends, normal, slowest) = served_meanwhile(&gw, attack, "a slowloris of 200 clients").await;

    let closed: Vec<Duration> = ends.iter().filter_map(|e| e.closed_after).collect();
    let first = closed.iter().min().copied();
    let last = closed.iter().max().copied();
    eprintln!(
        "slowloris: {} of {SLOW_CLIENTS} closed, between {first:?} and {last:?} after their \
         first byte; {normal} normal requests meanwhile, the slowest in {slowest:?}",
        closed.len()
    );
    for (i, e) in ends.iter().enumerate() {
        let after = e.closed_after.unwrap_or_else(|| {
            panic!(
                "slow client {i} was still open after {limit:?} ({} bytes sent)",
                e.sent
            )
        });
        assert!(
            e.sent < HEAD.len(),
            "slow client {i} finished its head before it was closed: {e:?}"
        );
        // Not before the timeout (timers do not fire early) ...
        assert!(
            after >= HEAD_TIMEOUT - Duration::from_millis(50),
            "slow client {i} closed after {after:?}"
        );
        // ... and well within ten times it (the head alone would take 73 s).
        assert!(
            after <= HEAD_TIMEOUT * 10,
            "slow client {i} closed only after {after:?}: {e:?}"
        );
        assert!(
            e.answer.is_empty() || e.answer.starts_with(b"HTTP/1.1 408"),
            "slow client {i} got {:?}",
            String::from_utf8_lossy(&e.answer)
        );
    }
    assert_eq!(victim.hits(), 0, "a slowloris head reached the upstream");
    assert_still_serving(&gw, "after the slowloris").await;
}

/// Reads a raw connection until the gateway closes it: `Some(elapsed)` then, `None` when it
/// is still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut sink))
        .await
        .ok()
        .map(|_| started.elapsed())
}

/// The HTTP/2 side of slowloris, on a listener with `header_read_timeout = "1s"` and two
/// connection slots: one client sends the first 16 bytes of the HTTP/2 connection preface
/// and stops; another completes the preface and sends a HEADERS frame without END_HEADERS
/// (a header block that never ends), and stops. Neither has sent a whole request head, so
/// neither may hold its slot for ever: each must be dropped within [`CLOSE_WITHIN`] (fifteen
/// times the head timeout), and a normal client, waiting in the backlog meanwhile, must then
/// be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_slowloris_preface_and_header_block_do_not_hold_connection_slots() {
    let a = TestUpstream::start("a").await;
    let victim = TestUpstream::start("victim").await;
    let gw = gateway(
        &a,
        &victim,
        "header_read_timeout = \"1s\"\nmax_connections = 2",
        "",
    )
    .await;
    assert_still_serving(&gw, "before the attack").await;

    let attack_started = Instant::now();
    let mut preface = TcpStream::connect(gw.addr).await.unwrap();
    preface.write_all(&PREFACE[..16]).await.unwrap();
    let (r, mut w) = h2_handshake(gw.addr).await;
    w.write_all(&frame(
        HEADERS,
        END_STREAM,
        1,
        &request_block("GET", "/victim/slow-h2"),
    ))
    .await
    .unwrap();
    let block = Observer::spawn(r);

    // A normal client, arriving while both slots are taken.
    let normal = tokio::spawn({
        let url = gw.url("/normal");
        async move {
            let started = Instant::now();
            let c =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Body>();
            let r = tokio::time::timeout(CLOSE_WITHIN + NORMAL_WITHIN, c.request(get(&url))).await;
            (
                r.map(|r| r.map(|r| r.status().as_u16()).map_err(|e| e.to_string())),
                started.elapsed(),
            )
        }
    });

    let preface_closed = closed_within(&mut preface, CLOSE_WITHIN).await;
    let (seen, block_dropped) = block
        .wait(
            CLOSE_WITHIN.saturating_sub(attack_started.elapsed()) + Duration::from_secs(1),
            Observed::dropped,
        )
        .await;
    let (normal, waited) = normal.await.unwrap();
    eprintln!(
        "HTTP/2 slowloris: partial preface closed after {preface_closed:?}; unfinished header \
         block: {seen:?}; the normal client got {normal:?} after {waited:?}"
    );
    let mut failures = Vec::new();
    if preface_closed.is_none() {
        failures.push(format!(
            "a client that sent 16 bytes of the HTTP/2 preface and stopped still held its \
             connection {CLOSE_WITHIN:?} later"
        ));
    }
    if !block_dropped {
        failures.push(format!(
            "a client that left its HTTP/2 header block unfinished still held its connection \
             {CLOSE_WITHIN:?} later ({seen:?})"
        ));
    }
    if !matches!(normal, Ok(Ok(200))) {
        failures.push(format!(
            "a normal client waiting for a connection slot got {normal:?} after {waited:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "with header_read_timeout = 1s and max_connections = 2: {}",
        failures.join("; ")
    );
    assert_eq!(victim.hits(), 0);
    drop(w);
    assert_still_serving(&gw, "after the HTTP/2 slowloris").await;
}

// ---------------------------------------------------------------------------------------
// 6. Slow request bodies.
// ---------------------------------------------------------------------------------------

/// The route timeout (`timeout`) of the slow-body test: a stalled upload is cut off between
/// one and two of these after its last byte (docs/configuration.md, `response_timeout`).
const BODY_TIMEOUT: Duration = Duration::from_secs(2);

/// Stalled uploads at once.
const SLOW_BODIES: usize = 50;

/// What the gateway did with a stalled upload: the status it answered (`None` when it closed
/// without answering), and when.
#[derive(Debug)]
struct StalledEnd {
    status: Option<u16>,
    after: Duration,
}

/// Sends a POST head with `Content-Length: 1000` and 10 bytes of body, then nothing; reads
/// until the gateway answers (a whole head) or closes, for at most `limit`.
async fn stalled_upload(addr: SocketAddr, limit: Duration) -> StalledEnd {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The clock starts before the gateway can have read anything.
    let started = Instant::now();
    s.write_all(
        b"POST /victim/upload HTTP/1.1\r\nHost: abuse.example\r\nContent-Type: application/activity+json\r\nContent-Length: 1000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).into_owned();
                return head.split(' ').nth(1).and_then(|s| s.parse().ok());
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let status = tokio::time::timeout(limit, read).await.unwrap_or_else(|_| {
        panic!("a stalled upload was neither answered nor closed within {limit:?}")
    });
    StalledEnd {
        status,
        after: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_stalled_request_bodies_are_cut_off_after_the_route_timeout() {
    let a = TestUpstream::start("a").await;
    let victim = TestUpstream::start("victim").await;
    let gw = gateway(
        &a,
        &victim,
        "",
        &format!("timeout = \"{}s\"", BODY_TIMEOUT.as_secs()),
    )
    .await;
    assert_still_serving(&gw, "before the attack").await;

    // Within ten route timeouts (the documented bound is two).
    let limit = BODY_TIMEOUT * 10;
    let attack = tokio::spawn({
        let addr = gw.addr;
        async move {
            let uploads: Vec<_> = (0..SLOW_BODIES)
                .map(|_| tokio::spawn(stalled_upload(addr, limit)))
                .collect();
            let mut ends = Vec::new();
            for u in uploads {
                ends.push(u.await.expect("a stalled upload"));
            }
            ends
        }
    });
    let (ends, normal, slowest) = served_meanwhile(&gw, attack, "50 stalled uploads").await;
    let mut by_status: HashMap<Option<u16>, usize> = HashMap::new();
    for e in &ends {
        *by_status.entry(e.status).or_default() += 1;
    }
    let earliest = ends.iter().map(|e| e.after).min();
    let latest = ends.iter().map(|e| e.after).max();
    eprintln!(
        "stalled uploads: outcomes {by_status:?} (None: closed without an answer), between \
         {earliest:?} and {latest:?}; {normal} normal requests meanwhile, the slowest in \
         {slowest:?}"
    );
    for (i, e) in ends.iter().enumerate() {
        assert!(
            e.status.is_none_or(|s| s >= 400),
            "stalled upload {i} was answered {:?}",
            e.status
        );
        // The gateway waited for the body rather than refusing a slow one at once.
        assert!(
            e.after >= BODY_TIMEOUT - Duration::from_millis(50),
            "stalled upload {i} was ended after {:?}, before the {BODY_TIMEOUT:?} timeout",
            e.after
        );
    }
    assert_still_serving(&gw, "after the stalled uploads").await;
}

// ---------------------------------------------------------------------------------------
// 7. Idle HTTP/2 connections.
// ---------------------------------------------------------------------------------------

/// `idle_timeout` of the idle-connection test's listener.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Its `header_read_timeout`: also how long a connection sent GOAWAY for idleness has to
/// close before it is dropped.
const IDLE_HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack for timers on a loaded 2-core machine.
const TIMER_SLACK: Duration = Duration::from_millis(1500);

/// An upstream that answers every request with a chunked body of `chunks` chunks, one every
/// `every`: a response that takes its time while the client connection has nothing else
/// in progress.
async fn trickling_upstream(chunks: usize, every: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                for _ in 0..chunks {
                    tokio::time::sleep(every).await;
                    if s.write_all(b"5\r\nchunk\r\n").await.is_err() {
                        return;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// After its first request an HTTP/2 connection has no header deadline of hyper's: the
/// listener's `idle_timeout` closes one with no request in progress. On a listener with
/// `idle_timeout = "1s"`: (a) a connection whose only request streams its response for
/// 2.4 s is not sent GOAWAY before that response ends, and is sent one within the idle
/// timeout (plus slack) after; (b) a connection that, after one request, sends only PINGs
/// (which do not count as activity) is sent GOAWAY and closed; (c) a connection that, after
/// one request, opens a stream whose header block it never finishes is dropped within the
/// idle timeout plus the head timeout. Normal clients are answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_idle_connections_are_closed_after_idle_timeout_not_while_a_response_streams() {
    let a = TestUpstream::start("a").await;
    let slow = trickling_upstream(8, Duration::from_millis(300)).await;
    let gw = TestGateway::start(&format!(
        r#"idle_timeout = "{}ms"
header_read_timeout = "{}ms"
{}
{}
[[routes]]
name = "stream"
path_prefix = "/stream"
upstream = "slow"
[[routes]]
name = "all"
upstream = "a"
"#,
        IDLE_TIMEOUT.as_millis(),
        IDLE_HEAD_TIMEOUT.as_millis(),
        upstream_block("a", &[a.url()], ""),
        upstream_block("slow", &[format!("http://{slow}")], ""),
    ))
    .await;
    assert_still_serving(&gw, "before the idle connections").await;

    // (a) A response that streams for longer than the idle timeout.
    let (r, mut wa) = h2_handshake(gw.addr).await;
    let streaming = Observer::spawn(r);
    let started = Instant::now();
    wa.write_all(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block("GET", "/stream/x"),
    ))
    .await
    .unwrap();

    // (b) One request, then only PINGs.
    let (r, mut wb) = h2_handshake(gw.addr).await;
    let pinging = Observer::spawn(r);
    wb.write_all(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block("GET", "/normal"),
    ))
    .await
    .unwrap();
    let pinger = tokio::spawn(async move {
        for i in 0u64..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wb
                .write_all(&frame(PING, 0, 0, &i.to_be_bytes()))
                .await
                .is_err()
            {
                break;
            }
        }
    });

    // (c) One request, then a header block that never ends.
    let (r, mut wc) = h2_handshake(gw.addr).await;
    let stalled = Observer::spawn(r);
    wc.write_all(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block("GET", "/normal"),
    ))
    .await
    .unwrap();
    let (seen, answered) = stalled
        .wait(NORMAL_WITHIN, |o| o.stream_ends.contains_key(&1))
        .await;
    assert!(
        answered,
        "the first request of connection (c) was not answered: {seen:?}"
    );
    let block = request_block("GET", "/normal/never");
    wc.write_all(&frame(HEADERS, END_STREAM, 3, &block[..block.len() / 2]))
        .await
        .unwrap();
    let stalled_from = Instant::now();

    let watch = tokio::spawn(async move {
        let budget = Duration::from_secs(3) + IDLE_TIMEOUT + IDLE_HEAD_TIMEOUT + TIMER_SLACK * 2;
        let a = streaming
            .wait(budget, |o| o.goaway.is_some() || o.ended.is_some())
            .await
            .0;
        let b = pinging.wait(budget, |o| o.ended.is_some()).await.0;
        let c = stalled.wait(budget, |o| o.ended.is_some()).await.0;
        (a, b, c)
    });
    let ((a_seen, b_seen, c_seen), normal, _) =
        served_meanwhile(&gw, watch, "idle HTTP/2 connections").await;
    pinger.abort();
    eprintln!(
        "idle HTTP/2: (a) response ended after {:?}, GOAWAY after {:?}; (b) GOAWAY {:?} and \
         close {:?} after its answer; (c) closed {:?} after the unfinished block; {normal} \
         normal requests meanwhile",
        a_seen.stream_ends.get(&1).map(|t| *t - started),
        a_seen.goaway_at.map(|t| t - started),
        b_seen
            .goaway_at
            .zip(b_seen.stream_ends.get(&1))
            .map(|(g, e)| g - *e),
        b_seen
            .ended_at
            .zip(b_seen.stream_ends.get(&1))
            .map(|(g, e)| g - *e),
        c_seen.ended_at.map(|t| t - stalled_from),
    );

    // (a): the whole body arrived, then GOAWAY, within the idle timeout and slack.
    let a_end = *a_seen
        .stream_ends
        .get(&1)
        .unwrap_or_else(|| panic!("(a) the streamed response did not end: {a_seen:?}"));
    assert_eq!(a_seen.statuses.get(&1), Some(&Some(200)), "(a) {a_seen:?}");
    assert!(
        a_end - started >= Duration::from_millis(2300),
        "(a) the streamed response ended after {:?}, before its last chunk was sent",
        a_end - started
    );
    let a_goaway = a_seen
        .goaway_at
        .unwrap_or_else(|| panic!("(a) no GOAWAY after the response ended: {a_seen:?}"));
    assert!(
        a_goaway >= a_end,
        "(a) GOAWAY came before the streamed response ended"
    );
    assert!(
        a_goaway - a_end <= IDLE_TIMEOUT + TIMER_SLACK,
        "(a) GOAWAY came {:?} after the response ended",
        a_goaway - a_end
    );

    // (b): PINGs do not keep a connection open.
    let b_end = *b_seen
        .stream_ends
        .get(&1)
        .expect("(b) its request was answered");
    let b_goaway = b_seen
        .goaway_at
        .unwrap_or_else(|| panic!("(b) a PING-only connection was not sent GOAWAY: {b_seen:?}"));
    assert!(
        b_goaway - b_end >= IDLE_TIMEOUT - Duration::from_millis(50)
            && b_goaway - b_end <= IDLE_TIMEOUT + TIMER_SLACK,
        "(b) GOAWAY {:?} after the last answer, the idle timeout is {IDLE_TIMEOUT:?}",
        b_goaway - b_end
    );
    let b_closed = b_seen
        .ended_at
        .expect("(b) the PING-only connection was closed");
    assert!(
        b_closed - b_end <= IDLE_TIMEOUT + IDLE_HEAD_TIMEOUT + TIMER_SLACK,
        "(b) closed {:?} after the last answer",
        b_closed - b_end
    );

    // (c): an unfinished header block does not hold the connection.
    let c_closed = c_seen.ended_at.unwrap_or_else(|| {
        panic!("(c) the unfinished header block held its connection: {c_seen:?}")
    });
    assert!(
        c_closed - stalled_from <= IDLE_TIMEOUT + IDLE_HEAD_TIMEOUT + TIMER_SLACK,
        "(c) closed {:?} after the unfinished header block",
        c_closed - stalled_from
    );
    drop((wa, wc));
    assert_still_serving(&gw, "after the idle connections").await;
}
