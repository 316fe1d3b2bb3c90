//! Phase 8 end to end: endpoint health. Real upstreams on 127.0.0.1:0 that answer their
//! health path with 500s, hang past the check timeout, reset connections, or are killed and
//! restarted; real upstreams whose requests fail with 502, resets and timeouts. Active checks
//! evict and restore endpoints within interval × threshold, outlier detection ejects after
//! consecutive failures (never more than `max_ejection_percent`), balancing uses eligible
//! endpoints only, and with none a request gets 503 `no healthy upstream` (or, in panic
//! mode, all endpoints share the traffic). Metric values are checked exactly.

use std::time::{Duration, Instant};

use fedgate_tests::*;

const INTERVAL: Duration = Duration::from_millis(100);
/// 10% of the interval, the most each check waits beyond it.
const JITTER: Duration = Duration::from_millis(10);
/// Room for scheduling on a busy test machine.
const SLACK: Duration = Duration::from_millis(300);

/// An HTTP check of `/healthz` every 100ms (+ up to 10%), 50ms timeout, thresholds 2 and 3.
fn http_check(kind: &str) -> String {
    format!(
        "[upstreams.app.health_check]\ntype = {kind:?}\n{}interval = \"100ms\"\njitter = \"10%\"\ntimeout = \"50ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 3\n",
        if kind == "http" { "path = \"/healthz\"\n" } else { "" }
    )
}

fn gateway_config(ups: &[&TestUpstream], extra: &str) -> String {
    let urls: Vec<String> = ups.iter().map(|u| u.url()).collect();
    format!(
        "{}[[routes]]\nupstream = \"app\"\n",
        upstream_block("app", &urls, extra)
    )
}

fn healthy_gauge(m: &str, up: &TestUpstream) -> Option<f64> {
    metric(
        m,
        "fedgate_upstream_endpoint_healthy",
        &[("upstream", "app"), ("endpoint", &up.url())],
    )
}

fn checks(m: &str, result: &str) -> f64 {
    metric(
        m,
        "fedgate_health_checks_total",
        &[("upstream", "app"), ("result", result)],
    )
    .unwrap_or(-1.0)
}

fn ejections(m: &str) -> f64 {
    metric(m, "fedgate_outlier_ejections_total", &[("upstream", "app")]).unwrap_or(-1.0)
}

fn no_healthy(m: &str) -> f64 {
    metric(
        m,
        "fedgate_upstream_errors_total",
        &[("upstream", "app"), ("kind", "no_healthy_endpoint")],
    )
    .unwrap_or(-1.0)
}

/// Polls the gauge of `up` until it reads `want`; returns how long that took.
async fn wait_gauge(gw: &TestGateway, up: &TestUpstream, want: f64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let m = gw.metrics().await;
        if healthy_gauge(&m, up) == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{} did not turn {want} within {within:?}",
            up.url()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `n` GETs and returns their statuses.
async fn statuses(gw: &TestGateway, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, _, _) = send(get(&gw.url("/x"))).await;
        out.push(status.as_u16());
    }
    out
}

/// Waits until every endpoint has had at least one check.
async fn checked_once(gw: &TestGateway, ups: &[&TestUpstream]) {
    let start = Instant::now();
    while ups.iter().any(|u| u.health_hits() == 0) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no health checks ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = gw;
}

fn upstream_health(doc: &serde_json::Value) -> serde_json::Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "upstream" && c["name"] == "app")
        .cloned()
        .expect("an upstream entry")
}

#[tokio::test]
async fn http_check_evicts_a_failing_endpoint_and_restores_it() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = TestGateway::start(&gateway_config(&[&a, &b], &http_check("http"))).await;
    checked_once(&gw, &[&a, &b]).await;
    // A check is a GET of the path with the endpoint's authority as Host, saying what it is.
    let check = a.last();
    assert_eq!(
        (check.method.as_str(), check.target.as_str()),
        ("GET", "/healthz")
    );
    assert_eq!(check.headers["host"], a.addr.to_string());
    assert_eq!(check.headers["user-agent"], "fedgate-health-check");
    let m = gw.metrics().await;
    assert_eq!(healthy_gauge(&m, &a), Some(1.0));
    assert_eq!(healthy_gauge(&m, &b), Some(1.0));
    assert_eq!(checks(&m, "failure"), 0.0);
    assert_eq!(checks(&m, "timeout"), 0.0);

    a.set_health(Fault::Status(500));
    let took = wait_gauge(&gw, &a, 0.0, Duration::from_secs(3)).await;
    // Three failing checks: at least two intervals after the first, at most three
    // intervals (each with its jitter) after the fault.
    assert!(took >= 2 * INTERVAL - Duration::from_millis(20), "{took:?}");
    assert!(took <= 3 * (INTERVAL + JITTER) + SLACK, "{took:?}");
    let m = gw.metrics().await;
    assert_eq!(healthy_gauge(&m, &b), Some(1.0));
    // At least the three that evicted it; checks go on every 100 ms, too often to read an
    // exact count here on a loaded machine (exact counts:
    // `expected_statuses_and_body_contains_decide_and_counters_are_exact`).
    assert!(checks(&m, "failure") >= 3.0);
    assert_eq!(checks(&m, "timeout"), 0.0);

    let (code, doc) = health(&gw).await;
    assert_eq!(code, 200);
    let entry = upstream_health(&doc);
    assert_eq!(entry["endpoints"], 2);
    assert_eq!(entry["healthy_endpoints"], 1);
    let states = entry["endpoint_states"].as_array().unwrap();
    assert_eq!(states[0]["endpoint"], a.url());
    assert_eq!(states[0]["healthy"], false);
    assert_eq!(states[0]["ejected"], false);
    assert_eq!(states[1]["healthy"], true);

    let (a0, b0) = (a.hits(), b.hits());
    assert_eq!(statuses(&gw, 10).await, vec![200; 10]);
    assert_eq!(a.hits(), a0, "an unhealthy endpoint gets no traffic");
    assert_eq!(b.hits(), b0 + 10);

    a.set_health(Fault::None);
    let took = wait_gauge(&gw, &a, 1.0, Duration::from_secs(3)).await;
    assert!(took <= 2 * (INTERVAL + JITTER) + SLACK, "{took:?}");
    let (_, doc) = health(&gw).await;
    assert_eq!(upstream_health(&doc)["healthy_endpoints"], 2);
    let (a0, b0) = (a.hits(), b.hits());
    assert_eq!(statuses(&gw, 10).await, vec![200; 10]);
    assert_eq!((a.hits() - a0, b.hits() - b0), (5, 5));
    gw.shutdown().await;
}

#[tokio::test]
async fn checks_that_hang_or_reset_fail_as_timeout_and_failure() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = TestGateway::start(&gateway_config(&[&a, &b], &http_check("http"))).await;
    checked_once(&gw, &[&a, &b]).await;

    // Hanging past the 50ms timeout: the checks keep their start-to-start schedule, and the
    // third one fails a timeout after it starts.
    a.set_health(Fault::Hang);
    let took = wait_gauge(&gw, &a, 0.0, Duration::from_secs(3)).await;
    assert!(
        took <= 3 * (INTERVAL + JITTER) + Duration::from_millis(50) + SLACK,
        "{took:?}"
    );
    let m = gw.metrics().await;
    // Checks go on every 100 ms, too often to read an exact count here on a loaded machine
    // (exact counts: `expected_statuses_and_body_contains_decide_and_counters_are_exact`).
    assert!(checks(&m, "timeout") >= 3.0);
    assert_eq!(checks(&m, "failure"), 0.0);
    assert_eq!(statuses(&gw, 4).await, vec![200; 4]);

    a.set_health(Fault::None);
    wait_gauge(&gw, &a, 1.0, Duration::from_secs(3)).await;

    // Resetting the connection is a failure, not a timeout.
    a.set_health(Fault::Reset);
    let timeouts = checks(&gw.metrics().await, "timeout");
    wait_gauge(&gw, &a, 0.0, Duration::from_secs(3)).await;
    let m = gw.metrics().await;
    assert!(checks(&m, "failure") >= 3.0);
    assert_eq!(checks(&m, "timeout"), timeouts);
    assert_eq!(healthy_gauge(&m, &b), Some(1.0));
    gw.shutdown().await;
}

#[tokio::test]
async fn tcp_check_follows_a_killed_and_restarted_endpoint() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = TestGateway::start(&gateway_config(&[&a, &b], &http_check("tcp"))).await;
    // TCP checks send no request: the upstreams see only traffic.
    tokio::time::sleep(3 * INTERVAL).await;
    assert_eq!(a.health_hits() + a.hits(), 0);
    let m = gw.metrics().await;
    assert!(checks(&m, "success") >= 4.0);
    assert_eq!(statuses(&gw, 2).await, vec![200; 2]);

    a.kill().await;
    let took = wait_gauge(&gw, &a, 0.0, Duration::from_secs(3)).await;
    assert!(took <= 3 * (INTERVAL + JITTER) + SLACK, "{took:?}");
    let b0 = b.hits();
    // Every request succeeds: none is sent to the dead endpoint.
    assert_eq!(statuses(&gw, 6).await, vec![200; 6]);
    assert_eq!(b.hits(), b0 + 6);

    a.restart().await;
    let took = wait_gauge(&gw, &a, 1.0, Duration::from_secs(3)).await;
    assert!(took <= 2 * (INTERVAL + JITTER) + SLACK, "{took:?}");
    let (a0, b0) = (a.hits(), b.hits());
    assert_eq!(statuses(&gw, 6).await, vec![200; 6]);
    assert_eq!((a.hits() - a0, b.hits() - b0), (3, 3));
    gw.shutdown().await;
}

/// Waits for `fedgate_outlier_ejections_total{upstream="app"}` to reach `want`.
async fn wait_ejections(gw: &TestGateway, want: f64) {
    let start = Instant::now();
    while ejections(&gw.metrics().await) != want {
        assert!(start.elapsed() < Duration::from_secs(2), "no ejection");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn consecutive_502s_eject_an_endpoint_for_a_growing_time() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let od = "[upstreams.app.outlier_detection]\nconsecutive_failures = 3\nbase_ejection_time = \"1s\"\nmax_ejection_time = \"10s\"\n";
    let gw = TestGateway::start(&gateway_config(&[&a, &b], od)).await;
    let m = gw.metrics().await;
    assert_eq!(ejections(&m), 0.0);
    assert_eq!(healthy_gauge(&m, &a), Some(1.0));
    // Only traffic is judged: no checks run without a health_check section.
    assert_eq!(checks(&m, "success"), 0.0);

    a.set_fault(Fault::Status(502));
    // Round robin: a, b, a, b, a. b's successes do not reset a's count.
    assert_eq!(statuses(&gw, 5).await, vec![502, 200, 502, 200, 502]);
    wait_ejections(&gw, 1.0).await;
    let m = gw.metrics().await;
    assert_eq!(healthy_gauge(&m, &a), Some(0.0));
    assert_eq!(healthy_gauge(&m, &b), Some(1.0));
    let (_, doc) = health(&gw).await;
    let entry = upstream_health(&doc);
    assert_eq!(entry["healthy_endpoints"], 1);
    assert_eq!(entry["endpoint_states"][0]["ejected"], true);
    assert_eq!(entry["endpoint_states"][0]["healthy"], true);

    assert_eq!(statuses(&gw, 6).await, vec![200; 6]);
    assert_eq!(a.hits(), 3);

    // The first ejection lasts the base time.
    wait_gauge(&gw, &a, 1.0, Duration::from_millis(1000) + SLACK).await;
    let mut got = statuses(&gw, 6).await;
    got.sort();
    assert_eq!(got, vec![200, 200, 200, 502, 502, 502]);
    wait_ejections(&gw, 2.0).await;
    assert_eq!(a.hits(), 6);
    // The second lasts twice as long.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(healthy_gauge(&gw.metrics().await, &a), Some(0.0));
    wait_gauge(&gw, &a, 1.0, Duration::from_millis(700) + SLACK).await;
    let m = gw.metrics().await;
    assert_eq!(ejections(&m), 2.0);
    assert_eq!(no_healthy(&m), 0.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn resets_and_timeouts_of_requests_count_as_failures() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let od = "response_timeout = \"200ms\"\n[upstreams.app.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_time = \"30s\"\n";
    let gw = TestGateway::start(&gateway_config(&[&a, &b], od)).await;

    a.set_fault(Fault::Reset);
    assert_eq!(statuses(&gw, 3).await, vec![502, 200, 502]);
    wait_ejections(&gw, 1.0).await;
    assert_eq!(statuses(&gw, 4).await, vec![200; 4]);
    assert_eq!(
        metric(
            &gw.metrics().await,
            "fedgate_upstream_errors_total",
            &[("upstream", "app"), ("kind", "reset")]
        ),
        Some(2.0)
    );

    // Hanging past the response timeout: b is now the one failing (a stays ejected, and
    // 50% of two endpoints keeps b in service however it fails).
    b.set_fault(Fault::Hang);
    assert_eq!(statuses(&gw, 3).await, vec![504; 3]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = gw.metrics().await;
    assert_eq!(ejections(&m), 1.0);
    assert_eq!(healthy_gauge(&m, &b), Some(1.0));
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_errors_total",
            &[("upstream", "app"), ("kind", "timeout")]
        ),
        Some(3.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn timeouts_eject_with_room_for_both() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let od = "response_timeout = \"200ms\"\n[upstreams.app.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_time = \"30s\"\nmax_ejection_percent = 100\n";
    let gw = TestGateway::start(&gateway_config(&[&a, &b], od)).await;
    a.set_fault(Fault::Hang);
    assert_eq!(statuses(&gw, 3).await, vec![504, 200, 504]);
    wait_ejections(&gw, 1.0).await;
    assert_eq!(statuses(&gw, 2).await, vec![200; 2]);
    // With 100%, the last endpoint can go too: then nothing is eligible.
    b.set_fault(Fault::Status(503));
    assert_eq!(statuses(&gw, 2).await, vec![503; 2]);
    wait_ejections(&gw, 2.0).await;
    let (status, _, body) = send(get(&gw.url("/x"))).await;
    assert_eq!(status, 503);
    assert_eq!(&body[..], b"no healthy upstream\n");
    assert_eq!(no_healthy(&gw.metrics().await), 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn max_ejection_percent_keeps_one_endpoint_in_service() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let od = "[upstreams.app.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_time = \"30s\"\nmax_ejection_percent = 50\n";
    let gw = TestGateway::start(&gateway_config(&[&a, &b], od)).await;
    a.set_fault(Fault::Status(502));
    b.set_fault(Fault::Status(502));
    assert_eq!(statuses(&gw, 4).await, vec![502; 4]);
    wait_ejections(&gw, 1.0).await;
    // Everything now goes to the one left, which keeps failing and stays in.
    assert_eq!(statuses(&gw, 8).await, vec![502; 8]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = gw.metrics().await;
    assert_eq!(ejections(&m), 1.0);
    let gauges = healthy_gauge(&m, &a).unwrap() + healthy_gauge(&m, &b).unwrap();
    assert_eq!(gauges, 1.0);
    assert_eq!(no_healthy(&m), 0.0);
    assert_eq!(a.hits() + b.hits(), 12);
    assert!(
        a.hits() == 10 || b.hits() == 10,
        "{} {}",
        a.hits(),
        b.hits()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn all_endpoints_down_is_503_no_healthy_upstream() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    a.set_health(Fault::Status(500));
    b.set_health(Fault::Status(503));
    let gw = TestGateway::start(&gateway_config(&[&a, &b], &http_check("http"))).await;
    // Endpoints start healthy: until the checks fail three times, traffic flows.
    assert_eq!(statuses(&gw, 2).await, vec![200; 2]);
    wait_gauge(&gw, &a, 0.0, Duration::from_secs(3)).await;
    wait_gauge(&gw, &b, 0.0, Duration::from_secs(3)).await;
    let hits = (a.hits(), b.hits());
    for _ in 0..3 {
        let (status, headers, body) = send(get(&gw.url("/x"))).await;
        assert_eq!(status, 503);
        assert_eq!(&body[..], b"no healthy upstream\n");
        assert!(headers.contains_key("x-request-id"));
    }
    assert_eq!((a.hits(), b.hits()), hits);
    let m = gw.metrics().await;
    assert_eq!(no_healthy(&m), 3.0);
    assert_eq!(
        metric(
            &m,
            "fedgate_requests_total",
            &[
                ("route", "route0"),
                ("upstream", "app"),
                ("method", "GET"),
                ("status", "503")
            ]
        ),
        Some(3.0)
    );
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 503);
    assert_eq!(doc["status"], "unhealthy");
    assert_eq!(upstream_health(&doc)["healthy_endpoints"], 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn panic_mode_spreads_over_all_endpoints_when_none_is_healthy() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    a.set_health(Fault::Status(500));
    b.set_health(Fault::Hang);
    let extra = format!("no_healthy = \"panic\"\n{}", http_check("http"));
    let gw = TestGateway::start(&gateway_config(&[&a, &b], &extra)).await;
    wait_gauge(&gw, &a, 0.0, Duration::from_secs(3)).await;
    wait_gauge(&gw, &b, 0.0, Duration::from_secs(3)).await;
    let hits = (a.hits(), b.hits());
    assert_eq!(statuses(&gw, 8).await, vec![200; 8]);
    assert_eq!((a.hits() - hits.0, b.hits() - hits.1), (4, 4));
    let m = gw.metrics().await;
    assert_eq!(no_healthy(&m), 0.0);

    // As soon as one endpoint is healthy again, panic ends: it takes all the traffic.
    a.set_health(Fault::None);
    wait_gauge(&gw, &a, 1.0, Duration::from_secs(3)).await;
    let hits = (a.hits(), b.hits());
    assert_eq!(statuses(&gw, 4).await, vec![200; 4]);
    assert_eq!((a.hits() - hits.0, b.hits() - hits.1), (4, 0));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_that_keeps_the_upstream_keeps_its_health_and_one_that_changes_it_starts_over() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    a.set_health(Fault::Status(500));
    let body = gateway_config(&[&a, &b], &http_check("http"));
    let gw = TestGateway::start(&body).await;
    wait_gauge(&gw, &a, 0.0, Duration::from_secs(3)).await;
    // Unchanged upstream: the state (and the monitor) carry over.
    gw.rewrite(&format!("{body}\n[forwarding]\nvia = \"edge\"\n"))
        .await
        .unwrap();
    assert_eq!(healthy_gauge(&gw.metrics().await, &a), Some(0.0));
    let (_, doc) = health(&gw).await;
    assert_eq!(upstream_health(&doc)["healthy_endpoints"], 1);

    // Without a, its gauge goes; b is served by a fresh upstream, starting healthy.
    let c = TestUpstream::start("c").await;
    gw.rewrite(&gateway_config(&[&b, &c], &http_check("http")))
        .await
        .unwrap();
    let m = gw.metrics().await;
    assert_eq!(healthy_gauge(&m, &a), None);
    assert_eq!(healthy_gauge(&m, &b), Some(1.0));
    assert_eq!(healthy_gauge(&m, &c), Some(1.0));
    // The old monitor stopped: a sees no more checks.
    let before = a.health_hits();
    tokio::time::sleep(3 * INTERVAL).await;
    assert_eq!(a.health_hits(), before);
    assert!(c.health_hits() > 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn http2_upstreams_are_checked_over_http2() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let extra = format!("protocol = \"http2\"\n{}", http_check("http"));
    let gw = TestGateway::start(&gateway_config(&[&a, &b], &extra)).await;
    checked_once(&gw, &[&a, &b]).await;
    let check = a.last();
    assert_eq!(check.target, "/healthz");
    assert_eq!(check.version, http::Version::HTTP_2);
    assert_eq!(
        check.authority.as_deref(),
        Some(a.addr.to_string().as_str())
    );
    assert_eq!(check.headers["user-agent"], "fedgate-health-check");
    a.set_health(Fault::Status(500));
    wait_gauge(&gw, &a, 0.0, Duration::from_secs(3)).await;
    let b0 = b.hits();
    assert_eq!(statuses(&gw, 4).await, vec![200; 4]);
    assert_eq!(b.hits(), b0 + 4);
    gw.shutdown().await;
}

/// A CA and a leaf certificate for `b.example`, written as `ca.pem`, `b.pem`, `b.key`.
fn pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["b.example".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("b.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("b.key"), key.serialize_pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_checked_over_verified_tls() {
    // The TLS endpoint is a second gateway terminating TLS in front of a plain upstream.
    let up = TestUpstream::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let d = dir.path().display();
    let front = TestGateway::start_full(&format!(
        "[server]\naccess_log = false\n[admin]\naddress = \"127.0.0.1:0\"\n[reload]\nwatch = false\n[[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{d}/b.pem\", key = \"{d}/b.key\" }}]\n{}[[routes]]\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    let https = format!("https://127.0.0.1:{}", front.addr.port());
    let config = |ca_dir: &str| {
        format!(
            "{}[upstreams.app.tls]\nca_file = \"{ca_dir}/ca.pem\"\nserver_name = \"b.example\"\n{}[[routes]]\nupstream = \"app\"\n",
            upstream_block("app", std::slice::from_ref(&https), ""),
            http_check("http")
        )
    };
    let gw = TestGateway::start(&config(&d.to_string())).await;
    checked_once(&gw, &[&up]).await;
    let check = up.last();
    assert_eq!(check.target, "/healthz");
    assert_eq!(check.headers["user-agent"], "fedgate-health-check");
    assert_eq!(check.headers["x-forwarded-proto"], "https");
    let endpoint = [("upstream", "app"), ("endpoint", https.as_str())];
    up.set_health(Fault::Status(500));
    let start = Instant::now();
    while metric(
        &gw.metrics().await,
        "fedgate_upstream_endpoint_healthy",
        &endpoint,
    ) != Some(0.0)
    {
        assert!(start.elapsed() < Duration::from_secs(3), "not evicted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, _, body) = send(get(&gw.url("/x"))).await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (503, &b"no healthy upstream\n"[..])
    );
    up.set_health(Fault::None);
    let start = Instant::now();
    while metric(
        &gw.metrics().await,
        "fedgate_upstream_endpoint_healthy",
        &endpoint,
    ) != Some(1.0)
    {
        assert!(start.elapsed() < Duration::from_secs(3), "not restored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(send(get(&gw.url("/x"))).await.0, 200);

    // Checks verify the certificate like requests do: another CA fails every check.
    let other = tempfile::tempdir().unwrap();
    pki(other.path());
    let untrusted = TestGateway::start(&config(&other.path().display().to_string())).await;
    let start = Instant::now();
    while metric(
        &untrusted.metrics().await,
        "fedgate_upstream_endpoint_healthy",
        &endpoint,
    ) != Some(0.0)
    {
        assert!(start.elapsed() < Duration::from_secs(3), "not evicted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let m = untrusted.metrics().await;
    assert!(checks(&m, "failure") >= 3.0);
    assert_eq!(checks(&m, "success"), 0.0);
}

/// Polls until the gauge of `up` reads `want`; returns the first metrics text that shows it
/// (counters read in the same scrape as the flip) and how long that took.
async fn flip(
    gw: &TestGateway,
    up: &TestUpstream,
    want: f64,
    within: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let m = gw.metrics().await;
        if healthy_gauge(&m, up) == Some(want) {
            return (m, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{} did not turn {want} within {within:?}",
            up.url()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Custom expected statuses and `body_contains`, end to end, with the check counters exact.
///
/// Checks keep running, so a counter is exact only at a known point of the schedule: the
/// scrape in which the gauge flips. An endpoint flips on its `unhealthy_threshold`-th
/// consecutive failure, and its next check ends an interval later (300 ms here, against a
/// 5 ms poll), so that scrape shows exactly the failures that evicted it.
#[tokio::test]
async fn expected_statuses_and_body_contains_decide_and_counters_are_exact() {
    const INTERVAL: Duration = Duration::from_millis(300);
    const TIMEOUT: Duration = Duration::from_millis(100);
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    // A 418 whose body says "fault 418" passes; a 419 (expected, but with another body) and
    // a 200 (not expected) fail.
    a.set_health(Fault::Status(418));
    b.set_health(Fault::Status(418));
    let check = "[upstreams.app.health_check]\npath = \"/healthz\"\nexpected_statuses = [418, 419]\nbody_contains = \"fault 418\"\ninterval = \"300ms\"\njitter = \"0%\"\ntimeout = \"100ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 3\n";
    let gw = TestGateway::start(&gateway_config(&[&a, &b], check)).await;
    checked_once(&gw, &[&a, &b]).await;
    let m = gw.metrics().await;
    assert_eq!(healthy_gauge(&m, &a), Some(1.0));
    assert_eq!(checks(&m, "failure"), 0.0);
    assert_eq!(checks(&m, "timeout"), 0.0);

    // The status is expected, the body lacks the text.
    a.set_health(Fault::Status(419));
    let (m, took) = flip(&gw, &a, 0.0, Duration::from_secs(5)).await;
    assert_eq!(checks(&m, "failure"), 3.0);
    assert_eq!(checks(&m, "timeout"), 0.0);
    assert_eq!(healthy_gauge(&m, &b), Some(1.0));
    assert!(took <= 3 * INTERVAL + SLACK, "{took:?}");
    assert_eq!(statuses(&gw, 4).await, vec![200; 4]);

    a.set_health(Fault::Status(418));
    let (m, took) = flip(&gw, &a, 1.0, Duration::from_secs(5)).await;
    assert_eq!(checks(&m, "failure"), 3.0);
    assert!(took <= 2 * INTERVAL + SLACK, "{took:?}");

    // A plain 200 is not among the expected statuses.
    a.set_health(Fault::None);
    let (m, _) = flip(&gw, &a, 0.0, Duration::from_secs(5)).await;
    assert_eq!(checks(&m, "failure"), 6.0);
    assert_eq!(checks(&m, "timeout"), 0.0);
    a.set_health(Fault::Status(418));
    flip(&gw, &a, 1.0, Duration::from_secs(5)).await;

    // Hanging: checks keep their start-to-start schedule, so the endpoint is evicted within
    // interval × threshold + timeout of the fault (not threshold × (interval + timeout)).
    a.set_health(Fault::Hang);
    let (m, took) = flip(&gw, &a, 0.0, Duration::from_secs(5)).await;
    assert_eq!(checks(&m, "timeout"), 3.0);
    assert_eq!(checks(&m, "failure"), 6.0);
    assert!(took <= 3 * INTERVAL + TIMEOUT + SLACK, "{took:?}");
    gw.shutdown().await;
}

/// `/health` answers within `admin.health_timeout` even when a plugin's health check runs
/// until its own (longer) call deadline: that plugin is reported unhealthy as timed out,
/// the others as they answered, and requests made while the check runs join it instead of
/// starting another.
#[tokio::test]
async fn health_answers_within_its_deadline_whatever_a_plugin_does() {
    let up = TestUpstream::start("app").await;
    let text = format!(
        "{}\n{}{}{}{}",
        HEAD.replace("[admin]\n", "[admin]\nhealth_timeout = \"300ms\"\n"),
        upstream_block("app", &[up.url()], ""),
        plugin(
            "stuck",
            "hostile",
            "health_check_timeout = \"2s\"",
            "mode = \"health-loop\""
        ),
        plugin("fine", "hostile", "", "mode = \"ok\""),
        plugin_route("all", "/", "app", &["stuck", "fine"], ""),
    );
    let gw = TestGateway::start_full(&text).await;
    let timed_out = "health check timed out: no answer within 300ms";
    // Two at once, as two probes would poll.
    let t = Instant::now();
    let ((c1, d1), (c2, d2)) = tokio::join!(health(&gw), health(&gw));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1500), "/health took {took:?}");
    for (code, doc) in [(c1, d1), (c2, d2)] {
        assert_eq!(code, 503);
        assert_eq!(doc["status"], "unhealthy");
        let stuck = plugin_health(&doc, "stuck");
        assert_eq!(stuck["status"], "unhealthy");
        assert_eq!(stuck["message"], timed_out);
        assert_eq!(plugin_health(&doc, "fine")["status"], "healthy");
    }

    // Still looping on its thread: joined, and again not waited for past the deadline.
    let t = Instant::now();
    let (code, doc) = health(&gw).await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(code, 503);
    assert_eq!(plugin_health(&doc, "stuck")["message"], timed_out);
    // Traffic goes on meanwhile.
    assert_eq!(send(get(&gw.url("/x"))).await.0, 200);

    // The call deadline stops the loop after 2 s: one check for the three requests,
    // counted once as a timeout.
    let stuck_timeouts = |m: &str| invocations(m, "stuck", "health_check", "timeout");
    let start = Instant::now();
    while stuck_timeouts(&gw.metrics().await) != 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the loop was never stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The call is counted just before its thread lets the plugin go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stuck_timeouts(&gw.metrics().await), 1.0);
    let fine_checks = invocations(&gw.metrics().await, "fine", "health_check", "ok");
    assert!((2.0..=3.0).contains(&fine_checks), "{fine_checks}");

    // The next request starts a new check (which times out in turn).
    let (_, doc) = health(&gw).await;
    assert_eq!(plugin_health(&doc, "stuck")["message"], timed_out);
    let start = Instant::now();
    while stuck_timeouts(&gw.metrics().await) != 2.0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no second check ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.shutdown().await;
}
