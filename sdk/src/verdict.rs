//! What hooks answer: the request verdict (continue, edit the forwarded request, or reply
//! locally), the response edit, the health report, and the set of hooks a plugin wants
//! called.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use crate::Header;

/// Changes to the request that is forwarded, as [`Verdict::Edit`] carries them.
///
/// Fields with invalid names or values are skipped and counted as the plugin's error.
/// Protected fields can be neither added, replaced nor removed: hop-by-hop fields, `host`,
/// `content-length`, `transfer-encoding`, and the fields federation signatures cover
/// (`date`, `digest`, `content-digest`, `signature`, `signature-input`).
///
/// ```
/// use fedgate_sdk::{Header, RequestEdit};
///
/// let edit = RequestEdit::new()
///     .add("x-instance-class", "trusted")
///     .set("x-forwarded-proto", "https")
///     .remove("x-debug");
/// assert_eq!(edit.add, vec![Header::new("x-instance-class", "trusted")]);
/// assert_eq!(edit.remove, vec!["x-debug".to_owned()]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestEdit {
    /// Fields appended.
    pub add: Vec<Header>,
    /// Fields that each replace every field of their name.
    pub set: Vec<Header>,
    /// Names of fields removed (every field of each name).
    pub remove: Vec<String>,
}

impl RequestEdit {
    /// An edit that changes nothing.
    pub fn new() -> Self {
        RequestEdit::default()
    }

    /// Appends a field.
    pub fn add(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.add.push(Header::new(name, value));
        self
    }

    /// Replaces every field named `name` with this one.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set.push(Header::new(name, value));
        self
    }

    /// Removes every field named `name`.
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        self.remove.push(name.into());
        self
    }

    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }

    /// The value of the first field named `name` (case-insensitively) that the edit adds;
    /// for assertions in tests.
    pub fn added(&self, name: &str) -> Option<&str> {
        find(&self.add, name)
    }

    /// The value of the first field named `name` that the edit sets.
    pub fn replaced(&self, name: &str) -> Option<&str> {
        find(&self.set, name)
    }

    /// Whether the edit removes the fields named `name`.
    pub fn removes(&self, name: &str) -> bool {
        self.remove.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

fn find<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// A response the gateway sends in the upstream's place, as [`Verdict::Reply`] carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// 200 to 599; the gateway answers anything else as 500 and counts the plugin's error.
    pub status: u16,
    /// Extra response fields; framing and hop-by-hop fields are ignored.
    pub headers: Vec<Header>,
    /// The body; at most 64 KiB are sent, as `text/plain; charset=utf-8` unless `headers`
    /// sets a `content-type`.
    pub body: Vec<u8>,
}

/// What [`on_request`](crate::Plugin::on_request) decides.
///
/// ```
/// use fedgate_sdk::Verdict;
///
/// let go_on = Verdict::Continue;
/// let tagged = Verdict::add_header("x-instance-class", "trusted");
/// let edited = Verdict::edit()
///     .add("x-policy", "checked")
///     .set("x-forwarded-proto", "https")
///     .remove("x-debug");
/// let refused = Verdict::deny(403, "blocked by policy").with_header("x-policy", "user-agent");
/// let dropped = Verdict::reply(202, "accepted and dropped");
/// assert!(go_on.is_continue() && tagged.is_continue() && edited.is_continue());
/// assert_eq!(refused.status(), Some(403));
/// assert!(refused.is_deny());
/// assert!(dropped.is_reply() && !dropped.is_deny());
/// assert_eq!(dropped.body_text(), Some("accepted and dropped"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// Go on: the next plugin runs, then the request is forwarded.
    #[default]
    Continue,
    /// Go on with these changes to the forwarded request (later plugins see them).
    Edit(RequestEdit),
    /// Answer now with this response; the upstream is not contacted and later plugins do
    /// not run. Any status from 200 to 599: a spam filter answers 202 and drops the
    /// delivery, a policy refuses with 403.
    Reply(LocalReply),
}

impl Verdict {
    /// Goes on with an edit that changes nothing yet; chain [`add`](Self::add),
    /// [`set`](Self::set) and [`remove`](Self::remove).
    pub fn edit() -> Self {
        Verdict::Edit(RequestEdit::default())
    }

    /// Answers now with `status` (200 to 599) and `body`, no extra fields.
    pub fn reply(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Verdict::Reply(LocalReply {
            status,
            headers: Vec::new(),
            body: body.into(),
        })
    }

    /// Refuses the request with `status` and a short text `body`: a [`reply`](Self::reply)
    /// by another name, for the usual 4xx and 5xx refusals.
    pub fn deny(status: u16, body: impl Into<String>) -> Self {
        Verdict::reply(status, body.into().into_bytes())
    }

    /// Continues, adding one field to the forwarded request.
    pub fn add_header(name: impl Into<String>, value: impl Into<String>) -> Self {
        Verdict::edit().add(name, value)
    }

    /// Adds a field: to the forwarded request when continuing (turning
    /// [`Continue`](Verdict::Continue) into [`Edit`](Verdict::Edit)), to the reply when
    /// replying.
    pub fn with_header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.add(name, value)
    }

    /// Appends a field: to the forwarded request when continuing, to the reply when
    /// replying.
    pub fn add(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let header = Header::new(name, value);
        match &mut self {
            Verdict::Continue => {
                return Verdict::Edit(RequestEdit {
                    add: vec![header],
                    ..RequestEdit::default()
                })
            }
            Verdict::Edit(edit) => edit.add.push(header),
            Verdict::Reply(reply) => reply.headers.push(header),
        }
        self
    }

    /// Replaces every field named `name` with this one: in the forwarded request when
    /// continuing, in the reply's fields when replying.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let header = Header::new(name, value);
        match &mut self {
            Verdict::Continue => {
                return Verdict::Edit(RequestEdit {
                    set: vec![header],
                    ..RequestEdit::default()
                })
            }
            Verdict::Edit(edit) => edit.set.push(header),
            Verdict::Reply(reply) => {
                reply
                    .headers
                    .retain(|h| !h.name.eq_ignore_ascii_case(&header.name));
                reply.headers.push(header);
            }
        }
        self
    }

    /// Removes every field named `name`: from the forwarded request when continuing, from
    /// the reply's fields when replying.
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        match &mut self {
            Verdict::Continue => {
                return Verdict::Edit(RequestEdit {
                    remove: vec![name],
                    ..RequestEdit::default()
                })
            }
            Verdict::Edit(edit) => edit.remove.push(name),
            Verdict::Reply(reply) => reply
                .headers
                .retain(|h| !h.name.eq_ignore_ascii_case(&name)),
        }
        self
    }

    /// Whether the request goes on (with or without an edit).
    pub fn is_continue(&self) -> bool {
        !self.is_reply()
    }

    /// Whether the plugin answers locally, with any status.
    pub fn is_reply(&self) -> bool {
        matches!(self, Verdict::Reply(_))
    }

    /// Whether the plugin refuses the request: a local reply with a status of 400 or more.
    pub fn is_deny(&self) -> bool {
        self.status().is_some_and(|status| status >= 400)
    }

    /// The local reply's status; `None` when continuing.
    pub fn status(&self) -> Option<u16> {
        match self {
            Verdict::Reply(reply) => Some(reply.status),
            _ => None,
        }
    }

    /// The fields the verdict adds: to the request when continuing (an edit's `add`), to
    /// the response when replying.
    pub fn headers(&self) -> &[Header] {
        match self {
            Verdict::Continue => &[],
            Verdict::Edit(edit) => &edit.add,
            Verdict::Reply(reply) => &reply.headers,
        }
    }

    /// The edit; `None` unless [`Edit`](Verdict::Edit).
    pub fn request_edit(&self) -> Option<&RequestEdit> {
        match self {
            Verdict::Edit(edit) => Some(edit),
            _ => None,
        }
    }

    /// The local reply's body; `None` when continuing.
    pub fn body(&self) -> Option<&[u8]> {
        match self {
            Verdict::Reply(reply) => Some(&reply.body),
            _ => None,
        }
    }

    /// The local reply's body as text; `None` when continuing or when it is not UTF-8.
    pub fn body_text(&self) -> Option<&str> {
        self.body().and_then(|body| std::str::from_utf8(body).ok())
    }
}

impl From<RequestEdit> for Verdict {
    fn from(edit: RequestEdit) -> Self {
        Verdict::Edit(edit)
    }
}

impl From<LocalReply> for Verdict {
    fn from(reply: LocalReply) -> Self {
        Verdict::Reply(reply)
    }
}

/// Changes to the response the client gets, from
/// [`on_response`](crate::Plugin::on_response): any field but framing (`content-length`,
/// `transfer-encoding`) and hop-by-hop ones may be added or removed. The default changes
/// nothing.
///
/// ```
/// use fedgate_sdk::ResponseEdit;
///
/// let edit = ResponseEdit::new().add("x-served-by", "edge-1").remove("x-upstream");
/// assert_eq!(edit.added("X-Served-By"), Some("edge-1"));
/// assert!(edit.removes("x-upstream"));
/// assert!(ResponseEdit::default().is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseEdit {
    /// Fields appended to the response.
    pub add: Vec<Header>,
    /// Names of fields removed from it (every field of each name).
    pub remove: Vec<String>,
}

impl ResponseEdit {
    /// An edit that changes nothing.
    pub fn new() -> Self {
        ResponseEdit::default()
    }

    /// Appends a field.
    pub fn add(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.add.push(Header::new(name, value));
        self
    }

    /// Removes every field named `name`.
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        self.remove.push(name.into());
        self
    }

    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// The value of the first field named `name` (case-insensitively) that the edit adds;
    /// for assertions in tests.
    pub fn added(&self, name: &str) -> Option<&str> {
        find(&self.add, name)
    }

    /// Whether the edit removes the fields named `name`.
    pub fn removes(&self, name: &str) -> bool {
        self.remove.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// How a plugin judges the part of the world it watches. Ordered from best to worst, so the
/// worst of several is their maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthStatus {
    /// All is well.
    #[default]
    Healthy,
    /// Impaired, but the gateway keeps serving: `/health` says `degraded` and answers 200.
    Degraded,
    /// Broken: `/health` says `unhealthy` and answers 503.
    Unhealthy,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// What [`health_check`](crate::Plugin::health_check) reports: a status and one line for the
/// operator, shown in `/health`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// The status.
    pub status: HealthStatus,
    /// One line for the operator; may be empty.
    pub message: String,
}

impl HealthReport {
    /// All is well, with no message.
    pub fn healthy() -> Self {
        HealthReport::default()
    }

    /// Impaired but serving, and why.
    pub fn degraded(message: impl Into<String>) -> Self {
        HealthReport {
            status: HealthStatus::Degraded,
            message: message.into(),
        }
    }

    /// Broken, and why.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        HealthReport {
            status: HealthStatus::Unhealthy,
            message: message.into(),
        }
    }

    /// The same report with `message`.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

/// The hooks a plugin wants called, combined with `|`.
///
/// Two kinds: **inline** hooks ([`ON_REQUEST`](Self::ON_REQUEST),
/// [`ON_RESPONSE`](Self::ON_RESPONSE)) run on the request path and decide;
/// [`HEALTH_CHECK`](Self::HEALTH_CHECK) runs when `/health` is asked; **background** hooks
/// ([`OBSERVE`](Self::OBSERVE), [`ON_TICK`](Self::ON_TICK)) run on a thread of the plugin's
/// own, off the request path. [`ALL`](Self::ALL) is the three inline and health hooks only:
/// a background hook costs a thread, so it is never asked for unless named.
///
/// ```
/// use fedgate_sdk::Hooks;
///
/// let hooks = Hooks::OBSERVE | Hooks::HEALTH_CHECK;
/// assert!(hooks.contains(Hooks::HEALTH_CHECK));
/// assert!(!hooks.contains(Hooks::ON_REQUEST));
/// assert!(!Hooks::ALL.contains(Hooks::OBSERVE));
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Hooks(u8);

impl Hooks {
    /// No hook: the plugin only declares metrics in `init`.
    pub const NONE: Hooks = Hooks(0);
    /// [`Plugin::on_request`](crate::Plugin::on_request), inline.
    pub const ON_REQUEST: Hooks = Hooks(1);
    /// [`Plugin::on_response`](crate::Plugin::on_response), inline.
    pub const ON_RESPONSE: Hooks = Hooks(1 << 1);
    /// [`Plugin::health_check`](crate::Plugin::health_check).
    pub const HEALTH_CHECK: Hooks = Hooks(1 << 2);
    /// [`Plugin::observe`](crate::Plugin::observe): batches of finished exchanges, off the
    /// request path.
    pub const OBSERVE: Hooks = Hooks(1 << 3);
    /// [`Plugin::on_tick`](crate::Plugin::on_tick), every
    /// [`tick_interval`](crate::Plugin::tick_interval), off the request path.
    pub const ON_TICK: Hooks = Hooks(1 << 4);
    /// The inline hooks and the health check: `ON_REQUEST | ON_RESPONSE | HEALTH_CHECK`.
    /// Not the background hooks, which must be named.
    pub const ALL: Hooks = Hooks(0b111);

    /// Whether every hook in `other` is in `self`.
    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any hook in `other` is in `self`.
    pub const fn intersects(self, other: Hooks) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no hook is named.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The union of both sets, usable in constants.
    pub const fn union(self, other: Hooks) -> Hooks {
        Hooks(self.0 | other.0)
    }
}

impl BitOr for Hooks {
    type Output = Hooks;

    fn bitor(self, other: Hooks) -> Hooks {
        self.union(other)
    }
}

impl BitOrAssign for Hooks {
    fn bitor_assign(&mut self, other: Hooks) {
        *self = self.union(other);
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Hooks::ON_REQUEST, "ON_REQUEST"),
            (Hooks::ON_RESPONSE, "ON_RESPONSE"),
            (Hooks::HEALTH_CHECK, "HEALTH_CHECK"),
            (Hooks::OBSERVE, "OBSERVE"),
            (Hooks::ON_TICK, "ON_TICK"),
        ];
        let named: Vec<&str> = names
            .iter()
            .filter(|(hook, _)| self.contains(*hook))
            .map(|(_, name)| *name)
            .collect();
        if named.is_empty() {
            f.write_str("Hooks(NONE)")
        } else {
            write!(f, "Hooks({})", named.join(" | "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_helpers() {
        assert_eq!(Verdict::default(), Verdict::Continue);
        let verdict = Verdict::Continue
            .with_header("x-a", "1")
            .with_header("x-b", "2");
        assert_eq!(
            verdict,
            Verdict::Edit(RequestEdit::new().add("x-a", "1").add("x-b", "2"))
        );
        assert!(verdict.is_continue());
        assert_eq!(verdict.status(), None);
        assert_eq!(verdict.body(), None);

        let deny = Verdict::deny(429, "slow down").with_header("retry-after", "3");
        assert!(deny.is_deny() && deny.is_reply());
        assert_eq!(deny.status(), Some(429));
        assert_eq!(deny.body(), Some(&b"slow down"[..]));
        assert_eq!(deny.body_text(), Some("slow down"));
        assert_eq!(deny.headers(), &[Header::new("retry-after", "3")]);
        assert_eq!(Verdict::add_header("x-c", "3").headers().len(), 1);
    }

    #[test]
    fn edits_build_up() {
        let verdict = Verdict::edit()
            .add("x-a", "1")
            .set("x-b", "2")
            .remove("x-c");
        assert_eq!(
            verdict.request_edit(),
            Some(&RequestEdit {
                add: vec![Header::new("x-a", "1")],
                set: vec![Header::new("x-b", "2")],
                remove: vec!["x-c".to_owned()],
            })
        );
        assert_eq!(Verdict::Continue.set("x-b", "2").headers(), &[]);
        assert_eq!(
            Verdict::Continue.remove("x-c"),
            Verdict::Edit(RequestEdit::new().remove("x-c"))
        );
        assert!(RequestEdit::new().is_empty());
        assert_eq!(Verdict::from(RequestEdit::new()), Verdict::edit());
        let edit = verdict.request_edit().unwrap();
        assert_eq!(edit.added("X-A"), Some("1"));
        assert_eq!(edit.replaced("x-b"), Some("2"));
        assert_eq!(edit.added("x-b"), None);
        assert!(edit.removes("X-C") && !edit.removes("x-a"));
    }

    #[test]
    fn replies_take_any_status_and_their_own_fields() {
        let reply = Verdict::reply(202, b"\xff".to_vec())
            .add("x-a", "1")
            .add("x-b", "1")
            .set("X-A", "2")
            .remove("x-b");
        assert!(reply.is_reply() && !reply.is_deny() && !reply.is_continue());
        assert_eq!(reply.status(), Some(202));
        assert_eq!(reply.headers(), &[Header::new("X-A", "2")]);
        assert_eq!(reply.body_text(), None, "not UTF-8");
        assert_eq!(
            Verdict::from(LocalReply {
                status: 500,
                headers: Vec::new(),
                body: Vec::new()
            })
            .status(),
            Some(500)
        );
    }

    #[test]
    fn response_edits_build_up() {
        let edit = ResponseEdit::new().add("x-a", "1").remove("x-b");
        assert_eq!(edit.add, vec![Header::new("x-a", "1")]);
        assert_eq!(edit.remove, vec!["x-b".to_owned()]);
        assert!(!edit.is_empty());
        assert!(ResponseEdit::new().is_empty());
    }

    #[test]
    fn health_reports_order_by_severity() {
        assert_eq!(HealthReport::healthy().status, HealthStatus::Healthy);
        assert_eq!(HealthReport::healthy().with_message("fine").message, "fine");
        let worst = [
            HealthReport::degraded("slow"),
            HealthReport::unhealthy("down"),
            HealthReport::healthy(),
        ]
        .into_iter()
        .max_by_key(|report| report.status)
        .unwrap();
        assert_eq!(worst.message, "down");
        assert_eq!(HealthStatus::Degraded.to_string(), "degraded");
    }

    #[test]
    fn hooks_combine() {
        let mut hooks = Hooks::NONE;
        assert!(hooks.is_empty());
        hooks |= Hooks::ON_REQUEST;
        assert!(hooks.contains(Hooks::ON_REQUEST));
        assert!(!hooks.contains(Hooks::ALL));
        assert!(hooks.intersects(Hooks::ALL));
        assert!(!hooks.intersects(Hooks::OBSERVE | Hooks::ON_TICK));
        assert_eq!(
            Hooks::ON_REQUEST | Hooks::ON_RESPONSE | Hooks::HEALTH_CHECK,
            Hooks::ALL
        );
        assert_eq!(format!("{:?}", Hooks::NONE), "Hooks(NONE)");
        assert_eq!(
            format!("{:?}", Hooks::ON_REQUEST | Hooks::HEALTH_CHECK),
            "Hooks(ON_REQUEST | HEALTH_CHECK)"
        );
        assert_eq!(
            format!("{:?}", Hooks::OBSERVE | Hooks::ON_TICK),
            "Hooks(OBSERVE | ON_TICK)"
        );
    }
}
