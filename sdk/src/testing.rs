//! Unit-testing plugins natively (available off `wasm32` only).
//!
//! Off `wasm32` the SDK runs on an in-memory backend: [`Request`], [`Response`] and
//! [`Exchange`] hold values built here, metrics are kept in memory with the gateway's rules
//! (name checks, label counts, invalid values and the series cap), log lines are kept too,
//! the [`store`](crate::store) is a map on a test clock that stands still until
//! [`advance`] moves it, [`outbound`](crate::outbound) answers what [`outbound_reply`]
//! scripted, and [`gateway::upstreams`](crate::gateway::upstreams) lists what
//! [`set_upstreams`] set. So a plugin's logic is tested with plain `cargo test`, calling
//! its hooks directly:
//!
//! ```
//! use fedgate_sdk::testing::{self, TestExchange};
//! use fedgate_sdk::{Config, Counter, Exchange, Hooks, Plugin};
//!
//! struct StatusCounter(Counter);
//!
//! impl Plugin for StatusCounter {
//!     fn init(_config: &Config) -> Result<Self, String> {
//!         Ok(StatusCounter(Counter::declare("responses_total", "Responses.", &["class"])?))
//!     }
//!
//!     fn hooks(&self) -> Hooks {
//!         Hooks::OBSERVE
//!     }
//!
//!     fn observe(&mut self, exchanges: &[Exchange<'_>]) {
//!         for exchange in exchanges {
//!             self.0.inc(&[&format!("{}xx", exchange.status / 100)]);
//!         }
//!     }
//! }
//!
//! let mut plugin: StatusCounter = testing::init("{}").unwrap();
//! plugin.observe(&[
//!     TestExchange::get("/users/alice").status(200).build(),
//!     TestExchange::get("/users/bob").gateway(502, "connect").build(),
//! ]);
//! assert_eq!(testing::counter_value("responses_total", &["2xx"]), 1.0);
//! assert_eq!(testing::counter_value("responses_total", &["5xx"]), 1.0);
//! ```
//!
//! State is per thread, and the test harness runs each test on a thread of its own, so tests
//! running in parallel do not see each other's metrics or store. Plugin values created in
//! one test share the store, as the gateway's instances of one plugin do: create two to
//! test that what one instance writes, another reads. Within one test, [`reset`] starts
//! afresh.

pub(crate) mod backend;

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use crate::gateway::UpstreamInfo;
use crate::log::Level;
use crate::outbound::{OutboundError, OutboundRequest, OutboundResponse};
use crate::{
    Activity, Config, Exchange, Header, HttpVersion, Origin, Plugin, Principal, PrincipalKind,
    Registration, Request, Response, Signer, TlsInfo,
};

/// Creates a plugin the way the gateway does: `P::init` with this JSON configuration, then
/// its registration checked as the gateway checks it (at most 32 request fields, a tick
/// interval of at least 100 ms with `ON_TICK`). The request fields it registers become the
/// ones [`TestRequest`] and [`TestExchange`] declare, unless they name their own.
pub fn init<P: Plugin>(config: &str) -> Result<P, String> {
    let plugin = P::init(&Config::new(config))?;
    let registration = Registration::of(&plugin)?;
    backend::with_state(|state| state.registered_headers = registration.request_headers);
    Ok(plugin)
}

/// Forgets every declared metric, every log line, the store, scripted outbound answers,
/// the upstreams, and the settings below; the test clock starts again. Handles declared
/// before the reset panic when used: create the plugin again.
pub fn reset() {
    backend::reset();
}

// ---------------------------------------------------------------------------------------
// The clock, the store, outbound HTTP, the gateway
// ---------------------------------------------------------------------------------------

/// Moves the test clock (monotonic and wall alike) forward: store entries whose TTL ran out
/// expire. The clock stands still otherwise.
pub fn advance(by: Duration) {
    backend::with_state(|state| {
        let nanos = by.as_nanos();
        state.monotonic_ns = state
            .monotonic_ns
            .saturating_add(u64::try_from(nanos).unwrap_or(u64::MAX));
        state.wall_ns = state.wall_ns.saturating_add(nanos);
    });
}

/// Sets the wall clock (2026-01-01T00:00:00Z unless set); the monotonic clock does not
/// move, as on a host whose system clock is set.
pub fn set_wall_time(time: SystemTime) {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    backend::with_state(|state| state.wall_ns = since.as_nanos());
}

/// Bounds the store: at most `max_entries` entries (10 000 unless set; beyond it, the
/// entries closest to expiring, then the least recently written, are evicted) and values of
/// at most `max_value_bytes` (64 KiB unless set; longer ones fail with `too-large`).
pub fn set_store_limits(max_entries: usize, max_value_bytes: usize) {
    backend::with_state(|state| {
        state.store.max_entries = max_entries;
        state.store.max_value_bytes = max_value_bytes;
    });
}

/// Scripts the answer to [`outbound::send`](crate::outbound::send) for exactly this URL
/// (the last script for a URL wins). Unscripted URLs answer
/// [`OutboundError::NotAllowed`], as hosts outside `outbound.allow` do.
pub fn outbound_reply(url: &str, reply: Result<OutboundResponse, OutboundError>) {
    backend::with_state(|state| state.outbound_replies.push((url.to_owned(), reply)));
}

/// The outbound requests sent so far, in order (refused ones included).
pub fn outbound_requests() -> Vec<OutboundRequest> {
    backend::with_state(|state| state.outbound_sent.clone())
}

/// Runs `f` as an inline hook runs: outbound HTTP answers
/// [`OutboundError::NotHere`] inside it.
pub fn as_inline_hook<R>(f: impl FnOnce() -> R) -> R {
    backend::with_state(|state| state.inline_hook = true);
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            backend::with_state(|state| state.inline_hook = false);
        }
    }
    let _leave = Leave;
    f()
}

/// Sets what [`gateway::upstreams`](crate::gateway::upstreams) lists: `(name, critical)`.
pub fn set_upstreams(upstreams: &[(&str, bool)]) {
    let upstreams = upstreams
        .iter()
        .map(|(name, critical)| UpstreamInfo {
            name: (*name).to_owned(),
            critical: *critical,
        })
        .collect();
    backend::with_state(|state| state.upstreams = upstreams);
}

/// Sets the per-metric series cap (the gateway's `max_series`; 1000 unless set).
pub fn set_max_series(max_series: usize) {
    backend::with_state(|state| state.max_series = max_series);
}

/// Sets the least severe level that is written (and reported by
/// [`log::enabled`](crate::log::enabled)); everything is written unless set.
pub fn set_log_level(level: Level) {
    backend::with_state(|state| state.log_level = level);
}

// ---------------------------------------------------------------------------------------
// Reading metrics
// ---------------------------------------------------------------------------------------

fn with_metric<R>(name: &str, kind: backend::Kind, f: impl FnOnce(&backend::Metric) -> R) -> R {
    backend::with_state(|state| {
        let metric = state
            .metrics
            .get(name)
            .unwrap_or_else(|| panic!("no metric named {name} was declared"));
        assert_eq!(
            metric.kind, kind,
            "metric {name} was declared as a {:?}, not a {kind:?}",
            metric.kind
        );
        f(metric)
    })
}

fn key(labels: &[&str]) -> Vec<String> {
    labels.iter().map(|label| (*label).to_owned()).collect()
}

/// The value of a counter's series; 0 when the series was never updated.
///
/// # Panics
///
/// When no counter of that name was declared.
pub fn counter_value(name: &str, labels: &[&str]) -> f64 {
    with_metric(name, backend::Kind::Counter, |metric| {
        match metric.series.get(&key(labels)) {
            Some(backend::SeriesValue::Value(value)) => *value,
            _ => 0.0,
        }
    })
}

/// The value of a gauge's series; `None` when the series was never set nor resolved.
///
/// # Panics
///
/// When no gauge of that name was declared.
pub fn gauge_value(name: &str, labels: &[&str]) -> Option<f64> {
    with_metric(name, backend::Kind::Gauge, |metric| {
        match metric.series.get(&key(labels)) {
            Some(backend::SeriesValue::Value(value)) => Some(*value),
            _ => None,
        }
    })
}

/// What a histogram series has recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// How many observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Each bucket's upper bound with the cumulative count of observations at or below it,
    /// as Prometheus exposes them (without `+Inf`, which is `count`).
    pub buckets: Vec<(f64, u64)>,
}

/// A histogram series; `None` when it was never observed nor resolved.
///
/// # Panics
///
/// When no histogram of that name was declared.
pub fn histogram(name: &str, labels: &[&str]) -> Option<HistogramSnapshot> {
    with_metric(name, backend::Kind::Histogram, |metric| {
        match metric.series.get(&key(labels)) {
            Some(backend::SeriesValue::Histogram { count, sum, counts }) => {
                let mut cumulative = 0;
                let buckets = metric
                    .buckets
                    .iter()
                    .zip(counts)
                    .map(|(bound, n)| {
                        cumulative += n;
                        (*bound, cumulative)
                    })
                    .collect();
                Some(HistogramSnapshot {
                    count: *count,
                    sum: *sum,
                    buckets,
                })
            }
            _ => None,
        }
    })
}

/// The label values of every series a metric has, sorted; empty when the metric was not
/// declared.
pub fn series(name: &str) -> Vec<Vec<String>> {
    backend::with_state(|state| {
        state
            .metrics
            .get(name)
            .map(|metric| metric.series.keys().cloned().collect())
            .unwrap_or_default()
    })
}

/// How many updates of a metric were dropped, or folded into `other`, for `reason`:
/// `labels` (wrong count, or a value over 256 bytes), `value` (negative or not finite) or
/// `series_cap` (folded into `other`). The gateway counts these in
/// `fedgate_plugin_metric_drops_total`.
pub fn drops(name: &str, reason: &str) -> u64 {
    backend::with_state(|state| {
        state
            .metrics
            .get(name)
            .and_then(|metric| metric.drops.get(reason).copied())
            .unwrap_or(0)
    })
}

// ---------------------------------------------------------------------------------------
// Reading log lines
// ---------------------------------------------------------------------------------------

/// One line written through [`log`](crate::log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// Its message.
    pub message: String,
}

/// The lines written so far (at or above the level set with [`set_log_level`]).
pub fn logs() -> Vec<LogLine> {
    backend::with_state(|state| {
        state
            .logs
            .iter()
            .map(|(level, message)| LogLine {
                level: *level,
                message: message.clone(),
            })
            .collect()
    })
}

/// The lines written so far, forgetting them.
pub fn take_logs() -> Vec<LogLine> {
    let lines = logs();
    backend::with_state(|state| state.logs.clear());
    lines
}

// ---------------------------------------------------------------------------------------
// Building requests and responses
// ---------------------------------------------------------------------------------------

/// Builds the [`Request`] a hook receives.
///
/// Defaults: scheme `https`, authority `gateway.test`, client address `192.0.2.1`, route
/// `default`, upstream `app`, request id `test-request`, no fields, no body. A `?` in the
/// path starts the query. Field names are lowercased, as the gateway hands them out.
///
/// ```
/// use fedgate_sdk::testing::TestRequest;
///
/// let request = TestRequest::post("/users/alice/inbox?page=2")
///     .header("Content-Type", "application/activity+json")
///     .body(r#"{"type": "Follow"}"#)
///     .route("inbox")
///     .build();
/// assert_eq!(request.path(), "/users/alice/inbox");
/// assert_eq!(request.query().as_deref(), Some("page=2"));
/// assert_eq!(request.header("content-type").as_deref(), Some("application/activity+json"));
/// ```
#[derive(Clone, Debug)]
#[must_use = "call .build() to get the Request"]
pub struct TestRequest(backend::Request);

impl TestRequest {
    /// A request with this method and target (path, optionally with `?query`).
    pub fn new(method: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (target.to_owned(), None),
        };
        TestRequest(backend::Request {
            method: method.to_owned(),
            scheme: "https".to_owned(),
            authority: "gateway.test".to_owned(),
            path,
            query,
            headers: Vec::new(),
            client_address: "192.0.2.1".to_owned(),
            route: "default".to_owned(),
            upstream: "app".to_owned(),
            request_id: "test-request".to_owned(),
            body: None,
            signer: None,
            activity: None,
            principal: None,
            http_version: HttpVersion::Http11,
            tls: None,
            request_headers: None,
        })
    }

    /// A `GET` of `target`.
    pub fn get(target: &str) -> Self {
        TestRequest::new("GET", target)
    }

    /// A `POST` to `target`.
    pub fn post(target: &str) -> Self {
        TestRequest::new("POST", target)
    }

    /// Sets the scheme (`http` or `https`).
    pub fn scheme(mut self, scheme: &str) -> Self {
        self.0.scheme = scheme.to_owned();
        self
    }

    /// Sets the authority (`example.org`, `example.org:8443`).
    pub fn authority(mut self, authority: &str) -> Self {
        self.0.authority = authority.to_owned();
        self
    }

    /// Appends a field (its name lowercased); call again for repeated fields.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0
            .headers
            .push(Header::new(name.to_ascii_lowercase(), value));
        self
    }

    /// Sets the buffered body. Content fields are not added: set `content-type` and
    /// `content-length` with [`header`](Self::header) when the plugin reads them.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.0.body = Some(body.into());
        self
    }

    /// Sets the client address.
    pub fn client_address(mut self, address: &str) -> Self {
        self.0.client_address = address.to_owned();
        self
    }

    /// Sets the name of the matched route.
    pub fn route(mut self, route: &str) -> Self {
        self.0.route = route.to_owned();
        self
    }

    /// Sets the name of the route's upstream.
    pub fn upstream(mut self, upstream: &str) -> Self {
        self.0.upstream = upstream.to_owned();
        self
    }

    /// Sets the request id.
    pub fn request_id(mut self, id: &str) -> Self {
        self.0.request_id = id.to_owned();
        self
    }

    /// Marks the request as signed, with a verified signature, by `key_id`; the instance
    /// is the key id's host, as the gateway derives it.
    pub fn signer(mut self, key_id: &str) -> Self {
        self.0.signer = Some(signer(key_id));
        self
    }

    /// Sets the federation view of the body (see [`activity`] to build one).
    pub fn activity(mut self, activity: Activity<'_>) -> Self {
        self.0.activity = Some(activity.into_owned());
        self
    }

    /// Sets the principal auth established.
    pub fn principal(mut self, kind: PrincipalKind, name: &str) -> Self {
        self.0.principal = Some(Principal {
            kind,
            name: name.to_owned().into(),
        });
        self
    }

    /// Sets the HTTP version (HTTP/1.1 unless set).
    pub fn http_version(mut self, version: HttpVersion) -> Self {
        self.0.http_version = version;
        self
    }

    /// Marks the connection as TLS, with the server name the client asked for and the
    /// verified client certificate's subject.
    pub fn tls(mut self, server_name: Option<&str>, client_subject: Option<&str>) -> Self {
        self.0.tls = Some(TlsInfo {
            server_name: server_name.map(str::to_owned),
            client_subject: client_subject.map(str::to_owned),
        });
        self
    }

    /// The registered field names [`Request::declared_headers`] answers for; unless set,
    /// those of the plugin last created with [`init`].
    pub fn request_headers(mut self, names: &[&str]) -> Self {
        self.0.request_headers = Some(names.iter().map(|name| (*name).to_owned()).collect());
        self
    }

    /// The request.
    pub fn build(self) -> Request {
        Request(self.0)
    }
}

/// The signer the gateway reports for a verified signature by `key_id`: the instance is
/// the key id's host, lowercased.
fn signer(key_id: &str) -> Signer<'static> {
    let rest = key_id.split_once("://").map_or(key_id, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    Signer {
        key_id: key_id.to_owned().into(),
        instance: host.to_ascii_lowercase().into(),
    }
}

/// The federation view of an activity of type `kind` sent by `actor`, as the gateway
/// derives it: `actor_host` is the actor id's host, lowercased, without its port (`None`
/// when the id is not a `scheme://` URL). Set the other fields on the result.
///
/// ```
/// use fedgate_sdk::testing;
///
/// let mut like = testing::activity("Like", "https://Example.org:8443/users/bob");
/// like.object_id = Some("https://local.example/notes/1".into());
/// assert_eq!(like.actor_host.as_deref(), Some("example.org"));
/// ```
pub fn activity(kind: &str, actor: &str) -> Activity<'static> {
    let host = actor.split_once("://").and_then(|(_, rest)| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let host = if host_port.starts_with('[') {
            host_port.find(']').map(|end| &host_port[..=end])
        } else {
            host_port.split(':').next()
        }?;
        (!host.is_empty()).then(|| host.to_ascii_lowercase().into())
    });
    Activity {
        kind: Some(kind.to_owned().into()),
        actor: Some(actor.to_owned().into()),
        actor_host: host,
        ..Activity::default()
    }
}

/// Builds the [`Exchange`]s an observer receives.
///
/// Defaults: as [`TestRequest`] for the request (scheme `https`, authority `gateway.test`,
/// client `192.0.2.1`, route `default`, upstream `app`, request id `test-request`,
/// HTTP/1.1); the upstream answered 200 from `127.0.0.1:3000` with an upstream latency of
/// 1 ms and a duration of 1 ms, no body either way, completed; ended at the test clock's
/// wall time. `request_headers` carries the first value of each registered field among
/// those set with [`header`](Self::header): the names given to
/// [`request_headers`](Self::request_headers), or else those of the plugin last created
/// with [`init`].
///
/// ```
/// use std::time::Duration;
/// use fedgate_sdk::testing::{self, TestExchange};
/// use fedgate_sdk::Origin;
///
/// let exchange = TestExchange::post("/users/alice/inbox")
///     .route("inbox")
///     .activity(testing::activity("Follow", "https://remote.example/users/bob"))
///     .signer("https://remote.example/users/bob#main-key")
///     .status(202)
///     .upstream_latency(Duration::from_millis(30))
///     .build();
/// assert_eq!(exchange.status, 202);
/// assert_eq!(exchange.duration, Duration::from_millis(30));
///
/// let failed = TestExchange::get("/").gateway(504, "timeout").build();
/// assert_eq!((failed.origin, failed.error.as_deref()), (Origin::Gateway, Some("timeout")));
/// ```
#[derive(Clone, Debug)]
#[must_use = "call .build() to get the Exchange"]
pub struct TestExchange {
    exchange: Exchange<'static>,
    headers: Vec<Header>,
    request_headers: Option<Vec<String>>,
}

impl TestExchange {
    /// An exchange of a request with this method and target (path, optionally with
    /// `?query`).
    pub fn new(method: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned().into(), Some(query.to_owned().into())),
            None => (target.to_owned().into(), None),
        };
        let ended_at_ms = crate::clocks::wall_now_ms();
        TestExchange {
            exchange: Exchange {
                method: method.to_owned().into(),
                scheme: "https".into(),
                authority: "gateway.test".into(),
                path,
                query,
                route: "default".into(),
                upstream: "app".into(),
                request_id: "test-request".into(),
                client_address: "192.0.2.1".into(),
                http_version: HttpVersion::Http11,
                request_headers: Vec::new(),
                status: 200,
                origin: Origin::Upstream,
                error: None,
                endpoint: Some("127.0.0.1:3000".into()),
                request_bytes: 0,
                response_bytes: 0,
                completed: true,
                upstream_latency: Some(Duration::from_millis(1)),
                duration: Duration::from_millis(1),
                activity: None,
                signer: None,
                principal: None,
                ended_at_ms,
            },
            headers: Vec::new(),
            request_headers: None,
        }
    }

    /// A `GET` of `target`.
    pub fn get(target: &str) -> Self {
        TestExchange::new("GET", target)
    }

    /// A `POST` to `target`.
    pub fn post(target: &str) -> Self {
        TestExchange::new("POST", target)
    }

    /// Sets the scheme.
    pub fn scheme(mut self, scheme: &str) -> Self {
        self.exchange.scheme = scheme.to_owned().into();
        self
    }

    /// Sets the authority.
    pub fn authority(mut self, authority: &str) -> Self {
        self.exchange.authority = authority.to_owned().into();
        self
    }

    /// Sets the name of the matched route.
    pub fn route(mut self, route: &str) -> Self {
        self.exchange.route = route.to_owned().into();
        self
    }

    /// Sets the name of the route's upstream.
    pub fn upstream(mut self, upstream: &str) -> Self {
        self.exchange.upstream = upstream.to_owned().into();
        self
    }

    /// Sets the request id.
    pub fn request_id(mut self, id: &str) -> Self {
        self.exchange.request_id = id.to_owned().into();
        self
    }

    /// Sets the client address.
    pub fn client_address(mut self, address: &str) -> Self {
        self.exchange.client_address = address.to_owned().into();
        self
    }

    /// Sets the HTTP version.
    pub fn http_version(mut self, version: HttpVersion) -> Self {
        self.exchange.http_version = version;
        self
    }

    /// Appends a request field; it reaches the exchange only if its name is registered.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push(Header::new(name.to_ascii_lowercase(), value));
        self
    }

    /// The registered field names `request_headers` carries; unless set, those of the
    /// plugin last created with [`init`].
    pub fn request_headers(mut self, names: &[&str]) -> Self {
        self.request_headers = Some(names.iter().map(|name| (*name).to_owned()).collect());
        self
    }

    /// The upstream answered with `status`.
    pub fn status(mut self, status: u16) -> Self {
        self.exchange.status = status;
        self
    }

    /// The gateway answered `status` in the upstream's place, or refused the request, for
    /// `error` (`connect`, `timeout`, `reset`, `protocol`, `rate_limited`, ...): no
    /// upstream latency, and no endpoint (set one with [`endpoint`](Self::endpoint)).
    pub fn gateway(mut self, status: u16, error: &str) -> Self {
        self.exchange.status = status;
        self.exchange.origin = Origin::Gateway;
        self.exchange.error = Some(error.to_owned().into());
        self.exchange.endpoint = None;
        self.exchange.upstream_latency = None;
        self
    }

    /// A plugin answered `status` locally: origin gateway, error `plugin_denied` (as the
    /// gateway records it, whatever the status), no endpoint.
    pub fn local_reply(self, status: u16) -> Self {
        self.gateway(status, "plugin_denied")
    }

    /// Sets the endpoint that answered or failed.
    pub fn endpoint(mut self, endpoint: Option<&str>) -> Self {
        self.exchange.endpoint = endpoint.map(|e| Cow::Owned(e.to_owned()));
        self
    }

    /// Sets the body sizes received from the client and sent to it.
    pub fn bytes(mut self, request: u64, response: u64) -> Self {
        self.exchange.request_bytes = request;
        self.exchange.response_bytes = response;
        self
    }

    /// Sets whether the response body was sent whole.
    pub fn completed(mut self, completed: bool) -> Self {
        self.exchange.completed = completed;
        self
    }

    /// Sets the upstream latency (and raises the duration to at least that much).
    pub fn upstream_latency(mut self, latency: Duration) -> Self {
        self.exchange.upstream_latency = Some(latency);
        self.exchange.duration = self.exchange.duration.max(latency);
        self
    }

    /// Sets the time from the request's arrival to the end of its response.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.exchange.duration = duration;
        self
    }

    /// Sets the federation view of the body (see [`activity`]).
    pub fn activity(mut self, activity: Activity<'_>) -> Self {
        self.exchange.activity = Some(activity.into_owned());
        self
    }

    /// Marks the request as signed by `key_id`, as [`TestRequest::signer`] does.
    pub fn signer(mut self, key_id: &str) -> Self {
        self.exchange.signer = Some(signer(key_id));
        self
    }

    /// Sets the principal auth established.
    pub fn principal(mut self, kind: PrincipalKind, name: &str) -> Self {
        self.exchange.principal = Some(Principal {
            kind,
            name: name.to_owned().into(),
        });
        self
    }

    /// Sets when the response ended, in milliseconds since the Unix epoch.
    pub fn ended_at_ms(mut self, ms: u64) -> Self {
        self.exchange.ended_at_ms = ms;
        self
    }

    /// The exchange.
    pub fn build(mut self) -> Exchange<'static> {
        self.exchange.request_headers =
            backend::declared(&self.headers, self.request_headers.as_deref())
                .into_iter()
                .map(|value| value.map(Cow::Owned))
                .collect();
        self.exchange
    }
}

/// Builds the [`Response`] `on-response` receives.
///
/// [`upstream`](Self::upstream) answers default to endpoint `127.0.0.1:3000`, an upstream
/// latency of 1 ms and 1 ms elapsed; [`gateway`](Self::gateway) answers have no endpoint, no
/// upstream latency and 1 ms elapsed.
///
/// ```
/// use std::time::Duration;
/// use fedgate_sdk::{testing::TestResponse, Origin};
///
/// let response = TestResponse::upstream(200)
///     .header("content-type", "application/activity+json")
///     .upstream_latency(Duration::from_millis(40))
///     .build();
/// assert_eq!(response.origin(), Origin::Upstream);
/// assert_eq!(response.upstream_latency(), Some(Duration::from_millis(40)));
///
/// let failed = TestResponse::gateway(504, "timeout").build();
/// assert_eq!(failed.error().as_deref(), Some("timeout"));
/// ```
#[derive(Clone, Debug)]
#[must_use = "call .build() to get the Response"]
pub struct TestResponse(backend::Response);

const ONE_MS: u64 = 1_000_000;

impl TestResponse {
    /// The upstream answered with `status`.
    pub fn upstream(status: u16) -> Self {
        TestResponse(backend::Response {
            status,
            origin: Origin::Upstream,
            error: None,
            headers: Vec::new(),
            endpoint: Some("127.0.0.1:3000".to_owned()),
            upstream_latency: Some(ONE_MS),
            elapsed: ONE_MS,
        })
    }

    /// The gateway answered `status` in the upstream's place because of `error` (`connect`,
    /// `timeout`, `reset` or `protocol`).
    pub fn gateway(status: u16, error: &str) -> Self {
        TestResponse(backend::Response {
            status,
            origin: Origin::Gateway,
            error: Some(error.to_owned()),
            headers: Vec::new(),
            endpoint: None,
            upstream_latency: None,
            elapsed: ONE_MS,
        })
    }

    /// Appends a response field (its name lowercased).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0
            .headers
            .push(Header::new(name.to_ascii_lowercase(), value));
        self
    }

    /// Sets the endpoint that answered or failed; `None` when none was tried.
    pub fn endpoint(mut self, endpoint: Option<&str>) -> Self {
        self.0.endpoint = endpoint.map(str::to_owned);
        self
    }

    /// Sets the upstream latency (and raises `elapsed` to at least that much).
    pub fn upstream_latency(mut self, latency: Duration) -> Self {
        let nanos = duration_nanos(latency);
        self.0.upstream_latency = Some(nanos);
        self.0.elapsed = self.0.elapsed.max(nanos);
        self
    }

    /// Sets the time since the request arrived.
    pub fn elapsed(mut self, elapsed: Duration) -> Self {
        self.0.elapsed = duration_nanos(elapsed);
        self
    }

    /// The response.
    pub fn build(self) -> Response {
        Response(self.0)
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The gateway's rules this native backend imitates, for a test of the gateway's own suite
/// that they are the gateway's: a plugin's native tests then catch what the gateway would
/// refuse or cap. Not part of the SDK's API.
#[doc(hidden)]
pub mod limits {
    /// The longest metric label value.
    pub const MAX_LABEL_VALUE_BYTES: usize = super::backend::MAX_LABEL_VALUE_BYTES;
    /// The default series cap per metric (`max_series`).
    pub const DEFAULT_MAX_SERIES: usize = super::backend::DEFAULT_MAX_SERIES;
    /// Histogram buckets when a declaration gives none.
    pub const DEFAULT_BUCKETS: [f64; 11] = super::backend::DEFAULT_BUCKETS;
    /// The longest store key.
    pub const MAX_STORE_KEY_BYTES: usize = super::backend::store::MAX_KEY_BYTES;
    /// The store's default bounds in entries and value bytes.
    pub const DEFAULT_STORE_ENTRIES: usize = super::backend::store::DEFAULT_MAX_ENTRIES;
    pub const DEFAULT_STORE_VALUE_BYTES: usize = super::backend::store::DEFAULT_MAX_VALUE_BYTES;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{log, Counter, Gauge, Histogram};

    #[test]
    fn requests_read_back_what_was_built() {
        let request = TestRequest::post("/users/alice/inbox")
            .header("Content-Type", "application/activity+json")
            .header("accept", "a")
            .header("Accept", "b")
            .body("{}")
            .authority("example.org")
            .scheme("http")
            .client_address("2001:db8::1")
            .route("inbox")
            .upstream("mastodon")
            .request_id("r-1")
            .build();
        assert_eq!(request.method(), "POST");
        assert_eq!(request.scheme(), "http");
        assert_eq!(request.authority(), "example.org");
        assert_eq!(request.path(), "/users/alice/inbox");
        assert_eq!(request.query(), None);
        assert_eq!(
            request.header("CONTENT-TYPE").as_deref(),
            Some("application/activity+json")
        );
        assert_eq!(request.header("accept").as_deref(), Some("a"));
        assert_eq!(request.header_values("accept"), vec!["a", "b"]);
        assert_eq!(request.header("missing"), None);
        assert_eq!(request.headers().len(), 3);
        assert_eq!(request.headers()[0].name, "content-type");
        assert_eq!(request.client_address(), "2001:db8::1");
        assert_eq!(request.route(), "inbox");
        assert_eq!(request.upstream(), "mastodon");
        assert_eq!(request.request_id(), "r-1");
        assert_eq!(request.body().as_deref(), Some(&b"{}"[..]));
        assert_eq!(TestRequest::get("/?").build().query().as_deref(), Some(""));
        assert_eq!(TestRequest::get("/").build().body(), None);
        assert_eq!(TestRequest::get("/").build().signer(), None);
        let signed = TestRequest::post("/inbox")
            .signer("https://Remote.Example/users/bob#main-key")
            .build();
        assert_eq!(
            signed.signer(),
            Some(crate::Signer {
                key_id: "https://Remote.Example/users/bob#main-key".into(),
                instance: "remote.example".into(),
            })
        );
    }

    #[test]
    fn requests_carry_the_context() {
        let request = TestRequest::get("/")
            .header("User-Agent", "ua")
            .header("date", "d1")
            .header("date", "d2")
            .request_headers(&["date", "user-agent", "x-missing"])
            .activity(activity("Create", "https://a.example/u/x"))
            .principal(PrincipalKind::Jwt, "alice")
            .http_version(HttpVersion::Http2)
            .tls(Some("gateway.test"), None)
            .build();
        assert_eq!(
            request.declared_headers().to_vec(),
            vec![Some("d1".to_owned()), Some("ua".to_owned()), None]
        );
        assert_eq!(request.activity().unwrap().kind(), Some("Create"));
        assert_eq!(
            request.principal(),
            Some(Principal {
                kind: PrincipalKind::Jwt,
                name: "alice".into()
            })
        );
        assert_eq!(request.http_version(), HttpVersion::Http2);
        assert_eq!(request.http_version().as_str(), "HTTP/2");
        assert_eq!(
            request.tls().unwrap().server_name.as_deref(),
            Some("gateway.test")
        );
        let plain = TestRequest::get("/").build();
        assert_eq!(plain.tls(), None);
        assert_eq!(plain.activity(), None);
        assert_eq!(plain.principal(), None);
        assert!(plain.declared_headers().is_empty());
    }

    struct Registers;

    impl Plugin for Registers {
        fn init(_config: &Config) -> Result<Self, String> {
            Ok(Registers)
        }

        fn request_headers(&self) -> Vec<String> {
            vec!["content-type".to_owned(), "user-agent".to_owned()]
        }
    }

    #[test]
    fn the_registration_of_the_last_plugin_declares_fields() {
        let _plugin: Registers = init("{}").unwrap();
        let exchange = TestExchange::post("/inbox")
            .header("User-Agent", "ua")
            .build();
        assert_eq!(exchange.request_headers, vec![None, Some("ua".into())]);
        let request = TestRequest::get("/").header("content-type", "t").build();
        assert_eq!(
            request.declared_headers().to_vec(),
            vec![Some("t".to_owned()), None]
        );
    }

    #[test]
    fn exchanges_read_back_what_was_built() {
        set_wall_time(SystemTime::UNIX_EPOCH + Duration::from_secs(10));
        let exchange = TestExchange::post("/inbox?x=1")
            .scheme("http")
            .authority("a.test")
            .route("inbox")
            .upstream("mastodon")
            .request_id("r")
            .client_address("2001:db8::1")
            .http_version(HttpVersion::Http10)
            .bytes(10, 20)
            .completed(false)
            .signer("https://R.example/u#k")
            .principal(PrincipalKind::ApiKey, "ci")
            .duration(Duration::from_secs(2))
            .build();
        assert_eq!(exchange.query.as_deref(), Some("x=1"));
        assert_eq!(exchange.ended_at_ms, 10_000);
        assert_eq!((exchange.request_bytes, exchange.response_bytes), (10, 20));
        assert!(!exchange.completed);
        assert_eq!(exchange.signer.unwrap().instance, "r.example");
        assert_eq!(exchange.principal.unwrap().kind.as_str(), "api-key");
        assert_eq!(exchange.duration, Duration::from_secs(2));
        assert_eq!(exchange.route, "inbox");
        let failed = TestExchange::get("/")
            .gateway(502, "connect")
            .endpoint(Some("10.0.0.1:80"))
            .build();
        assert_eq!(failed.endpoint.as_deref(), Some("10.0.0.1:80"));
        assert_eq!(failed.upstream_latency, None);
    }

    #[test]
    fn activities_derive_the_host_as_the_gateway_does() {
        assert_eq!(
            activity("Like", "https://u@Example.org:8443/x")
                .actor_host
                .as_deref(),
            Some("example.org")
        );
        assert_eq!(
            activity("Like", "https://[2001:db8::1]:443/")
                .actor_host
                .as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(activity("Like", "acct:bob@example.org").actor_host, None);
    }

    #[test]
    fn the_store_is_shared_and_reset_forgets_it() {
        crate::store::set("k", b"v", None).unwrap();
        set_upstreams(&[("app", true)]);
        assert_eq!(crate::gateway::upstreams().len(), 1);
        reset();
        assert_eq!(crate::store::get("k"), None);
        assert!(crate::gateway::upstreams().is_empty());
    }

    #[test]
    fn responses_read_back_what_was_built() {
        let response = TestResponse::upstream(201)
            .header("Location", "/x")
            .endpoint(Some("10.0.0.5:3000"))
            .upstream_latency(Duration::from_millis(30))
            .build();
        assert_eq!(response.status(), 201);
        assert_eq!(response.origin(), Origin::Upstream);
        assert_eq!(response.error(), None);
        assert_eq!(response.header("location").as_deref(), Some("/x"));
        assert_eq!(response.headers(), vec![Header::new("location", "/x")]);
        assert_eq!(response.endpoint().as_deref(), Some("10.0.0.5:3000"));
        assert_eq!(response.upstream_latency(), Some(Duration::from_millis(30)));
        assert_eq!(response.elapsed(), Duration::from_millis(30));

        let failed = TestResponse::gateway(502, "connect")
            .elapsed(Duration::from_secs(2))
            .build();
        assert_eq!(failed.origin(), Origin::Gateway);
        assert_eq!(failed.error().as_deref(), Some("connect"));
        assert_eq!(failed.endpoint(), None);
        assert_eq!(failed.upstream_latency(), None);
        assert_eq!(failed.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn counters_follow_the_host_rules() {
        let counter = Counter::declare("things_total", "Things.", &["kind"]).unwrap();
        counter.inc(&["a"]);
        counter.add(&["a"], 2.5);
        counter.add(&["a"], -1.0);
        counter.add(&["a"], f64::NAN);
        counter.inc(&[]);
        counter.inc(&["a", "b"]);
        counter.inc(&[&"x".repeat(257)]);
        assert_eq!(counter_value("things_total", &["a"]), 3.5);
        assert_eq!(counter_value("things_total", &["never"]), 0.0);
        assert_eq!(drops("things_total", "value"), 2);
        assert_eq!(drops("things_total", "labels"), 3);
        assert_eq!(series("things_total"), vec![vec!["a".to_owned()]]);

        // Declaring alike shares the metric; otherwise it is refused.
        let again = Counter::declare("things_total", "Other help.", &["kind"]).unwrap();
        again.inc(&["a"]);
        assert_eq!(counter_value("things_total", &["a"]), 4.5);
        assert!(Counter::declare("things_total", "", &["other"]).is_err());
        assert!(Gauge::declare("things_total", "", &["kind"]).is_err());
    }

    #[test]
    fn resolved_series_follow_the_host_rules() {
        set_max_series(2);
        let counter = Counter::declare("resolved_total", "", &["kind"]).unwrap();
        let a = counter.series(&["a"]);
        // Resolving creates the series at zero, as the gateway does.
        assert_eq!(series("resolved_total"), vec![vec!["a".to_owned()]]);
        a.inc();
        a.add(2.0);
        a.add(-1.0);
        counter.series(&["a"]).inc();
        counter.inc(&["b"]);
        let past_cap = counter.series(&["c"]);
        past_cap.add(5.0);
        counter.series(&["a", "b"]).inc();
        assert_eq!(counter_value("resolved_total", &["a"]), 4.0);
        assert_eq!(counter_value("resolved_total", &["other"]), 5.0);
        assert_eq!(drops("resolved_total", "value"), 1);
        assert_eq!(drops("resolved_total", "series_cap"), 1);
        assert_eq!(drops("resolved_total", "labels"), 1);

        let gauge = Gauge::declare("resolved_gauge", "", &[])
            .unwrap()
            .series(&[]);
        gauge.set(3.0);
        gauge.add(-1.5);
        assert_eq!(gauge_value("resolved_gauge", &[]), Some(1.5));
        let histogram = Histogram::declare("resolved_seconds", "", &[], &[1.0])
            .unwrap()
            .series(&[]);
        histogram.observe(0.5);
        histogram.observe(2.0);
        let snapshot = super::histogram("resolved_seconds", &[]).unwrap();
        assert_eq!((snapshot.count, snapshot.sum), (2, 2.5));
    }

    #[test]
    fn declarations_are_checked() {
        assert!(Counter::declare("fedgate_mine_total", "", &[]).is_err());
        assert!(Counter::declare("9lives_total", "", &[]).is_err());
        assert!(Counter::declare("with-dash_total", "", &[]).is_err());
        assert!(Counter::declare("ok:total", "", &[]).is_ok());
        assert!(Counter::declare("labels_total", "", &["a", "a"]).is_err());
        assert!(Counter::declare("labels_total", "", &["__reserved"]).is_err());
        assert!(Counter::declare("labels_total", "", &["bad-name"]).is_err());
        assert!(Histogram::declare("h_seconds", "", &["le"], &[]).is_err());
        assert!(Histogram::declare("h_seconds", "", &[], &[1.0, 1.0]).is_err());
        assert!(Histogram::declare("h_seconds", "", &[], &[f64::INFINITY]).is_err());
    }

    #[test]
    fn series_beyond_the_cap_fold_into_other() {
        set_max_series(2);
        let counter = Counter::declare("capped_total", "", &["instance", "type"]).unwrap();
        counter.inc(&["a.example", "Create"]);
        counter.inc(&["b.example", "Create"]);
        counter.inc(&["c.example", "Create"]);
        counter.inc(&["d.example", "Like"]);
        counter.inc(&["a.example", "Create"]);
        assert_eq!(counter_value("capped_total", &["a.example", "Create"]), 2.0);
        assert_eq!(counter_value("capped_total", &["other", "other"]), 2.0);
        assert_eq!(drops("capped_total", "series_cap"), 2);
        assert_eq!(series("capped_total").len(), 3);
    }

    #[test]
    fn gauges_and_histograms() {
        let gauge = Gauge::declare("level", "", &[]).unwrap();
        assert_eq!(gauge_value("level", &[]), None);
        gauge.set(&[], 2.0);
        gauge.add(&[], -3.0);
        gauge.set(&[], f64::INFINITY);
        assert_eq!(gauge_value("level", &[]), Some(-1.0));
        assert_eq!(drops("level", "value"), 1);

        let sizes = Histogram::declare("sizes_bytes", "", &["route"], &[10.0, 100.0]).unwrap();
        sizes.observe(&["inbox"], 5.0);
        sizes.observe(&["inbox"], 50.0);
        sizes.observe(&["inbox"], 500.0);
        let snapshot = histogram_snapshot("sizes_bytes", &["inbox"]);
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.sum, 555.0);
        assert_eq!(snapshot.buckets, vec![(10.0, 1), (100.0, 2)]);
        assert_eq!(histogram("sizes_bytes", &["other"]), None);

        let defaults = Histogram::declare("latency_seconds", "", &[], &[]).unwrap();
        defaults.observe(&[], 0.003);
        assert_eq!(histogram_snapshot("latency_seconds", &[]).buckets.len(), 11);
    }

    fn histogram_snapshot(name: &str, labels: &[&str]) -> HistogramSnapshot {
        histogram(name, labels).expect("observed")
    }

    #[test]
    #[should_panic(expected = "no metric named missing_total")]
    fn reading_an_undeclared_metric_panics() {
        counter_value("missing_total", &[]);
    }

    #[test]
    #[should_panic(expected = "not a Counter")]
    fn reading_a_metric_as_another_kind_panics() {
        Gauge::declare("a_gauge", "", &[]).unwrap();
        counter_value("a_gauge", &[]);
    }

    #[test]
    fn reset_forgets_everything() {
        let counter = Counter::declare("before_total", "", &[]).unwrap();
        counter.inc(&[]);
        log::info!("before");
        set_max_series(1);
        reset();
        assert!(series("before_total").is_empty());
        assert!(logs().is_empty());
        let result = std::panic::catch_unwind(|| counter.inc(&[]));
        assert!(result.is_err(), "stale handles are refused");
        let counter = Counter::declare("before_total", "", &["n"]).unwrap();
        counter.inc(&["1"]);
        counter.inc(&["2"]);
        assert_eq!(drops("before_total", "series_cap"), 0);
    }

    #[test]
    fn log_lines_are_kept_and_filtered() {
        log::debug!("debug {}", 1);
        log::info!("info");
        log::log!(log::Level::Warn, "warn {x}", x = 3);
        assert_eq!(
            take_logs(),
            vec![
                LogLine {
                    level: Level::Debug,
                    message: "debug 1".into()
                },
                LogLine {
                    level: Level::Info,
                    message: "info".into()
                },
                LogLine {
                    level: Level::Warn,
                    message: "warn 3".into()
                },
            ]
        );
        assert!(logs().is_empty());

        set_log_level(Level::Warn);
        assert!(!log::enabled(Level::Info));
        assert!(log::enabled(Level::Error));
        let mut formatted = false;
        log::info!("{}", {
            formatted = true;
            "skipped"
        });
        assert!(!formatted, "disabled levels are not formatted");
        log::error!("kept");
        log::trace!("dropped");
        assert_eq!(logs().len(), 1);
        assert_eq!(logs()[0].level, Level::Error);
    }

    #[test]
    fn threads_do_not_share_state() {
        Counter::declare("mine_total", "", &[]).unwrap().inc(&[]);
        std::thread::spawn(|| assert!(series("mine_total").is_empty()))
            .join()
            .unwrap();
        assert_eq!(counter_value("mine_total", &[]), 1.0);
    }
}
