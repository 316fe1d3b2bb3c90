//! How fast the circuit breaker reacts, end to end through a running gateway: the time from
//! an upstream's death to the first fast 503, the cost of one fast 503, and the time from
//! the upstream's return to a closed breaker. One client sends GETs back to back over a
//! keep-alive connection; the upstream is killed (its listener and connections closed) and
//! restarted on the same port.
//!
//! ```sh
//! cargo bench -p fedgate --features internals --bench breaker_timing
//! ```

// The figures are the benchmark's output.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedgate::breaker::State;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const OPEN: Duration = Duration::from_millis(500);

fn serve(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            conns.spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            while conns.try_join_next().is_some() {}
        }
    })
}

fn main() {
    // The client and the upstream run on this thread; the gateway on one of its own, with
    // one worker, as `bench/run.sh` runs it: every exchange crosses threads the same way,
    // like traffic from the network, instead of depending on where tasks land.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// Starts a gateway from `text` on a thread of its own; returns its first listener's
/// address and its shared state.
fn gateway_thread(text: String) -> (SocketAddr, std::sync::Arc<fedgate::gateway::Shared>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let config = fedgate::config::from_str(&text, std::path::Path::new(".")).unwrap();
            let gw = fedgate::Gateway::start(config, None).await.unwrap();
            tx.send((gw.listener_addrs()[0].1, gw.shared().clone()))
                .unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

async fn run() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up: SocketAddr = listener.local_addr().unwrap();
    let mut upstream = serve(listener);
    let text = format!(
        r#"
[server]
workers = 1
access_log = false
[admin]
address = "127.0.0.1:0"
[reload]
watch = false
[[listeners]]
address = "127.0.0.1:0"
[upstreams.app]
endpoints = ["http://{up}"]
[upstreams.app.circuit_breaker]
consecutive_failures = 5
open_duration = "{}ms"
jitter = 0.0
half_open_probes = 1
[[routes]]
upstream = "app"
timeout = "1s"
"#,
        OPEN.as_millis()
    );
    let (addr, shared) = gateway_thread(text);
    let url: hyper::Uri = format!("http://{addr}/users/alice").parse().unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = || async {
        let resp = client.get(url.clone()).await.expect("the gateway answers");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    };
    let state = || shared.runtime().breakers["app"].state();
    for _ in 0..2000 {
        assert_eq!(get().await.0, 200);
    }
    println!("circuit breaker reaction through the gateway (consecutive_failures = 5, open_duration = {OPEN:?}, one client back to back)");

    let mut proxied = Vec::new();
    let mut deaths = Vec::new();
    let mut rejections = Vec::new();
    let mut recoveries = Vec::new();
    for _ in 0..5 {
        // For comparison: a GET the upstream answers, through the same gateway.
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(get().await.0, 200);
        }
        proxied.push(t.elapsed() / 1000);
        // Death: the listener and every connection close.
        upstream.abort();
        let _ = upstream.await;
        let died = Instant::now();
        let mut sent = 0;
        loop {
            let (status, body) = get().await;
            sent += 1;
            if status == 503 && &body[..] == b"upstream unavailable\n" {
                break;
            }
        }
        deaths.push((died.elapsed(), sent));
        // The cost of a fast 503, client round trip included.
        let t = Instant::now();
        let n = 1000;
        for _ in 0..n {
            assert_eq!(get().await.0, 503);
        }
        rejections.push(t.elapsed() / n);
        // Recovery: the upstream returns on its port; requests go on back to back.
        upstream = serve(TcpListener::bind(up).await.unwrap());
        let back = Instant::now();
        loop {
            let ok = get().await.0 == 200;
            if ok && state() == State::Closed {
                break;
            }
        }
        recoveries.push(back.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{:<48} per trial (5 trials)", "case");
    println!(
        "{:<48} {}",
        "death to first fast 503 (ms, requests sent)",
        deaths
            .iter()
            .map(|(d, n)| format!("{:.2} ({n})", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<48} {}",
        "proxied GET (200), client round trip (µs)",
        proxied
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<48} {}",
        "fast 503, client round trip (µs)",
        rejections
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<48} {}",
        "return to closed breaker (ms)",
        recoveries
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
