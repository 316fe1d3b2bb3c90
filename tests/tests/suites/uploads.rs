//! Slow uploads: the response timeout is time without progress, so a body that keeps moving
//! reaches the upstream whole however long it takes, and one that stalls is cut off.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fedgate_tests::*;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::Digest as _;

/// A POST whose body arrives as `chunks` pieces of `size` bytes, `every` apart, and then
/// (unless `stall`) ends; with `stall` the body never ends.
fn trickle(url: &str, chunks: usize, size: usize, every: Duration, stall: bool) -> Request<Body> {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            if stall {
                std::future::pending::<()>().await;
            }
            return None;
        }
        tokio::time::sleep(every).await;
        let chunk = Bytes::from(vec![(i % 251) as u8; size]);
        Some((Ok::<_, hyper::Error>(Frame::data(chunk)), i + 1))
    });
    Request::post(url)
        .header("content-type", "application/octet-stream")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

fn config(up: &TestUpstream) -> String {
    format!(
        "{}\n[[routes]]\nname = \"media\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "response_timeout = \"500ms\"")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_keeps_moving_outlasts_the_response_timeout() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&up)).await;
    // Twelve chunks 200 ms apart: about 2.4 s, almost five response timeouts.
    let started = Instant::now();
    let (status, _, body) = send(trickle(
        &gw.url("/hash"),
        12,
        64 * 1024,
        Duration::from_millis(200),
        false,
    ))
    .await;
    assert!(started.elapsed() >= Duration::from_millis(2400));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut h = sha2::Sha256::new();
    for i in 0..12usize {
        h.update(vec![(i % 251) as u8; 64 * 1024]);
    }
    let want = format!("{} {}", 12 * 64 * 1024, hex::encode(h.finalize()));
    assert_eq!(String::from_utf8_lossy(&body), want);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_errors_total",
            &[("upstream", "app"), ("kind", "timeout")]
        )
        .unwrap_or(0.0),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_cut_off_after_the_response_timeout() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(&up)).await;
    let started = Instant::now();
    let (status, _, _) = send(trickle(
        &gw.url("/hash"),
        3,
        16 * 1024,
        Duration::from_millis(100),
        true,
    ))
    .await;
    let took = started.elapsed();
    assert_eq!(status, 504);
    // The last byte moves at about 300 ms; the stall is noticed one or two timeouts later.
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_errors_total",
            &[("upstream", "app"), ("kind", "timeout")]
        ),
        Some(1.0)
    );
}
