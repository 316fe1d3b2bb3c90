//! ABI 0.2.0 observers, timers and outbound HTTP end to end: the `v2-probe` component
//! (tests/plugins/v2-probe) loaded by an in-process gateway in front of real upstreams.
//! Observers receive every finished exchange off the request path, in batches; a full
//! queue drops and counts; a drain or a reload delivers what is queued; a hostile observer
//! or timer fails alone.

use std::time::{Duration, Instant};

use fedgate_tests::*;

/// A Mastodon-style Create from `actor`.
fn create(actor: &str) -> String {
    format!(
        r#"{{"@context":"https://www.w3.org/ns/activitystreams","id":"{actor}/statuses/1/activity","type":"Create","actor":"{actor}","to":["https://www.w3.org/ns/activitystreams#Public"],"object":{{"id":"{actor}/statuses/1","type":"Note"}}}}"#
    )
}

/// Every finished exchange reaches the observer once, with what the gateway knew of it:
/// the registered request fields, the activity view, the status and where it came from,
/// byte counts. Answers the gateway gave itself (a dead upstream's 502) are observed too.
/// No inline hook runs for an observer.
#[tokio::test]
async fn observers_see_every_finished_exchange_with_its_details() {
    let up = TestUpstream::start("app").await;
    let dead = free_port();
    let gw = TestGateway::start(&format!(
        "{}{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        upstream_block("gone", &[format!("http://127.0.0.1:{dead}")], ""),
        plugin("probe", "v2-probe", "", "mode = \"observe\""),
        plugin_route(
            "inbox",
            "/users/",
            "app",
            &["probe"],
            "buffer_body = \"64KiB\""
        ),
        plugin_route("dead", "/dead", "gone", &["probe"], ""),
    ))
    .await;
    let mut response_bytes = 0u64;
    for _ in 0..3 {
        let mut req = get(&gw.url("/users/alice"));
        req.headers_mut()
            .insert("user-agent", "ua-1".parse().unwrap());
        let (status, _, body) = send(req).await;
        assert_eq!(status, 200);
        response_bytes += body.len() as u64;
    }
    let mut request_bytes = 0u64;
    for actor in [
        "https://Mastodon.Social/users/bob",
        "https://mastodon.social/users/eve",
    ] {
        let body = create(actor);
        request_bytes += body.len() as u64;
        let mut req = post(&gw.url("/users/alice/inbox"), body);
        req.headers_mut()
            .insert("content-type", "application/activity+json".parse().unwrap());
        req.headers_mut()
            .insert("user-agent", "Mastodon/4.3".parse().unwrap());
        let (status, _, body) = send(req).await;
        assert_eq!(status, 200);
        response_bytes += body.len() as u64;
    }
    // A large body is parsed when its exchange is queued (the queue keeps only the view):
    // the observer sees the same thing.
    let big = create("https://big.example/users/zoe").replace(
        r#""type":"Note""#,
        &format!(r#""type":"Note","content":"{}""#, "x".repeat(20_000)),
    );
    request_bytes += big.len() as u64;
    let mut req = post(&gw.url("/users/alice/inbox"), big);
    req.headers_mut()
        .insert("content-type", "application/activity+json".parse().unwrap());
    let (status, _, body) = send(req).await;
    assert_eq!(status, 200);
    response_bytes += body.len() as u64;
    let (status, _, body) = send(get(&gw.url("/dead/x"))).await;
    assert_eq!(status, 502);
    response_bytes += body.len() as u64;

    let m = wait_for_sum(
        &gw,
        "probe_observed_total",
        &[],
        7.0,
        Duration::from_secs(5),
    )
    .await;
    let one = |labels: &[(&str, &str)]| sum(&m, "probe_observed_total", labels);
    assert_eq!(
        one(&[
            ("route", "inbox"),
            ("method", "GET"),
            ("status", "200"),
            ("origin", "upstream"),
            ("ua", "ua-1"),
            ("missing", "-"),
            ("activity", "-"),
            ("signer", "-"),
            ("completed", "true"),
        ]),
        3.0,
        "{m}"
    );
    assert_eq!(
        one(&[
            ("route", "inbox"),
            ("method", "POST"),
            ("ua", "Mastodon/4.3"),
            ("activity", "Create@mastodon.social"),
        ]),
        2.0,
        "{m}"
    );
    assert_eq!(
        one(&[("activity", "Create@big.example"), ("status", "200")]),
        1.0,
        "{m}"
    );
    assert_eq!(
        one(&[("route", "dead"), ("status", "502"), ("origin", "gateway")]),
        1.0,
        "{m}"
    );
    // Bytes reach the observer once the response has ended: exactly what went each way.
    let bytes = |d: &str| metric(&m, "probe_observed_bytes_total", &[("direction", d)]);
    assert_eq!(bytes("request"), Some(request_bytes as f64), "{m}");
    assert_eq!(bytes("response"), Some(response_bytes as f64), "{m}");
    let observed = |r: &str| {
        metric(
            &m,
            "fedgate_plugin_observed_exchanges_total",
            &[("plugin", "probe"), ("result", r)],
        )
    };
    assert_eq!(observed("delivered"), Some(7.0), "{m}");
    assert_eq!(observed("dropped"), Some(0.0), "{m}");
    let batches = metric(
        &m,
        "fedgate_plugin_observer_batches_total",
        &[("plugin", "probe")],
    )
    .unwrap();
    assert_eq!(invocations(&m, "probe", "observe", "ok"), batches, "{m}");
    assert_eq!(
        metric(&m, "probe_observe_batches_total", &[]),
        Some(batches)
    );
    assert_eq!(invocations(&m, "probe", "on_request", "ok"), 0.0);
    assert!(gw.shutdown().await);
}

/// A full batch goes at once, a partial one waits for `max_delay`, and a drain delivers
/// what is still queued before the gateway stops: nothing counted is lost.
#[tokio::test]
async fn batches_fill_or_wait_and_a_drain_delivers_what_is_queued() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin(
            "probe",
            "v2-probe",
            "observe = { batch = 4, max_delay = \"30s\" }",
            "mode = \"observe\""
        ),
        plugin_route("all", "/", "app", &["probe"], ""),
    ))
    .await;
    for _ in 0..9 {
        let (status, _, _) = send(get(&gw.url("/x"))).await;
        assert_eq!(status, 200);
    }
    // Two full batches of four went at once; the ninth waits for its batch or its delay.
    // (The probe counts a batch after its exchanges, within one call: a scrape may fall
    // between the two, so both are waited for.)
    let m = wait_until(&gw, Duration::from_secs(5), |m| {
        sum(m, "probe_observed_total", &[]) >= 8.0
            && metric(m, "probe_observe_batches_total", &[]).is_some_and(|b| b >= 2.0)
    })
    .await;
    assert_eq!(sum(&m, "probe_observed_total", &[]), 8.0);
    assert_eq!(metric(&m, "probe_observe_batches_total", &[]), Some(2.0));
    wait_for_sum(
        &gw,
        "fedgate_plugin_observer_queued",
        &[("plugin", "probe")],
        1.0,
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sum(&gw.metrics().await, "probe_observed_total", &[]),
        8.0,
        "a partial batch went before its delay"
    );
    let shared = gw.gw().shared().clone();
    assert!(gw.shutdown().await);
    let m = shared.metrics().render();
    assert_eq!(sum(&m, "probe_observed_total", &[]), 9.0, "{m}");
    assert_eq!(metric(&m, "probe_observe_batches_total", &[]), Some(3.0));
}

/// A reload that replaces the observing plugin mid-traffic loses nothing: the old
/// plugin's queue is delivered before it goes, the new one takes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_mid_traffic_loses_no_exchange() {
    let up = TestUpstream::start("app").await;
    let config = |timeout: &str| {
        format!(
            "{}{}{}",
            upstream_block("app", &[up.url()], ""),
            plugin(
                "probe",
                "v2-probe",
                &format!("observe = {{ batch = 16, max_delay = \"2s\", timeout = \"{timeout}\" }}"),
                "mode = \"observe\""
            ),
            plugin_route("all", "/", "app", &["probe"], ""),
        )
    };
    let gw = TestGateway::start(&config("1s")).await;
    let url = gw.url("/x");
    let traffic = tokio::spawn(async move {
        let mut sent = 0u32;
        let c = client();
        for _ in 0..60 {
            let batch = (0..5).map(|_| send_with(&c, get(&url)));
            for (status, _, _) in futures_util::future::join_all(batch).await {
                assert_eq!(status, 200);
                sent += 1;
            }
        }
        sent
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.rewrite(&config("2s")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.rewrite(&config("3s")).await.unwrap();
    let sent = traffic.await.unwrap();
    assert_eq!(sent, 300);
    let m = wait_for_sum(
        &gw,
        "probe_observed_total",
        &[],
        f64::from(sent),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_observed_exchanges_total",
            &[("plugin", "probe"), ("result", "dropped")]
        ),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_reloads_total",
            &[("plugin", "probe"), ("result", "success")]
        ),
        Some(2.0),
        "{m}"
    );
    assert!(gw.shutdown().await);
}

/// A slow observer never slows responses: its queue fills, the surplus is dropped and
/// counted, and what was queued is delivered.
#[tokio::test]
async fn a_full_queue_drops_and_counts_and_responses_do_not_wait() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin(
            "probe",
            "v2-probe",
            "observe = { batch = 1, queue = 4 }",
            "mode = \"observe\""
        ),
        plugin_route("all", "/", "app", &["probe"], ""),
    ))
    .await;
    // Each delivery spins 50 ms: 40 requests at once outrun it.
    let c = client();
    let sends = (0..40).map(|_| send_with(&c, get(&gw.url("/slow"))));
    for (status, _, _) in futures_util::future::join_all(sends).await {
        assert_eq!(status, 200);
    }
    let observed = |m: &str, r: &str| {
        metric(
            m,
            "fedgate_plugin_observed_exchanges_total",
            &[("plugin", "probe"), ("result", r)],
        )
        .unwrap_or(0.0)
    };
    let m = wait_until(&gw, Duration::from_secs(10), |m| {
        let queued =
            metric(m, "fedgate_plugin_observer_queued", &[("plugin", "probe")]).unwrap_or(0.0);
        observed(m, "delivered") + observed(m, "dropped") == 40.0 && queued == 0.0
    })
    .await;
    let (delivered, dropped) = (observed(&m, "delivered"), observed(&m, "dropped"));
    assert!(dropped > 0.0, "nothing was dropped: {m}");
    let m = wait_for_sum(
        &gw,
        "probe_observed_total",
        &[],
        delivered,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        metric(&m, "probe_observe_batches_total", &[]),
        Some(delivered)
    );
    assert!(gw.shutdown().await);
}

/// Hostile background hooks fail alone: an observer that never returns is stopped by its
/// deadline, a timer that allocates without end by its memory cap; both are counted, and
/// the gateway keeps serving every request meanwhile.
#[tokio::test]
async fn a_looping_observer_and_a_memory_bomb_in_on_tick_stay_isolated() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin(
            "looper",
            "v2-probe",
            "observe = { batch = 1, max_delay = \"10ms\", timeout = \"100ms\" }",
            "mode = \"observe-loop\""
        ),
        plugin(
            "bomb",
            "v2-probe",
            "memory_limit = \"4MiB\"",
            "mode = \"tick-bomb\""
        ),
        plugin_route("all", "/", "app", &["looper", "bomb"], ""),
    ))
    .await;
    for _ in 0..20 {
        let (status, _, _) = send(get(&gw.url("/x"))).await;
        assert_eq!(status, 200);
    }
    let m = wait_until(&gw, Duration::from_secs(10), |m| {
        invocations(m, "looper", "observe", "timeout") >= 1.0
            && invocations(m, "bomb", "on_tick", "trap") >= 1.0
    })
    .await;
    assert_eq!(invocations(&m, "looper", "observe", "ok"), 0.0, "{m}");
    let (status, _, _) = send(get(&gw.url("/after"))).await;
    assert_eq!(status, 200);
    assert!(gw.shutdown().await);
}

/// `on-tick` runs at the interval the plugin registered, on one instance at a time.
#[tokio::test]
async fn ticks_fire_at_their_interval() {
    let up = TestUpstream::start("app").await;
    let started = Instant::now();
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("ticker", "v2-probe", "", "mode = \"tick\"\ninterval = 200"),
        plugin_route("all", "/", "app", &["ticker"], ""),
    ))
    .await;
    wait_for_sum(&gw, "probe_ticks_total", &[], 5.0, Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(990),
        "five 200 ms ticks after {elapsed:?}"
    );
    let m = gw.metrics().await;
    assert!(invocations(&m, "ticker", "on_tick", "ok") >= 5.0, "{m}");
    assert_eq!(invocations(&m, "ticker", "on_tick", "trap"), 0.0);
    // Requests on its route do not tick it.
    let before = sum(&m, "probe_ticks_total", &[]);
    let (status, _, _) = send(get(&gw.url("/x"))).await;
    assert_eq!(status, 200);
    assert!(sum(&gw.metrics().await, "probe_ticks_total", &[]) - before <= 1.0);
    assert!(gw.shutdown().await);
}

/// Outbound HTTP from `on-tick` reaches a host the operator allowed and brings its answer
/// back; a host not allowed is refused without a connection; an inline hook gets
/// `not-here`. Every call is counted by result.
#[tokio::test]
async fn outbound_http_reaches_allowed_hosts_only_and_never_from_inline_hooks() {
    let up = TestUpstream::start("app").await;
    let stats = TestUpstream::start("stats").await;
    let port = stats.addr.port();
    let (_, _, expected) = send(get(&format!("{}/stats", stats.url()))).await;
    let hits_before = stats.hits();
    let gw = TestGateway::start(&format!(
        "{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin(
            "caller",
            "v2-probe",
            &format!("outbound = {{ allow = [\"127.0.0.1:{port}\"], timeout = \"2s\" }}"),
            &format!("mode = \"outbound\"\nurl = \"{}/stats\"", stats.url()),
        ),
        plugin(
            "stranger",
            "v2-probe",
            &format!("outbound = {{ allow = [\"127.0.0.1:{}\"] }}", port + 1),
            &format!("mode = \"outbound\"\nurl = \"{}/stats\"", stats.url()),
        ),
        plugin_route("all", "/", "app", &["caller"], ""),
    ))
    .await;
    wait_until(&gw, Duration::from_secs(5), |m| {
        sum(
            m,
            "fedgate_plugin_outbound_requests_total",
            &[("plugin", "stranger"), ("result", "not_allowed")],
        ) >= 1.0
    })
    .await;
    let m = wait_until(&gw, Duration::from_secs(5), |m| {
        sum(
            m,
            "probe_outbound_total",
            &[("result", "ok"), ("status", "200")],
        ) >= 1.0
    })
    .await;
    assert_eq!(
        metric(&m, "probe_outbound_body_bytes", &[]),
        Some(expected.len() as f64),
        "{m}"
    );
    assert!(
        metric(
            &m,
            "fedgate_plugin_outbound_requests_total",
            &[("plugin", "caller"), ("result", "ok")]
        )
        .unwrap()
            >= 1.0
    );
    let seen = stats.seen();
    let call = seen[hits_before..]
        .iter()
        .find(|s| s.headers.get("x-probe").is_some())
        .expect("the allowed call reached the host");
    assert_eq!(call.headers["x-probe"], "outbound");
    // Only the allowed plugin's calls arrived.
    let calls = f64::from(u32::try_from(stats.hits() - hits_before).unwrap());
    let ok = sum(
        &gw.metrics().await,
        "fedgate_plugin_outbound_requests_total",
        &[("plugin", "caller"), ("result", "ok")],
    );
    assert!(
        calls <= ok + 1.0,
        "{calls} calls arrived, {ok} were the caller's"
    );

    // From on-request: not here, and the request goes on.
    let (status, _, _) = send(get(&gw.url("/x"))).await;
    assert_eq!(status, 200);
    assert_eq!(up.last().headers["x-outbound"], "not-here");
    assert!(gw.shutdown().await);
}

/// Bad observer and outbound settings are refused at load, naming the field.
#[test]
fn bad_observer_and_outbound_settings_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = plugin_wasm("v2-probe");
    for (extra, field) in [
        (
            "observe = { batch = 10, queue = 5 }",
            "plugins.p.observe.batch",
        ),
        (
            "observe = { timeout = \"30s\" }",
            "plugins.p.observe.timeout",
        ),
        ("observe = { spare = 1 }", "spare"),
        (
            "outbound = { allow = [\"https://stats.example\"] }",
            "plugins.p.outbound.allow[0]",
        ),
        (
            "outbound = { timeout = \"1m\" }",
            "plugins.p.outbound.timeout",
        ),
    ] {
        let path = dir.path().join("fedgate.toml");
        std::fs::write(
            &path,
            format!(
                "{HEAD}\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n{}{}",
                plugin_at("p", &wasm, extra, "mode = \"observe\""),
                plugin_route("all", "/", "app", &["p"], "")
            ),
        )
        .unwrap();
        let err = fedgate::config::load(&path).expect_err(extra).to_string();
        assert!(err.contains(field), "{extra}: {err}");
    }
}
