//! What the edge refuses, seen from both sides: a client that sends what it should not (raw
//! HTTP/1.1 bytes, hand-written HTTP/2 frames) and a scripted upstream that records the exact
//! bytes it receives. A body cut short is never delivered as complete; one valid `Host`
//! routes, authenticates and is forwarded; only allowed upgrades pass; configs that would
//! break the process are refused; the admin listener has the public listener's limits.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedgate_tests::h2raw::*;
use fedgate_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The bytes one connection received so far.
type ConnBytes = Arc<Mutex<Vec<u8>>>;

/// An HTTP/1.1 upstream written out by hand: it records every connection's bytes, answers
/// each request it has read completely (`200 ok`, or `101` to an upgrade, after which it
/// echoes), and notes the requests it saw whole.
#[derive(Clone)]
struct RawUpstream {
    addr: std::net::SocketAddr,
    /// Every connection's bytes, in order of acceptance.
    conns: Arc<Mutex<Vec<ConnBytes>>>,
    /// Each request read completely: its head and body as received.
    complete: Arc<Mutex<Vec<String>>>,
    /// Connections that ended (EOF or reset) so far.
    closed: Arc<Mutex<usize>>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = RawUpstream {
            addr: listener.local_addr().unwrap(),
            conns: Arc::default(),
            complete: Arc::default(),
            closed: Arc::default(),
        };
        let u = up.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let bytes = Arc::new(Mutex::new(Vec::new()));
                u.conns.lock().unwrap().push(bytes.clone());
                tokio::spawn(u.clone().serve(s, bytes));
            }
        });
        up
    }

    async fn serve(self, mut s: TcpStream, bytes: Arc<Mutex<Vec<u8>>>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        let mut tunnel = false;
        loop {
            let n = match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            bytes.lock().unwrap().extend_from_slice(&chunk[..n]);
            if tunnel {
                if s.write_all(&chunk[..n]).await.is_err() {
                    break;
                }
                continue;
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut dead = false;
            while let Some((len, upgrade)) = complete_request(&buf) {
                let req = String::from_utf8_lossy(&buf[..len]).into_owned();
                buf.drain(..len);
                self.complete.lock().unwrap().push(req);
                let answer = match &upgrade {
                    Some(proto) => format!(
                        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: {proto}\r\n\r\n"
                    )
                    .into_bytes(),
                    None => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                };
                if s.write_all(&answer).await.is_err() {
                    dead = true;
                    break;
                }
                if upgrade.is_some() {
                    // What came after the upgrade request is already tunnel data.
                    tunnel = true;
                    let rest = std::mem::take(&mut buf);
                    dead = !rest.is_empty() && s.write_all(&rest).await.is_err();
                    break;
                }
            }
            if dead {
                break;
            }
        }
        *self.closed.lock().unwrap() += 1;
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn complete(&self) -> Vec<String> {
        self.complete.lock().unwrap().clone()
    }

    /// Everything received on every connection, joined.
    fn received(&self) -> String {
        let conns = self.conns.lock().unwrap();
        conns
            .iter()
            .map(|c| String::from_utf8_lossy(&c.lock().unwrap()).into_owned())
            .collect::<Vec<_>>()
            .join("\n--\n")
    }

    fn closed(&self) -> usize {
        *self.closed.lock().unwrap()
    }
}

/// The length of the first complete request in `buf` (head and body), and the protocol it
/// asks to upgrade to; `None` while it is incomplete.
fn complete_request(buf: &[u8]) -> Option<(usize, Option<String>)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    let upgrade = field("upgrade");
    if field("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let body = &buf[head_end..];
        let end = if body.starts_with(b"0\r\n\r\n") {
            Some(5)
        } else {
            body.windows(7)
                .position(|w| w == b"\r\n0\r\n\r\n")
                .map(|i| i + 7)
        }?;
        return Some((head_end + end, upgrade));
    }
    let len: usize = field("content-length").map_or(0, |v| v.parse().unwrap_or(0));
    (buf.len() >= head_end + len).then_some((head_end + len, upgrade))
}

async fn raw(gw: &TestGateway) -> TcpStream {
    TcpStream::connect(gw.addr).await.unwrap()
}

/// Sends `bytes` on a new connection and reads one response; `None` if the gateway closed
/// the connection without one.
async fn exchange(gw: &TestGateway, bytes: &[u8]) -> Option<RawResponse> {
    let mut s = raw(gw).await;
    s.write_all(bytes).await.unwrap();
    let mut probe = [0u8; 1];
    // A closed connection reads as EOF at once; otherwise the response is there to read.
    match tokio::time::timeout(Duration::from_secs(10), s.peek(&mut probe)).await {
        Ok(Ok(0)) | Ok(Err(_)) => None,
        Ok(Ok(_)) => Some(read_response(&mut s).await),
        Err(_) => panic!(
            "no answer within 10 s to {:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < until,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_after_a_pooled_get_reaches_the_upstream_incomplete() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    for bad in [
        "zz\r\nhello\r\n",
        "5\nhello\r\n",
        "FFFFFFFFFFFFFFFFF\r\nhello\r\n",
    ] {
        // A GET leaves a kept-alive upstream connection in the pool...
        let r = exchange(&gw, b"GET /warm HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .await
            .expect("an answer");
        assert_eq!(r.status, 200);
        let before = up.complete().len();
        // ... which the POST with a broken chunk-size line takes.
        let post = format!(
            "POST /inbox HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n{bad}0\r\n\r\n"
        );
        let r = exchange(&gw, post.as_bytes()).await;
        if let Some(r) = &r {
            assert_eq!(r.status, 400, "{bad:?}: {}", r.head);
        }
        // Give a (wrongly) retried exchange time to arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let complete = up.complete();
        assert_eq!(
            complete.len(),
            before,
            "{bad:?}: the upstream read a whole request: {:?}",
            &complete[before..]
        );
        assert!(
            !up.received().contains("\r\n\r\n0\r\n\r\n")
                && !up.received().contains("hello\r\n0\r\n\r\n"),
            "{bad:?}: a last chunk reached the upstream: {:?}",
            up.received()
        );
    }
    // The client's broken bodies are not the upstream's failures.
    let m = gw.metrics().await;
    assert!(
        metric(&m, "fedgate_upstream_errors_total", &[("upstream", "app")]).unwrap_or(0.0) == 0.0,
        "{m}"
    );
    gw.shutdown().await;
}

// --- HTTP/2 frames, by hand (`fedgate_tests::h2raw`) -------------------------------------

async fn h2(gw: &TestGateway) -> TcpStream {
    let mut s = raw(gw).await;
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    s
}

/// Reads frames until a HEADERS frame on `stream` arrives: its `:status`, or `None` on EOF
/// or a reset stream.
async fn h2_status(s: &mut TcpStream, stream: u32) -> Option<u16> {
    let read = async {
        loop {
            let f = read_frame(s).await.ok()??;
            if f.stream == stream && f.kind == RST_STREAM {
                return None;
            }
            if f.stream == stream && f.kind == HEADERS {
                return response_status(&f.payload);
            }
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.ok()?;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an HTTP/2 answer within 20 s")
}

#[tokio::test]
async fn an_http2_upload_reset_with_no_error_never_reaches_the_upstream_as_complete() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"buffered\"\npath_prefix = \"/buffered\"\nupstream = \"app\"\nbuffer_body = 65536\n\
         [[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    for path in ["/streamed", "/buffered"] {
        let before = up.complete().len();
        let mut s = h2(&gw).await;
        let block = request_block_with(
            "POST",
            path,
            Some("a.example"),
            &[("content-type", "text/plain")],
        );
        let mut out = frame(HEADERS, END_HEADERS, 1, &block);
        out.extend(frame(DATA, 0, 1, b"hello"));
        s.write_all(&out).await.unwrap();
        // The head and the first bytes are on their way upstream (streamed route) ...
        tokio::time::sleep(Duration::from_millis(300)).await;
        // ... when the client resets the stream "without error".
        s.write_all(&frame(RST_STREAM, 0, 1, &0u32.to_be_bytes()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let complete = up.complete();
        assert_eq!(
            complete.len(),
            before,
            "{path}: the upstream read a whole request: {:?}",
            &complete[before..]
        );
        assert!(
            !up.received().contains("\r\n0\r\n\r\n"),
            "{path}: a last chunk reached the upstream: {:?}",
            up.received()
        );
    }
    // The streamed request's upstream connection is closed, not kept with half a message.
    wait_until(
        "the upstream connection closing",
        Duration::from_secs(10),
        || up.closed() >= 1,
    )
    .await;

    // A body whose end comes in a DATA frame of its own is complete, and forwarded whole.
    for path in ["/streamed", "/buffered"] {
        let before = up.complete().len();
        let mut s = h2(&gw).await;
        let block = request_block_with("POST", path, Some("a.example"), &[]);
        let mut out = frame(HEADERS, END_HEADERS, 1, &block);
        out.extend(frame(DATA, 0, 1, b"hello"));
        s.write_all(&out).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&frame(DATA, END_STREAM, 1, b"")).await.unwrap();
        assert_eq!(h2_status(&mut s, 1).await, Some(200), "{path}: 200");
        let complete = up.complete();
        assert_eq!(complete.len(), before + 1, "{path}");
        assert!(
            complete[before].ends_with("hello\r\n0\r\n\r\n")
                || complete[before].ends_with("\r\n\r\nhello"),
            "{path}: {:?}",
            complete[before]
        );
    }
    gw.shutdown().await;
}

/// A public catch-all and an admin host behind an API key.
fn host_routes(up: &RawUpstream) -> String {
    format!(
        "[auth]\n[[auth.api_keys]]\nprincipal = \"ops\"\nsha256 = \"{}\"\n{}\
         [[routes]]\nname = \"admin\"\nhosts = [\"admin.example\"]\npath_prefix = \"/\"\nupstream = \"app\"\nauth = [\"api_key\"]\n\
         [[routes]]\nname = \"public\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"secret")),
        upstream_block("app", &[up.url()], ""),
    )
}

#[tokio::test]
async fn exactly_one_valid_host_routes_authenticates_and_is_forwarded() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::start(&host_routes(&up)).await;
    let refused = [
        "GET / HTTP/1.1\r\nHost: public.example\r\nHost: admin.example\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost:\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: /../x@y\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: user@admin.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: admin.example:8080x\r\n\r\n",
        "GET http://user@admin.example/ HTTP/1.1\r\nHost: public.example\r\n\r\n",
    ];
    for req in refused {
        let r = exchange(&gw, req.as_bytes()).await;
        assert_eq!(r.map(|r| r.status), Some(400), "{req:?}");
    }
    assert!(up.complete().is_empty(), "forwarded: {:?}", up.complete());

    // The absolute-form target is the authority: it routes (to the admin route, which
    // wants its key) and goes upstream as Host, whatever Host said.
    let r = exchange(
        &gw,
        b"GET http://admin.example/x HTTP/1.1\r\nHost: public.example\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.head);
    let r = exchange(
        &gw,
        b"GET http://admin.example/x HTTP/1.1\r\nHost: public.example\r\nX-Api-Key: secret\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = up.complete();
    assert_eq!(seen.len(), 1);
    let head = seen[0].to_ascii_lowercase();
    assert!(head.starts_with("get /x http/1.1\r\n"), "{head}");
    assert_eq!(head.matches("\r\nhost:").count(), 1, "{head}");
    assert!(head.contains("\r\nhost: admin.example\r\n"), "{head}");

    // HTTP/1.0 may leave Host out; a plain request with one Host goes as it came.
    let r = exchange(&gw, b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    assert_eq!(r.status, 200);
    let r = exchange(&gw, b"GET /p HTTP/1.1\r\nHost: Public.Example:8080\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(up.complete()[2].contains("\r\nhost: Public.Example:8080\r\n"));

    // HTTP/2: two host fields, or one that names another authority, are refused.
    for (stream, fields) in [
        (
            1,
            vec![("host", "public.example"), ("host", "admin.example")],
        ),
        (3, vec![("host", "admin.example")]),
    ] {
        let mut s = h2(&gw).await;
        let block = request_block_with("GET", "/", Some("public.example"), &fields);
        s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &block))
            .await
            .unwrap();
        assert_eq!(
            h2_status(&mut s, stream).await,
            Some(400),
            "{fields:?}: 400"
        );
    }
    assert_eq!(up.complete().len(), 3, "{:?}", up.complete());
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "fedgate_auth_attempts_total",
            &[("route", "admin"), ("method", "api_key"), ("result", "ok")]
        ),
        Some(1.0),
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn only_the_upgrades_a_route_allows_are_forwarded() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"closed\"\npath_prefix = \"/closed\"\nupstream = \"app\"\nupgrades = []\n\
         [[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    // h2c: the upstream (which would switch to anything) gets a plain request, and the
    // client's next bytes are never tunnelled.
    let mut s = raw(&gw).await;
    s.write_all(
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await
    .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let head = up.complete()[0].to_ascii_lowercase();
    assert!(!head.contains("upgrade"), "{head}");
    assert!(!head.contains("http2-settings"), "{head}");
    // The same connection still carries plain HTTP/1.1, through the proxy.
    s.write_all(b"GET /y HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    assert!(up.complete()[1].starts_with("GET /y HTTP/1.1\r\n"));

    // WebSocket is allowed by default...
    let ws =
        b"GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
               Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut s = raw(&gw).await;
    s.write_all(ws).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"ping").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping");

    // ... and dropped on a route that allows none.
    let closed = String::from_utf8_lossy(ws).replace("/ws", "/closed");
    let r = exchange(&gw, closed.as_bytes()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    let last = up.complete().last().unwrap().to_ascii_lowercase();
    assert!(last.starts_with("get /closed"), "{last}");
    assert!(!last.contains("upgrade"), "{last}");
    gw.shutdown().await;
}

#[tokio::test]
async fn framing_the_proxy_cannot_forward_is_refused() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    // A coding besides chunked: the proxy would have to decode it or pass it on as it is.
    let r = exchange(
        &gw,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.map(|r| r.status), Some(501));
    // Trailers are not forwarded, a Content-Length among them least of all.
    let r = exchange(
        &gw,
        b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\
          Content-Length: 999\r\nX-Trailer: 1\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = up.complete();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].ends_with("5\r\nhello\r\n0\r\n\r\n"),
        "{:?}",
        seen[0]
    );
    assert!(
        !seen[0].to_ascii_lowercase().contains("999"),
        "{:?}",
        seen[0]
    );
    gw.shutdown().await;
}

/// An upstream that answers every request with `response`, then holds the connection.
async fn scripted(response: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn hostile_upstream_responses_are_refused_or_cut_off() {
    let smuggling =
        scripted(b"HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok")
            .await;
    let empty_chunk =
        scripted(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello").await;
    let stalling = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}\
         [[routes]]\nname = \"lf\"\npath_prefix = \"/lf\"\nupstream = \"lf\"\n\
         [[routes]]\nname = \"chunk\"\npath_prefix = \"/chunk\"\nupstream = \"chunk\"\n\
         [[routes]]\nname = \"stall\"\npath_prefix = \"/stall\"\nupstream = \"stall\"\ntimeout = \"1s\"\n",
        upstream_block("lf", &[smuggling], ""),
        upstream_block("chunk", &[empty_chunk], ""),
        upstream_block("stall", &[stalling], ""),
    ))
    .await;
    let r = exchange(&gw, b"GET /lf HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.head);
    assert!(!r.head.to_ascii_lowercase().contains("evil"), "{}", r.head);

    // An empty chunk-size line is not the last chunk: the body fails, the client sees a
    // chunked body without its end.
    let mut s = raw(&gw).await;
    s.write_all(b"GET /chunk HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got).into_owned();
    // The body fails with its first frame, so the connection is closed before (or just
    // after) the head; never with a body that reads as complete.
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        !got.ends_with("0\r\n\r\n"),
        "the body was ended as complete: {got:?}"
    );

    // A body that stalls is cut off after the route's timeout, not held open.
    let started = Instant::now();
    let mut s = raw(&gw).await;
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
        .await
        .expect("the stalled body is cut off within 20 s")
        .unwrap();
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("only part"),
        "{got:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn two_signature_fields_are_malformed_not_half_verified() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"inbox\"\npath_prefix = \"/\"\nupstream = \"app\"\nsignatures = \"enforce\"\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    let sig = "keyId=\"https://a.example/k\",algorithm=\"rsa-sha256\",headers=\"(request-target) host date\",signature=\"AAAA\"";
    let req = format!(
        "POST /inbox HTTP/1.1\r\nHost: b.example\r\nDate: {}\r\nSignature: {sig}\r\nSignature: {sig}\r\nContent-Length: 2\r\n\r\n{{}}",
        httpdate::fmt_http_date(std::time::SystemTime::now())
    );
    let r = exchange(&gw, req.as_bytes()).await.unwrap();
    assert_eq!(r.status, 401);
    assert!(
        String::from_utf8_lossy(&r.body).contains("malformed"),
        "{:?}",
        r.body
    );
    assert!(up.complete().is_empty());
    gw.shutdown().await;
}

// --- configuration ------------------------------------------------------------------------

fn config_with(extra_head: &str, body: &str) -> String {
    format!(
        "{extra_head}\n[[listeners]]\nname = \"public\"\naddress = \"127.0.0.1:0\"\n{}\
         [[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"app\"\n{body}",
        upstream_block("app", &["http://127.0.0.1:1".to_string()], "")
    )
}

/// The field a config error names.
fn refused_field(text: &str) -> String {
    match fedgate::config::from_str(text, Path::new(".")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn durations_that_would_overflow_a_deadline_are_refused() {
    let huge = "\"18446744073709551615s\"";
    for (section, key, field) in [
        (
            "[upstreams.x]\nendpoints = [\"http://127.0.0.1:1\"]\n",
            "response_timeout",
            "upstreams.x.response_timeout",
        ),
        ("[server]\n", "shutdown_grace", "server.shutdown_grace"),
        ("[admin]\n", "health_timeout", "admin.health_timeout"),
    ] {
        let e = refused_field(&config_with(&format!("{section}{key} = {huge}\n"), ""));
        assert!(e.contains(field) && e.contains("at most 365 days"), "{e}");
    }
    let listener = format!(
        "[[listeners]]\nname = \"slow\"\naddress = \"127.0.0.1:0\"\nheader_read_timeout = {huge}\n"
    );
    let e = refused_field(&config_with(&listener, ""));
    assert!(e.contains("header_read_timeout"), "{e}");
    let health = "[upstreams.h]\nendpoints = [\"http://127.0.0.1:1\"]\n[upstreams.h.health_check]\ninterval = \"400000d\"\n";
    let e = refused_field(&config_with(health, ""));
    assert!(e.contains("upstreams.h.health_check.interval"), "{e}");
}

#[test]
fn a_request_id_header_that_frames_or_routes_is_refused() {
    for name in [
        "content-length",
        "Host",
        "transfer-encoding",
        "connection",
        "te",
        "signature",
        "proxy-foo",
    ] {
        let e = refused_field(&config_with(
            &format!("[forwarding]\nrequest_id_header = \"{name}\"\n"),
            "",
        ));
        assert!(e.contains("forwarding.request_id_header"), "{name}: {e}");
    }
    fedgate::config::from_str(
        &config_with(
            "[forwarding]\nrequest_id_header = \"x-correlation-id\"\n",
            "",
        ),
        Path::new("."),
    )
    .expect("an ordinary name is accepted");
}

#[test]
fn h2c_cannot_be_allowed_and_plugin_deadlines_and_memory_are_bounded() {
    let e = refused_field(&config_with("", "upgrades = [\"h2c\"]\n"));
    assert!(e.contains("routes[0].upgrades[0]"), "{e}");
    let e = refused_field(&config_with("", "upgrades = [\"web socket\"]\n"));
    assert!(e.contains("routes[0].upgrades[0]"), "{e}");
    let plugin = "[plugins.p]\npath = \"p.wasm\"\ntimeout = \"2s\"\n";
    let e = refused_field(&config_with(plugin, ""));
    assert!(
        e.contains("plugins.p.timeout") && e.contains("100ms"),
        "{e}"
    );
    let budget = "[server]\nplugin_memory = \"1MiB\"\n[plugins.p]\npath = \"p.wasm\"\nmemory_limit = \"4MiB\"\n";
    let e = refused_field(&config_with(budget, ""));
    assert!(e.contains("plugins.p.memory_limit"), "{e}");
}

/// A FIFO nobody writes to: opening it for reading the usual way blocks for ever.
fn fifo(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo");
    path
}

#[test]
fn files_that_never_end_or_block_are_refused_by_check_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = fifo(dir.path(), "pipe");
    let pipe = pipe.to_str().unwrap();
    let cases = [
        (
            "blocklist.file",
            format!("[blocklist]\nfile = \"{pipe}\"\n"),
        ),
        (
            "blocklist.file",
            "[blocklist]\nfile = \"/dev/zero\"\n".to_string(),
        ),
        (
            "pem_file",
            format!("[signatures]\n[[signatures.keys]]\nkey_id = \"k\"\npem_file = \"{pipe}\"\n"),
        ),
        (
            "jwks_file",
            "[auth.jwt]\njwks_file = \"/dev/zero\"\nissuer = \"i\"\naudience = \"a\"\n".to_string(),
        ),
        ("plugins.p", format!("[plugins.p]\npath = \"{pipe}\"\n")),
        (
            "plugins.p",
            "[plugins.p]\npath = \"/dev/zero\"\n".to_string(),
        ),
    ];
    for (field, section) in cases {
        let path = dir.path().join("fedgate.toml");
        std::fs::write(&path, config_with(&section, "")).unwrap();
        let started = Instant::now();
        let (code, stderr) = run_bin("check", &path);
        assert_eq!(code, Some(2), "{field}: {stderr}");
        assert!(stderr.contains(field), "{field}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{field}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{field}: {:?}",
            started.elapsed()
        );
    }
}

// --- the admin listener ----------------------------------------------------------------

#[tokio::test]
async fn the_admin_listener_closes_silent_connections_and_caps_them() {
    let up = RawUpstream::start().await;
    let gw = TestGateway::start_full(&format!(
        "[server]\naccess_log = false\n[reload]\nwatch = false\n\
         [admin]\naddress = \"127.0.0.1:0\"\nmax_connections = 20\nheader_read_timeout = \"500ms\"\n\
         [[listeners]]\nname = \"public\"\naddress = \"127.0.0.1:0\"\n{}\
         [[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    // Silent connections, twice the cap.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(TcpStream::connect(gw.admin).await.unwrap());
    }
    // The first 20 are served and closed at the header deadline; the rest wait in the
    // backlog and are closed in turn. All are gone well within a few deadlines.
    let started = Instant::now();
    for s in &mut silent {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(15), s.read(&mut b))
            .await
            .expect("a silent admin connection is closed within 15 s");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    // Meanwhile and after, the public side answered and the admin side still does.
    assert_eq!(
        exchange(&gw, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap()
            .status,
        200
    );
    let (status, _, _) = send(get(&format!("http://{}/live", gw.admin))).await;
    assert_eq!(status, 200);
    gw.shutdown().await;
}

// --- the upstream connection limit -------------------------------------------------------

/// An upstream that answers each request after `delay`, counting the connections open at
/// once (the most seen).
async fn slow_upstream(delay: Duration) -> (String, Arc<Mutex<(usize, usize)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(Mutex::new((0usize, 0usize)));
    let o = open.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let o = o.clone();
            tokio::spawn(async move {
                {
                    let mut g = o.lock().unwrap();
                    g.0 += 1;
                    g.1 = g.1.max(g.0);
                }
                let mut buf = vec![0u8; 8192];
                let mut have = Vec::new();
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => have.extend_from_slice(&buf[..n]),
                    }
                    while let Some((len, _)) = complete_request(&have) {
                        have.drain(..len);
                        tokio::time::sleep(delay).await;
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
                o.lock().unwrap().0 -= 1;
            });
        }
    });
    (format!("http://{addr}"), open)
}

#[tokio::test]
async fn an_upstream_never_gets_more_connections_than_its_limit() {
    let (url, open) = slow_upstream(Duration::from_millis(1500)).await;
    let gw = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        upstream_block(
            "app",
            &[url],
            "max_connections = 2\nconnect_timeout = \"500ms\""
        )
    ))
    .await;
    // Six requests at once on one HTTP/2 connection: two are forwarded, the others wait
    // for a connection for connect_timeout and are answered 503.
    let client = h2_client();
    let sends = (0..6).map(|i| {
        let c = client.clone();
        let url = gw.url(&format!("/r{i}"));
        async move { send_with(&c, get(&url)).await.0 }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let busy = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!((ok, busy), (2, 4), "{statuses:?}");
    assert_eq!(open.lock().unwrap().1, 2, "connections open at once");
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_errors_total",
            &[("upstream", "app"), ("kind", "connection_limit")]
        ),
        Some(4.0),
        "{m}"
    );
    // The connections came back: the next requests reuse them.
    let (status, _, _) = send(get(&gw.url("/again"))).await;
    assert_eq!(status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn at_the_limit_an_idle_connection_of_another_endpoint_gives_its_place_up() {
    let a = RawUpstream::start().await;
    let b = RawUpstream::start().await;
    let gw = TestGateway::start(&format!(
        "{}[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        upstream_block(
            "app",
            &[a.url(), b.url()],
            "max_connections = 1\nconnect_timeout = \"2s\""
        )
    ))
    .await;
    // Round robin: a, b, a, b. Each request finds the one connection idle at the other
    // endpoint, which is closed to make room.
    for i in 0..4 {
        let started = Instant::now();
        let r = exchange(
            &gw,
            format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {i} waited"
        );
    }
    assert_eq!((a.complete().len(), b.complete().len()), (2, 2));
    wait_until(
        "the evicted connections closing",
        Duration::from_secs(5),
        || a.closed() + b.closed() >= 3,
    )
    .await;
    gw.shutdown().await;
}
