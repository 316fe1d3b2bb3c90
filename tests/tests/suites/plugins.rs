//! Wasm plugins end to end: real components built from `plugins/` and `tests/plugins/`,
//! loaded by an in-process gateway in front of a real upstream.

use std::time::{Duration, Instant};

use fedgate_tests::*;

fn activity(kind: &str, actor: &str) -> String {
    format!(
        r#"{{"@context":"https://www.w3.org/ns/activitystreams","id":"{actor}/activities/1","type":"{kind}","actor":"{actor}","object":"https://local.example/users/alice"}}"#
    )
}

/// The shipped metric plugin observes: every delivery is counted once its response has
/// ended, off the request path, from the gateway's federation view of the body.
#[tokio::test]
async fn activitypub_metrics_counts_activities_by_type_and_instance() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("ap", "activitypub-metrics", "", ""),
        plugin_route(
            "inbox",
            "/users/",
            "app",
            &["ap"],
            "buffer_body = \"64KiB\""
        )
    ))
    .await;
    let sends = [
        activity("Create", "https://mastodon.social/users/bob"),
        activity("Create", "https://Mastodon.Social/users/carol"),
        activity("Follow", "https://gts.example.org/users/dave"),
        "this is not json".to_string(),
    ];
    for body in &sends {
        let mut req = post(&gw.url("/users/alice/inbox"), body.clone());
        req.headers_mut()
            .insert("content-type", "application/activity+json".parse().unwrap());
        let (status, _, _) = send(req).await;
        assert_eq!(status, 200);
        // The upstream gets the body the client sent, byte for byte.
        assert_eq!(up.last().body_len, body.len() as u64);
    }
    let m = wait_for_sum(
        &gw,
        "fedgate_plugin_observed_exchanges_total",
        &[("plugin", "ap"), ("result", "delivered")],
        4.0,
        Duration::from_secs(5),
    )
    .await;
    let count = |t: &str, i: &str| {
        metric(
            &m,
            "federation_activities_total",
            &[("type", t), ("instance", i)],
        )
    };
    assert_eq!(count("Create", "mastodon.social"), Some(2.0), "{m}");
    assert_eq!(count("Follow", "gts.example.org"), Some(1.0));
    assert_eq!(
        sum(&m, "federation_activities_total", &[("type", "invalid")]),
        1.0,
        "{m}"
    );
    // No inline hook: requests never wait on the plugin.
    assert_eq!(invocations(&m, "ap", "on_request", "ok"), 0.0);
    assert!(invocations(&m, "ap", "observe", "ok") >= 1.0);
    assert_eq!(invocations(&m, "ap", "init", "ok"), 1.0);
    assert!(metric(&m, "fedgate_plugin_memory_bytes", &[("plugin", "ap")]).unwrap() > 0.0);
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_observed_exchanges_total",
            &[("plugin", "ap"), ("result", "dropped")]
        ),
        Some(0.0)
    );
    gw.shutdown().await;
}

/// A component built for ABI 0.1.0 is served as it was released, beside 0.2.0 ones on the
/// same route: its headers reach the upstream, its denial is sent (a status below 400 is
/// answered as 500, as 0.1.0 says), it sees responses and the signer, its health counts.
#[tokio::test]
async fn abi_0_1_0_components_are_served_unchanged() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("old", "v1-probe", "", "health = \"degraded\""),
        plugin("new", "v2-probe", "", "mode = \"observe\""),
        plugin_route("all", "/", "app", &["old", "new"], ""),
    ))
    .await;
    let (status, _, _) = send(get(&gw.url("/users/alice"))).await;
    assert_eq!(status, 200);
    assert_eq!(up.last().headers["x-v1"], "GET /users/alice");
    assert_eq!(up.last().headers["x-v1-signer"], "none");
    let mut req = get(&gw.url("/x"));
    req.headers_mut().insert("x-deny", "429".parse().unwrap());
    let (status, headers, body) = send(req).await;
    assert_eq!(status, 429);
    assert_eq!(headers["x-v1"], "denied");
    assert_eq!(&body[..], b"denied by v1");
    let mut req = get(&gw.url("/x"));
    req.headers_mut().insert("x-deny", "202".parse().unwrap());
    let (status, _, _) = send(req).await;
    assert_eq!(
        status, 500,
        "0.1.0 denials below 400 are the plugin's error"
    );
    assert_eq!(up.hits(), 1);

    let m = wait_for_sum(
        &gw,
        "probe_observed_total",
        &[],
        3.0,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        metric(&m, "v1_probe_requests_total", &[("method", "GET")]),
        Some(3.0)
    );
    let responses = |s: &str, o: &str| {
        metric(
            &m,
            "v1_probe_responses_total",
            &[("status", s), ("origin", o)],
        )
    };
    assert_eq!(responses("200", "upstream"), Some(1.0), "{m}");
    assert_eq!(invocations(&m, "old", "on_request", "deny"), 2.0);
    assert_eq!(invocations(&m, "old", "on_request", "error"), 1.0);
    assert_eq!(invocations(&m, "old", "on_response", "ok"), 1.0);
    // The 0.2.0 observer saw all three, the denials as the gateway's answers.
    assert_eq!(
        sum(&m, "probe_observed_total", &[("origin", "gateway")]),
        2.0,
        "{m}"
    );
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 200);
    let entry = plugin_health(&doc, "old");
    assert_eq!(entry["status"], "degraded", "{doc}");
    assert_eq!(entry["message"], "v1 probe");
    gw.shutdown().await;
}

#[tokio::test]
async fn verdicts_deny_or_add_headers_and_plugins_read_the_body() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin(
            "deny",
            "hostile",
            "",
            "mode = \"deny\"\nstatus = 451\nbody = \"not here\""
        ),
        plugin(
            "tag",
            "hostile",
            "",
            "mode = \"add-header\"\nheader = \"x-plugin-tag\"\nvalue = \"seen\""
        ),
        plugin("body", "hostile", "", "mode = \"echo-body\""),
        plugin_route("denied", "/denied", "app", &["deny"], ""),
        plugin_route(
            "tagged",
            "/tagged",
            "app",
            &["tag", "body"],
            "buffer_body = 1024"
        ),
        plugin_route("plain", "/", "app", &[], ""),
    ))
    .await;

    let hits = up.hits();
    let (status, headers, body) = send(get(&gw.url("/denied/x"))).await;
    assert_eq!(status, 451);
    assert_eq!(&body[..], b"not here");
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(
        up.hits(),
        hits,
        "a denied request never reaches the upstream"
    );

    let (status, _, _) = send(post(&gw.url("/tagged/x"), "twelve bytes")).await;
    assert_eq!(status, 200);
    assert_eq!(up.last().headers["x-plugin-tag"], "seen");
    assert_eq!(up.last().body_len, 12);

    // Past the route's buffer limit: 413, and the upstream is not contacted.
    let hits = up.hits();
    let (status, _, _) = send(post(&gw.url("/tagged/x"), vec![b'a'; 2000])).await;
    assert_eq!(status, 413);
    assert_eq!(up.hits(), hits);

    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "deny", "on_request", "deny"), 1.0);
    assert_eq!(invocations(&m, "tag", "on_request", "ok"), 1.0);
    assert_eq!(
        metric(&m, "hostile_body_bytes_total", &[]),
        Some(12.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_requests_total",
            &[
                ("route", "denied"),
                ("upstream", "app"),
                ("method", "GET"),
                ("status", "451")
            ]
        ),
        Some(1.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_infinite_loop_is_cut_at_the_deadline_and_the_policy_decides() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("open", "hostile", "timeout = \"20ms\"", "mode = \"loop\""),
        plugin(
            "closed",
            "hostile",
            "timeout = \"20ms\"\nfailure = \"fail_closed\"",
            "mode = \"loop\""
        ),
        plugin_route("open", "/open", "app", &["open"], ""),
        plugin_route("closed", "/closed", "app", &["closed"], ""),
        plugin_route("plain", "/", "app", &[], ""),
    ))
    .await;
    let started = Instant::now();
    let (status, _, _) = send(get(&gw.url("/open/x"))).await;
    let open_took = started.elapsed();
    assert_eq!(
        status, 200,
        "fail_open serves the request without the plugin"
    );
    let started = Instant::now();
    let (status, _, _) = send(get(&gw.url("/closed/x"))).await;
    let closed_took = started.elapsed();
    assert_eq!(status, 503, "fail_closed answers 503");
    // The deadline is 20 ms on a 1 ms epoch tick; the margin covers a loaded machine.
    for took in [open_took, closed_took] {
        assert!(took < Duration::from_millis(500), "took {took:?}");
    }
    // Other routes are served meanwhile.
    let (status, _, _) = send(get(&gw.url("/plain"))).await;
    assert_eq!(status, 200);
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "open", "on_request", "timeout"), 1.0, "{m}");
    assert_eq!(invocations(&m, "closed", "on_request", "timeout"), 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_memory_bomb_is_capped_and_isolated() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin(
            "bomb",
            "hostile",
            "memory_limit = \"4MiB\"\ntimeout = \"100ms\"",
            "mode = \"bomb\""
        ),
        plugin_route("bomb", "/bomb", "app", &["bomb"], ""),
        plugin_route("plain", "/", "app", &[], ""),
    ))
    .await;
    let (status, _, _) = send(get(&gw.url("/bomb"))).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(get(&gw.url("/plain"))).await;
    assert_eq!(status, 200);
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "bomb", "on_request", "trap"), 1.0, "{m}");
    let memory = metric(&m, "fedgate_plugin_memory_bytes", &[("plugin", "bomb")]).unwrap();
    assert!(memory <= 4.0 * 1024.0 * 1024.0, "memory gauge {memory}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_trapping_plugin_is_backed_off_then_recovers_once_fixed() {
    let up = TestUpstream::start("app").await;
    let other = plugin("calm", "hostile", "", "mode = \"ok\"");
    let config = |mode: &str| {
        format!(
            "{}{}{other}{}{}",
            upstream_block("app", &[up.url()], ""),
            plugin("trap", "hostile", "", &format!("mode = {mode:?}")),
            plugin_route("trap", "/trap", "app", &["trap", "calm"], ""),
            plugin_route("plain", "/", "app", &["calm"], ""),
        )
    };
    let gw = TestGateway::start(&config("trap")).await;
    for _ in 0..5 {
        let (status, _, _) = send(get(&gw.url("/trap"))).await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = send(get(&gw.url("/plain"))).await;
    assert_eq!(status, 200);
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "trap", "on_request", "trap"), 3.0, "{m}");
    assert_eq!(invocations(&m, "trap", "on_request", "skipped"), 2.0);
    // The other plugin on the same route, and on another route, kept working.
    assert_eq!(invocations(&m, "calm", "on_request", "ok"), 6.0);

    // Fixed: a reload with a working configuration replaces the plugin at once.
    gw.rewrite(&config("ok")).await.unwrap();
    let (status, _, _) = send(get(&gw.url("/trap"))).await;
    assert_eq!(status, 200);
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "trap", "on_request", "ok"), 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_reloads_total",
            &[("plugin", "trap"), ("result", "success")]
        ),
        Some(1.0)
    );
    gw.shutdown().await;
}

/// Failure streaks are counted per hook: an `on-request` that traps every time is backed
/// off after three failures even though `on-response` succeeds on every request in
/// between, and `on-response` keeps running while `on-request` is skipped.
#[tokio::test]
async fn a_failing_hook_is_backed_off_although_another_hook_succeeds_between() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("half", "hostile", "", "mode = \"trap-request\""),
        plugin_route("all", "/", "app", &["half"], ""),
    ))
    .await;
    for _ in 0..6 {
        let (status, _, _) = send(get(&gw.url("/x"))).await;
        assert_eq!(status, 200, "fail_open: the request goes on");
    }
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "half", "on_request", "trap"), 3.0, "{m}");
    assert_eq!(invocations(&m, "half", "on_request", "skipped"), 3.0, "{m}");
    assert_eq!(invocations(&m, "half", "on_response", "ok"), 6.0, "{m}");
    assert_eq!(
        invocations(&m, "half", "on_response", "skipped"),
        0.0,
        "{m}"
    );
    gw.shutdown().await;
}

/// A call of a WASI import the gateway does not provide (the wall clock, here) traps, as
/// the guide says, and is counted as a trap, not as the plugin's error.
#[tokio::test]
async fn calling_an_unprovided_import_counts_as_a_trap() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin(
            "clock",
            "hostile",
            "failure = \"fail_closed\"",
            "mode = \"clock\""
        ),
        plugin_route("all", "/", "app", &["clock"], ""),
    ))
    .await;
    let (status, _, _) = send(get(&gw.url("/x"))).await;
    assert_eq!(
        status, 503,
        "fail_closed: a trapped call refuses the request"
    );
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "clock", "on_request", "trap"), 1.0, "{m}");
    assert_eq!(invocations(&m, "clock", "on_request", "error"), 0.0, "{m}");
    assert_eq!(up.hits(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_plugin_cannot_explode_cardinality() {
    // By label values, and through resolved series (past the host's table of resolved
    // series too: 5 000 label sets against its 4 096 entries, as many as a call does well
    // within the 100 ms deadline in a debug build).
    for resolve in [false, true] {
        let up = TestUpstream::start("app").await;
        let gw = TestGateway::start(&format!(
            "{}{}{}",
            upstream_block("app", &[up.url()], ""),
            plugin(
                "labels",
                "hostile",
                "max_series = 100\ntimeout = \"100ms\"",
                &format!("mode = \"labels\"\nseries = 5000\nresolve = {resolve}")
            ),
            plugin_route("all", "/", "app", &["labels"], ""),
        ))
        .await;
        let (status, _, _) = send(get(&gw.url("/x"))).await;
        assert_eq!(status, 200);
        let m = gw.metrics().await;
        assert_eq!(invocations(&m, "labels", "on_request", "ok"), 1.0, "{m}");
        let series = m
            .lines()
            .filter(|l| l.starts_with("hostile_series_total{"))
            .count();
        assert_eq!(
            series, 101,
            "resolve {resolve}: 100 series and the overflow one"
        );
        assert_eq!(
            metric(&m, "hostile_series_total", &[("n", "other")]),
            Some(4_900.0),
            "resolve {resolve}"
        );
        assert_eq!(
            metric(
                &m,
                "fedgate_plugin_metric_drops_total",
                &[
                    ("plugin", "labels"),
                    ("metric", "hostile_series_total"),
                    ("reason", "series_cap")
                ]
            ),
            Some(4_900.0),
            "resolve {resolve}"
        );
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn a_series_used_for_the_wrong_kind_of_update_traps_the_call() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("wrong", "hostile", "", "mode = \"wrong-series\""),
        plugin_route("all", "/", "app", &["wrong"], ""),
    ))
    .await;
    let (status, _, _) = send(get(&gw.url("/x"))).await;
    assert_eq!(status, 200, "fail_open: the request is served");
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "wrong", "on_request", "trap"), 1.0, "{m}");
    assert_eq!(
        metric(&m, "hostile_wrong_total", &[]),
        Some(0.0),
        "resolved, never added to"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn health_checks_of_plugins_feed_health() {
    let up = TestUpstream::start("app").await;
    let config = |status: &str| {
        format!(
            "{}{}{}",
            upstream_block("app", &[up.url()], ""),
            plugin(
                "slo",
                "hostile",
                "",
                &format!("mode = \"health\"\nhealth = {status:?}\nmessage = \"checked\"")
            ),
            plugin_route("all", "/", "app", &["slo"], ""),
        )
    };
    let gw = TestGateway::start(&config("degraded")).await;
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 200);
    assert_eq!(doc["status"], "degraded");
    let entry = plugin_health(&doc, "slo");
    assert_eq!(entry["name"], "slo");
    assert_eq!(entry["message"], "checked");

    gw.rewrite(&config("unhealthy")).await.unwrap();
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 503);
    assert_eq!(doc["status"], "unhealthy");
    gw.shutdown().await;
}

#[tokio::test]
async fn broken_plugins_are_refused_with_their_reason() {
    let up = TestUpstream::start("app").await;
    let base = upstream_block("app", &[up.url()], "");
    let good = format!(
        "{base}{}{}",
        plugin("p", "hostile", "", "mode = \"ok\""),
        plugin_route("all", "/", "app", &["p"], "")
    );
    let gw = TestGateway::start(&good).await;

    let wrong_abi = format!(
        "{base}{}{}",
        plugin("p", "other-world", "", ""),
        plugin_route("all", "/", "app", &["p"], "")
    );
    let err = gw.rewrite(&wrong_abi).await.unwrap_err().to_string();
    assert!(err.contains("plugins.p"), "{err}");
    assert!(err.contains("fedgate:plugin@9.0.0"), "{err}");

    let init_error = format!(
        "{base}{}{}",
        plugin("p", "hostile", "", "mode = \"init-error\""),
        plugin_route("all", "/", "app", &["p"], "")
    );
    let err = gw.rewrite(&init_error).await.unwrap_err().to_string();
    assert!(err.contains("the configuration says no"), "{err}");

    let not_wasm = gw.dir.path().join("not.wasm");
    std::fs::write(&not_wasm, b"\0asm but not really").unwrap();
    let garbage = format!(
        "{base}[plugins.p]\npath = {:?}\n{}",
        not_wasm.display().to_string(),
        plugin_route("all", "/", "app", &["p"], "")
    );
    let err = gw.rewrite(&garbage).await.unwrap_err().to_string();
    assert!(err.contains("not a Wasm component"), "{err}");

    // The running plugin kept serving through every rejected reload.
    let (status, _, _) = send(get(&gw.url("/x"))).await;
    assert_eq!(status, 200);
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "p", "on_request", "ok"), 1.0);
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_reloads_total",
            &[("plugin", "p"), ("result", "error")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "error")]),
        Some(3.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_changed_component_file_reloads_under_load_without_failed_requests() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start("").await;
    let wasm = gw.dir.path().join("p.wasm");
    std::fs::copy(plugin_wasm("hostile"), &wasm).unwrap();
    let text = format!(
        "{}[plugins.p]\npath = \"p.wasm\"\n[plugins.p.config]\nmode = \"add-header\"\nheader = \"x-version\"\nvalue = \"one\"\n{}",
        upstream_block("app", &[up.url()], ""),
        plugin_route("all", "/", "app", &["p"], "")
    );
    gw.rewrite(&text).await.unwrap();

    let url = gw.url("/x");
    let load = tokio::spawn(async move {
        let mut failed = 0;
        let mut ok = 0;
        for _ in 0..400 {
            let (status, _, _) = send(get(&url)).await;
            if status == 200 {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        (ok, failed)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A different component (the activitypub plugin) replaces the file: the reload
    // recompiles it because the content changed.
    std::fs::copy(plugin_wasm("activitypub-metrics"), &wasm).unwrap();
    let swapped = format!(
        "{}[plugins.p]\npath = \"p.wasm\"\n{}",
        upstream_block("app", &[up.url()], ""),
        plugin_route("all", "/", "app", &["p"], "")
    );
    gw.rewrite(&swapped).await.unwrap();
    let (ok, failed) = load.await.unwrap();
    assert_eq!(failed, 0);
    assert_eq!(ok, 400);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_reloads_total",
            &[("plugin", "p"), ("result", "success")]
        ),
        Some(2.0),
        "{m}"
    );
    // Requests after the swap no longer get the first component's header.
    let (status, _, _) = send(get(&gw.url("/y"))).await;
    assert_eq!(status, 200);
    assert!(!up.last().headers.contains_key("x-version"));
    gw.shutdown().await;
}

/// A config with `server.plugin_cache = dir`, request-policy on the one route.
fn cached_policy_config(cache: &std::path::Path, upstream: &TestUpstream) -> String {
    format!(
        "{}\n{}{}{}",
        HEAD.replace(
            "[server]\n",
            &format!(
                "[server]\nplugin_cache = {:?}\n",
                cache.display().to_string()
            )
        ),
        upstream_block("app", &[upstream.url()], ""),
        plugin(
            "policy",
            "request-policy",
            "",
            "denied_user_agents = [\"*bad-bot*\"]"
        ),
        plugin_route("all", "/", "app", &["policy"], "")
    )
}

/// The policy plugin, whichever way it was loaded, refuses what it must and passes the rest.
async fn assert_policy_works(gw: &TestGateway, when: &str) {
    let (ok, _, _) = send(get(&gw.url("/users/alice"))).await;
    assert_eq!(ok, 200, "{when}");
    let mut bad = get(&gw.url("/users/alice"));
    bad.headers_mut()
        .insert("user-agent", "a-bad-bot/1.0".parse().unwrap());
    let (denied, _, _) = send(bad).await;
    assert_eq!(denied, 403, "{when}");
}

fn compilations(m: &str, result: &str) -> Option<f64> {
    metric(
        m,
        "fedgate_plugin_compilations_total",
        &[("plugin", "policy"), ("result", result)],
    )
}

fn cache_entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fgc"))
        .collect();
    v.sort();
    v
}

/// `server.plugin_cache`: the first start compiles and stores the component's machine code
/// (a directory created with mode 0700); a restart loads it instead of compiling; a
/// corrupted entry is detected by its checksum, compiled again and replaced; the plugin
/// behaves the same each time. A directory other users may write to is refused, naming
/// the field.
#[tokio::test]
async fn compiled_plugins_are_cached_across_restarts_and_a_corrupt_entry_is_recompiled() {
    use std::os::unix::fs::PermissionsExt as _;
    let up = TestUpstream::start("app").await;
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("plugin-cache");
    let config = cached_policy_config(&cache, &up);

    let gw = TestGateway::start_full(&config).await;
    let m = gw.metrics().await;
    assert_eq!(compilations(&m, "compiled"), Some(1.0), "{m}");
    assert_eq!(compilations(&m, "cached"), None, "{m}");
    assert_policy_works(&gw, "first start").await;
    gw.shutdown().await;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the cache directory is created private");
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 1, "one entry for one component: {entries:?}");
    let stored = std::fs::read(&entries[0]).unwrap();

    let gw = TestGateway::start_full(&config).await;
    let m = gw.metrics().await;
    assert_eq!(compilations(&m, "cached"), Some(1.0), "{m}");
    assert_eq!(
        compilations(&m, "compiled"),
        None,
        "a restart compiled again: {m}"
    );
    assert_policy_works(&gw, "cached restart").await;
    gw.shutdown().await;

    // One flipped byte in the machine code.
    let mut corrupt = stored.clone();
    let at = corrupt.len() / 2;
    corrupt[at] ^= 0x40;
    std::fs::write(&entries[0], &corrupt).unwrap();
    let gw = TestGateway::start_full(&config).await;
    let m = gw.metrics().await;
    assert_eq!(compilations(&m, "cache_error"), Some(1.0), "{m}");
    assert_eq!(compilations(&m, "cached"), None, "{m}");
    assert_policy_works(&gw, "after a corrupt entry").await;
    gw.shutdown().await;
    assert_eq!(
        std::fs::read(&entries[0]).unwrap(),
        stored,
        "the corrupt entry was replaced by a good one"
    );

    // Writable by others: refused at start, naming the field.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = root.path().join("fedgate.toml");
    std::fs::write(&path, &config).unwrap();
    let cfg = fedgate::config::load(&path).expect("the config itself is valid");
    let Err(err) = fedgate::Gateway::start(cfg, Some(path)).await else {
        panic!("a world-writable cache directory is refused");
    };
    assert!(
        err.contains("server.plugin_cache") && err.contains("writable by other users"),
        "{err}"
    );
}

/// ABI 0.2.0 served beside 0.1.0: a 0.2.0 component's `on-request` edits the forwarded
/// request (add, set, remove), and its attempts on protected fields (`signature`, `date`)
/// are refused and counted as its error while the rest of the edit applies.
#[tokio::test]
async fn abi_0_2_0_request_edits_apply_and_protected_fields_are_refused() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("probe", "v2-probe", "", "mode = \"edit\""),
        plugin_route("all", "/", "app", &["probe"], ""),
    ))
    .await;
    let mut req = get(&gw.url("/x"));
    let h = req.headers_mut();
    h.insert("x-replace", "old".parse().unwrap());
    h.insert("x-remove-me", "1".parse().unwrap());
    h.insert(
        "signature",
        "keyId=\"k\",signature=\"AAAA\"".parse().unwrap(),
    );
    h.insert("date", "Fri, 04 Dec 2026 10:00:00 GMT".parse().unwrap());
    let (status, _, _) = send(req).await;
    assert_eq!(status, 200);
    let seen = up.last();
    assert_eq!(seen.headers.get("x-probe-added").unwrap(), "1");
    assert_eq!(seen.headers.get_all("x-replace").iter().count(), 1);
    assert_eq!(seen.headers.get("x-replace").unwrap(), "new");
    assert!(seen.headers.get("x-remove-me").is_none());
    assert_eq!(
        seen.headers.get("signature").unwrap(),
        "keyId=\"k\",signature=\"AAAA\"",
        "a protected field was removed"
    );
    assert_eq!(
        seen.headers.get("date").unwrap(),
        "Fri, 04 Dec 2026 10:00:00 GMT",
        "a protected field was replaced"
    );
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "probe", "on_request", "error"), 1.0, "{m}");
    gw.shutdown().await;
}

/// A 0.2.0 local reply may carry any status from 200: a spam filter answers 202 and the
/// delivery never reaches the upstream.
#[tokio::test]
async fn abi_0_2_0_local_reply_answers_202_without_the_upstream() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("probe", "v2-probe", "", "mode = \"reply\""),
        plugin_route("all", "/", "app", &["probe"], ""),
    ))
    .await;
    let (status, headers, body) = send(post(&gw.url("/users/alice/inbox"), "{}")).await;
    assert_eq!(status, 202);
    assert_eq!(headers.get("x-probe").unwrap(), "reply");
    assert_eq!(body, "accepted and dropped");
    assert_eq!(up.hits(), 0, "the upstream was contacted");
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "probe", "on_request", "deny"), 1.0, "{m}");
    gw.shutdown().await;
}

/// What a 0.2.0 hook may know: the registered request fields in one call, the HTTP version,
/// the principal auth established, the clocks, the upstreams and whether each is critical,
/// TLS facts (none on a plain listener).
#[tokio::test]
async fn abi_0_2_0_context_clocks_and_upstreams_reach_the_plugin() {
    let up = TestUpstream::start("app").await;
    let spare = TestUpstream::start("spare").await;
    let digest: String = {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(b"alice-key");
        d.iter().map(|b| format!("{b:02x}")).collect()
    };
    let auth_section =
        format!("[auth]\n[[auth.api_keys]]\nprincipal = \"alice\"\nsha256 = \"{digest}\"\n");
    let gw = TestGateway::start(&format!(
        "{}{}{}{}{}",
        auth_section,
        upstream_block("app", &[up.url()], ""),
        upstream_block("spare", &[spare.url()], "critical = false"),
        plugin("probe", "v2-probe", "", "mode = \"context\""),
        plugin_route("all", "/", "app", &["probe"], "auth = [\"api_key\"]"),
    ))
    .await;
    let mut req = get(&gw.url("/x"));
    req.headers_mut()
        .insert("user-agent", "probe-client/1".parse().unwrap());
    req.headers_mut()
        .insert("x-api-key", "alice-key".parse().unwrap());
    let (status, _, body) = send(req).await;
    assert_eq!(status, 200, "{body:?}");
    let seen = up.last();
    let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(h("x-ctx-declared").as_deref(), Some("probe-client/1|-"));
    assert_eq!(h("x-ctx-version").as_deref(), Some("1.1"));
    assert_eq!(h("x-ctx-principal").as_deref(), Some("api-key:alice"));
    assert_eq!(h("x-ctx-clock").as_deref(), Some("ok"));
    assert_eq!(
        h("x-ctx-upstreams").as_deref(),
        Some("app=true,spare=false")
    );
    assert_eq!(h("x-ctx-tls").as_deref(), Some("none"));
    gw.shutdown().await;
}

/// A 0.2.0 `on-response` edits the client's response fields; framing fields stay.
#[tokio::test]
async fn abi_0_2_0_response_edits_reach_the_client_and_framing_stays() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("probe", "v2-probe", "", "mode = \"response-edit\""),
        plugin_route("all", "/", "app", &["probe"], ""),
    ))
    .await;
    let (status, headers, body) = send(get(&gw.url("/x"))).await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("x-resp-added").unwrap(), "1");
    assert!(headers.get("x-upstream").is_none(), "{headers:?}");
    assert!(!body.is_empty());
    let m = gw.metrics().await;
    assert_eq!(invocations(&m, "probe", "on_response", "error"), 1.0, "{m}");
    gw.shutdown().await;
}

/// A 0.2.0 plugin's store is shared by all its instances: 40 concurrent requests, each
/// spinning 5 ms in the plugin (so more than one instance serves them), each increment
/// `hits`: the upstream sees every count from 1 to 40 exactly once. The store survives a
/// reload that changes the plugin's config, and its size is on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abi_0_2_0_store_is_shared_by_every_instance_and_survives_a_reload() {
    let up = TestUpstream::start("app").await;
    let config = |timeout: &str| {
        format!(
            "{}{}{}",
            upstream_block("app", &[up.url()], ""),
            plugin(
                "probe",
                "v2-probe",
                &format!("timeout = \"{timeout}\""),
                "mode = \"store\""
            ),
            plugin_route("all", "/", "app", &["probe"], ""),
        )
    };
    let gw = TestGateway::start(&config("50ms")).await;
    let sends = (0..40).map(|_| {
        let mut req = get(&gw.url("/x"));
        req.headers_mut().insert("x-slow", "1".parse().unwrap());
        send(req)
    });
    for (status, _, _) in futures_util::future::join_all(sends).await {
        assert_eq!(status, 200);
    }
    let mut hits: Vec<u64> = up
        .seen()
        .iter()
        .map(|s| s.headers["x-hits"].to_str().unwrap().parse().unwrap())
        .collect();
    hits.sort();
    assert_eq!(hits, (1..=40).collect::<Vec<_>>());
    let m = gw.metrics().await;
    let inits = invocations(&m, "probe", "init", "ok");
    assert!(
        inits >= 2.0,
        "one instance served every request ({inits} inits): {m}"
    );
    assert_eq!(
        metric(&m, "fedgate_plugin_store_entries", &[("plugin", "probe")]),
        Some(1.0),
        "{m}"
    );

    // A reload that changes the plugin's section replaces the plugin, not its store.
    gw.rewrite(&config("60ms")).await.unwrap();
    let (_, _, _) = send(get(&gw.url("/x"))).await;
    assert_eq!(up.last().headers["x-hits"], "41");
    gw.shutdown().await;
}

/// A plugin filling its store is bounded by `store_entries`: 100 sets into a store of 10
/// entries all succeed by evicting the least recently written, 90 evictions are counted,
/// the store holds 10 entries, and the gateway keeps serving.
#[tokio::test]
async fn abi_0_2_0_a_plugin_filling_its_store_is_bounded_and_evictions_are_counted() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("probe", "v2-probe", "store_entries = 10", "mode = \"fill\""),
        plugin_route("all", "/", "app", &["probe"], ""),
    ))
    .await;
    let (status, _, _) = send(get(&gw.url("/x"))).await;
    assert_eq!(status, 200);
    let seen = up.last();
    assert_eq!(
        seen.headers["x-fill"], "0",
        "sets refused instead of evicting"
    );
    assert_eq!(
        seen.headers["x-last"], "true",
        "the newest entry was evicted"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "fedgate_plugin_store_entries", &[("plugin", "probe")]),
        Some(10.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_store_evictions_total",
            &[("plugin", "probe"), ("reason", "capacity")]
        ),
        Some(90.0),
        "{m}"
    );
    let (status, _, _) = send(get(&gw.url("/again"))).await;
    assert_eq!(status, 200);
    gw.shutdown().await;
}

/// The federation view reaches a 0.2.0 plugin as a typed record: a Mastodon-style Create
/// of a public Note gives its type, the actor's host, the object's type and id, public and
/// published; a body that is not an activity gives none.
#[tokio::test]
async fn abi_0_2_0_plugins_read_the_activity_view() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("probe", "v2-probe", "", "mode = \"activity\""),
        plugin_route(
            "inbox",
            "/users/",
            "app",
            &["probe"],
            "buffer_body = \"64KiB\""
        ),
    ))
    .await;
    let create = r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://Mastodon.Social/users/bob/statuses/1/activity","type":"Create","actor":"https://Mastodon.Social/users/bob","published":"2026-12-04T10:00:00Z","to":["https://www.w3.org/ns/activitystreams#Public"],"object":{"id":"https://mastodon.social/users/bob/statuses/1","type":"Note","content":"hi"}}"#;
    let mut req = post(&gw.url("/users/alice/inbox"), create);
    req.headers_mut()
        .insert("content-type", "application/activity+json".parse().unwrap());
    let (status, _, _) = send(req).await;
    assert_eq!(status, 200);
    assert_eq!(
        up.last().headers["x-act"],
        "Create|mastodon.social|Note|https://mastodon.social/users/bob/statuses/1|true|2026-12-04T10:00:00Z"
    );
    let mut req = post(&gw.url("/users/alice/inbox"), "not json");
    req.headers_mut()
        .insert("content-type", "application/activity+json".parse().unwrap());
    let (status, _, _) = send(req).await;
    assert_eq!(status, 200);
    assert_eq!(up.last().headers["x-act"], "none");
    gw.shutdown().await;
}

/// Expired store entries that nothing reads again are dropped by the gateway's sweep
/// (every 5 s) and counted as `expired`, so they stop counting toward the store's bounds.
#[tokio::test]
async fn abi_0_2_0_expired_store_entries_are_swept() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("probe", "v2-probe", "", "mode = \"ttl\""),
        plugin_route("all", "/", "app", &["probe"], ""),
    ))
    .await;
    let (status, _, _) = send(get(&gw.url("/x"))).await;
    assert_eq!(status, 200);
    let admin = gw.admin.to_string();
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "fedgate_plugin_store_entries", &[("plugin", "probe")]),
        Some(1.0),
        "{m}"
    );
    let m = wait_for_metric(
        &admin,
        "fedgate_plugin_store_entries",
        &[("plugin", "probe")],
        0.0,
        Duration::from_secs(12),
    )
    .await;
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_store_evictions_total",
            &[("plugin", "probe"), ("reason", "expired")]
        ),
        Some(1.0),
        "{m}"
    );
    gw.shutdown().await;
}
