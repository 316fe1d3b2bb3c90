//! Phases 8 and 9 end to end: circuit breakers and retries against real upstreams that
//! fail on demand (5xx, hanging past the timeout, resetting connections, killed and
//! restarted), with exact metric values and the `/health` rules.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedgate_tests::*;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How a [`FaultyUpstream`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Ok = 0,
    Status503 = 1,
    Status502 = 2,
    Status404 = 3,
    /// Never answers.
    Hang = 4,
    /// Closes the connection as soon as a request arrives.
    Reset = 5,
    /// 503 after 150 ms.
    Slow503 = 6,
    Status500 = 7,
}

/// An upstream on a fixed port that fails as told, and can be killed and restarted.
struct FaultyUpstream {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl FaultyUpstream {
    async fn start() -> FaultyUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut up = FaultyUpstream {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(AtomicU8::new(Mode::Ok as u8)),
            hits: Arc::new(AtomicUsize::new(0)),
            task: None,
        };
        up.serve(listener);
        up
    }

    fn serve(&mut self, listener: TcpListener) {
        let (mode, hits) = (self.mode.clone(), self.hits.clone());
        self.task = Some(tokio::spawn(async move {
            // Connections live in the accept task's set: killing the task closes them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (mode, hits) = (mode.clone(), hits.clone());
                conns.spawn(async move {
                    let service = service_fn(move |_req: hyper::Request<Incoming>| {
                        let (mode, hits) = (mode.clone(), hits.clone());
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let status = match mode.load(Ordering::SeqCst) {
                                0 => 200,
                                1 => 503,
                                2 => 502,
                                3 => 404,
                                4 => {
                                    std::future::pending::<()>().await;
                                    unreachable!()
                                }
                                5 => return Err("reset"),
                                7 => 500,
                                _ => {
                                    tokio::time::sleep(Duration::from_millis(150)).await;
                                    503
                                }
                            };
                            let mut r = full(format!("status {status}\n"));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, &'static str>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        }));
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and drops every connection: connects are refused from now on.
    fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens on the same port again.
    async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn breaker_config(urls: &[String], breaker: &str, extra: &str) -> String {
    format!(
        "{}[upstreams.app.circuit_breaker]\n{breaker}\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"app\"\ntimeout = \"300ms\"\n{extra}",
        upstream_block("app", urls, "")
    )
}

fn transitions(m: &str, from: &str, to: &str) -> f64 {
    metric(
        m,
        "fedgate_circuit_breaker_transitions_total",
        &[("upstream", "app"), ("from", from), ("to", to)],
    )
    .unwrap_or(0.0)
}

fn gauge(m: &str, name: &str) -> Option<f64> {
    metric(m, name, &[("upstream", "app")])
}

/// Waits for the breaker's task to have made the transition the last report called for (it
/// runs beside the request path, which only reports).
async fn wait_state(gw: &TestGateway, state: f64) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while gauge(&gw.metrics().await, "fedgate_circuit_breaker_state") != Some(state) {
        assert!(
            Instant::now() < deadline,
            "the breaker never reached state {state}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn status(url: &str) -> u16 {
    send(get(url)).await.0.as_u16()
}

#[tokio::test]
async fn the_breaker_opens_after_exactly_n_failures_rejects_fast_probes_and_closes() {
    let up = FaultyUpstream::start().await;
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 3\nopen_duration = \"400ms\"\njitter = 0.0\nhalf_open_probes = 2",
        "",
    ))
    .await;
    let url = gw.url("/api");
    up.set(Mode::Status503);
    for _ in 0..2 {
        assert_eq!(status(&url).await, 503);
    }
    assert_eq!(
        gauge(&gw.metrics().await, "fedgate_circuit_breaker_state"),
        Some(0.0)
    );
    assert_eq!(status(&url).await, 503);
    wait_state(&gw, 1.0).await;
    assert_eq!(up.hits(), 3);

    // Open: answered by the gateway at once, without contacting the upstream.
    let mut fastest = Duration::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        let (code, headers, body) = send(get(&url)).await;
        fastest = fastest.min(t.elapsed());
        assert_eq!(code, 503);
        assert_eq!(&body[..], b"upstream unavailable\n");
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert_eq!(retry, 1, "400 ms open period rounds up to 1 s");
    }
    assert_eq!(up.hits(), 3);
    assert!(
        fastest < Duration::from_millis(1),
        "fastest rejection {fastest:?}"
    );
    let m = gw.metrics().await;
    assert_eq!(gauge(&m, "fedgate_circuit_breaker_state"), Some(1.0));
    assert_eq!(
        gauge(&m, "fedgate_circuit_breaker_rejections_total"),
        Some(20.0)
    );
    assert_eq!(transitions(&m, "closed", "open"), 1.0);
    // A critical upstream with an open breaker makes the gateway unhealthy.
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 503);
    assert_eq!(doc["status"], "unhealthy");
    let entry = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "app")
        .unwrap()
        .clone();
    assert_eq!(entry["circuit_breaker"], "open");

    // The upstream recovers; after the open period two probes go through and close it.
    up.set(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(status(&url).await, 200);
    assert_eq!(status(&url).await, 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    while gauge(&gw.metrics().await, "fedgate_circuit_breaker_state") != Some(0.0) {
        assert!(Instant::now() < deadline, "the breaker did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status(&url).await, 200);
    assert_eq!(up.hits(), 6);
    let m = gw.metrics().await;
    assert_eq!(transitions(&m, "open", "half_open"), 1.0);
    assert_eq!(transitions(&m, "half_open", "closed"), 1.0);
    assert_eq!(transitions(&m, "half_open", "open"), 0.0);
    assert_eq!(health(&gw).await.0, 200);
}

#[tokio::test]
async fn a_failed_probe_reopens_and_timeouts_and_resets_count_as_failures() {
    let up = FaultyUpstream::start().await;
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 2\nopen_duration = \"300ms\"\njitter = 0.0\nhalf_open_probes = 1",
        "",
    ))
    .await;
    let url = gw.url("/");
    // A hang past the route's 300 ms timeout, then a reset.
    up.set(Mode::Hang);
    assert_eq!(status(&url).await, 504);
    up.set(Mode::Reset);
    assert_eq!(status(&url).await, 502);
    wait_state(&gw, 1.0).await;
    assert_eq!(status(&url).await, 503);
    assert_eq!(up.hits(), 2);

    // Still failing at the probe: open again, for twice as long.
    up.set(Mode::Status502);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(status(&url).await, 502);
    let deadline = Instant::now() + Duration::from_secs(2);
    while transitions(&gw.metrics().await, "half_open", "open") != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the failed probe did not reopen it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, headers, _) = send(get(&url)).await;
    assert_eq!(code, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(up.hits(), 3);
    let m = gw.metrics().await;
    assert_eq!(transitions(&m, "closed", "open"), 1.0);
    assert_eq!(transitions(&m, "open", "half_open"), 1.0);
    assert_eq!(gauge(&m, "fedgate_circuit_breaker_state"), Some(1.0));
}

#[tokio::test]
async fn configured_500s_open_the_breaker_and_default_ones_do_not() {
    let up = FaultyUpstream::start().await;
    up.set(Mode::Status500);
    // By default a 500 is the application's answer, not a failure of the upstream ...
    let default =
        TestGateway::start(&breaker_config(&[up.url()], "consecutive_failures = 2", "")).await;
    for _ in 0..4 {
        assert_eq!(status(&default.url("/")).await, 500);
    }
    assert_eq!(
        gauge(&default.metrics().await, "fedgate_circuit_breaker_state"),
        Some(0.0)
    );
    // ... unless the operator lists it.
    let listed = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 2\nfailure_statuses = [500, 502, 503, 504]",
        "",
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(status(&listed.url("/")).await, 500);
    }
    wait_state(&listed, 1.0).await;
    assert_eq!(status(&listed.url("/")).await, 503);
    assert_eq!(up.hits(), 6);
    let m = listed.metrics().await;
    assert_eq!(transitions(&m, "closed", "open"), 1.0);
    assert_eq!(
        gauge(&m, "fedgate_circuit_breaker_rejections_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn client_errors_never_open_the_breaker() {
    let up = FaultyUpstream::start().await;
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 2\nfailure_rate = 0.5\nmin_requests = 4",
        "",
    ))
    .await;
    up.set(Mode::Status404);
    for _ in 0..10 {
        assert_eq!(status(&gw.url("/")).await, 404);
    }
    let m = gw.metrics().await;
    assert_eq!(gauge(&m, "fedgate_circuit_breaker_state"), Some(0.0));
    assert_eq!(transitions(&m, "closed", "open"), 0.0);
    assert_eq!(up.hits(), 10);
}

#[tokio::test]
async fn a_killed_upstream_opens_the_breaker_and_its_restart_closes_it() {
    let mut up = FaultyUpstream::start().await;
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 3\nopen_duration = \"200ms\"\njitter = 0.0\nhalf_open_probes = 1",
        "",
    ))
    .await;
    let url = gw.url("/");
    assert_eq!(status(&url).await, 200);
    up.kill();
    for _ in 0..3 {
        assert_eq!(status(&url).await, 502);
    }
    wait_state(&gw, 1.0).await;
    assert_eq!(status(&url).await, 503);
    // Refused connects (or a pooled connection found closed first).
    let m = gw.metrics().await;
    let kind = |k| {
        metric(
            &m,
            "fedgate_upstream_errors_total",
            &[("upstream", "app"), ("kind", k)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(kind("connect") + kind("reset"), 3.0);
    assert!(kind("connect") >= 2.0);
    up.restart().await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(status(&url).await, 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    while gauge(&gw.metrics().await, "fedgate_circuit_breaker_state") != Some(0.0) {
        assert!(Instant::now() < deadline, "the breaker did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn a_non_critical_upstream_only_degrades_health() {
    let up = FaultyUpstream::start().await;
    let text = breaker_config(
        &[up.url()],
        "consecutive_failures = 1\nopen_duration = \"60s\"",
        "",
    )
    .replace("[upstreams.app]\n", "[upstreams.app]\ncritical = false\n");
    let gw = TestGateway::start(&text).await;
    up.set(Mode::Status503);
    assert_eq!(status(&gw.url("/")).await, 503);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (code, doc) = health(&gw).await;
        if doc["status"] == "degraded" {
            assert_eq!(code, 200);
            break;
        }
        assert!(Instant::now() < deadline, "{doc}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn retry_config(urls: &[String], retries: &str) -> String {
    format!(
        "{}[upstreams.app.retries]\n{retries}\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        upstream_block("app", urls, "")
    )
}

fn retries(m: &str, result: &str) -> f64 {
    metric(
        m,
        "fedgate_retries_total",
        &[("upstream", "app"), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_the_healthy_endpoint() {
    let bad = FaultyUpstream::start().await;
    let good = FaultyUpstream::start().await;
    bad.set(Mode::Status503);
    let gw = TestGateway::start(&retry_config(&[bad.url(), good.url()], "max_retries = 2")).await;
    for _ in 0..10 {
        assert_eq!(status(&gw.url("/users/alice")).await, 200);
    }
    // Every try that met the bad endpoint was retried once, and the retry succeeded.
    let first_tries_on_bad = bad.hits();
    assert!(first_tries_on_bad > 0);
    assert_eq!(good.hits(), 10);
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "success"), first_tries_on_bad as f64);
    assert_eq!(retries(&m, "failure"), 0.0);

    // A POST is not idempotent: the bad endpoint's 503 reaches the client.
    let before = (bad.hits(), good.hits());
    let mut refused = 0;
    for _ in 0..10 {
        if send(post(&gw.url("/inbox"), "{}")).await.0 == 503 {
            refused += 1;
        }
    }
    assert_eq!(refused, bad.hits() - before.0);
    assert_eq!(good.hits() - before.1, 10 - refused);
    assert_eq!(
        retries(&gw.metrics().await, "success"),
        first_tries_on_bad as f64
    );
}

#[tokio::test]
async fn retries_stop_at_the_budget() {
    let up = FaultyUpstream::start().await;
    up.set(Mode::Slow503);
    let gw = TestGateway::start(&retry_config(
        &[up.url()],
        "max_retries = 2\nbudget_percent = 0.0\nmin_concurrency = 1",
    ))
    .await;
    let url = gw.url("/");
    // Ten concurrent GETs all fail after 150 ms; the budget lets one retry be in flight
    // at a time, so one request is retried (twice) and nine are refused a retry.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { status(&url).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "budget_exhausted"), 9.0);
    assert_eq!(retries(&m, "failure"), 2.0);
    assert_eq!(retries(&m, "success"), 0.0);
    assert_eq!(up.hits(), 12);
}

#[tokio::test]
async fn retries_go_to_another_endpoint_when_one_is_down() {
    let mut dead = FaultyUpstream::start().await;
    let good = FaultyUpstream::start().await;
    dead.kill();
    let gw = TestGateway::start(&retry_config(&[dead.url(), good.url()], "max_retries = 1")).await;
    for _ in 0..6 {
        assert_eq!(status(&gw.url("/")).await, 200);
    }
    let m = gw.metrics().await;
    let retried = retries(&m, "success");
    assert!(retried >= 1.0);
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_errors_total",
            &[("upstream", "app"), ("kind", "connect")]
        ),
        Some(retried)
    );
}
