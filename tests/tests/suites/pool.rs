//! The HTTP/1.1 upstream connection pool: reuse, connections the upstream closes (while
//! idle, or by `Connection: close`), the idle timeout, clients that leave mid-body, and many
//! requests at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fedgate_tests::*;
use futures_util::future::join_all;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn one_route(url: &str, extra: &str) -> String {
    format!(
        "{}\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        upstream_block("app", &[url.to_string()], extra)
    )
}

fn conns(text: &str, state: &str) -> f64 {
    metric(
        text,
        "fedgate_upstream_connections",
        &[("upstream", "app"), ("state", state)],
    )
    .expect("fedgate_upstream_connections is exported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_reused() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&one_route(&up.url(), "")).await;
    for i in 0..50 {
        let (status, _, body) = send(get(&gw.url(&format!("/n/{i}")))).await;
        assert_eq!(status, 200);
        assert_eq!(body, "upstream a");
    }
    assert_eq!(up.hits(), 50);
    assert_eq!(
        up.connections(),
        1,
        "sequential requests share one connection"
    );
    let m = gw.metrics().await;
    assert_eq!(conns(&m, "idle"), 1.0);
    assert_eq!(conns(&m, "active"), 0.0);
}

/// An upstream that answers one request per connection and then closes it without saying
/// so (no `Connection: close`), as a server whose keep-alive timeout just expired does.
async fn closing_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Dropping the stream closes the connection.
            });
        }
    });
    (url, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_while_idle_is_not_used_again() {
    let (url, accepted) = closing_upstream().await;
    let gw = TestGateway::start(&one_route(&url, "")).await;
    for _ in 0..5 {
        let (status, _, body) = send(get(&gw.url("/"))).await;
        assert_eq!(
            status, 200,
            "a closed pooled connection must not cost a 502"
        );
        assert_eq!(body, "ok");
        // Let the upstream's FIN arrive while the connection sits idle.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_errors_total",
            &[("upstream", "app"), ("kind", "reset")]
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_from_the_upstream_is_honoured() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&one_route(&up.url(), "")).await;
    for _ in 0..4 {
        let (status, headers, body) = send(get(&gw.url("/close"))).await;
        assert_eq!(status, 200);
        assert_eq!(body, "closing");
        assert!(
            headers.get("connection").is_none(),
            "Connection is hop-by-hop"
        );
    }
    assert_eq!(up.connections(), 4, "each closed connection is replaced");
    let (status, _, _) = send(get(&gw.url("/"))).await;
    assert_eq!(status, 200);
    let m = gw.metrics().await;
    assert_eq!(
        conns(&m, "idle"),
        1.0,
        "only the last connection stays open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_after_the_idle_timeout() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&one_route(&up.url(), "idle_timeout = \"300ms\"")).await;
    let (status, _, _) = send(get(&gw.url("/"))).await;
    assert_eq!(status, 200);
    assert_eq!(conns(&gw.metrics().await, "idle"), 1.0);
    let mut idle = 1.0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        idle = conns(&gw.metrics().await, "idle");
        if idle == 0.0 {
            break;
        }
    }
    assert_eq!(
        idle, 0.0,
        "the reaper closes connections idle past the timeout"
    );
    // And the pool still works afterwards, on a new connection.
    let (status, _, _) = send(get(&gw.url("/"))).await;
    assert_eq!(status, 200);
    assert_eq!(up.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_does_not_poison_the_pool() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&one_route(&up.url(), "")).await;
    for _ in 0..3 {
        // A fresh client each time, so its own connection goes away with it.
        let c = client();
        let resp = c.request(get(&gw.url("/bytes/20000000"))).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
        drop(body);
        drop(c);
    }
    // Every later request is answered whole, from a connection that carried nothing else.
    for _ in 0..5 {
        let (status, _, body) = send(get(&gw.url("/bytes/100000"))).await;
        assert_eq!(status, 200);
        assert_eq!(hex::encode(Sha256::digest(&body)), pattern_sha256(100_000));
    }
    let mut active = 1.0;
    for _ in 0..40 {
        active = conns(&gw.metrics().await, "active");
        if active == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(active, 0.0, "abandoned exchanges release their connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_share_a_bounded_pool() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&one_route(&up.url(), "max_idle_per_endpoint = 8")).await;
    let c = client();
    for round in 0..4 {
        let reqs = (0..64).map(|i| {
            let c = c.clone();
            let url = gw.url(&format!("/bytes/{}", 1000 + round * 64 + i));
            async move {
                let resp = c.request(get(&url)).await.unwrap();
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, body.len())
            }
        });
        for (i, (status, len)) in join_all(reqs).await.into_iter().enumerate() {
            assert_eq!(status, 200);
            assert_eq!(len, 1000 + round * 64 + i);
        }
    }
    assert_eq!(up.hits(), 256);
    let m = gw.metrics().await;
    assert!(
        conns(&m, "idle") <= 8.0,
        "max_idle_per_endpoint caps the idle list"
    );
    assert_eq!(conns(&m, "active"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_return_their_connection() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&one_route(&up.url(), "")).await;
    for _ in 0..3 {
        let req = http::Request::head(gw.url("/bytes/5000"))
            .body(empty())
            .unwrap();
        let (status, _, body) = send(req).await;
        assert_eq!(status, 200);
        assert!(body.is_empty());
        let (status, _, body) = send(get(&gw.url("/status/204"))).await;
        assert_eq!(status, 204);
        assert!(body.is_empty());
        let (status, _, body) = send(get(&gw.url("/bytes/10"))).await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), 10);
    }
    assert_eq!(up.hits(), 9);
    assert_eq!(
        up.connections(),
        1,
        "HEAD and 204 responses leave the connection reusable"
    );
}
