//! Unit-testing plugins natively (available off `wasm32` only).
//!
//! Off `wasm32` the SDK runs on an in-memory backend: [`Request`] and [`Response`] wrap values
//! built here, metrics are kept in memory with the gateway's rules (name checks, label
//! counts, invalid values and the series cap), and log lines are kept too. So a plugin's
//! logic is tested with plain `cargo test`, calling its hooks directly:
//!
//! ```
//! use fedgate_sdk::testing::{self, TestRequest, TestResponse};
//! use fedgate_sdk::{Config, Counter, Plugin, Request, Response};
//!
//! struct StatusCounter(Counter);
//!
//! impl Plugin for StatusCounter {
//!     fn init(_config: &Config) -> Result<Self, String> {
//!         Ok(StatusCounter(Counter::declare("responses_total", "Responses.", &["class"])?))
//!     }
//!
//!     fn on_response(&mut self, _request: &Request, response: &Response) {
//!         let class = format!("{}xx", response.status() / 100);
//!         self.0.inc(&[&class]);
//!     }
//! }
//!
//! let mut plugin: StatusCounter = testing::init("{}").unwrap();
//! let request = TestRequest::get("/users/alice").header("accept", "application/activity+json").build();
//! plugin.on_response(&request, &TestResponse::upstream(200).build());
//! plugin.on_response(&request, &TestResponse::gateway(502, "connect").build());
//! assert_eq!(testing::counter_value("responses_total", &["2xx"]), 1.0);
//! assert_eq!(testing::counter_value("responses_total", &["5xx"]), 1.0);
//! ```
//!
//! State is per thread, and the test harness runs each test on a thread of its own, so tests
//! running in parallel do not see each other's metrics. Within one test, [`reset`] starts
//! afresh.

pub(crate) mod backend;

use std::time::Duration;

use crate::log::Level;
use crate::{Config, Header, Origin, Plugin, Request, Response};

/// Creates a plugin the way the gateway does: `P::init` with this JSON configuration.
pub fn init<P: Plugin>(config: &str) -> Result<P, String> {
    P::init(&Config::new(config))
}

/// Forgets every declared metric, every log line, and the settings below. Handles declared
/// before the reset panic when used: create the plugin again.
pub fn reset() {
    backend::reset();
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
        let rest = key_id.split_once("://").map_or(key_id, |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or_default();
        self.0.signer = Some(backend::Signer {
            key_id: key_id.to_owned(),
            instance: host.to_ascii_lowercase(),
        });
        self
    }

    /// The request.
    pub fn build(self) -> Request {
        Request(self.0)
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
                key_id: "https://Remote.Example/users/bob#main-key".to_owned(),
                instance: "remote.example".to_owned(),
            })
        );
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
