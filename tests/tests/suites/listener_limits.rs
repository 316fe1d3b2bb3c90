//! Phase 1 limits of a listener, over raw sockets: the request head size (`max_header_bytes`),
//! the connection limit (`max_connections`, beyond which the kernel backlog holds clients)
//! and the time a client has to send its head (`header_read_timeout`).

use std::time::{Duration, Instant};

use fedgate_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway whose one listener has `limits` (TOML lines of `[[listeners]]`).
async fn limited(up: &TestUpstream, limits: &str) -> TestGateway {
    TestGateway::start_full(&format!(
        r#"{HEAD}{limits}
{}
[[routes]]
name = "all"
upstream = "app"
"#,
        upstream_block("app", &[up.url()], "")
    ))
    .await
}

/// Reads until the peer closes: the bytes received, or `None` if the read failed (a reset).
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Some(out),
        Ok(Err(_)) => None,
        Err(_) => panic!("the connection was still open after {within:?}"),
    }
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: limits.example\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_max_header_bytes_gets_431_and_is_not_served() {
    let up = TestUpstream::start("a").await;
    let gw = limited(&up, "max_header_bytes = 8192").await;

    // A head that fits is served.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let fits = format!(
        "GET /fits HTTP/1.1\r\nHost: limits.example\r\nx-pad: {}\r\n\r\n",
        "a".repeat(7000)
    );
    s.write_all(fits.as_bytes()).await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"upstream a");
    assert_eq!(up.hits(), 1);

    // A head that does not fit in 8192 bytes: exactly 8192 bytes of it are sent (and no end
    // of head), so the gateway has read everything it was sent when it answers and closes;
    // unread bytes would turn its close into a reset that could discard the answer.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let start = "GET /too-big HTTP/1.1\r\nHost: limits.example\r\nx-pad: ";
    let mut head = start.as_bytes().to_vec();
    head.resize(8192, b'b');
    s.write_all(&head).await.unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(30))
        .await
        .expect("the gateway closes after its answer, without a reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer:?}"
    );
    // The connection was closed (read_to_close returned) and nothing reached the upstream.
    assert_eq!(up.hits(), 1);
    assert!(up.seen().iter().all(|s| s.target != "/too-big"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_client_waits_in_the_backlog_until_one_closes() {
    let up = TestUpstream::start("a").await;
    let gw = limited(&up, "max_connections = 2").await;

    // Two keep-alive connections, each served once and left open.
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    let mut second = TcpStream::connect(gw.addr).await.unwrap();
    for s in [&mut first, &mut second] {
        s.write_all(GET).await.unwrap();
        assert_eq!(read_response(s).await.status, 200);
    }
    assert_eq!(up.hits(), 2);

    // The third connects (the kernel completes the handshake from the backlog) and sends
    // its request, which is not read while the other two are open.
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    third.write_all(GET).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(1500), third.peek(&mut byte)).await;
    assert!(
        early.is_err(),
        "the third connection was answered while two were open: {early:?}"
    );
    assert_eq!(up.hits(), 2, "the third request reached the upstream");
    // The open connections still work.
    second.write_all(GET).await.unwrap();
    assert_eq!(read_response(&mut second).await.status, 200);
    assert_eq!(up.hits(), 3);

    // One closes: the third is accepted and its request completes.
    let closed = Instant::now();
    drop(first);
    let r = read_response(&mut third).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"upstream a");
    assert_eq!(up.hits(), 4);
    eprintln!(
        "the waiting connection was served {:?} after another closed",
        closed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_head_is_disconnected_after_header_read_timeout() {
    let up = TestUpstream::start("a").await;
    let gw = limited(&up, "header_read_timeout = \"1s\"").await;

    let mut stalled = TcpStream::connect(gw.addr).await.unwrap();
    let sent = Instant::now();
    stalled
        .write_all(b"GET /stalled HTTP/1.1\r\nHost: limits.example\r\nx-half: ")
        .await
        .unwrap();

    // Other clients are served meanwhile.
    for _ in 0..3 {
        let (status, _, body) = send(get(&gw.url("/other"))).await;
        assert_eq!(status, 200);
        assert_eq!(body, "upstream a");
    }

    // The stalled one is closed (no answer: hyper sends none on a head timeout) once the
    // timeout has passed, and not before.
    let got = read_to_close(&mut stalled, Duration::from_secs(30)).await;
    let waited = sent.elapsed();
    assert_eq!(got.as_deref(), Some(&b""[..]), "{got:?}");
    assert!(
        waited >= Duration::from_millis(950),
        "closed after {waited:?}, before the 1 s timeout"
    );
    assert!(up.seen().iter().all(|s| s.target != "/stalled"));
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_connects_and_sends_nothing_is_disconnected_after_header_read_timeout() {
    let up = TestUpstream::start("a").await;
    let gw = limited(&up, "header_read_timeout = \"1s\"\nmax_connections = 2").await;

    // Two silent clients take both connection slots...
    let connected = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    // ... and are closed once the timeout has passed, and not before, which frees the
    // slots for a client that speaks.
    for s in &mut silent {
        let got = read_to_close(s, Duration::from_secs(30)).await;
        assert_eq!(got.as_deref(), Some(&b""[..]), "{got:?}");
    }
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "closed after {waited:?}, before the 1 s timeout"
    );
    let (status, _, body) = send(get(&gw.url("/after"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, "upstream a");
    assert_eq!(up.hits(), 1);
}
