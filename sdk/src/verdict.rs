//! What hooks answer: the request verdict, the health report, and the set of hooks a plugin
//! wants called.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use crate::Header;

/// What [`on_request`](crate::Plugin::on_request) decides.
///
/// ```
/// use fedgate_sdk::Verdict;
///
/// let go_on = Verdict::Continue;
/// let tagged = Verdict::add_header("x-instance-class", "trusted");
/// let refused = Verdict::deny(403, "blocked by policy").with_header("x-policy", "user-agent");
/// assert!(go_on.is_continue() && tagged.is_continue());
/// assert_eq!(refused.status(), Some(403));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// Go on: the next plugin runs, then the request is forwarded.
    #[default]
    Continue,
    /// Go on, adding these fields to the request that is forwarded (later plugins see them).
    /// Fields with invalid names or values are skipped and counted as the plugin's error;
    /// hop-by-hop fields and `host` cannot be added.
    ContinueWith(Vec<Header>),
    /// Answer now with this response; the upstream is not contacted and later plugins do
    /// not run.
    Deny {
        /// 400 to 599; the gateway answers anything else as 500 and counts the plugin's
        /// error.
        status: u16,
        /// Extra response fields; `content-length` and hop-by-hop fields are ignored.
        headers: Vec<Header>,
        /// A short body, sent as `text/plain; charset=utf-8` unless `headers` sets a
        /// `content-type`. At most 4 KiB are sent.
        body: String,
    },
}

impl Verdict {
    /// Refuses the request with `status` and a short `body`.
    pub fn deny(status: u16, body: impl Into<String>) -> Self {
        Verdict::Deny {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Continues, adding one field to the forwarded request.
    pub fn add_header(name: impl Into<String>, value: impl Into<String>) -> Self {
        Verdict::ContinueWith(vec![Header::new(name, value)])
    }

    /// Adds a field: to the forwarded request when continuing (turning
    /// [`Continue`](Verdict::Continue) into [`ContinueWith`](Verdict::ContinueWith)), to the
    /// response when denying.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let header = Header::new(name, value);
        match &mut self {
            Verdict::Continue => return Verdict::ContinueWith(vec![header]),
            Verdict::ContinueWith(headers) | Verdict::Deny { headers, .. } => headers.push(header),
        }
        self
    }

    /// Whether the request goes on (with or without added fields).
    pub fn is_continue(&self) -> bool {
        !self.is_deny()
    }

    /// Whether the request is refused.
    pub fn is_deny(&self) -> bool {
        matches!(self, Verdict::Deny { .. })
    }

    /// The denial's status; `None` when continuing.
    pub fn status(&self) -> Option<u16> {
        match self {
            Verdict::Deny { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The fields the verdict adds: to the request when continuing, to the response when
    /// denying.
    pub fn headers(&self) -> &[Header] {
        match self {
            Verdict::Continue => &[],
            Verdict::ContinueWith(headers) | Verdict::Deny { headers, .. } => headers,
        }
    }

    /// The denial's body; `None` when continuing.
    pub fn body(&self) -> Option<&str> {
        match self {
            Verdict::Deny { body, .. } => Some(body),
            _ => None,
        }
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
/// ```
/// use fedgate_sdk::Hooks;
///
/// let hooks = Hooks::ON_RESPONSE | Hooks::HEALTH_CHECK;
/// assert!(hooks.contains(Hooks::HEALTH_CHECK));
/// assert!(!hooks.contains(Hooks::ON_REQUEST));
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Hooks(u8);

impl Hooks {
    /// No hook: the plugin only declares metrics in `init`.
    pub const NONE: Hooks = Hooks(0);
    /// [`Plugin::on_request`](crate::Plugin::on_request).
    pub const ON_REQUEST: Hooks = Hooks(1);
    /// [`Plugin::on_response`](crate::Plugin::on_response).
    pub const ON_RESPONSE: Hooks = Hooks(1 << 1);
    /// [`Plugin::health_check`](crate::Plugin::health_check).
    pub const HEALTH_CHECK: Hooks = Hooks(1 << 2);
    /// All three hooks.
    pub const ALL: Hooks = Hooks(0b111);

    /// Whether every hook in `other` is in `self`.
    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
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
            Verdict::ContinueWith(vec![Header::new("x-a", "1"), Header::new("x-b", "2")])
        );
        assert!(verdict.is_continue());
        assert_eq!(verdict.status(), None);
        assert_eq!(verdict.body(), None);

        let deny = Verdict::deny(429, "slow down").with_header("retry-after", "3");
        assert!(deny.is_deny());
        assert_eq!(deny.status(), Some(429));
        assert_eq!(deny.body(), Some("slow down"));
        assert_eq!(deny.headers(), &[Header::new("retry-after", "3")]);
        assert_eq!(Verdict::add_header("x-c", "3").headers().len(), 1);
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
        assert_eq!(
            Hooks::ON_REQUEST | Hooks::ON_RESPONSE | Hooks::HEALTH_CHECK,
            Hooks::ALL
        );
        assert_eq!(format!("{:?}", Hooks::NONE), "Hooks(NONE)");
        assert_eq!(
            format!("{:?}", Hooks::ON_REQUEST | Hooks::HEALTH_CHECK),
            "Hooks(ON_REQUEST | HEALTH_CHECK)"
        );
    }
}
