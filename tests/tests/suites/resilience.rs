//! Phases 8 and 9 end to end: circuit breakers and retries against real upstreams that
//! fail on demand (5xx, hanging past the timeout, resetting connections, killed and
//! restarted), with exact metric values and the `/health` rules.

use std::time::{Duration, Instant};

use fedgate_tests::*;

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

/// `fedgate_upstream_errors_total{upstream="app",kind}`; 0 when absent.
fn errors(m: &str, kind: &str) -> f64 {
    metric(
        m,
        "fedgate_upstream_errors_total",
        &[("upstream", "app"), ("kind", kind)],
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
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 3\nopen_duration = \"400ms\"\njitter = 0.0\nhalf_open_probes = 2",
        "",
    ))
    .await;
    let url = gw.url("/api");
    up.set_fault(Fault::Status(503));
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
    up.set_fault(Fault::None);
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
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 2\nopen_duration = \"300ms\"\njitter = 0.0\nhalf_open_probes = 1",
        "",
    ))
    .await;
    let url = gw.url("/");
    // A hang past the route's 300 ms timeout, then a reset.
    up.set_fault(Fault::Hang);
    assert_eq!(status(&url).await, 504);
    up.set_fault(Fault::Reset);
    assert_eq!(status(&url).await, 502);
    wait_state(&gw, 1.0).await;
    assert_eq!(status(&url).await, 503);
    assert_eq!(up.hits(), 2);

    // Still failing at the probe: open again, for twice as long.
    up.set_fault(Fault::Status(502));
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
    // The hang is a timeout, the RST a reset, and the probe's 502 neither.
    assert_eq!(errors(&m, "timeout"), 1.0);
    assert_eq!(errors(&m, "reset"), 1.0);
    assert_eq!(errors(&m, "connect"), 0.0);
    assert_eq!(transitions(&m, "closed", "open"), 1.0);
    assert_eq!(transitions(&m, "open", "half_open"), 1.0);
    assert_eq!(gauge(&m, "fedgate_circuit_breaker_state"), Some(1.0));
}

#[tokio::test]
async fn configured_500s_open_the_breaker_and_default_ones_do_not() {
    let up = TestUpstream::start("app").await;
    up.set_fault(Fault::Status(500));
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
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 2\nfailure_rate = 0.5\nmin_requests = 4",
        "",
    ))
    .await;
    up.set_fault(Fault::Status(404));
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
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 3\nopen_duration = \"200ms\"\njitter = 0.0\nhalf_open_probes = 1",
        "",
    ))
    .await;
    let url = gw.url("/");
    assert_eq!(status(&url).await, 200);
    up.kill().await;
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
    let up = TestUpstream::start("app").await;
    let text = breaker_config(
        &[up.url()],
        "consecutive_failures = 1\nopen_duration = \"60s\"",
        "",
    )
    .replace("[upstreams.app]\n", "[upstreams.app]\ncritical = false\n");
    let gw = TestGateway::start(&text).await;
    up.set_fault(Fault::Status(503));
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
    let bad = TestUpstream::start("app").await;
    let good = TestUpstream::start("app").await;
    bad.set_fault(Fault::Status(503));
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
    let up = TestUpstream::start("app").await;
    up.set_fault(Fault::Late {
        status: 503,
        after: Duration::from_millis(150),
    });
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
    let dead = TestUpstream::start("app").await;
    let good = TestUpstream::start("app").await;
    dead.kill().await;
    let gw = TestGateway::start(&retry_config(&[dead.url(), good.url()], "max_retries = 1")).await;
    for _ in 0..6 {
        assert_eq!(status(&gw.url("/")).await, 200);
    }
    // Round robin over two endpoints, and a retried request takes two turns (its try and
    // its retry): every request starts on the dead endpoint, is refused, and is retried on
    // the other.
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "success"), 6.0);
    assert_eq!(retries(&m, "failure"), 0.0);
    assert_eq!(errors(&m, "connect"), 6.0);
    assert_eq!(good.hits(), 6);
}

#[tokio::test]
async fn a_try_past_the_per_try_timeout_is_retried_on_the_other_endpoint() {
    let hanging = TestUpstream::start("app").await;
    let good = TestUpstream::start("app").await;
    hanging.set_fault(Fault::Hang);
    let gw = TestGateway::start(&retry_config(
        &[hanging.url(), good.url()],
        "max_retries = 1\nper_try_timeout = \"200ms\"",
    ))
    .await;
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(status(&gw.url("/")).await, 200);
        let took = t.elapsed();
        // The first try gives up at 200 ms, long before the route's 30 s.
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    // Every request starts on the hanging endpoint (see the test above).
    assert_eq!((hanging.hits(), good.hits()), (3, 3));
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "success"), 3.0);
    assert_eq!(retries(&m, "failure"), 0.0);
    assert_eq!(errors(&m, "timeout"), 3.0);
    assert_eq!(
        metric(
            &m,
            "fedgate_requests_total",
            &[
                ("route", "api"),
                ("upstream", "app"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        Some(3.0)
    );
}

#[tokio::test]
async fn a_reset_try_is_retried_on_the_other_endpoint() {
    let resetting = TestUpstream::start("app").await;
    let good = TestUpstream::start("app").await;
    resetting.set_fault(Fault::Reset);
    let gw = TestGateway::start(&retry_config(
        &[resetting.url(), good.url()],
        "max_retries = 1",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(status(&gw.url("/")).await, 200);
    }
    assert_eq!((resetting.hits(), good.hits()), (3, 3));
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "success"), 3.0);
    assert_eq!(errors(&m, "reset"), 3.0);
    assert_eq!(errors(&m, "connect"), 0.0);
}

/// A body of `n` bytes that is not one repeated byte, and its SHA-256.
fn upload(n: usize) -> (String, String) {
    use sha2::{Digest, Sha256};
    let body: String = (0..n)
        .map(|i| char::from(b'a' + ((i * 7 + i / 26) % 26) as u8))
        .collect();
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    (body, hash)
}

#[tokio::test]
async fn only_buffered_bodies_are_sent_again() {
    let bad = TestUpstream::start("app").await;
    bad.set_fault(Fault::Status(503));
    let good = TestUpstream::start("good").await;
    let text = format!(
        "{}[upstreams.app.retries]\nmax_retries = 1\n\
         [[routes]]\nname = \"streamed\"\npath_prefix = \"/streamed\"\nupstream = \"app\"\n\
         [[routes]]\nname = \"buffered\"\npath_prefix = \"/buffered\"\nupstream = \"app\"\nbuffer_body = \"1MiB\"\n",
        upstream_block("app", &[bad.url(), good.url()], "")
    );
    let gw = TestGateway::start(&text).await;
    let (body, hash) = upload(200_000);

    // Streamed: the body is gone once sent, so the PUT that met the 503 is not retried.
    // Round robin: the first goes to the bad endpoint, the second to the good one.
    let mut got = Vec::new();
    for _ in 0..2 {
        let (code, _, _) = send(request("PUT", &gw.url("/streamed/doc"), &[], &body)).await;
        got.push(code.as_u16());
    }
    assert_eq!(got, vec![503, 200]);
    assert_eq!((bad.hits(), good.hits()), (1, 1));
    let m = gw.metrics().await;
    for result in ["success", "failure", "budget_exhausted", "no_endpoint"] {
        assert_eq!(retries(&m, result), 0.0, "{result}");
    }

    // Buffered and idempotent: each PUT meets the bad endpoint first and is sent again,
    // whole and unchanged, to the good one.
    for _ in 0..2 {
        let (code, _, _) = send(request("PUT", &gw.url("/buffered/doc"), &[], &body)).await;
        assert_eq!(code, 200);
    }
    assert_eq!((bad.hits(), good.hits()), (3, 3));
    assert_eq!(retries(&gw.metrics().await, "success"), 2.0);
    let seen = good.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.method, "PUT");
        assert_eq!(s.body_len, body.len() as u64);
        assert_eq!(s.body_sha256, hash);
    }
    assert_eq!(seen[1].target, "/buffered/doc");
}

#[tokio::test]
async fn a_retry_the_breaker_refuses_counts_as_no_endpoint() {
    let up = TestUpstream::start("app").await;
    up.set_fault(Fault::Status(503));
    let text = format!(
        "{}[upstreams.app.circuit_breaker]\nconsecutive_failures = 1\nopen_duration = \"60s\"\n\
         [upstreams.app.retries]\nmax_retries = 2\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    );
    let gw = TestGateway::start(&text).await;
    // The first try's 503 opens the breaker on the spot: its retry finds no way to the
    // upstream, and the 503 stands.
    let (code, _, body) = send(get(&gw.url("/"))).await;
    assert_eq!(code, 503);
    assert_eq!(&body[..], b"fault 503 from app");
    assert_eq!(up.hits(), 1);
    let m = gw.metrics().await;
    assert_eq!(retries(&m, "no_endpoint"), 1.0);
    assert_eq!(retries(&m, "success"), 0.0);
    assert_eq!(retries(&m, "failure"), 0.0);
    assert_eq!(retries(&m, "budget_exhausted"), 0.0);
    assert_eq!(
        gauge(&m, "fedgate_circuit_breaker_rejections_total"),
        Some(1.0)
    );
}

/// The breaker's own 503, as opposed to the upstream's.
const BREAKER_BODY: &[u8] = b"upstream unavailable\n";

#[tokio::test]
async fn the_request_after_the_nth_failure_is_refused_without_waiting_for_the_task() {
    let up = TestUpstream::start("app").await;
    up.set_fault(Fault::Status(503));
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 3\nopen_duration = \"60s\"",
        "",
    ))
    .await;
    let url = gw.url("/");
    for _ in 0..3 {
        let (code, _, body) = send(get(&url)).await;
        assert_eq!(
            (code.as_u16(), &body[..]),
            (503, &b"fault 503 from app"[..])
        );
    }
    // No wait for the breaker's task: the third failure's report marked it open.
    let (code, headers, body) = send(get(&url)).await;
    assert_eq!((code.as_u16(), &body[..]), (503, BREAKER_BODY));
    assert!(headers.contains_key("retry-after"));
    assert_eq!(up.hits(), 3);
    wait_state(&gw, 1.0).await;
    let m = gw.metrics().await;
    assert_eq!(transitions(&m, "closed", "open"), 1.0);
    assert_eq!(
        gauge(&m, "fedgate_circuit_breaker_rejections_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn concurrent_requests_after_the_nth_failure_never_reach_the_upstream() {
    const N: usize = 3;
    const CLIENTS: usize = 8;
    let up = TestUpstream::start("app").await;
    up.set_fault(Fault::Status(503));
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 3\nopen_duration = \"60s\"",
        "",
    ))
    .await;
    let url = gw.url("/");
    // Each client sends one request at a time until the breaker answers it.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut sent = 0;
                loop {
                    sent += 1;
                    assert!(sent < 1000, "the breaker never opened");
                    let (code, _, body) = send(get(&url)).await;
                    assert_eq!(code, 503);
                    if &body[..] == BREAKER_BODY {
                        return;
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    // When the N-th failure is reported, at most the other clients' requests are in
    // flight; every request started after it is refused by the gateway.
    let hits = up.hits();
    assert!(
        (N..=N + CLIENTS - 1).contains(&hits),
        "{hits} requests reached the upstream"
    );
    wait_state(&gw, 1.0).await;
    let m = gw.metrics().await;
    assert_eq!(transitions(&m, "closed", "open"), 1.0);
    assert_eq!(
        gauge(&m, "fedgate_circuit_breaker_rejections_total"),
        Some(CLIENTS as f64)
    );
}

#[tokio::test]
async fn a_half_open_breaker_degrades_health() {
    let up = TestUpstream::start("app").await;
    up.set_fault(Fault::Status(503));
    let gw = TestGateway::start(&breaker_config(
        &[up.url()],
        "consecutive_failures = 1\nopen_duration = \"300ms\"\njitter = 0.0\nhalf_open_probes = 1",
        "",
    ))
    .await;
    let entry = |doc: &serde_json::Value| {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "upstream" && c["name"] == "app")
            .cloned()
            .expect("an upstream entry")
    };
    let (code, doc) = health(&gw).await;
    assert_eq!((code, &doc["status"]), (200, &serde_json::json!("healthy")));
    assert_eq!(entry(&doc)["critical"], true);
    assert_eq!(entry(&doc)["circuit_breaker"], "closed");

    assert_eq!(status(&gw.url("/")).await, 503);
    wait_state(&gw, 1.0).await;
    let (code, doc) = health(&gw).await;
    assert_eq!(
        (code, &doc["status"]),
        (503, &serde_json::json!("unhealthy"))
    );
    assert_eq!(entry(&doc)["status"], "unhealthy");
    assert_eq!(entry(&doc)["critical"], true);
    assert_eq!(entry(&doc)["circuit_breaker"], "open");

    // After the open period the task moves to half-open without any request: impaired,
    // not down.
    wait_state(&gw, 2.0).await;
    let (code, doc) = health(&gw).await;
    assert_eq!(
        (code, &doc["status"]),
        (200, &serde_json::json!("degraded"))
    );
    let e = entry(&doc);
    assert_eq!(e["status"], "degraded");
    assert_eq!(e["critical"], true);
    assert_eq!(e["circuit_breaker"], "half_open");
    assert_eq!(e["healthy_endpoints"], 1);
    assert_eq!(up.hits(), 1);
}
