//! Counts the ActivityPub activities delivered to inboxes, by activity type and by the
//! instance that sent them: `federation_activities_total{type,instance}`.
//!
//! An **observer**: it only counts, so it runs off the request path on the batches of
//! finished exchanges the gateway hands it, and never delays or refuses a request. It reads
//! the gateway's federation view of each body (`activity`: type and actor, parsed once by
//! the gateway for the blocklist and every plugin) instead of parsing the JSON again, so the
//! routes it is attached to must buffer bodies (`buffer_body`). Only `POST`s to a path
//! ending in one of `path_suffixes` count, and only those the gateway let through to the
//! upstream: requests it refused itself (blocklist, rate limit, auth, signatures) and local
//! replies of plugins are not deliveries.

use std::borrow::Cow;
use std::collections::HashMap;

use fedgate_sdk::{
    export_plugin, log, Activity, Config, Counter, CounterSeries, Exchange, Hooks, InboxPaths,
    Plugin,
};
use serde::Deserialize;

/// Activity types counted under their own name; any other type counts as `other`.
const ACTIVITY_TYPES: [&str; 12] = [
    "Create", "Update", "Delete", "Follow", "Accept", "Reject", "Like", "Announce", "Undo",
    "Block", "Flag", "Move",
];

/// The `type` label of bodies that are not an activity: no body, not a JSON object, or no
/// string `type`.
const INVALID: &str = "invalid";
/// The `instance` label when the sender cannot be told (no activity, no usable `actor`).
const UNKNOWN: &str = "unknown";
/// The `type` label of unlisted types, and the `instance` label beyond `max_instances`.
const OTHER: &str = "other";

/// Every `type` label value: the listed types, then `other` and `invalid`.
const TYPE_LABELS: usize = ACTIVITY_TYPES.len() + 2;

/// Longest host name DNS allows; longer ones are not hosts.
const MAX_HOST_BYTES: usize = 253;

/// The request field read to tell a body that should have had an activity view.
const CONTENT_TYPE: &str = "content-type";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// How many distinct instances get their own label value; later ones count as `other`.
    #[serde(default = "default_max_instances")]
    max_instances: usize,
    /// Path endings that make a `POST` an inbox delivery; empty counts every `POST`.
    #[serde(default)]
    path_suffixes: InboxPaths,
}

fn default_max_instances() -> usize {
    1000
}

/// One `instance` label value's series, by `type` label (see [`type_index`]), resolved
/// the first time each is counted.
type Row = [Option<CounterSeries>; TYPE_LABELS];

#[derive(Debug)]
struct ActivityPubMetrics {
    activities: Counter,
    max_instances: usize,
    path_suffixes: InboxPaths,
    /// The instances that have their own label value in this plugin instance.
    instances: HashMap<String, Row>,
    /// The series of senders that cannot be told, and of instances past `max_instances`.
    unknown: Row,
    other: Row,
    /// Whether the "no activity view" warning was logged, so it is logged once per
    /// instance.
    warned_no_view: bool,
    /// Whether reaching `max_instances` was logged.
    logged_cap: bool,
}

impl Plugin for ActivityPubMetrics {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        let activities = Counter::declare(
            "federation_activities_total",
            "ActivityPub activities delivered to inboxes, by activity type and sending instance.",
            &["type", "instance"],
        )?;
        Ok(ActivityPubMetrics {
            activities,
            max_instances: settings.max_instances,
            path_suffixes: settings.path_suffixes,
            instances: HashMap::new(),
            unknown: [None; TYPE_LABELS],
            other: [None; TYPE_LABELS],
            warned_no_view: false,
            logged_cap: false,
        })
    }

    fn hooks(&self) -> Hooks {
        Hooks::OBSERVE
    }

    fn request_headers(&self) -> Vec<String> {
        vec![CONTENT_TYPE.to_owned()]
    }

    fn observe(&mut self, exchanges: &[Exchange<'_>]) {
        for exchange in exchanges {
            if !exchange.admitted() || !self.path_suffixes.is_delivery_exchange(exchange) {
                continue;
            }
            match &exchange.activity {
                Some(activity) => {
                    let (kind, host) = classify(activity);
                    self.count(kind, host);
                }
                None => {
                    self.warn_without_view(exchange);
                    self.count(INVALID, None);
                }
            }
        }
    }
}

impl ActivityPubMetrics {
    /// A JSON body without an activity view is either not an activity or was not buffered;
    /// the second is a configuration mistake worth one warning per instance.
    fn warn_without_view(&mut self, exchange: &Exchange<'_>) {
        if self.warned_no_view || exchange.request_bytes == 0 {
            return;
        }
        let json = exchange
            .request_header(&[CONTENT_TYPE], CONTENT_TYPE)
            .is_some_and(|value| value.to_ascii_lowercase().contains("json"));
        if json {
            self.warned_no_view = true;
            log::warn!(
                "an inbox POST with a JSON body on route {} has no activity view: the body is \
                 not one JSON object, or the route does not buffer bodies (set buffer_body); \
                 counted as type \"invalid\"",
                exchange.route
            );
        }
    }

    /// Counts one activity of type label `kind` from `host` (`None`: unknown). Each label
    /// set is resolved into a series the first time it is counted; later counts are one
    /// host call with no labels to pass.
    fn count(&mut self, kind: &'static str, host: Option<Cow<'_, str>>) {
        let index = type_index(kind);
        let activities = &self.activities;
        let resolve = |row: &mut Row, instance: &str| {
            *row[index].get_or_insert_with(|| activities.series(&[kind, instance]))
        };
        let series = match host {
            None => resolve(&mut self.unknown, UNKNOWN),
            Some(host) => {
                if let Some(row) = self.instances.get_mut(&*host) {
                    resolve(row, &host)
                } else if self.instances.len() < self.max_instances {
                    let mut row = [None; TYPE_LABELS];
                    let series = resolve(&mut row, &host);
                    self.instances.insert(host.into_owned(), row);
                    series
                } else {
                    if !self.logged_cap {
                        self.logged_cap = true;
                        log::info!(
                            "{} instances have their own label; further instances count as \
                             \"other\"",
                            self.max_instances
                        );
                    }
                    resolve(&mut self.other, OTHER)
                }
            }
        };
        series.inc();
    }
}

/// Where a `type` label value sits in a [`Row`].
fn type_index(kind: &str) -> usize {
    match kind {
        OTHER => ACTIVITY_TYPES.len(),
        INVALID => ACTIVITY_TYPES.len() + 1,
        _ => ACTIVITY_TYPES
            .iter()
            .position(|known| *known == kind)
            .unwrap_or(ACTIVITY_TYPES.len()),
    }
}

/// The activity's `type` label and its sender's host, from the gateway's view.
fn classify<'a>(activity: &'a Activity<'_>) -> (&'static str, Option<Cow<'a, str>>) {
    let kind = match activity.kind() {
        Some(kind) => activity_type(kind),
        None => INVALID,
    };
    (kind, activity.actor.as_deref().and_then(url_host))
}

/// The label for an activity's `type` (the gateway's view holds the first one of an
/// array). Compact (`as:Like`) and full IRIs are read as the plain name.
fn activity_type(name: &str) -> &'static str {
    let name = name
        .strip_prefix("https://www.w3.org/ns/activitystreams#")
        .or_else(|| name.strip_prefix("as:"))
        .unwrap_or(name);
    ACTIVITY_TYPES
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or(OTHER)
}

/// The lowercased host of an `http` or `https` URL, with its port unless it is the scheme's
/// default; `None` for anything else. Borrowed from `url` unless it had capitals.
fn url_host(url: &str) -> Option<Cow<'_, str>> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else if scheme.eq_ignore_ascii_case("http") {
        ":80"
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    let host = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(authority.to_ascii_lowercase())
    } else {
        Cow::Borrowed(authority)
    };
    let valid = !host.is_empty()
        && host.len() <= MAX_HOST_BYTES
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    valid.then_some(host)
}

export_plugin!(ActivityPubMetrics);

#[cfg(test)]
mod tests {
    use super::*;
    use fedgate_sdk::testing::{self, TestExchange};

    fn plugin(config: &str) -> ActivityPubMetrics {
        testing::init(config).expect("config is valid")
    }

    fn delivery(activity: Activity<'_>) -> TestExchange {
        TestExchange::post("/users/alice/inbox")
            .header("content-type", "application/activity+json")
            .bytes(100, 0)
            .activity(activity)
    }

    fn deliver(plugin: &mut ActivityPubMetrics, kind: &str, actor: &str) {
        plugin.observe(&[delivery(testing::activity(kind, actor)).build()]);
    }

    fn count(kind: &str, instance: &str) -> f64 {
        testing::counter_value("federation_activities_total", &[kind, instance])
    }

    #[test]
    fn counts_activities_by_type_and_instance() {
        let mut p = plugin("{}");
        assert_eq!(p.hooks(), Hooks::OBSERVE);
        assert_eq!(p.request_headers(), ["content-type"]);
        p.observe(&[
            delivery(testing::activity("Create", "https://Example.ORG/users/bob")).build(),
            delivery(testing::activity("Like", "https://example.org/users/bob")).build(),
            delivery(testing::activity("Announce", "https://relay.example/actor")).build(),
            delivery(testing::activity("as:Follow", "https://a.example:443/u/x")).build(),
            delivery(testing::activity(
                "https://www.w3.org/ns/activitystreams#Move",
                "http://b.example:8080/u/x",
            ))
            .build(),
        ]);
        assert_eq!(count("Create", "example.org"), 1.0);
        assert_eq!(count("Like", "example.org"), 1.0);
        assert_eq!(count("Announce", "relay.example"), 1.0);
        assert_eq!(count("Follow", "a.example"), 1.0);
        assert_eq!(count("Move", "b.example:8080"), 1.0);
    }

    #[test]
    fn every_listed_type_has_its_own_label() {
        let mut p = plugin("{}");
        for kind in ACTIVITY_TYPES {
            deliver(&mut p, kind, "https://x.example/a");
            assert_eq!(count(kind, "x.example"), 1.0, "{kind}");
        }
    }

    #[test]
    fn unlisted_types_count_as_other() {
        let mut p = plugin("{}");
        deliver(&mut p, "EmojiReact", "https://x.example/a");
        // The view holds the first type of an array: `["Hashtag", "Like"]` reads `Hashtag`.
        deliver(&mut p, "Hashtag", "https://x.example/a");
        assert_eq!(count("other", "x.example"), 2.0);
    }

    #[test]
    fn bodies_that_are_not_activities_count_as_invalid() {
        let mut p = plugin("{}");
        // No view: not JSON, not an object, or not buffered.
        p.observe(&[
            TestExchange::post("/inbox").build(),
            TestExchange::post("/inbox").bytes(8, 0).build(),
        ]);
        // A view without a type.
        let untyped = Activity {
            actor: Some("https://x.example/a".into()),
            ..Activity::default()
        };
        p.observe(&[delivery(untyped).build()]);
        assert_eq!(count("invalid", "unknown"), 2.0);
        assert_eq!(count("invalid", "x.example"), 1.0);
        assert!(
            testing::logs().is_empty(),
            "no JSON body went without a view"
        );
    }

    #[test]
    fn a_json_body_without_a_view_is_warned_about_once() {
        let mut p = plugin("{}");
        let unbuffered = TestExchange::post("/inbox")
            .header("Content-Type", "application/activity+json")
            .bytes(300, 0)
            .route("inbox")
            .build();
        p.observe(&[unbuffered.clone(), unbuffered]);
        assert_eq!(count("invalid", "unknown"), 2.0);
        let logs = testing::logs();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0].message.contains("route inbox"), "{logs:?}");
    }

    #[test]
    fn actors_that_name_no_host_count_as_unknown() {
        let mut p = plugin("{}");
        for actor in [
            "acct:bob@example.org",
            "/users/bob",
            "https://",
            "https://bad host/",
        ] {
            deliver(&mut p, "Create", actor);
        }
        let no_actor = Activity {
            kind: Some("Create".into()),
            ..Activity::default()
        };
        p.observe(&[delivery(no_actor).build()]);
        assert_eq!(count("Create", "unknown"), 5.0);
        assert_eq!(testing::series("federation_activities_total").len(), 1);
    }

    #[test]
    fn userinfo_and_case_do_not_make_new_instances() {
        assert_eq!(
            url_host("HTTPS://user@Example.org/x").as_deref(),
            Some("example.org")
        );
        assert_eq!(
            url_host("https://[2001:db8::1]:8443/").as_deref(),
            Some("[2001:db8::1]:8443")
        );
        assert_eq!(
            url_host("https://example.org?x#y").as_deref(),
            Some("example.org")
        );
        assert_eq!(url_host("ftp://example.org/"), None);
    }

    #[test]
    fn instances_beyond_the_cap_count_as_other() {
        let mut p = plugin(r#"{"max_instances": 2}"#);
        for host in [
            "a.example",
            "b.example",
            "c.example",
            "d.example",
            "a.example",
        ] {
            deliver(&mut p, "Like", &format!("https://{host}/u"));
        }
        assert_eq!(count("Like", "a.example"), 2.0);
        assert_eq!(count("Like", "b.example"), 1.0);
        assert_eq!(count("Like", "other"), 2.0);
        let notes: Vec<_> = testing::logs()
            .into_iter()
            .map(|line| line.message)
            .collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
    }

    #[test]
    fn only_admitted_inbox_posts_count() {
        let mut p = plugin("{}");
        let like = || testing::activity("Like", "https://x.example/a");
        p.observe(&[
            TestExchange::get("/users/alice/inbox")
                .activity(like())
                .build(),
            TestExchange::post("/users/alice/outbox")
                .activity(like())
                .build(),
            TestExchange::post("/inbox/").activity(like()).build(),
            TestExchange::new("post", "/inbox?x=1")
                .activity(like())
                .build(),
            // The upstream failed: the delivery was still let through.
            TestExchange::post("/inbox")
                .activity(like())
                .gateway(502, "connect")
                .build(),
            // Refused by the gateway or answered by a plugin: not delivered.
            TestExchange::post("/inbox")
                .activity(like())
                .gateway(429, "rate_limited")
                .build(),
            TestExchange::post("/inbox")
                .activity(like())
                .gateway(403, "blocked")
                .build(),
            TestExchange::post("/inbox")
                .activity(like())
                .local_reply(202)
                .build(),
        ]);
        assert_eq!(count("Like", "x.example"), 3.0);

        testing::reset();
        let mut p = plugin(r#"{"path_suffixes": []}"#);
        p.observe(&[TestExchange::post("/users/alice/outbox")
            .activity(like())
            .build()]);
        assert_eq!(count("Like", "x.example"), 1.0);
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let error = testing::init::<ActivityPubMetrics>(r#"{"max_instance": 3}"#).unwrap_err();
        assert!(error.contains("unknown field `max_instance`"), "{error}");
        let error = testing::init::<ActivityPubMetrics>(r#"{"max_instances": -1}"#).unwrap_err();
        assert!(error.contains("`max_instances`"), "{error}");
        let error =
            testing::init::<ActivityPubMetrics>(r#"{"path_suffixes": ["inbox"]}"#).unwrap_err();
        assert!(error.contains("`path_suffixes`"), "{error}");
    }
}
