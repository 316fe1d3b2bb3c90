//! The metrics contract on the real `/metrics` output: exact values after a known sequence
//! of requests, `promtool check metrics` on the output, and the admin endpoints.

use fedgate_tests::*;

async fn setup() -> (TestUpstream, TestGateway) {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&format!(
        "{}\n[[routes]]\nname = \"inbox\"\npath_prefix = \"/inbox\"\nmethods = [\"POST\"]\nupstream = \"app\"\n[[routes]]\nname = \"web\"\npath_prefix = \"/\"\nmethods = [\"GET\"]\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    (up, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_values_after_a_known_sequence() {
    let (_up, gw) = setup().await;
    for _ in 0..3 {
        assert_eq!(send(post(&gw.url("/inbox"), vec![b'x'; 1000])).await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(send(get(&gw.url("/status/404"))).await.0, 404);
    }
    assert_eq!(send(get(&gw.url("/bytes/5000"))).await.0, 200);
    assert_eq!(
        send(Request::delete(gw.url("/nothing")).body(empty()).unwrap())
            .await
            .0,
        404
    );

    let m = gw.metrics().await;
    let req = |route: &str, up: &str, method: &str, status: &str| {
        metric(
            &m,
            "fedgate_requests_total",
            &[
                ("route", route),
                ("upstream", up),
                ("method", method),
                ("status", status),
            ],
        )
    };
    assert_eq!(req("inbox", "app", "POST", "200"), Some(3.0));
    assert_eq!(req("web", "app", "GET", "404"), Some(2.0));
    assert_eq!(req("web", "app", "GET", "200"), Some(1.0));
    assert_eq!(req("unmatched", "none", "DELETE", "404"), Some(1.0));

    let count = |name: &str, labels: &[(&str, &str)]| metric(&m, &format!("{name}_count"), labels);
    let sum = |name: &str, labels: &[(&str, &str)]| metric(&m, &format!("{name}_sum"), labels);
    assert_eq!(
        count(
            "fedgate_request_duration_seconds",
            &[("route", "inbox"), ("upstream", "app"), ("method", "POST")]
        ),
        Some(3.0)
    );
    assert_eq!(
        count("fedgate_request_size_bytes", &[("route", "inbox")]),
        Some(3.0)
    );
    assert_eq!(
        sum("fedgate_request_size_bytes", &[("route", "inbox")]),
        Some(3000.0)
    );
    assert_eq!(
        count("fedgate_response_size_bytes", &[("route", "web")]),
        Some(3.0)
    );
    // "status 404" twice plus 5000 pattern bytes.
    assert_eq!(
        sum("fedgate_response_size_bytes", &[("route", "web")]),
        Some(2.0 * 10.0 + 5000.0)
    );
    assert_eq!(
        count(
            "fedgate_upstream_request_duration_seconds",
            &[("upstream", "app")]
        ),
        Some(6.0)
    );
    assert_eq!(
        metric(&m, "fedgate_requests_in_flight", &[("route", "inbox")]),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_connections",
            &[("upstream", "app"), ("state", "active")]
        ),
        Some(0.0)
    );
    let idle = metric(
        &m,
        "fedgate_upstream_connections",
        &[("upstream", "app"), ("state", "idle")],
    )
    .unwrap();
    assert!(
        idle >= 1.0,
        "the keep-alive pool should hold an idle connection, got {idle}"
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(metric(&m, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    // Bucket boundaries: a 1000-byte request falls in le=1024 but not le=256.
    assert_eq!(
        metric(
            &m,
            "fedgate_request_size_bytes_bucket",
            &[("route", "inbox"), ("le", "256")]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_request_size_bytes_bucket",
            &[("route", "inbox"), ("le", "1024")]
        ),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_gauge_counts_open_requests() {
    let (_up, gw) = setup().await;
    let slow = tokio::spawn(send(get(&gw.url("/slow/700"))));
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "fedgate_requests_in_flight", &[("route", "web")]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_connections",
            &[("upstream", "app"), ("state", "active")]
        ),
        Some(1.0)
    );
    assert_eq!(slow.await.unwrap().0, 200);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "fedgate_requests_in_flight", &[("route", "web")]),
        Some(0.0)
    );
}

use http::Request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_output() {
    let (_up, gw) = setup().await;
    send(post(&gw.url("/inbox"), "{}")).await;
    send(get(&gw.url("/x"))).await;
    send(get(&gw.url("/status/503"))).await;
    let text = gw.metrics().await;
    let (ok, report) = promtool_check_metrics(&text);
    assert!(ok, "promtool rejected the metrics:\n{report}");
    // Lint findings are printed but do not fail; we want none.
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer() {
    let (_up, gw) = setup().await;
    let admin = |p: &str| format!("http://{}{}", gw.admin, p);
    assert_eq!(send(get(&admin("/live"))).await.0, 200);
    assert_eq!(send(get(&admin("/ready"))).await.0, 200);
    let (s, h, body) = send(get(&admin("/health"))).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/json");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["status"], "healthy");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["uptime_seconds"].as_f64().unwrap() >= 0.0);
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["name"], "app");
    assert_eq!(checks[0]["healthy_endpoints"], 1);
    assert_eq!(send(get(&admin("/nope"))).await.0, 404);
    let (s, _, _) = send(post(&admin("/metrics"), "")).await;
    assert_eq!(s, 405);
}

fn upstream_conns(m: &str, state: &str) -> f64 {
    metric(
        m,
        "fedgate_upstream_connections",
        &[("upstream", "app"), ("state", state)],
    )
    .expect("fedgate_upstream_connections is exported")
}

/// Waits until the upstream's connection gauges read `active` and `idle`.
async fn wait_for_conns(gw: &TestGateway, active: f64, idle: f64) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let m = gw.metrics().await;
        let got = (upstream_conns(&m, "active"), upstream_conns(&m, "idle"));
        if got == (active, idle) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections (active, idle) are {got:?}, not {:?}",
            (active, idle)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_connections_count_connections_not_streams() {
    use http_body_util::BodyExt;
    let up = TestUpstream::start("h2").await;
    let gw = TestGateway::start(&format!(
        "{}\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "protocol = \"http2\"")
    ))
    .await;
    // One request opens the multiplexed connection, which then sits idle.
    assert_eq!(send(get(&gw.url("/first"))).await.0, 200);
    wait_for_conns(&gw, 0.0, 1.0).await;

    // Two responses streaming at once, on two client connections: two streams on the one
    // upstream connection, which is one active connection.
    const SIZE: u64 = 32 * 1024 * 1024;
    let c = client();
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let resp = c
            .request(get(&gw.url(&format!("/bytes/{SIZE}"))))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        let read = first.data_ref().map_or(0, |d| d.len());
        assert!(read > 0);
        bodies.push((body, read));
    }
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "fedgate_requests_in_flight", &[("route", "all")]),
        Some(2.0)
    );
    assert_eq!(
        upstream_conns(&m, "active"),
        1.0,
        "two streams, one connection"
    );
    assert_eq!(upstream_conns(&m, "idle"), 0.0);
    assert_eq!(up.connections(), 1);

    // One ends (read to the end): the other still holds the connection active.
    let (mut rest, mut len) = bodies.pop().unwrap();
    while let Some(frame) = rest.frame().await {
        len += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(len as u64, SIZE);
    let m = wait_for_metric(
        &gw.admin.to_string(),
        "fedgate_requests_in_flight",
        &[("route", "all")],
        1.0,
        std::time::Duration::from_secs(20),
    )
    .await;
    assert_eq!(upstream_conns(&m, "active"), 1.0);
    assert_eq!(upstream_conns(&m, "idle"), 0.0);

    // The other is abandoned by its client: no stream left, the connection is idle.
    drop(bodies);
    wait_for_conns(&gw, 0.0, 1.0).await;
    assert_eq!(up.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_tunnel_keeps_its_upstream_connection_active() {
    use futures_util::{SinkExt, StreamExt};
    let up = TestUpstream::start("ws").await;
    let gw = TestGateway::start(&format!(
        "{}\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(resp.status(), 101);
    let msg = tokio_tungstenite::tungstenite::Message::text("ping");
    ws.send(msg.clone()).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), msg);
    // The upgrade request is over (counted, not in flight); its connection carries the
    // tunnel.
    let m = wait_for_metric(
        &gw.admin.to_string(),
        "fedgate_requests_total",
        &[
            ("route", "all"),
            ("upstream", "app"),
            ("method", "GET"),
            ("status", "101"),
        ],
        1.0,
        std::time::Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        metric(&m, "fedgate_requests_in_flight", &[("route", "all")]),
        Some(0.0)
    );
    assert_eq!(upstream_conns(&m, "active"), 1.0);
    assert_eq!(upstream_conns(&m, "idle"), 0.0);

    // Closed, the tunnel's connection goes away: it never joins the idle pool.
    ws.close(None).await.unwrap();
    drop(ws);
    wait_for_conns(&gw, 0.0, 0.0).await;
}
