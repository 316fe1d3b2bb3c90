//! The HTTP/1.1 upstream client through a running gateway, against a scripted upstream that
//! writes raw bytes: what needs the gateway itself. Which framings free their connection for
//! the next request (pooling), refused responses answered 502 and counted, a body cut short
//! and recorded, request bodies sent chunked from HTTP/1.1 and HTTP/2 clients, an upstream
//! that answers before it has read the request body, and the gateway's own response fields.
//! How each framing is read (lengths, chunks with extensions and trailers, close delimited,
//! bodiless, interim responses, split reads, malformed and hostile heads) is tested against
//! scripted IO beside the client, in `gateway/src/h1.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fedgate_tests::*;
use futures_util::stream;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream does for one request.
#[derive(Clone)]
enum Step {
    /// Write these bytes.
    Write(Vec<u8>),
    /// Wait a little (the next write arrives as a separate read on the other side).
    Pause,
    /// Close the connection.
    Close,
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
struct Received {
    head: String,
    body: Vec<u8>,
}

type Script = Arc<dyn Fn(&str) -> Vec<Step> + Send + Sync>;

struct Scripted {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<Mutex<usize>>,
}

impl Scripted {
    /// An upstream answering each request with `script(path)`; paths starting with
    /// `/early` are answered right after the head, before the body is read.
    async fn start(script: impl Fn(&str) -> Vec<Step> + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let script: Script = Arc::new(script);
        let (r, c) = (received.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *c.lock().unwrap() += 1;
                tokio::spawn(serve(stream, script.clone(), r.clone()));
            }
        });
        Scripted {
            url,
            received,
            connections,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    async fn gateway(&self) -> TestGateway {
        TestGateway::start(&format!(
            "{}\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
            upstream_block("app", std::slice::from_ref(&self.url), "")
        ))
        .await
    }
}

async fn serve(mut stream: TcpStream, script: Script, received: Arc<Mutex<Vec<Received>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let lower = head.to_ascii_lowercase();
        let steps = script(&path);
        let early = path.starts_with("/early");
        if early && !play(&mut stream, &steps).await {
            return;
        }
        let body = if lower.contains("transfer-encoding: chunked") {
            match read_chunked(&mut stream, &mut buf).await {
                Some(b) => b,
                None => return,
            }
        } else if let Some(n) = header(&lower, "content-length") {
            let n: usize = n.parse().unwrap();
            while buf.len() < n {
                if !fill(&mut stream, &mut buf).await {
                    return;
                }
            }
            buf.drain(..n).collect()
        } else {
            Vec::new()
        };
        received.lock().unwrap().push(Received { head, body });
        if early || !play(&mut stream, &steps).await {
            return;
        }
    }
}

/// Plays `steps`; false once the connection is closed.
async fn play(stream: &mut TcpStream, steps: &[Step]) -> bool {
    for step in steps {
        match step {
            Step::Write(b) => {
                if stream.write_all(b).await.is_err() {
                    return false;
                }
            }
            Step::Pause => tokio::time::sleep(Duration::from_millis(20)).await,
            Step::Close => return false,
        }
    }
    true
}

fn header<'a>(lower_head: &'a str, name: &str) -> Option<&'a str> {
    lower_head
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

async fn fill<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Reads until `delim`; returns the position just after it.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, delim: &[u8]) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(delim.len()).position(|w| w == delim) {
            return Some(i + delim.len());
        }
        if !fill(stream, buf).await {
            return None;
        }
    }
}

/// Decodes a chunked body (the upstream's own decoder, independent of the gateway's).
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = read_until(stream, buf, b"\r\n").await?;
        let line = String::from_utf8_lossy(&buf[..end - 2]).to_string();
        buf.drain(..end);
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailer fields up to the empty line.
            loop {
                let end = read_until(stream, buf, b"\r\n").await?;
                let empty = end == 2;
                buf.drain(..end);
                if empty {
                    return Some(body);
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await {
                return None;
            }
        }
        body.extend_from_slice(&buf[..size]);
        assert_eq!(&buf[size..size + 2], b"\r\n", "chunk data ends with CRLF");
        buf.drain(..size + 2);
    }
}

fn w(s: impl AsRef<[u8]>) -> Step {
    Step::Write(s.as_ref().to_vec())
}

fn ok(body: &str) -> Vec<Step> {
    vec![w(format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))]
}

/// Whether the response to a GET of `url` fails before its end, in the head or the body
/// (hyper closes the client connection when a body fails, flushed or not).
async fn cut_short(url: &str) -> bool {
    match client().request(get(url)).await {
        Err(_) => true,
        Ok(resp) => resp.into_body().collect().await.is_err(),
    }
}

fn upstream_errors(m: &str, kind: &str) -> f64 {
    metric(
        m,
        "fedgate_upstream_errors_total",
        &[("upstream", "app"), ("kind", kind)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_read_chunked_body_frees_its_connection() {
    let up = Scripted::start(|path| match path {
        "/chunked" => vec![
            w("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            w("5\r\nhello\r\n"),
            Step::Pause,
            w("6\r\n world\r\n0\r\n\r\n"),
        ],
        _ => ok("next"),
    })
    .await;
    let gw = up.gateway().await;
    let (status, _, body) = send(get(&gw.url("/chunked"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, "hello world");
    let (status, _, body) = send(get(&gw.url("/after"))).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"next"[..]));
    assert_eq!(
        up.connections(),
        1,
        "a fully read chunked body frees its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_bodies_are_read_to_the_end_and_not_reused() {
    let up = Scripted::start(|_| {
        vec![
            w("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil "),
            Step::Pause,
            w("the end"),
            Step::Close,
        ]
    })
    .await;
    let gw = up.gateway().await;
    for _ in 0..2 {
        let (status, _, body) = send(get(&gw.url("/close"))).await;
        assert_eq!(status, 200);
        assert_eq!(body, "until the end");
    }
    assert_eq!(
        up.connections(),
        2,
        "a close-delimited body ends its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_keep_their_length_header_and_connection() {
    let up = Scripted::start(|path| match path {
        "/304" => vec![w("HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n")],
        "/204" => vec![w("HTTP/1.1 204 No Content\r\n\r\n")],
        _ => vec![w("HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")],
    })
    .await;
    let gw = up.gateway().await;
    let head = Request::head(gw.url("/head")).body(empty()).unwrap();
    let (status, headers, body) = send(head).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-length"], "1234",
        "HEAD keeps the length of the GET"
    );
    assert!(body.is_empty());
    assert_eq!(send(get(&gw.url("/304"))).await.0, 304);
    assert_eq!(send(get(&gw.url("/204"))).await.0, 204);
    assert_eq!(up.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_responses_are_refused_as_502() {
    let huge = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let up = Scripted::start(move |path| match path {
        "/both" => vec![w(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
        )],
        "/lengths" => vec![w("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!")],
        "/status" => vec![w("HTTP/1.1 2000 Way OK\r\ncontent-length: 0\r\n\r\n")],
        "/garbage" => vec![w("this is not http\r\n\r\n")],
        "/huge" => vec![w(&huge)],
        "/chunk" => vec![w(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        )],
        "/silent" => vec![Step::Close],
        _ => ok("fine"),
    })
    .await;
    let gw = up.gateway().await;
    for path in [
        "/both", "/lengths", "/status", "/garbage", "/huge", "/silent",
    ] {
        let (status, _, body) = send(get(&gw.url(path))).await;
        assert_eq!(status, 502, "{path}");
        assert_eq!(body, "bad gateway\n", "{path}");
    }
    // A bad chunk comes after the head was relayed: the client's response is cut short.
    assert!(
        cut_short(&gw.url("/chunk")).await,
        "a broken chunked body is cut short"
    );
    // The gateway goes on serving.
    let (status, _, body) = send(get(&gw.url("/fine"))).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"fine"[..]));
    let m = gw.metrics().await;
    assert_eq!(upstream_errors(&m, "protocol"), 5.0);
    assert_eq!(
        upstream_errors(&m, "reset"),
        1.0,
        "/silent closes without answering"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_length_is_cut_short_for_the_client() {
    let up = Scripted::start(|_| {
        vec![
            w("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly forty bytes of the hundred promised"),
            Step::Close,
        ]
    })
    .await;
    let gw = up.gateway().await;
    assert!(cut_short(&gw.url("/short")).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = gw.metrics().await;
    let in_flight = metric(&m, "fedgate_requests_in_flight", &[("route", "all")]).unwrap();
    assert_eq!(in_flight, 0.0, "the cut-short request is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_unknown_length_go_upstream_chunked() {
    let up = Scripted::start(|_| ok("got it")).await;
    let gw = up.gateway().await;
    let parts: Vec<Bytes> = (0..20u8)
        .map(|i| Bytes::from(vec![b'a' + i; 5_000 + usize::from(i) * 1_000]))
        .collect();
    let expected: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();

    // HTTP/1.1 client, chunked upload.
    let frames = stream::iter(
        parts
            .clone()
            .into_iter()
            .map(|b| Ok::<_, hyper::Error>(hyper::body::Frame::data(b))),
    );
    let req = Request::post(gw.url("/upload"))
        .body(StreamBody::new(frames).boxed())
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"got it"[..]));

    // HTTP/2 client without content-length.
    let frames = stream::iter(
        parts
            .into_iter()
            .map(|b| Ok::<_, hyper::Error>(hyper::body::Frame::data(b))),
    );
    let req = Request::post(gw.url("/upload2"))
        .body(StreamBody::new(frames).boxed())
        .unwrap();
    let (status, _, _) = send_with(&h2_client(), req).await;
    assert_eq!(status, 200);

    let got = up.received();
    assert_eq!(got.len(), 2);
    for r in &got {
        let head = r.head.to_ascii_lowercase();
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(
            hex::encode(Sha256::digest(&r.body)),
            hex::encode(Sha256::digest(&expected))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_body_is_read_reaches_the_client() {
    let up = Scripted::start(|path| match path {
        "/early" => vec![w(
            "HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large",
        )],
        _ => ok("fine"),
    })
    .await;
    let gw = up.gateway().await;
    let (status, _, body) = send(post(&gw.url("/early"), vec![b'x'; 256 * 1024])).await;
    assert_eq!(status, 413);
    assert_eq!(body, "too large");
    let (status, _, _) = send(get(&gw.url("/fine"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        up.connections(),
        2,
        "the connection that answered early is not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_whose_hop_by_hop_fields_were_dropped_keep_their_connection() {
    let up = Scripted::start(|_| {
        vec![w(concat!(
            "HTTP/1.1 200 OK\r\n",
            "Connection: keep-alive, X-Hop, Date\r\n",
            "Keep-Alive: timeout=5\r\n",
            "X-Hop: secret\r\n",
            "Proxy-Authenticate: Basic\r\n",
            "Trailer: x-digest\r\n",
            "Upgrade: h2c\r\n",
            "Date: Mon, 23 Nov 2026 10:00:00 GMT\r\n",
            "X-End: kept\r\n",
            "Transfer-Encoding: chunked\r\n",
            "\r\n",
            "4\r\nbody\r\n0\r\n\r\n",
        ))]
    })
    .await;
    let gw = up.gateway().await;
    let (status, headers, body) = send(get(&gw.url("/hops"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, "body");
    // Which fields are dropped is tested beside the client (`h1.rs`); the gateway adds its
    // own.
    assert!(headers["via"].to_str().unwrap().contains("fedgate"));
    // The connection itself was kept alive (no `close`): a second request reuses it.
    assert_eq!(send(get(&gw.url("/hops"))).await.0, 200);
    assert_eq!(up.connections(), 1);
}
