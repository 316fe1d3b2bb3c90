//! Finished exchanges, as an observer receives them.
//!
//! An observer ([`Hooks::OBSERVE`](crate::Hooks::OBSERVE)) does not sit on the request
//! path: the gateway queues each exchange of the routes the plugin is attached to once its
//! response has ended (or the client went away) and hands them to
//! [`Plugin::observe`](crate::Plugin::observe) in batches, on a thread of the plugin's own.
//! A full queue drops exchanges (and counts them) rather than wait, so an observer can
//! never slow a response. Metric plugins are observers.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use crate::http::owned;
use crate::{Activity, HttpVersion, Origin, Principal, Signer};

/// Gateway answers given in the upstream's place because of the upstream: the `error` of an
/// exchange whose request the gateway and the inline plugins let through.
const UPSTREAM_ERRORS: [&str; 7] = [
    "connect",
    "timeout",
    "reset",
    "protocol",
    "no_healthy_endpoint",
    "connection_limit",
    "circuit_open",
];

/// One finished exchange: the request as it was forwarded, how it ended, and the context
/// the gateway established for it.
///
/// Its strings borrow from the batch the gateway handed to `observe`: reading an exchange
/// copies nothing. [`into_owned`](Self::into_owned) detaches one, to keep it past the call.
///
/// Build them natively with [`testing::TestExchange`](crate::testing::TestExchange).
///
/// ```
/// use std::time::Duration;
/// use fedgate_sdk::testing::TestExchange;
/// use fedgate_sdk::Origin;
///
/// let exchange = TestExchange::post("/users/alice/inbox")
///     .status(202)
///     .upstream_latency(Duration::from_millis(40))
///     .build();
/// assert_eq!(exchange.origin, Origin::Upstream);
/// assert!(exchange.admitted());
/// assert!(!exchange.is_error());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange<'a> {
    /// The method, as sent.
    pub method: Cow<'a, str>,
    /// `http` or `https`, as the client connected.
    pub scheme: Cow<'a, str>,
    /// The authority the request was routed by, with its port if it had one.
    pub authority: Cow<'a, str>,
    /// The path, exactly as sent (percent-encoding kept).
    pub path: Cow<'a, str>,
    /// The query without its `?`; `None` when the target had no `?`.
    pub query: Option<Cow<'a, str>>,
    /// The name of the route the request matched.
    pub route: Cow<'a, str>,
    /// The name of that route's upstream.
    pub upstream: Cow<'a, str>,
    /// The request id the gateway forwarded.
    pub request_id: Cow<'a, str>,
    /// The client's IP address.
    pub client_address: Cow<'a, str>,
    /// The HTTP version the client spoke.
    pub http_version: HttpVersion,
    /// The fields named in [`Plugin::request_headers`](crate::Plugin::request_headers), in
    /// that order, each its first value; see [`request_header`](Self::request_header).
    pub request_headers: Vec<Option<Cow<'a, str>>>,
    /// The status the client got.
    pub status: u16,
    /// Who answered: the upstream, or the gateway in its place (or refusing the request).
    pub origin: Origin,
    /// For gateway answers, why: `connect`, `timeout`, `reset`, `protocol`, ... for the
    /// upstream's trouble; `blocked`, `rate_limited`, `plugin_denied` (a plugin's local
    /// reply), ... for the gateway's own answers.
    pub error: Option<Cow<'a, str>>,
    /// The endpoint that answered or failed (`10.0.0.5:3000`).
    pub endpoint: Option<Cow<'a, str>>,
    /// Body bytes received from the client.
    pub request_bytes: u64,
    /// Body bytes sent to the client.
    pub response_bytes: u64,
    /// Whether the response body was sent whole (`false`: the client went away).
    pub completed: bool,
    /// From sending the request upstream to receiving the response head; `None` for
    /// gateway answers.
    pub upstream_latency: Option<Duration>,
    /// From the request's arrival to the end of its response.
    pub duration: Duration,
    /// The federation view of the body (see [`Activity`]).
    pub activity: Option<Activity<'a>>,
    /// The verified signer, on routes that check HTTP signatures.
    pub signer: Option<Signer<'a>>,
    /// The principal auth established, on routes with `auth`.
    pub principal: Option<Principal<'a>>,
    /// Wall-clock time the response ended, in milliseconds since the Unix epoch.
    pub ended_at_ms: u64,
}

impl Exchange<'_> {
    /// The first value of the request field `name`, which must be one of the names the
    /// plugin registered: `registered` is that list (what
    /// [`Plugin::request_headers`](crate::Plugin::request_headers) returns), `name` is
    /// matched case-insensitively. `None` when the field was absent or `name` was not
    /// registered.
    ///
    /// ```
    /// use fedgate_sdk::testing::TestExchange;
    ///
    /// let registered = ["user-agent", "content-type"];
    /// let exchange = TestExchange::get("/")
    ///     .header("content-type", "application/activity+json")
    ///     .request_headers(&registered)
    ///     .build();
    /// assert_eq!(
    ///     exchange.request_header(&registered, "Content-Type"),
    ///     Some("application/activity+json")
    /// );
    /// assert_eq!(exchange.request_header(&registered, "user-agent"), None);
    /// assert_eq!(exchange.request_header(&registered, "date"), None);
    /// ```
    pub fn request_header<S: AsRef<str>>(&self, registered: &[S], name: &str) -> Option<&str> {
        let index = registered
            .iter()
            .position(|known| known.as_ref().eq_ignore_ascii_case(name))?;
        self.request_headers.get(index)?.as_deref()
    }

    /// Whether the gateway and the inline plugins let the request through: the upstream
    /// answered, or the gateway answered in its place because the upstream could not
    /// (`connect`, `timeout`, `reset`, `protocol`, `no_healthy_endpoint`,
    /// `connection_limit`, `circuit_open`). `false` for requests the gateway refused itself
    /// (blocklist, rate limit, auth, signatures, oversized bodies) and for local replies of
    /// plugins: an observer sees those too, which inline hooks never did.
    pub fn admitted(&self) -> bool {
        match self.origin {
            Origin::Upstream => true,
            Origin::Gateway => self
                .error
                .as_deref()
                .is_some_and(|error| UPSTREAM_ERRORS.contains(&error)),
        }
    }

    /// Whether the exchange is an upstream error: a 5xx from the upstream, or an answer the
    /// gateway gave in its place because of it (see [`admitted`](Self::admitted)).
    pub fn is_error(&self) -> bool {
        self.admitted() && (self.status >= 500 || self.origin == Origin::Gateway)
    }

    /// The same exchange, its strings copied, to keep past the `observe` call.
    pub fn into_owned(self) -> Exchange<'static> {
        Exchange {
            method: owned(self.method),
            scheme: owned(self.scheme),
            authority: owned(self.authority),
            path: owned(self.path),
            query: self.query.map(owned),
            route: owned(self.route),
            upstream: owned(self.upstream),
            request_id: owned(self.request_id),
            client_address: owned(self.client_address),
            http_version: self.http_version,
            request_headers: self
                .request_headers
                .into_iter()
                .map(|value| value.map(owned))
                .collect(),
            status: self.status,
            origin: self.origin,
            error: self.error.map(owned),
            endpoint: self.endpoint.map(owned),
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            completed: self.completed,
            upstream_latency: self.upstream_latency,
            duration: self.duration,
            activity: self.activity.map(Activity::into_owned),
            signer: self.signer.map(Signer::into_owned),
            principal: self.principal.map(Principal::into_owned),
            ended_at_ms: self.ended_at_ms,
        }
    }

    /// When the response ended, as a [`SystemTime`].
    pub fn ended_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.ended_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestExchange;

    #[test]
    fn admitted_and_errors() {
        let ok = TestExchange::get("/").build();
        assert!(ok.admitted() && !ok.is_error());
        let failed = TestExchange::get("/").status(503).build();
        assert!(failed.admitted() && failed.is_error());
        let gateway = TestExchange::get("/").gateway(502, "connect").build();
        assert!(gateway.admitted() && gateway.is_error());
        let open = TestExchange::get("/").gateway(503, "circuit_open").build();
        assert!(open.is_error());
        let limited = TestExchange::get("/").gateway(429, "rate_limited").build();
        assert!(!limited.admitted() && !limited.is_error());
        let replied = TestExchange::get("/").local_reply(202).build();
        assert!(!replied.admitted() && !replied.is_error());
        assert_eq!(replied.origin, Origin::Gateway);
        assert_eq!(replied.error.as_deref(), Some("plugin_denied"));
    }

    #[test]
    fn ended_at_is_wall_time() {
        let exchange = TestExchange::get("/").ended_at_ms(1_500).build();
        assert_eq!(
            exchange.ended_at(),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_500)
        );
    }
}
