//! Counts the ActivityPub activities delivered to inboxes, by activity type and by the
//! instance that sent them: `federation_activities_total{type,instance}`.
//!
//! Runs in `on-request` on the routes it is attached to; it needs the body, so those routes
//! must buffer it (`buffer_body`). Only `POST`s to a path ending in one of `path_suffixes`
//! count. It never refuses a request.

use std::collections::HashMap;

use fedgate_sdk::{
    export_plugin, log, Config, Counter, CounterSeries, Hooks, InboxPaths, Plugin, Request, Verdict,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

/// Activity types counted under their own name; any other type counts as `other`.
const ACTIVITY_TYPES: [&str; 12] = [
    "Create", "Update", "Delete", "Follow", "Accept", "Reject", "Like", "Announce", "Undo",
    "Block", "Flag", "Move",
];

/// The `type` label of bodies that are not an activity: no body, not JSON, not an object, or
/// no `type`.
const INVALID: &str = "invalid";
/// The `instance` label when the sender cannot be told (no body, no usable `actor`).
const UNKNOWN: &str = "unknown";
/// The `type` label of unlisted types, and the `instance` label beyond `max_instances`.
const OTHER: &str = "other";

/// Every `type` label value: the listed types, then `other` and `invalid`.
const TYPE_LABELS: usize = ACTIVITY_TYPES.len() + 2;

/// Longest host name DNS allows; longer ones are not hosts.
const MAX_HOST_BYTES: usize = 253;

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

/// The fields of an activity this plugin reads; see [`classify`] for how little of the body
/// is read to find them.
#[derive(Default)]
struct Activity {
    kind: Option<Value>,
    actor: Option<Value>,
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
    /// Whether the "no body" warning was logged, so it is logged once per instance.
    warned_no_body: bool,
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
            warned_no_body: false,
            logged_cap: false,
        })
    }

    fn hooks(&self) -> Hooks {
        Hooks::ON_REQUEST
    }

    fn on_request(&mut self, request: &Request) -> Verdict {
        if !self.path_suffixes.is_delivery(request) {
            return Verdict::Continue;
        }
        let Some(body) = request.body() else {
            if !self.warned_no_body {
                self.warned_no_body = true;
                log::warn!(
                    "an inbox POST on route {} has no body to read; set buffer_body on the \
                     route (counted as type \"invalid\")",
                    request.route()
                );
            }
            self.count(INVALID, None);
            return Verdict::Continue;
        };
        let (kind, host) = classify(&body);
        self.count(kind, host);
        Verdict::Continue
    }
}

impl ActivityPubMetrics {
    /// Counts one activity of type label `kind` from `host` (`None`: unknown). Each label
    /// set is resolved into a series the first time it is counted; later counts are one
    /// host call with no labels to pass.
    fn count(&mut self, kind: &'static str, host: Option<String>) {
        let index = type_index(kind);
        let activities = &self.activities;
        let resolve = |row: &mut Row, instance: &str| {
            *row[index].get_or_insert_with(|| activities.series(&[kind, instance]))
        };
        let series = match host {
            None => resolve(&mut self.unknown, UNKNOWN),
            Some(host) => {
                if let Some(row) = self.instances.get_mut(&host) {
                    resolve(row, &host)
                } else if self.instances.len() < self.max_instances {
                    let mut row = [None; TYPE_LABELS];
                    let series = resolve(&mut row, &host);
                    self.instances.insert(host, row);
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

/// The activity's `type` label and its sender's host.
///
/// The body is read up to the point where both top-level `type` and `actor` have been
/// seen, and no further: deliveries from Mastodon, GoToSocial, Misskey and others put both
/// near the start, so a 2 KiB `Create` is parsed for its first few hundred bytes, and the
/// rest of the body, which the upstream validates anyway, costs nothing. A body that is
/// malformed before both were found counts as `invalid`.
fn classify(body: &[u8]) -> (&'static str, Option<String>) {
    let Some(found) = top_level(body) else {
        return (INVALID, None);
    };
    let kind = match &found.kind {
        Some(kind) => activity_type(kind),
        None => INVALID,
    };
    (kind, found.actor.as_ref().and_then(actor_host))
}

/// Top-level member names, read without allocating; only two matter.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Type,
    Actor,
    #[serde(other)]
    Other,
}

/// Walks a JSON object's members, one value at a time, until `type` and `actor` are both
/// found or the object ends. `None` when the body is not a JSON object or is malformed
/// before that point. Values other than the two are skipped without being built, and
/// nothing here goes through serde_json's error path (which locates the error in the input
/// and would cost as much as the parse).
fn top_level(body: &[u8]) -> Option<Activity> {
    let mut at = skip_space(body, 0);
    if body.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(body, at + 1);
    let mut found = Activity::default();
    if body.get(at) == Some(&b'}') {
        return Some(found);
    }
    loop {
        let key: Key = next_value(body, &mut at)?;
        at = skip_space(body, at);
        if body.get(at) != Some(&b':') {
            return None;
        }
        at += 1;
        match key {
            Key::Type => found.kind = Some(next_value(body, &mut at)?),
            Key::Actor => found.actor = Some(next_value(body, &mut at)?),
            Key::Other => {
                next_value::<IgnoredAny>(body, &mut at)?;
            }
        }
        if found.kind.is_some() && found.actor.is_some() {
            return Some(found);
        }
        at = skip_space(body, at);
        match body.get(at) {
            Some(b',') => at += 1,
            Some(b'}') => return Some(found),
            _ => return None,
        }
    }
}

/// Parses one JSON value starting at `*at` (after optional whitespace) and moves `*at`
/// past it.
fn next_value<'de, T: Deserialize<'de>>(body: &'de [u8], at: &mut usize) -> Option<T> {
    let mut values = serde_json::Deserializer::from_slice(body.get(*at..)?).into_iter::<T>();
    let value = values.next()?.ok()?;
    *at += values.byte_offset();
    Some(value)
}

fn skip_space(body: &[u8], mut at: usize) -> usize {
    while body
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// The label for an activity's `type`: a string, or an array of strings (JSON-LD allows
/// several types; the first listed one wins). Compact (`as:Like`) and full IRIs are read as
/// the plain name.
fn activity_type(kind: &Value) -> &'static str {
    let names: Vec<&str> = match kind {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        return INVALID;
    }
    names
        .iter()
        .find_map(|name| {
            let name = name
                .strip_prefix("https://www.w3.org/ns/activitystreams#")
                .or_else(|| name.strip_prefix("as:"))
                .unwrap_or(name);
            ACTIVITY_TYPES.iter().find(|known| **known == name).copied()
        })
        .unwrap_or(OTHER)
}

/// The host of an activity's `actor`: a URL, an object with an `id`, or an array whose first
/// entry is one of those.
fn actor_host(actor: &Value) -> Option<String> {
    match actor {
        Value::String(url) => url_host(url),
        Value::Object(object) => object.get("id").and_then(Value::as_str).and_then(url_host),
        Value::Array(actors) => actors.first().and_then(|first| match first {
            Value::Array(_) => None,
            other => actor_host(other),
        }),
        _ => None,
    }
}

/// The lowercased host of an `http` or `https` URL, with its port unless it is the scheme's
/// default; `None` for anything else.
fn url_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let mut host = authority.to_ascii_lowercase();
    if host.ends_with(default_port) {
        host.truncate(host.len() - default_port.len());
    }
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
    use fedgate_sdk::testing::{self, TestRequest};

    fn plugin(config: &str) -> ActivityPubMetrics {
        testing::init(config).expect("config is valid")
    }

    fn deliver(plugin: &mut ActivityPubMetrics, body: &str) -> Verdict {
        plugin.on_request(
            &TestRequest::post("/users/alice/inbox")
                .header("content-type", "application/activity+json")
                .body(body)
                .build(),
        )
    }

    fn count(kind: &str, instance: &str) -> f64 {
        testing::counter_value("federation_activities_total", &[kind, instance])
    }

    #[test]
    fn counts_activities_by_type_and_instance() {
        let mut p = plugin("{}");
        assert_eq!(p.hooks(), Hooks::ON_REQUEST);
        let verdict = deliver(
            &mut p,
            r#"{"@context": "https://www.w3.org/ns/activitystreams", "type": "Create",
                "actor": "https://Example.ORG/users/bob", "object": {"type": "Note"}}"#,
        );
        assert_eq!(verdict, Verdict::Continue);
        deliver(
            &mut p,
            r#"{"type": "Like", "actor": {"id": "https://example.org/users/bob"}}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "Announce", "actor": ["https://relay.example/actor"]}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "as:Follow", "actor": "https://a.example:443/u/x"}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "https://www.w3.org/ns/activitystreams#Move",
                "actor": "http://b.example:8080/u/x"}"#,
        );
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
            deliver(
                &mut p,
                &format!(r#"{{"type": "{kind}", "actor": "https://x.example/a"}}"#),
            );
            assert_eq!(count(kind, "x.example"), 1.0, "{kind}");
        }
    }

    #[test]
    fn unlisted_types_count_as_other() {
        let mut p = plugin("{}");
        deliver(
            &mut p,
            r#"{"type": "EmojiReact", "actor": "https://x.example/a"}"#,
        );
        deliver(
            &mut p,
            r#"{"type": ["Hashtag", "Like"], "actor": "https://x.example/a"}"#,
        );
        deliver(
            &mut p,
            r#"{"type": ["Hashtag"], "actor": "https://x.example/a"}"#,
        );
        assert_eq!(count("other", "x.example"), 2.0);
        assert_eq!(count("Like", "x.example"), 1.0);
    }

    #[test]
    fn bodies_that_are_not_activities_count_as_invalid() {
        let mut p = plugin("{}");
        deliver(&mut p, "not json");
        deliver(&mut p, "[1, 2]");
        deliver(&mut p, r#"{"type": "Create""#);
        deliver(&mut p, r#"{"actor": "https://x.example/a"}"#);
        deliver(&mut p, r#"{"type": 7, "actor": "https://x.example/a"}"#);
        let verdict = p.on_request(&TestRequest::post("/inbox").build());
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(count("invalid", "unknown"), 4.0);
        assert_eq!(count("invalid", "x.example"), 2.0);
        assert_eq!(testing::logs().len(), 1, "the missing body is logged once");
        p.on_request(&TestRequest::post("/inbox").build());
        assert_eq!(testing::logs().len(), 1);
    }

    #[test]
    fn the_body_is_read_only_until_type_and_actor_are_found() {
        let mut p = plugin("{}");
        // Both found before the damage: counted by type; the upstream judges the rest.
        deliver(
            &mut p,
            r#"{"type": "Like", "actor": "https://x.example/a", "object": [tru"#,
        );
        // Damage before both were found: invalid.
        deliver(
            &mut p,
            r#"{"type": "Like", "object": [tru, "actor": "https://x.example/a"}"#,
        );
        // Members in any order, after long ones.
        deliver(
            &mut p,
            &format!(
                r#"{{"@context": ["{}"], "object": {{"type": "Note"}}, "actor": "https://y.example/b", "type": "Create"}}"#,
                "x".repeat(3000)
            ),
        );
        assert_eq!(count("Like", "x.example"), 1.0);
        assert_eq!(count("invalid", "unknown"), 1.0);
        assert_eq!(count("Create", "y.example"), 1.0);
    }

    #[test]
    fn actors_that_name_no_host_count_as_unknown() {
        let mut p = plugin("{}");
        for actor in [
            r#""acct:bob@example.org""#,
            r#""/users/bob""#,
            r#"{"type": "Person"}"#,
            "42",
            "[]",
            r#""https://""#,
            r#""https://bad host/""#,
        ] {
            deliver(
                &mut p,
                &format!(r#"{{"type": "Create", "actor": {actor}}}"#),
            );
        }
        deliver(&mut p, r#"{"type": "Create"}"#);
        assert_eq!(count("Create", "unknown"), 8.0);
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
            deliver(
                &mut p,
                &format!(r#"{{"type": "Like", "actor": "https://{host}/u"}}"#),
            );
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
    fn only_inbox_posts_count() {
        let mut p = plugin("{}");
        let body = r#"{"type": "Like", "actor": "https://x.example/a"}"#;
        p.on_request(&TestRequest::get("/users/alice/inbox").build());
        p.on_request(&TestRequest::post("/users/alice/outbox").body(body).build());
        p.on_request(&TestRequest::post("/inbox/").body(body).build());
        p.on_request(&TestRequest::new("post", "/inbox?x=1").body(body).build());
        assert_eq!(count("Like", "x.example"), 2.0);

        testing::reset();
        let mut p = plugin(r#"{"path_suffixes": []}"#);
        p.on_request(&TestRequest::post("/users/alice/outbox").body(body).build());
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
