//! All four shipped plugins (`plugins/`) on one inbox route under mixed federation traffic:
//! the gateway's live `/metrics` must pass `promtool check metrics`, and the plugins' figures
//! must match the traffic sent.

use std::collections::BTreeMap;

use fedgate_tests::*;
use http::Request;
use http_body_util::{BodyExt, Full};

const AP: &str = "application/activity+json";
const MASTODON_UA: &str = "http.rb/5.1.1 (Mastodon/4.2.8; +https://mastodon.example/)";

/// A request with the given method, headers and body.
fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(
        Full::new(body.to_owned().into())
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

/// A delivery as a remote server sends one: the activity with the ActivityPub content type.
fn delivery(url: &str, activity: &str) -> Request<Body> {
    request(
        "POST",
        url,
        &[
            ("content-type", AP),
            ("user-agent", MASTODON_UA),
            ("date", "Thu, 04 Dec 2025 18:30:00 GMT"),
        ],
        activity,
    )
}

/// Real-looking activities: the `type` and sending instance `federation_activities_total`
/// should count each under, and the body.
fn activities() -> Vec<(&'static str, &'static str, String)> {
    let note = |host: &str, user: &str, n: u32| {
        format!(
            r#"{{"@context":["https://www.w3.org/ns/activitystreams",{{"sensitive":"as:sensitive"}}],"id":"https://{host}/users/{user}/statuses/{n}/activity","type":"Create","actor":"https://{host}/users/{user}","published":"2025-12-04T18:30:00Z","to":["https://www.w3.org/ns/activitystreams#Public"],"cc":["https://{host}/users/{user}/followers"],"object":{{"id":"https://{host}/users/{user}/statuses/{n}","type":"Note","attributedTo":"https://{host}/users/{user}","content":"<p>hello fediverse {n}</p>","sensitive":false}}}}"#
        )
    };
    vec![
        ("Create", "mastodon.example", note("mastodon.example", "alice", 1)),
        ("Create", "mastodon.example", note("mastodon.example", "bob", 2)),
        ("Create", "mastodon.example", note("mastodon.example", "alice", 3)),
        ("Create", "gts.example:8443", note("gts.example:8443", "carol", 4)),
        (
            "Follow",
            "pixelfed.example",
            r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://pixelfed.example/users/dan#follow/1","type":"Follow","actor":"https://pixelfed.example/users/dan","object":"https://local.example/users/alice"}"#.to_owned(),
        ),
        (
            "Follow",
            "mastodon.example",
            r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mastodon.example/3f2a","type":"Follow","actor":"https://mastodon.example/users/bob","object":"https://local.example/users/alice"}"#.to_owned(),
        ),
        (
            "Like",
            "misskey.example",
            r#"{"@context":["https://www.w3.org/ns/activitystreams","https://w3id.org/security/v1"],"type":"Like","id":"https://misskey.example/likes/9k2","actor":"https://misskey.example/users/9abc","object":"https://local.example/users/alice/statuses/7","content":"👍"}"#.to_owned(),
        ),
        (
            "Like",
            "mastodon.example",
            r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mastodon.example/users/bob#likes/4","type":"Like","actor":"https://mastodon.example/users/bob","object":"https://local.example/users/alice/statuses/7"}"#.to_owned(),
        ),
        (
            "Announce",
            "lemmy.example",
            r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://lemmy.example/activities/announce/1","type":"Announce","actor":"https://lemmy.example/c/rust","to":["https://www.w3.org/ns/activitystreams#Public"],"object":"https://lemmy.example/post/42"}"#.to_owned(),
        ),
        (
            "Delete",
            "mastodon.example",
            r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mastodon.example/users/alice/statuses/1#delete","type":"Delete","actor":"https://mastodon.example/users/alice","object":{"id":"https://mastodon.example/users/alice/statuses/1","type":"Tombstone","formerType":"Note"}}"#.to_owned(),
        ),
        (
            "Flag",
            "mod.example",
            r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mod.example/reports/1","type":"Flag","actor":"https://mod.example/actor","object":["https://local.example/users/spammer","https://local.example/users/spammer/statuses/3"],"content":"spam"}"#.to_owned(),
        ),
        (
            "Block",
            "pixelfed.example",
            r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://pixelfed.example/blocks/2","type":"Block","actor":"https://pixelfed.example/users/dan","object":"https://local.example/users/mallory"}"#.to_owned(),
        ),
        (
            "Undo",
            "mastodon.example",
            r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mastodon.example/users/bob#follows/3/undo","type":"Undo","actor":"https://mastodon.example/users/bob","object":{"id":"https://mastodon.example/3f2a","type":"Follow","actor":"https://mastodon.example/users/bob","object":"https://local.example/users/alice"}}"#.to_owned(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_of_all_shipped_plugins_pass_promtool() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        plugin(
            "policy",
            "request-policy",
            "",
            "denied_user_agents = [\"*python-requests*\"]\n\
             allowed_content_types = [\"application/activity+json\", \"application/ld+json\"]\n\
             max_body_size = \"64KiB\""
        ),
        plugin("ap", "activitypub-metrics", "", ""),
        plugin("moderation", "moderation-events", "", ""),
        plugin(
            "slo",
            "upstream-slo",
            "",
            "window = 100\nmin_samples = 1\nlatency_quantile = 0.999\npublish_every = 1\n\
             degraded_latency = \"off\"\nunhealthy_latency = \"off\"\n\
             degraded_error_ratio = 0.5\nunhealthy_error_ratio = 0.9"
        ),
        plugin_route(
            "inbox",
            "/users/",
            "app",
            &["policy", "ap", "moderation", "slo"],
            "buffer_body = \"64KiB\""
        ),
    ))
    .await;
    let inbox = gw.url("/users/alice/inbox");
    let activities = activities();
    let mut sent: BTreeMap<(&str, &str), f64> = BTreeMap::new();

    // The first deliveries reach a healthy upstream...
    let (healthy, failing) = activities.split_at(activities.len() - 3);
    for (kind, instance, body) in healthy {
        let (status, _, _) = send(delivery(&inbox, body)).await;
        assert_eq!(status, 200, "{kind} from {instance}");
        assert_eq!(
            up.last().body_len,
            body.len() as u64,
            "the body went on whole"
        );
        *sent.entry((kind, instance)).or_default() += 1.0;
    }
    // ... reads of actors and outboxes are not deliveries ...
    for path in [
        "/users/alice",
        "/users/alice/outbox?page=true",
        "/users/bob/followers",
    ] {
        let (status, _, _) = send(request(
            "GET",
            &gw.url(path),
            &[("accept", AP), ("user-agent", MASTODON_UA)],
            "",
        ))
        .await;
        assert_eq!(status, 200, "GET {path}");
    }
    // ... a scraper the policy refuses never reaches the upstream nor the counters ...
    let hits = up.hits();
    let (status, _, body) = send(request(
        "POST",
        &inbox,
        &[("content-type", AP), ("user-agent", "python-requests/2.31")],
        &activities[0]
            .2
            .replace("mastodon.example", "scraper.example"),
    ))
    .await;
    assert_eq!(status, 403);
    assert_eq!(&body[..], b"user agent not allowed");
    assert_eq!(up.hits(), hits);
    // ... and the last deliveries meet an upstream in trouble: they are still counted.
    up.set_fault(Fault::Status(503));
    for (kind, instance, body) in failing {
        let (status, _, _) = send(delivery(&inbox, body)).await;
        assert_eq!(status, 503, "{kind} from {instance}");
        *sent.entry((kind, instance)).or_default() += 1.0;
    }
    let (status, _, _) = send(get(&gw.url("/users/alice"))).await;
    assert_eq!(status, 503);
    up.set_fault(Fault::None);
    // The observers have had every exchange; then a health check publishes every latency
    // gauge from the shared store.
    settle_observers(&gw, &["ap", "moderation", "slo"]).await;
    let (code, doc) = health(&gw).await;
    assert_eq!(code, 200, "{doc}");

    let text = gw.metrics().await;
    let (ok, report) = promtool_check_metrics(&text);
    assert!(ok, "promtool rejected the live metrics:\n{report}\n{text}");
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}\n{text}"
    );

    // upstream-slo: the latency gauge carries `percentile`, never the reserved `quantile`.
    let latency = series(&text, "upstream_slo_latency_seconds");
    assert_eq!(latency.len(), 4, "p50, p90, p99 and p99.9 for app:\n{text}");
    assert!(
        latency.iter().all(|l| !l.contains("quantile=")),
        "{latency:#?}"
    );
    for percentile in ["p50", "p90", "p99", "p99.9"] {
        let seconds = metric(
            &text,
            "upstream_slo_latency_seconds",
            &[("upstream", "app"), ("percentile", percentile)],
        );
        assert!(
            seconds.is_some_and(|s| s > 0.0 && s < 60.0),
            "{percentile}: {seconds:?}\n{text}"
        );
    }
    let window = metric(
        &text,
        "upstream_slo_window_responses",
        &[("upstream", "app")],
    );
    // Each plugin instance keeps its own window and the gauges show the instance that
    // published last, so only their presence and range are certain.
    assert!(
        window.is_some_and(|n| (1.0..=17.0).contains(&n)),
        "{window:?}\n{text}"
    );
    let ratio = metric(&text, "upstream_slo_error_ratio", &[("upstream", "app")]);
    assert!(
        ratio.is_some_and(|r| (0.0..=1.0).contains(&r)),
        "{ratio:?}\n{text}"
    );

    // activitypub-metrics: every delivery the policy let on, by type and instance, exactly.
    for ((kind, instance), count) in &sent {
        assert_eq!(
            metric(
                &text,
                "federation_activities_total",
                &[("type", kind), ("instance", instance)]
            ),
            Some(*count),
            "{kind} from {instance}\n{text}"
        );
    }
    assert_eq!(
        series(&text, "federation_activities_total").len(),
        sent.len(),
        "nothing else is counted (not the refused scraper, not the GETs):\n{text}"
    );

    // moderation-events and request-policy saw the same traffic.
    let moderation = |action: &str, target: &str| {
        metric(
            &text,
            "moderation_events_total",
            &[("action", action), ("target_type", target)],
        )
    };
    assert_eq!(moderation("flag", "actor"), Some(1.0), "{text}");
    assert_eq!(moderation("block", "actor"), Some(1.0));
    assert_eq!(
        moderation("delete", "object"),
        Some(1.0),
        "a Tombstone that was a Note"
    );
    assert_eq!(series(&text, "moderation_events_total").len(), 3, "{text}");
    let decisions = |rule: &str, decision: &str| {
        metric(
            &text,
            "policy_decisions_total",
            &[("rule", rule), ("decision", decision)],
        )
    };
    assert_eq!(decisions("user_agent", "deny"), Some(1.0), "{text}");
    assert_eq!(
        decisions("none", "allow"),
        Some(activities.len() as f64 + 4.0),
        "every delivery and every GET"
    );
    gw.shutdown().await;
}
