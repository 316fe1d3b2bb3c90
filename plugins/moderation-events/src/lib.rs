//! Counts the moderation activities other instances deliver to inboxes: reports (`Flag`),
//! blocks (`Block`), deletions (`Delete`) and the withdrawal of a report or block (`Undo` of
//! a `Flag` or `Block`), as `moderation_events_total{action,target_type}`.
//!
//! Runs in `on-request` on the routes it is attached to; it needs the body, so those routes
//! must buffer it (`buffer_body`). Only `POST`s to a path ending in one of `path_suffixes`
//! count. Other activities, and bodies that are not activities, are not counted (the
//! `activitypub-metrics` plugin counts those). It never refuses a request.

use fedgate_sdk::{export_plugin, Config, Counter, Hooks, InboxPaths, Plugin, Request, Verdict};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Types of actors: an object of one of these types is an `actor` target.
const ACTOR_TYPES: [&str; 5] = ["Person", "Service", "Application", "Group", "Organization"];

/// Types of content: an object of one of these types is an `object` target.
const CONTENT_TYPES: [&str; 10] = [
    "Note",
    "Article",
    "Page",
    "Question",
    "Event",
    "Image",
    "Video",
    "Audio",
    "Document",
    "ChatMessage",
];

/// Path segments that name an account in the URI schemes of common servers (Mastodon and
/// Akkoma `/users/x`, Lemmy `/u/x` and `/c/x`, Misskey `/users/id`, GoToSocial `/users/x`).
const ACTOR_SEGMENTS: [&str; 6] = ["users", "u", "c", "accounts", "actor", "profile"];

/// Path segments that name a post or other content (`/users/x/statuses/1`, `/notes/id`,
/// `/objects/id`, Lemmy `/post/1` and `/comment/1`, GoToSocial `/statuses/id`).
const CONTENT_SEGMENTS: [&str; 6] = ["statuses", "notes", "objects", "post", "comment", "posts"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Path endings that make a `POST` an inbox delivery; empty counts every `POST`.
    #[serde(default)]
    path_suffixes: InboxPaths,
}

/// The fields of an activity this plugin reads; the rest of the body is skipped unparsed.
#[derive(Deserialize)]
struct Activity {
    #[serde(rename = "type", default)]
    kind: Option<Value>,
    #[serde(default)]
    actor: Option<Value>,
    #[serde(default)]
    object: Option<Value>,
}

#[derive(Debug)]
struct ModerationEvents {
    events: Counter,
    path_suffixes: InboxPaths,
}

impl Plugin for ModerationEvents {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        let events = Counter::declare(
            "moderation_events_total",
            "Moderation activities delivered to inboxes: reports, blocks, deletions and their \
             withdrawal, by action and kind of target.",
            &["action", "target_type"],
        )?;
        Ok(ModerationEvents {
            events,
            path_suffixes: settings.path_suffixes,
        })
    }

    fn hooks(&self) -> Hooks {
        Hooks::ON_REQUEST
    }

    fn on_request(&mut self, request: &Request) -> Verdict {
        if !self.path_suffixes.is_delivery(request) {
            return Verdict::Continue;
        }
        if let Some((action, target)) = request.body().as_deref().and_then(moderation_event) {
            self.events.inc(&[action, target]);
        }
        Verdict::Continue
    }
}

/// The `action` and `target_type` labels of a moderation activity; `None` for anything else.
fn moderation_event(body: &[u8]) -> Option<(&'static str, &'static str)> {
    let activity: Activity = serde_json::from_slice(body).ok()?;
    let actor = activity.actor.as_ref().and_then(reference_id);
    let object = activity.object.as_ref();
    match type_name(activity.kind.as_ref()?)? {
        "Flag" => Some(("flag", target_type(object, actor, false))),
        "Block" => Some(("block", target_type(object, actor, true))),
        "Delete" => Some(("delete", target_type(object, actor, false))),
        "Undo" => {
            // Only an embedded activity says what is undone; `Undo` of a bare URI is more
            // often a `Like` or `Follow` than a moderation event, so it is not counted.
            let undone = object?.as_object()?;
            let undone_object = undone.get("object");
            match type_name(undone.get("type")?)? {
                "Flag" => Some(("undo_flag", target_type(undone_object, actor, false))),
                "Block" => Some(("undo_block", target_type(undone_object, actor, true))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The plain name of a `type`: a string or the first string of an array, read without the
/// ActivityStreams prefix (`as:Flag`, or the full IRI).
fn type_name(kind: &Value) -> Option<&str> {
    let name = match kind {
        Value::String(name) => name.as_str(),
        Value::Array(names) => names.iter().find_map(Value::as_str)?,
        _ => return None,
    };
    Some(
        name.strip_prefix("https://www.w3.org/ns/activitystreams#")
            .or_else(|| name.strip_prefix("as:"))
            .unwrap_or(name),
    )
}

/// The id of a reference: a URI, or an object's `id`.
fn reference_id(reference: &Value) -> Option<&str> {
    match reference {
        Value::String(uri) => Some(uri),
        Value::Object(object) => object.get("id").and_then(Value::as_str),
        _ => None,
    }
}

/// The `target_type` label: `actor`, `object`, `tombstone`, `other` or `unknown`.
///
/// - An embedded object is judged by its `type` (a `Tombstone` by its `formerType` when it
///   has one).
/// - A bare URI is an `actor` when it is the activity's own actor (an account deleting
///   itself) or when the activity is a `Block` (blocks always target accounts); otherwise
///   its path decides, `unknown` when it does not.
/// - A list (a `Flag` names the reported account, then the reported posts) is judged by its
///   first entry.
fn target_type(object: Option<&Value>, actor: Option<&str>, targets_actor: bool) -> &'static str {
    let Some(object) = object else {
        return "unknown";
    };
    match object {
        Value::Object(object) => embedded_type(object),
        Value::String(uri) if targets_actor || Some(uri.as_str()) == actor => "actor",
        Value::String(uri) => uri_type(uri),
        Value::Array(entries) => match entries.first() {
            Some(first @ (Value::Object(_) | Value::String(_))) => {
                target_type(Some(first), actor, targets_actor)
            }
            _ => "unknown",
        },
        _ => "unknown",
    }
}

fn embedded_type(object: &Map<String, Value>) -> &'static str {
    let Some(kind) = object.get("type").and_then(type_name) else {
        return "unknown";
    };
    if kind == "Tombstone" {
        return match object.get("formerType").and_then(type_name) {
            Some(former) if former != "Tombstone" => classify_type(former),
            _ => "tombstone",
        };
    }
    classify_type(kind)
}

fn classify_type(kind: &str) -> &'static str {
    if ACTOR_TYPES.contains(&kind) {
        "actor"
    } else if CONTENT_TYPES.contains(&kind) {
        "object"
    } else {
        "other"
    }
}

/// Classifies a URI by its path: a content segment anywhere (`/users/x/statuses/1`) makes it
/// an `object`; otherwise an account segment followed by one more segment (`/users/x`,
/// `/c/community`), or a path of one `@name` segment, makes it an `actor`.
fn uri_type(uri: &str) -> &'static str {
    let Some((_, rest)) = uri.split_once("://") else {
        return "unknown";
    };
    let path = rest
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .split_once('/')
        .map_or("", |(_, path)| path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| CONTENT_SEGMENTS.contains(s)) {
        return "object";
    }
    match segments.as_slice() {
        [first, _] if ACTOR_SEGMENTS.contains(first) => "actor",
        [name] if name.starts_with('@') => "actor",
        [name, _] if name.starts_with('@') => "object",
        _ => "unknown",
    }
}

export_plugin!(ModerationEvents);

#[cfg(test)]
mod tests {
    use super::*;
    use fedgate_sdk::testing::{self, TestRequest};

    fn plugin() -> ModerationEvents {
        testing::init("{}").expect("config is valid")
    }

    fn deliver(plugin: &mut ModerationEvents, body: &str) {
        let verdict = plugin.on_request(&TestRequest::post("/inbox").body(body).build());
        assert_eq!(verdict, Verdict::Continue);
    }

    fn count(action: &str, target: &str) -> f64 {
        testing::counter_value("moderation_events_total", &[action, target])
    }

    #[test]
    fn counts_reports_with_the_first_reported_entry() {
        let mut p = plugin();
        assert_eq!(p.hooks(), Hooks::ON_REQUEST);
        // Mastodon: the reported account, then the reported posts.
        deliver(
            &mut p,
            r#"{"type": "Flag", "actor": "https://mod.example/actor",
                "object": ["https://example.org/users/bob",
                           "https://example.org/users/bob/statuses/1"],
                "content": "spam"}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "Flag", "actor": "https://mod.example/actor",
                "object": "https://example.org/users/bob/statuses/2"}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "Flag", "object": [{"type": "Note", "id": "https://x.example/n/1"}]}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "Flag", "object": "https://example.org/some/thing"}"#,
        );
        assert_eq!(count("flag", "actor"), 1.0);
        assert_eq!(count("flag", "object"), 2.0);
        assert_eq!(count("flag", "unknown"), 1.0);
    }

    #[test]
    fn blocks_target_actors() {
        let mut p = plugin();
        deliver(
            &mut p,
            r#"{"type": "Block", "actor": "https://a.example/users/x",
                "object": "https://b.example/whatever/123"}"#,
        );
        assert_eq!(count("block", "actor"), 1.0);
    }

    #[test]
    fn deletes_by_what_they_delete() {
        let mut p = plugin();
        // An account deleting itself names itself as the object.
        deliver(
            &mut p,
            r#"{"type": "Delete", "actor": "https://a.example/users/x",
                "object": "https://a.example/users/x"}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "Delete", "actor": "https://a.example/users/x",
                "object": {"id": "https://a.example/users/x/statuses/9", "type": "Tombstone"}}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "Delete", "actor": "https://a.example/users/x",
                "object": {"id": "https://a.example/n/9", "type": "Tombstone",
                           "formerType": "Note"}}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "Delete", "actor": {"id": "https://a.example/users/x"},
                "object": "https://a.example/notes/abc"}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "Delete", "object": {"type": "Collection"}}"#,
        );
        deliver(&mut p, r#"{"type": "Delete"}"#);
        assert_eq!(count("delete", "actor"), 1.0);
        assert_eq!(count("delete", "tombstone"), 1.0);
        assert_eq!(count("delete", "object"), 2.0);
        assert_eq!(count("delete", "other"), 1.0);
        assert_eq!(count("delete", "unknown"), 1.0);
    }

    #[test]
    fn undo_of_a_report_or_block_counts() {
        let mut p = plugin();
        deliver(
            &mut p,
            r#"{"type": "Undo", "actor": "https://a.example/users/x",
                "object": {"type": "Block", "object": "https://b.example/@y"}}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "Undo", "object": {"type": "Flag",
                "object": "https://b.example/users/y"}}"#,
        );
        // Not moderation, or not telling what is undone: not counted.
        deliver(
            &mut p,
            r#"{"type": "Undo", "object": {"type": "Like", "object": "x"}}"#,
        );
        deliver(
            &mut p,
            r#"{"type": "Undo", "object": "https://a.example/blocks/1"}"#,
        );
        assert_eq!(count("undo_block", "actor"), 1.0);
        assert_eq!(count("undo_flag", "actor"), 1.0);
        assert_eq!(testing::series("moderation_events_total").len(), 2);
    }

    #[test]
    fn other_activities_and_bad_bodies_are_not_counted() {
        let mut p = plugin();
        deliver(&mut p, r#"{"type": "Create", "object": {"type": "Note"}}"#);
        deliver(&mut p, "not json");
        deliver(&mut p, r#"{"object": "https://a.example/users/x"}"#);
        p.on_request(&TestRequest::post("/inbox").build());
        p.on_request(
            &TestRequest::get("/inbox")
                .body(r#"{"type": "Block", "object": "https://x.example/u/y"}"#)
                .build(),
        );
        p.on_request(
            &TestRequest::post("/users/x/outbox")
                .body(r#"{"type": "Block", "object": "https://x.example/u/y"}"#)
                .build(),
        );
        assert!(testing::series("moderation_events_total").is_empty());
    }

    #[test]
    fn prefixed_types_are_read_plainly() {
        let mut p = plugin();
        deliver(
            &mut p,
            r#"{"type": "as:Delete",
                "object": {"type": ["https://www.w3.org/ns/activitystreams#Person"]}}"#,
        );
        assert_eq!(count("delete", "actor"), 1.0);
    }

    #[test]
    fn uris_are_classified_by_path() {
        for (uri, expected) in [
            ("https://m.example/users/alice", "actor"),
            ("https://m.example/users/alice/statuses/1", "object"),
            ("https://m.example/@alice", "actor"),
            ("https://m.example/@alice/1234", "object"),
            ("https://l.example/c/rust", "actor"),
            ("https://l.example/post/42", "object"),
            ("https://k.example/notes/9x?x=1", "object"),
            ("https://m.example/", "unknown"),
            ("https://m.example/users/alice/followers", "unknown"),
            ("not a uri", "unknown"),
        ] {
            assert_eq!(uri_type(uri), expected, "{uri}");
        }
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let error = testing::init::<ModerationEvents>(r#"{"paths": []}"#).unwrap_err();
        assert!(error.contains("unknown field `paths`"), "{error}");
        assert!(testing::init::<ModerationEvents>(r#"{"path_suffixes": ["x"]}"#).is_err());
    }
}
