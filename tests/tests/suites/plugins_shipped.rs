//! The shipped plugins (`plugins/`) end to end, the plugin tooling of the `fedgate` binary,
//! the file watcher's reaction to a changed component, and promtool on output that carries
//! plugin metrics. Real sockets, real components, real upstreams.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fedgate_tests::*;
use http::Request;
use http_body_util::{BodyExt, Full};

/// A request with the given method, headers and body.
fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

/// Replaces `path` with `content` in one rename, so a poller never sees a half-written file.
fn replace_file(path: &Path, content: &Path) {
    let tmp = path.with_extension("next");
    std::fs::copy(content, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A request the policy refuses: method, path, headers, body; the status and body expected.
type Refused = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
    u16,
    &'static str,
);

/// The harness's config head with the file watcher on, polling every 100 ms.
fn watching_head() -> String {
    HEAD.replace("watch = false", "watch = true\npoll_interval = \"100ms\"")
}

#[tokio::test]
async fn moderation_events_are_counted_by_action_and_target() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("moderation", "moderation-events", "", ""),
        plugin_route(
            "inbox",
            "/users/",
            "app",
            &["moderation"],
            "buffer_body = \"64KiB\""
        ),
    ))
    .await;
    let inbox = gw.url("/users/alice/inbox");
    let deliveries = [
        // Mastodon's report: the account first, then the reported posts.
        r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mod.example/1","type":"Flag","actor":"https://mod.example/actor","object":["https://example.org/users/bob","https://example.org/users/bob/statuses/1"],"content":"spam"}"#,
        // A block names an account even when its URI does not look like one.
        r#"{"type":"Block","actor":"https://a.example/users/x","object":"https://local.example/whatever/123"}"#,
        // A deleted post as a Tombstone that remembers what it was.
        r#"{"type":"Delete","actor":"https://a.example/users/x","object":{"id":"https://a.example/n/9","type":"Tombstone","formerType":"Note"}}"#,
        // A Tombstone without formerType.
        r#"{"type":"Delete","actor":"https://a.example/users/x","object":{"id":"https://a.example/users/x/statuses/9","type":"Tombstone"}}"#,
        // An account deleting itself.
        r#"{"type":"Delete","actor":"https://a.example/users/x","object":"https://a.example/users/x"}"#,
        // Withdrawing a block: the embedded Block says what is undone.
        r#"{"type":"Undo","actor":"https://a.example/users/x","object":{"type":"Block","actor":"https://a.example/users/x","object":"https://local.example/@alice"}}"#,
        // Not moderation: not counted.
        r#"{"type":"Create","actor":"https://a.example/users/x","object":{"type":"Note","content":"hi"}}"#,
        // An Undo of a bare URI does not say what it undoes: not counted.
        r#"{"type":"Undo","actor":"https://a.example/users/x","object":"https://a.example/blocks/1"}"#,
        "not json at all",
    ];
    let activity_post = |url: &str, body: &str| {
        request(
            "POST",
            url,
            &[("content-type", "application/activity+json")],
            body.as_bytes().to_vec(),
        )
    };
    for body in deliveries {
        let (status, _, _) = send(activity_post(&inbox, body)).await;
        assert_eq!(status, 200);
        // The body went whole to the upstream, byte for byte.
        assert_eq!(up.last().body_len, body.len() as u64);
    }
    // Outside the inbox (an outbox) a Flag is not a delivery: not counted.
    let (status, _, _) = send(activity_post(&gw.url("/users/alice/outbox"), deliveries[0])).await;
    assert_eq!(status, 200);
    assert_eq!(up.hits(), deliveries.len() + 1);

    // The plugin observes: every exchange reaches it once its response has ended.
    wait_for_sum(
        &gw,
        "fedgate_plugin_observed_exchanges_total",
        &[("plugin", "moderation"), ("result", "delivered")],
        deliveries.len() as f64 + 1.0,
        Duration::from_secs(5),
    )
    .await;
    let m = wait_for_sum(
        &gw,
        "moderation_events_total",
        &[],
        6.0,
        Duration::from_secs(5),
    )
    .await;
    let count = |action: &str, target: &str| {
        metric(
            &m,
            "moderation_events_total",
            &[("action", action), ("target_type", target)],
        )
    };
    assert_eq!(count("flag", "actor"), Some(1.0), "{m}");
    assert_eq!(count("block", "actor"), Some(1.0));
    assert_eq!(count("delete", "object"), Some(1.0));
    assert_eq!(count("delete", "tombstone"), Some(1.0));
    assert_eq!(count("delete", "actor"), Some(1.0));
    assert_eq!(count("undo_block", "actor"), Some(1.0));
    assert_eq!(
        series(&m, "moderation_events_total").len(),
        6,
        "nothing else is counted:\n{m}"
    );
    // Off the request path: no inline hook ran.
    assert_eq!(invocations(&m, "moderation", "on_request", "ok"), 0.0);
    assert!(invocations(&m, "moderation", "observe", "ok") >= 1.0, "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn request_policy_attached_globally_refuses_before_the_upstream() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}[global]\nplugins = [\"policy\"]\n{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin(
            "policy",
            "request-policy",
            "",
            "required_headers = [\"x-instance\"]\n\
             denied_user_agents = [\"*python-requests*\"]\n\
             allowed_content_types = [\"application/activity+json\"]\n\
             max_body_size = 100"
        ),
        // Neither route names the plugin: `[global]` puts it on both.
        plugin_route("inbox", "/inbox", "app", &[], ""),
        plugin_route("web", "/web", "app", &[], ""),
    ))
    .await;
    let ap = "application/activity+json";
    let cases: [Refused; 5] = [
        (
            "GET",
            "/web/a",
            vec![],
            vec![],
            403,
            "missing required header: x-instance",
        ),
        (
            "GET",
            "/web/a",
            vec![
                ("x-instance", "a.example"),
                ("user-agent", "python-requests/2.31"),
            ],
            vec![],
            403,
            "user agent not allowed",
        ),
        (
            "POST",
            "/inbox",
            vec![
                ("x-instance", "a.example"),
                ("content-type", "application/json"),
            ],
            b"{}".to_vec(),
            403,
            "content type not allowed",
        ),
        (
            "POST",
            "/inbox",
            vec![("x-instance", "a.example")],
            b"{}".to_vec(),
            403,
            "missing content type",
        ),
        (
            "POST",
            "/inbox",
            vec![("x-instance", "a.example"), ("content-type", ap)],
            vec![b'x'; 101],
            413,
            "request body too large",
        ),
    ];
    for (method, path, headers, body, want, text) in cases {
        let (status, _, got) = send(request(method, &gw.url(path), &headers, body)).await;
        assert_eq!(status, want, "{method} {path} {headers:?}");
        assert_eq!(String::from_utf8_lossy(&got), text);
    }
    assert_eq!(up.hits(), 0, "refused requests never reach the upstream");

    // Conforming requests pass: a delivery at the size limit, and a plain GET.
    let (status, _, _) = send(request(
        "POST",
        &gw.url("/inbox"),
        &[
            ("x-instance", "a.example"),
            (
                "user-agent",
                "Mastodon/4.2.0 (http.rb/5.1.1; +https://a.example/)",
            ),
            ("content-type", "application/activity+json; charset=utf-8"),
        ],
        vec![b'x'; 100],
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(up.last().body_len, 100);
    let (status, _, _) = send(request(
        "GET",
        &gw.url("/web/b"),
        &[("x-instance", "a.example")],
        vec![],
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(up.hits(), 2);
    // A request no route matches is not checked: 404, not 403.
    let (status, _, _) = send(get(&gw.url("/elsewhere"))).await;
    assert_eq!(status, 404);

    let m = gw.metrics().await;
    let decisions = |rule: &str, decision: &str| {
        metric(
            &m,
            "policy_decisions_total",
            &[("rule", rule), ("decision", decision)],
        )
    };
    // Checks run in order and the first failure decides; each request counts once.
    assert_eq!(decisions("required_headers", "deny"), Some(1.0), "{m}");
    assert_eq!(decisions("user_agent", "deny"), Some(1.0));
    assert_eq!(decisions("content_type", "deny"), Some(2.0));
    assert_eq!(decisions("body_size", "deny"), Some(1.0));
    assert_eq!(decisions("none", "allow"), Some(2.0));
    assert_eq!(series(&m, "policy_decisions_total").len(), 5, "{m}");
    assert_eq!(invocations(&m, "policy", "on_request", "ok"), 2.0);
    assert_eq!(invocations(&m, "policy", "on_request", "deny"), 5.0);
    let req = |route: &str, method: &str, status: &str| {
        metric(
            &m,
            "fedgate_requests_total",
            &[
                ("route", route),
                ("upstream", "app"),
                ("method", method),
                ("status", status),
            ],
        )
    };
    assert_eq!(req("web", "GET", "403"), Some(2.0));
    assert_eq!(req("inbox", "POST", "403"), Some(2.0));
    assert_eq!(req("inbox", "POST", "413"), Some(1.0));
    gw.shutdown().await;
}

#[tokio::test]
async fn request_policy_in_observe_mode_counts_without_refusing() {
    let up = TestUpstream::start("app").await;
    let rules = "required_headers = [\"x-instance\"]\n\
                 denied_user_agents = [\"*python-requests*\"]\n\
                 allowed_content_types = [\"application/activity+json\"]\n\
                 max_body_size = \"1KiB\"";
    let gw = TestGateway::start(&format!(
        "{}{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("enforcer", "request-policy", "", rules),
        plugin(
            "observer",
            "request-policy",
            "",
            &format!("{rules}\nmode = \"observe\"")
        ),
        plugin_route("observed", "/observed", "app", &["observer"], ""),
        plugin_route("enforced", "/", "app", &["enforcer"], ""),
    ))
    .await;
    // Breaks every rule at once.
    let breaks_all = |url: String| {
        request(
            "POST",
            &url,
            &[
                ("user-agent", "python-requests/2.31"),
                ("content-type", "text/html"),
            ],
            vec![b'x'; 2000],
        )
    };
    let (status, _, _) = send(breaks_all(gw.url("/observed/inbox"))).await;
    assert_eq!(status, 200, "observe mode refuses nothing");
    assert_eq!(up.hits(), 1);
    assert_eq!(up.last().body_len, 2000);
    let (status, _, _) = send(request(
        "POST",
        &gw.url("/observed/inbox"),
        &[
            ("x-instance", "a.example"),
            ("content-type", "application/activity+json"),
        ],
        b"{}".to_vec(),
    ))
    .await;
    assert_eq!(status, 200);
    // The same request on the enforcing instance stops at the first rule.
    let (status, _, body) = send(breaks_all(gw.url("/inbox"))).await;
    assert_eq!(status, 403);
    assert_eq!(&body[..], b"missing required header: x-instance");
    assert_eq!(up.hits(), 2);

    let m = gw.metrics().await;
    let decisions = |rule: &str, decision: &str| {
        metric(
            &m,
            "policy_decisions_total",
            &[("rule", rule), ("decision", decision)],
        )
    };
    // Both instances share the metric family. The observer let both requests on and
    // counted each rule the first one broke; the enforcer counted its one denial.
    for rule in [
        "required_headers",
        "user_agent",
        "content_type",
        "body_size",
    ] {
        assert_eq!(decisions(rule, "would_deny"), Some(1.0), "{rule}\n{m}");
    }
    assert_eq!(decisions("none", "allow"), Some(2.0), "{m}");
    assert_eq!(decisions("required_headers", "deny"), Some(1.0));
    // Each instance resolves its series at init, so the enforcer's other denials show at
    // 0 before any happened: 1 allow, 4 would_deny, 4 deny.
    assert_eq!(decisions("body_size", "deny"), Some(0.0));
    assert_eq!(series(&m, "policy_decisions_total").len(), 9, "{m}");
    assert_eq!(invocations(&m, "observer", "on_request", "ok"), 2.0);
    assert_eq!(invocations(&m, "observer", "on_request", "deny"), 0.0);
    assert_eq!(invocations(&m, "enforcer", "on_request", "deny"), 1.0);
    gw.shutdown().await;
}

/// upstream-slo judging windows of 4 responses by error ratio alone (degraded above 10 %,
/// unhealthy above 50 %), its batches delivered after 10 ms.
fn slo_plugin() -> String {
    plugin(
        "slo",
        "upstream-slo",
        "observe = { max_delay = \"10ms\" }",
        "window = 4\nmin_samples = 4\ndegraded_error_ratio = 0.1\n\
         unhealthy_error_ratio = 0.5\ndegraded_latency = \"off\"\n\
         unhealthy_latency = \"off\"",
    )
}

#[tokio::test]
async fn upstream_slo_judges_upstreams_and_feeds_health() {
    let bad = TestUpstream::start("bad").await;
    let good = TestUpstream::start("good").await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let gw = TestGateway::start(&format!(
        "{}{}{}{}{}{}{}",
        upstream_block("bad", &[bad.url()], ""),
        upstream_block("good", &[good.url()], ""),
        upstream_block("dead", &[closed], "connect_timeout = \"2s\""),
        slo_plugin(),
        plugin_route("bad", "/status/", "bad", &["slo"], ""),
        plugin_route("dead", "/dead", "dead", &["slo"], ""),
        plugin_route("good", "/", "good", &["slo"], ""),
    ))
    .await;
    let hit = |path: &str, want: u16| {
        let url = gw.url(path);
        async move {
            let (status, _, _) = send(get(&url)).await;
            assert_eq!(status, want, "{url}");
        }
    };
    let ratio =
        |m: &str, upstream: &str| metric(m, "upstream_slo_error_ratio", &[("upstream", upstream)]);
    let window = |m: &str, upstream: &str| {
        metric(
            m,
            "upstream_slo_window_responses",
            &[("upstream", upstream)],
        )
    };

    // The plugin observes: each step waits until it has had every exchange so far.
    let seen = |n: f64| {
        wait_for_sum(
            &gw,
            "fedgate_plugin_observed_exchanges_total",
            &[("plugin", "slo"), ("result", "delivered")],
            n,
            Duration::from_secs(5),
        )
    };

    // One error, below min_samples: not judged yet.
    hit("/status/500", 500).await;
    seen(1.0).await;
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["status"], "healthy");
    let entry = plugin_health(&doc, "slo");
    assert_eq!(entry["status"], "healthy");
    assert_eq!(
        entry["message"],
        "0 of 1 upstreams judged, all within thresholds"
    );
    let m = gw.metrics().await;
    assert_eq!(ratio(&m, "bad"), Some(1.0), "{m}");
    assert_eq!(window(&m, "bad"), Some(1.0));

    // 1 error in 4: 25% is above the degraded 10%, not above the unhealthy 50%.
    for _ in 0..3 {
        hit("/status/200", 200).await;
    }
    for _ in 0..4 {
        hit("/x", 200).await;
    }
    seen(8.0).await;
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 200, "degraded keeps /health at 200: {doc}");
    assert_eq!(doc["status"], "degraded");
    let entry = plugin_health(&doc, "slo");
    assert_eq!(entry["status"], "degraded");
    assert_eq!(
        entry["message"],
        "upstream bad degraded: error ratio 25.0% over the last 4 responses (degraded above 10.0%)"
    );
    let m = gw.metrics().await;
    assert_eq!(ratio(&m, "bad"), Some(0.25), "{m}");
    assert_eq!(ratio(&m, "good"), Some(0.0));
    assert_eq!(window(&m, "bad"), Some(4.0));
    assert_eq!(window(&m, "good"), Some(4.0));

    // The window keeps the last 4: two more errors make 50%, which is not above 50%...
    hit("/status/503", 503).await;
    hit("/status/500", 500).await;
    seen(10.0).await;
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(plugin_health(&doc, "slo")["status"], "degraded");
    assert_eq!(ratio(&gw.metrics().await, "bad"), Some(0.5));
    // ... and a third makes 75%: unhealthy, and /health answers 503.
    hit("/status/502", 502).await;
    seen(11.0).await;
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 503, "{doc}");
    assert_eq!(doc["status"], "unhealthy");
    let entry = plugin_health(&doc, "slo");
    assert_eq!(entry["status"], "unhealthy");
    assert_eq!(
        entry["message"],
        "upstream bad unhealthy: error ratio 75.0% over the last 4 responses (unhealthy above 50.0%)"
    );
    assert_eq!(ratio(&gw.metrics().await, "bad"), Some(0.75));

    // The gateway's own answers count as errors: a closed port gives 502 every time.
    for _ in 0..4 {
        hit("/dead/x", 502).await;
    }
    seen(15.0).await;
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 503, "{doc}");
    assert_eq!(
        plugin_health(&doc, "slo")["message"],
        "upstream bad unhealthy: error ratio 75.0% over the last 4 responses (unhealthy above 50.0%); \
         upstream dead unhealthy: error ratio 100.0% over the last 4 responses (unhealthy above 50.0%)"
    );
    let m = gw.metrics().await;
    assert_eq!(ratio(&m, "dead"), Some(1.0), "{m}");
    assert_eq!(window(&m, "dead"), Some(4.0));
    // A connect failure says nothing about latency: no percentile for `dead`, one for `bad`.
    let latency = |u: &str| {
        metric(
            &m,
            "upstream_slo_latency_seconds",
            &[("upstream", u), ("percentile", "p50")],
        )
    };
    assert_eq!(latency("dead"), None, "{m}");
    assert!(latency("bad").is_some_and(|s| s > 0.0), "{m}");
    assert_eq!(
        metric(
            &m,
            "fedgate_requests_total",
            &[
                ("route", "dead"),
                ("upstream", "dead"),
                ("method", "GET"),
                ("status", "502")
            ]
        ),
        Some(4.0)
    );
    // Every exchange reached the observer (7 bad, 4 good, 4 dead), none inline.
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_observed_exchanges_total",
            &[("plugin", "slo"), ("result", "delivered")]
        ),
        Some(15.0)
    );
    assert_eq!(invocations(&m, "slo", "on_response", "ok"), 0.0);
    assert_eq!(bad.hits(), 7);
    assert_eq!(good.hits(), 4);
    gw.shutdown().await;
}

/// upstream-slo judges an upstream marked `critical = false` at most degraded: its failures
/// show in `/health`, which keeps answering 200, while a critical one's make it 503.
#[tokio::test]
async fn upstream_slo_respects_critical() {
    let good = TestUpstream::start("good").await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let gw = TestGateway::start(&format!(
        "{}{}{}{}{}",
        upstream_block("good", &[good.url()], ""),
        upstream_block("extras", &[closed], "critical = false"),
        slo_plugin(),
        plugin_route("extras", "/extras", "extras", &["slo"], ""),
        plugin_route("good", "/", "good", &["slo"], ""),
    ))
    .await;
    for _ in 0..4 {
        assert_eq!(send(get(&gw.url("/extras/x"))).await.0, 502);
        assert_eq!(send(get(&gw.url("/x"))).await.0, 200);
    }
    settle_observers(&gw, &["slo"]).await;
    let (code, doc) = health(&gw).await;
    assert_eq!(
        code, 200,
        "a non-critical upstream made /health fail: {doc}"
    );
    let entry = plugin_health(&doc, "slo");
    assert_eq!(entry["status"], "degraded", "{doc}");
    assert_eq!(
        entry["message"],
        "upstream extras (not critical) degraded: error ratio 100.0% over the last 4 \
         responses (unhealthy above 50.0%)"
    );
    gw.shutdown().await;
}

#[test]
fn plugin_check_reports_the_abi_or_refuses_with_the_reason() {
    let bin = fedgate_bin();
    let run = |path: &Path| {
        let out = Command::new(&bin)
            .args(["plugin", "check"])
            .arg(path)
            .output()
            .expect("the fedgate binary runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Each served ABI version is named as the component targets it: the shipped plugins
    // are built with the SDK for 0.2.0, the v1 probe against the 0.1.0 WIT.
    for (crate_name, version) in [("activitypub-metrics", "0.2.0"), ("v1-probe", "0.1.0")] {
        let good = plugin_wasm(crate_name);
        let (code, stdout, stderr) = run(&good);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        let size = std::fs::metadata(&good).unwrap().len();
        let first = stdout.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            format!(
                "{}: ok, a fedgate plugin for ABI fedgate:plugin@{version} ({size} bytes)",
                good.display()
            )
        );
        assert!(
            stdout
                .lines()
                .any(|l| l == format!("  export fedgate:plugin/handler@{version}")),
            "{stdout}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l == format!("  import fedgate:plugin/metrics@{version}")),
            "{stdout}"
        );
    }

    let other = plugin_wasm("other-world");
    let (code, stdout, stderr) = run(&other);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("fedgate:plugin@9.0.0"), "{stderr}");
    assert!(stderr.contains(&other.display().to_string()), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not WebAssembly").unwrap();
    let (code, stdout, stderr) = run(&garbage);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("not a Wasm component"), "{stderr}");
}

#[test]
fn check_loads_plugins_and_names_the_one_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, plugin_config: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "{HEAD}\n{}{}{}",
                upstream_block("app", &["http://127.0.0.1:9".to_string()], ""),
                plugin("gatekeeper", "hostile", "", plugin_config),
                plugin_route("all", "/", "app", &["gatekeeper"], ""),
            ),
        )
        .unwrap();
        path
    };

    let refused = config("refused", "mode = \"init-error\"");
    let (code, stderr) = run_bin("check", &refused);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("plugins.gatekeeper"), "{stderr}");
    assert!(stderr.contains("the configuration says no"), "{stderr}");
    assert!(stderr.contains(&refused.display().to_string()), "{stderr}");

    let fine = config("fine", "mode = \"ok\"");
    let (code, stderr) = run_bin("check", &fine);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("ok (1 listeners, 1 upstreams, 1 routes, 1 plugins)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_watcher_reloads_a_changed_component_without_a_config_change() {
    let up = TestUpstream::start("app").await;
    let files = tempfile::tempdir().unwrap();
    let wasm = files.path().join("p.wasm");
    std::fs::copy(plugin_wasm("request-policy"), &wasm).unwrap();
    // Config both components accept: request-policy reads it, hostile ignores unknown keys
    // (and runs in its default `ok` mode).
    let gw = TestGateway::start_full(&format!(
        "{}\n{}{}{}",
        watching_head(),
        upstream_block("app", &[up.url()], ""),
        plugin_at("p", &wasm, "", "required_headers = [\"x-token\"]"),
        plugin_route("all", "/", "app", &["p"], ""),
    ))
    .await;
    let config_text = std::fs::read_to_string(&gw.config_path).unwrap();
    let (status, _, body) = send(get(&gw.url("/x"))).await;
    assert_eq!(status, 403);
    assert_eq!(&body[..], b"missing required header: x-token");
    assert_eq!(up.hits(), 0);
    // The watcher takes its first reading of the plugin files when it starts; give it a
    // few polls to have done so before the file changes.
    tokio::time::sleep(Duration::from_millis(300)).await;

    replace_file(&wasm, &plugin_wasm("hostile"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = send(get(&gw.url("/x"))).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 403);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the changed component was not loaded within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.hits(), 1);
    assert!(!up.last().headers.contains_key("x-token"));
    assert_eq!(
        std::fs::read_to_string(&gw.config_path).unwrap(),
        config_text,
        "the config file was not touched"
    );
    // Give the watcher a few more polls: one change is one reload.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_reloads_total",
            &[("plugin", "p"), ("result", "success")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_reloads_total",
            &[("plugin", "p"), ("result", "error")]
        )
        .unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn the_watcher_keeps_the_running_component_when_the_new_one_refuses_the_config() {
    let up = TestUpstream::start("app").await;
    let files = tempfile::tempdir().unwrap();
    let wasm = files.path().join("p.wasm");
    std::fs::copy(plugin_wasm("hostile"), &wasm).unwrap();
    let gw = TestGateway::start_full(&format!(
        "{}\n{}{}{}",
        watching_head(),
        upstream_block("app", &[up.url()], ""),
        plugin_at(
            "p",
            &wasm,
            "",
            "mode = \"add-header\"\nheader = \"x-version\"\nvalue = \"one\""
        ),
        plugin_route("all", "/", "app", &["p"], ""),
    ))
    .await;
    let (status, _, _) = send(get(&gw.url("/x"))).await;
    assert_eq!(status, 200);
    assert_eq!(up.last().headers["x-version"], "one");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // activitypub-metrics refuses unknown config keys (`mode`, `header`, `value`): the
    // reload the watcher starts fails, and the running component keeps serving.
    replace_file(&wasm, &plugin_wasm("activitypub-metrics"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let errors = |m: &str| {
        metric(
            m,
            "fedgate_plugin_reloads_total",
            &[("plugin", "p"), ("result", "error")],
        )
    };
    while errors(&gw.metrics().await).unwrap_or(0.0) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher did not try the changed component within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few more polls: the same file is not retried.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, _) = send(get(&gw.url("/y"))).await;
    assert_eq!(status, 200);
    assert_eq!(up.last().headers["x-version"], "one");
    let m = gw.metrics().await;
    assert_eq!(errors(&m), Some(1.0), "{m}");
    assert_eq!(
        metric(
            &m,
            "fedgate_plugin_reloads_total",
            &[("plugin", "p"), ("result", "success")]
        )
        .unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "error")]),
        Some(1.0)
    );
    assert_eq!(invocations(&m, "p", "on_request", "ok"), 2.0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_output_with_plugin_metrics() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin("ap", "activitypub-metrics", "", ""),
        plugin(
            "labels",
            "hostile",
            "max_series = 3",
            "mode = \"labels\"\nseries = 5"
        ),
        plugin_route(
            "inbox",
            "/users/",
            "app",
            &["ap", "labels"],
            "buffer_body = \"64KiB\""
        ),
    ))
    .await;
    let url = gw.url("/users/alice/inbox");
    for body in [
        r#"{"type":"Follow","actor":"https://gts.example.org/users/dave","object":"https://local.example/users/alice"}"#,
        r#"{"type":"Like","actor":"https://mastodon.example:8443/users/eve","object":"https://local.example/users/alice/statuses/1"}"#,
        "not json",
    ] {
        let req = request(
            "POST",
            &url,
            &[("content-type", "application/activity+json")],
            body.as_bytes().to_vec(),
        );
        assert_eq!(send(req).await.0, 200);
    }
    let text = settle_observers(&gw, &["ap"]).await;
    // Plugin metrics are there, including the overflow series of the capped one.
    assert_eq!(
        metric(
            &text,
            "federation_activities_total",
            &[("type", "Like"), ("instance", "mastodon.example:8443")]
        ),
        Some(1.0),
        "{text}"
    );
    // 3 requests of 5 new label values each: 3 get a series, 12 fold into `other`.
    assert_eq!(series(&text, "hostile_series_total").len(), 4, "{text}");
    assert_eq!(
        metric(&text, "hostile_series_total", &[("n", "other")]),
        Some(12.0)
    );

    let (ok, report) = promtool_check_metrics(&text);
    assert!(ok, "promtool rejected the metrics:\n{report}\n{text}");
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}"
    );
    gw.shutdown().await;
}
