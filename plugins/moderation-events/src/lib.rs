//! Counts the moderation activities other instances deliver to inboxes: reports (`Flag`),
//! blocks (`Block`), deletions (`Delete`) and the withdrawal of a report or block (`Undo` of
//! a `Flag` or `Block`), as `moderation_events_total{action,target_type}`.
//!
//! An **observer**: it only counts, so it runs off the request path on the batches of
//! finished exchanges the gateway hands it, and never delays or refuses a request. It reads
//! the gateway's federation view of each body (`activity`: type, actor, object type and
//! id) instead of parsing the JSON again, so the routes it is attached to must buffer bodies
//! (`buffer_body`). Only `POST`s to a path ending in one of `path_suffixes` that the gateway
//! let through to the upstream count. Other activities, and bodies that are not activities,
//! are not counted (the `activitypub-metrics` plugin counts those).

use fedgate_sdk::{export_plugin, Activity, Config, Counter, Exchange, Hooks, InboxPaths, Plugin};
use serde::Deserialize;

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
        Hooks::OBSERVE
    }

    fn observe(&mut self, exchanges: &[Exchange<'_>]) {
        for exchange in exchanges {
            if !exchange.admitted() || !self.path_suffixes.is_delivery_exchange(exchange) {
                continue;
            }
            if let Some((action, target)) = exchange.activity.as_ref().and_then(moderation_event) {
                self.events.inc(&[action, target]);
            }
        }
    }
}

/// The `action` and `target_type` labels of a moderation activity; `None` for anything else.
fn moderation_event(activity: &Activity<'_>) -> Option<(&'static str, &'static str)> {
    match type_name(activity.kind()?) {
        "Flag" => Some(("flag", target_type(activity, false))),
        "Block" => Some(("block", target_type(activity, true))),
        "Delete" => Some(("delete", target_type(activity, false))),
        // Only an embedded activity says what is undone; `Undo` of a bare URI is more often
        // a `Like` or `Follow` than a moderation event, so it is not counted. The view does
        // not reach into the undone activity's own object: a block targets an account, a
        // withdrawn report's target cannot be told.
        "Undo" => match type_name(activity.object_kind.as_deref()?) {
            "Block" => Some(("undo_block", "actor")),
            "Flag" => Some(("undo_flag", "unknown")),
            _ => None,
        },
        _ => None,
    }
}

/// The plain name of a type, without the ActivityStreams prefix (`as:Flag`, or the full
/// IRI).
fn type_name(name: &str) -> &str {
    name.strip_prefix("https://www.w3.org/ns/activitystreams#")
        .or_else(|| name.strip_prefix("as:"))
        .unwrap_or(name)
}

/// The `target_type` label: `actor`, `object`, `tombstone`, `other` or `unknown`.
///
/// - An embedded object with a `type` is judged by it; a `Tombstone` by its id's path when
///   that tells (`object` for `/users/x/statuses/1`), else it stays `tombstone`.
/// - An id alone (a bare URI, or an object with an `id` and no `type`) is an `actor` when it
///   is the activity's own actor (an account deleting itself) or when the activity is a
///   `Block` (blocks always target accounts); otherwise its path decides, `unknown` when it
///   does not.
/// - For a list (a `Flag` names the reported account, then the reported posts) the gateway's
///   view holds its first entry.
fn target_type(activity: &Activity<'_>, targets_actor: bool) -> &'static str {
    let id = activity.object_id.as_deref();
    if let Some(kind) = activity.object_kind.as_deref() {
        return match type_name(kind) {
            "Tombstone" => match id.map(uri_type) {
                Some(found @ ("object" | "actor")) => found,
                _ => "tombstone",
            },
            kind => classify_type(kind),
        };
    }
    match id {
        None => "unknown",
        Some(_) if targets_actor => "actor",
        Some(uri) if Some(uri) == activity.actor.as_deref() => "actor",
        Some(uri) => uri_type(uri),
    }
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
    use fedgate_sdk::testing::{self, TestExchange};

    fn plugin() -> ModerationEvents {
        testing::init("{}").expect("config is valid")
    }

    /// The view the gateway gives of an activity: its type, actor, and object (type, id).
    fn view(
        kind: &str,
        actor: Option<&str>,
        object_kind: Option<&str>,
        object_id: Option<&str>,
    ) -> Activity<'static> {
        let own = |text: &str| text.to_owned().into();
        Activity {
            kind: Some(own(kind)),
            actor: actor.map(own),
            object_kind: object_kind.map(own),
            object_id: object_id.map(own),
            ..Activity::default()
        }
    }

    fn deliver(plugin: &mut ModerationEvents, activity: Activity<'_>) {
        plugin.observe(&[TestExchange::post("/inbox").activity(activity).build()]);
    }

    fn count(action: &str, target: &str) -> f64 {
        testing::counter_value("moderation_events_total", &[action, target])
    }

    #[test]
    fn counts_reports_by_the_first_reported_entry() {
        let mut p = plugin();
        assert_eq!(p.hooks(), Hooks::OBSERVE);
        let moderator = Some("https://mod.example/actor");
        // Mastodon: the reported account, then the reported posts; the view holds the first.
        deliver(
            &mut p,
            view(
                "Flag",
                moderator,
                None,
                Some("https://example.org/users/bob"),
            ),
        );
        deliver(
            &mut p,
            view(
                "Flag",
                moderator,
                None,
                Some("https://example.org/users/bob/statuses/2"),
            ),
        );
        deliver(
            &mut p,
            view("Flag", None, Some("Note"), Some("https://x.example/n/1")),
        );
        deliver(
            &mut p,
            view("Flag", None, None, Some("https://example.org/some/thing")),
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
            view(
                "Block",
                Some("https://a.example/users/x"),
                None,
                Some("https://b.example/whatever/123"),
            ),
        );
        assert_eq!(count("block", "actor"), 1.0);
    }

    #[test]
    fn deletes_by_what_they_delete() {
        let mut p = plugin();
        let actor = Some("https://a.example/users/x");
        // An account deleting itself names itself as the object.
        deliver(&mut p, view("Delete", actor, None, actor));
        // A Tombstone is judged by its id when the path tells, else stays a tombstone.
        deliver(
            &mut p,
            view(
                "Delete",
                actor,
                Some("Tombstone"),
                Some("https://a.example/users/x/statuses/9"),
            ),
        );
        deliver(
            &mut p,
            view(
                "Delete",
                actor,
                Some("Tombstone"),
                Some("https://a.example/n/9"),
            ),
        );
        deliver(
            &mut p,
            view("Delete", actor, None, Some("https://a.example/notes/abc")),
        );
        deliver(&mut p, view("Delete", None, Some("Collection"), None));
        deliver(&mut p, view("Delete", None, None, None));
        assert_eq!(count("delete", "actor"), 1.0);
        assert_eq!(count("delete", "tombstone"), 1.0);
        assert_eq!(count("delete", "object"), 2.0);
        assert_eq!(count("delete", "other"), 1.0);
        assert_eq!(count("delete", "unknown"), 1.0);
    }

    #[test]
    fn undo_of_a_report_or_block_counts() {
        let mut p = plugin();
        let actor = Some("https://a.example/users/x");
        deliver(
            &mut p,
            view(
                "Undo",
                actor,
                Some("Block"),
                Some("https://a.example/blocks/1"),
            ),
        );
        deliver(&mut p, view("Undo", actor, Some("as:Flag"), None));
        // Not moderation, or not telling what is undone: not counted.
        deliver(&mut p, view("Undo", actor, Some("Like"), None));
        deliver(
            &mut p,
            view("Undo", actor, None, Some("https://a.example/blocks/1")),
        );
        assert_eq!(count("undo_block", "actor"), 1.0);
        assert_eq!(count("undo_flag", "unknown"), 1.0);
        assert_eq!(testing::series("moderation_events_total").len(), 2);
    }

    #[test]
    fn other_activities_and_bad_bodies_are_not_counted() {
        let mut p = plugin();
        let block = || view("Block", None, None, Some("https://x.example/u/y"));
        p.observe(&[
            TestExchange::post("/inbox")
                .activity(view("Create", None, Some("Note"), None))
                .build(),
            // No view: not JSON, or not buffered.
            TestExchange::post("/inbox").bytes(8, 0).build(),
            TestExchange::get("/inbox").activity(block()).build(),
            TestExchange::post("/users/x/outbox")
                .activity(block())
                .build(),
            // Refused before the upstream, or answered by a plugin: not delivered.
            TestExchange::post("/inbox")
                .activity(block())
                .gateway(401, "signature")
                .build(),
            TestExchange::post("/inbox")
                .activity(block())
                .local_reply(202)
                .build(),
        ]);
        assert!(testing::series("moderation_events_total").is_empty());
        // A failed upstream still saw the delivery through the gateway.
        p.observe(&[TestExchange::post("/inbox")
            .activity(block())
            .gateway(504, "timeout")
            .build()]);
        assert_eq!(count("block", "actor"), 1.0);
    }

    #[test]
    fn prefixed_types_are_read_plainly() {
        let mut p = plugin();
        deliver(
            &mut p,
            view(
                "as:Delete",
                None,
                Some("https://www.w3.org/ns/activitystreams#Person"),
                None,
            ),
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
