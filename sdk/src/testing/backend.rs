//! The in-memory stand-in for the gateway's imports, used off `wasm32`. It exposes the same
//! names and signatures as the generated bindings so the SDK's wrappers read the same on
//! both targets, and it imitates the host's checks (metric names, label counts, values,
//! the series cap, the store's bounds) so a plugin's tests catch what the gateway would
//! drop.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::log::Level;
use crate::outbound::{OutboundError, OutboundRequest, OutboundResponse};
use crate::{Activity, Header, HttpVersion, Origin, Principal, Signer, TlsInfo};

/// Label values longer than this are dropped by the host.
pub(crate) const MAX_LABEL_VALUE_BYTES: usize = 256;

/// The series cap the gateway applies by default (`max_series`).
pub(crate) const DEFAULT_MAX_SERIES: usize = 1000;

/// The Prometheus default buckets, which the host uses when a histogram declares none.
pub(crate) const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

// ---------------------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------------------

/// A request's parts, as [`TestRequest`](super::TestRequest) built them.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) scheme: String,
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: Vec<Header>,
    pub(crate) client_address: String,
    pub(crate) route: String,
    pub(crate) upstream: String,
    pub(crate) request_id: String,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) signer: Option<Signer<'static>>,
    pub(crate) activity: Option<Activity<'static>>,
    pub(crate) principal: Option<Principal<'static>>,
    pub(crate) http_version: HttpVersion,
    pub(crate) tls: Option<TlsInfo>,
    /// The registered field names `declared_headers` answers for; `None`: those of the
    /// plugin last created with `testing::init`.
    pub(crate) request_headers: Option<Vec<String>>,
}

/// The first value of each of `names` in `headers`: what `declared-headers` and an
/// exchange's `request-headers` carry.
pub(crate) fn declared(headers: &[Header], names: Option<&[String]>) -> Vec<Option<String>> {
    let resolve = |names: &[String]| {
        names
            .iter()
            .map(|name| first_value(headers, name))
            .collect()
    };
    match names {
        Some(names) => resolve(names),
        None => with_state(|state| resolve(&state.registered_headers)),
    }
}

pub(crate) fn first_value(headers: &[Header], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value.clone())
}

impl Request {
    pub(crate) fn method(&self) -> String {
        self.method.clone()
    }

    pub(crate) fn scheme(&self) -> String {
        self.scheme.clone()
    }

    pub(crate) fn authority(&self) -> String {
        self.authority.clone()
    }

    pub(crate) fn path(&self) -> String {
        self.path.clone()
    }

    pub(crate) fn query(&self) -> Option<String> {
        self.query.clone()
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        first_value(&self.headers, name)
    }

    pub(crate) fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value.clone())
            .collect()
    }

    pub(crate) fn headers(&self) -> Vec<Header> {
        self.headers.clone()
    }

    pub(crate) fn client_address(&self) -> String {
        self.client_address.clone()
    }

    pub(crate) fn route(&self) -> String {
        self.route.clone()
    }

    pub(crate) fn upstream(&self) -> String {
        self.upstream.clone()
    }

    pub(crate) fn request_id(&self) -> String {
        self.request_id.clone()
    }

    pub(crate) fn body(&self) -> Option<Vec<u8>> {
        self.body.clone()
    }

    pub(crate) fn signer(&self) -> Option<Signer<'static>> {
        self.signer.clone()
    }

    pub(crate) fn declared_headers(&self) -> crate::DeclaredHeaders {
        crate::DeclaredHeaders::from_values(declared(
            &self.headers,
            self.request_headers.as_deref(),
        ))
    }

    pub(crate) fn activity(&self) -> Option<Activity<'static>> {
        self.activity.clone()
    }

    pub(crate) fn principal(&self) -> Option<Principal<'static>> {
        self.principal.clone()
    }

    pub(crate) fn http_version(&self) -> HttpVersion {
        self.http_version
    }

    pub(crate) fn tls(&self) -> Option<TlsInfo> {
        self.tls.clone()
    }
}

/// A response's parts, as [`TestResponse`](super::TestResponse) built them.
#[derive(Clone, Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) origin: Origin,
    pub(crate) error: Option<String>,
    pub(crate) headers: Vec<Header>,
    pub(crate) endpoint: Option<String>,
    pub(crate) upstream_latency: Option<u64>,
    pub(crate) elapsed: u64,
}

impl Response {
    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    pub(crate) fn origin(&self) -> Origin {
        self.origin
    }

    pub(crate) fn error(&self) -> Option<String> {
        self.error.clone()
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        first_value(&self.headers, name)
    }

    pub(crate) fn headers(&self) -> Vec<Header> {
        self.headers.clone()
    }

    pub(crate) fn endpoint(&self) -> Option<String> {
        self.endpoint.clone()
    }

    pub(crate) fn upstream_latency(&self) -> Option<u64> {
        self.upstream_latency
    }

    pub(crate) fn elapsed(&self) -> u64 {
        self.elapsed
    }
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum SeriesValue {
    Value(f64),
    Histogram {
        count: u64,
        sum: f64,
        /// Per bucket (not cumulative), same order as the metric's bounds.
        counts: Vec<u64>,
    },
}

#[derive(Debug)]
pub(crate) struct Metric {
    pub(crate) kind: Kind,
    pub(crate) labels: Vec<String>,
    pub(crate) buckets: Vec<f64>,
    pub(crate) series: BTreeMap<Vec<String>, SeriesValue>,
    /// Drops by reason: `labels`, `value`, `series_cap`.
    pub(crate) drops: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
pub(crate) struct State {
    /// Bumped by `reset`, so handles declared before it are recognised as stale.
    pub(crate) generation: u64,
    pub(crate) metrics: BTreeMap<String, Metric>,
    pub(crate) max_series: usize,
    pub(crate) logs: Vec<(Level, String)>,
    pub(crate) log_level: Level,
    /// Series handed out by `series`, by number.
    resolved: Vec<(String, Resolution)>,
    /// The request fields the plugin last created with `testing::init` registered.
    pub(crate) registered_headers: Vec<String>,
    /// The test clock: nanoseconds of the monotonic clock, and of the wall clock since the
    /// Unix epoch.
    pub(crate) monotonic_ns: u64,
    pub(crate) wall_ns: u128,
    pub(crate) store: store::Store,
    /// Scripted outbound answers by URL, and the requests sent.
    pub(crate) outbound_replies: Vec<(String, Result<OutboundResponse, OutboundError>)>,
    pub(crate) outbound_sent: Vec<OutboundRequest>,
    /// Whether a closure given to `testing::as_inline_hook` runs.
    pub(crate) inline_hook: bool,
    pub(crate) upstreams: Vec<crate::gateway::UpstreamInfo>,
}

/// Where the test clock starts: one second into the monotonic clock, and 2026-01-01T00:00Z.
pub(crate) const START_MONOTONIC_NS: u64 = 1_000_000_000;
pub(crate) const START_WALL_NS: u128 = 1_767_225_600 * 1_000_000_000;

impl State {
    const fn new(generation: u64) -> Self {
        State {
            generation,
            metrics: BTreeMap::new(),
            max_series: DEFAULT_MAX_SERIES,
            logs: Vec::new(),
            log_level: Level::Trace,
            resolved: Vec::new(),
            registered_headers: Vec::new(),
            monotonic_ns: START_MONOTONIC_NS,
            wall_ns: START_WALL_NS,
            store: store::Store::new(),
            outbound_replies: Vec::new(),
            outbound_sent: Vec::new(),
            inline_hook: false,
            upstreams: Vec::new(),
        }
    }
}

thread_local! {
    // Per thread: the test harness runs each test on its own thread, so tests running in
    // parallel never see each other's metrics or log lines.
    static STATE: RefCell<State> = const { RefCell::new(State::new(0)) };
}

pub(crate) fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|state| f(&mut state.borrow_mut()))
}

pub(crate) fn reset() {
    with_state(|state| *state = State::new(state.generation + 1));
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn declare(name: &str, kind: Kind, labels: &[&str], buckets: &[f64]) -> Result<Handle, String> {
    if !valid_metric_name(name) {
        return Err(format!(
            "metric name {name:?} is not a Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        ));
    }
    if name.starts_with("fedgate_") {
        return Err(format!(
            "metric name {name:?} starts with `fedgate_`, which is the gateway's own"
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        if !valid_label_name(label) {
            return Err(format!("label name {label:?} of {name} is not valid"));
        }
        if labels[..i].contains(label) {
            return Err(format!("label name {label:?} of {name} is repeated"));
        }
        if kind == Kind::Histogram && *label == "le" {
            return Err(format!(
                "label name \"le\" of {name} is reserved for histogram buckets"
            ));
        }
    }
    let buckets = if kind != Kind::Histogram {
        Vec::new()
    } else if buckets.is_empty() {
        DEFAULT_BUCKETS.to_vec()
    } else {
        if buckets.iter().any(|bound| !bound.is_finite())
            || buckets.windows(2).any(|pair| pair[0] >= pair[1])
        {
            return Err(format!(
                "buckets of {name} must be finite and strictly increasing"
            ));
        }
        buckets.to_vec()
    };
    with_state(|state| {
        if let Some(existing) = state.metrics.get(name) {
            if existing.kind != kind || existing.labels != labels {
                return Err(format!(
                    "metric {name} is already declared as a {} with labels [{}]",
                    existing.kind.name(),
                    existing.labels.join(", ")
                ));
            }
        } else {
            state.metrics.insert(
                name.to_owned(),
                Metric {
                    kind,
                    labels: labels.iter().map(|label| (*label).to_owned()).collect(),
                    buckets,
                    series: BTreeMap::new(),
                    drops: BTreeMap::new(),
                },
            );
        }
        Ok(Handle {
            name: name.to_owned(),
            generation: state.generation,
        })
    })
}

/// Which update is applied to a series.
#[derive(Clone, Copy)]
enum Update {
    Add(f64),
    Set(f64),
    Observe(f64),
}

/// Where a label set leads, as the host resolves it.
#[derive(Clone, Debug)]
enum Resolution {
    /// The series with these label values (within the cap, or the `other` series).
    Series { key: Vec<String>, overflow: bool },
    /// Labels that do not fit the declaration.
    Invalid,
}

#[derive(Debug)]
struct Handle {
    name: String,
    generation: u64,
}

/// A series number, as `Counter::series` and its siblings hand out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Series {
    generation: u64,
    index: usize,
}

impl Metric {
    /// Resolves `labels`, creating the series (at zero) within the cap, as the host does.
    fn resolve(&mut self, labels: &[&str], max_series: usize) -> Resolution {
        if labels.len() != self.labels.len()
            || labels
                .iter()
                .any(|label| label.len() > MAX_LABEL_VALUE_BYTES)
        {
            return Resolution::Invalid;
        }
        let mut key: Vec<String> = labels.iter().map(|label| (*label).to_owned()).collect();
        let mut overflow = false;
        if !self.series.contains_key(&key) {
            let other = vec!["other".to_owned(); self.labels.len()];
            let capped = self
                .series
                .keys()
                .filter(|series| **series != other)
                .count();
            if capped >= max_series && key != other {
                key = other;
                overflow = true;
            }
        }
        let buckets = self.buckets.len();
        let kind = self.kind;
        self.series
            .entry(key.clone())
            .or_insert_with(|| match kind {
                Kind::Histogram => SeriesValue::Histogram {
                    count: 0,
                    sum: 0.0,
                    counts: vec![0; buckets],
                },
                Kind::Counter | Kind::Gauge => SeriesValue::Value(0.0),
            });
        Resolution::Series { key, overflow }
    }

    /// Whether `update` carries a value this metric accepts; panics (where the host traps)
    /// when the update does not fit the metric's type.
    fn accepts(&self, update: Update) -> bool {
        match (update, self.kind) {
            (Update::Add(value), Kind::Counter) => value.is_finite() && value >= 0.0,
            (Update::Add(value) | Update::Set(value), Kind::Gauge)
            | (Update::Observe(value), Kind::Histogram) => value.is_finite(),
            (_, kind) => panic!("this update does not apply to a {}", kind.name()),
        }
    }

    /// Applies `update` to a resolved series.
    fn apply(&mut self, resolution: &Resolution, update: Update) {
        if !self.accepts(update) {
            *self.drops.entry("value").or_default() += 1;
            return;
        }
        let Resolution::Series { key, overflow } = resolution else {
            *self.drops.entry("labels").or_default() += 1;
            return;
        };
        if *overflow {
            *self.drops.entry("series_cap").or_default() += 1;
        }
        let series = self
            .series
            .get_mut(key)
            .expect("resolved series stay until reset");
        match (series, update) {
            (SeriesValue::Value(current), Update::Add(value)) => *current += value,
            (SeriesValue::Value(current), Update::Set(value)) => *current = value,
            (SeriesValue::Histogram { count, sum, counts }, Update::Observe(value)) => {
                *count += 1;
                *sum += value;
                if let Some(i) = self.buckets.iter().position(|bound| value <= *bound) {
                    counts[i] += 1;
                }
            }
            _ => unreachable!("a metric's series match its kind"),
        }
    }
}

fn check_generation(state: &State, generation: u64, what: &str) {
    assert_eq!(
        state.generation, generation,
        "{what} was declared before testing::reset(); declare it again (re-create the \
         plugin) after resetting"
    );
}

impl Handle {
    fn with_metric<R>(
        &self,
        f: impl FnOnce(&mut Metric, usize, &mut Vec<(String, Resolution)>) -> R,
    ) -> R {
        with_state(|state| {
            check_generation(state, self.generation, &format!("metric {}", self.name));
            let max_series = state.max_series;
            let metric = state
                .metrics
                .get_mut(&self.name)
                .expect("declared metrics stay until reset");
            f(metric, max_series, &mut state.resolved)
        })
    }

    fn update(&self, labels: &[&str], update: Update) {
        self.with_metric(|metric, max_series, _| {
            // The host checks the value before it looks the series up.
            if !metric.accepts(update) {
                *metric.drops.entry("value").or_default() += 1;
                return;
            }
            let resolution = metric.resolve(labels, max_series);
            metric.apply(&resolution, update);
        });
    }

    fn series(&self, labels: &[&str]) -> Series {
        self.with_metric(|metric, max_series, resolved| {
            let resolution = metric.resolve(labels, max_series);
            resolved.push((self.name.clone(), resolution));
            Series {
                generation: self.generation,
                index: resolved.len() - 1,
            }
        })
    }
}

fn update_series(series: Series, update: Update) {
    with_state(|state| {
        check_generation(state, series.generation, "a metric series");
        let (name, resolution) = &state.resolved[series.index];
        state
            .metrics
            .get_mut(name)
            .expect("declared metrics stay until reset")
            .apply(resolution, update);
    });
}

pub(crate) fn series_add(series: Series, value: f64) {
    update_series(series, Update::Add(value));
}

pub(crate) fn series_set(series: Series, value: f64) {
    update_series(series, Update::Set(value));
}

pub(crate) fn series_observe(series: Series, value: f64) {
    update_series(series, Update::Observe(value));
}

#[derive(Debug)]
pub(crate) struct Counter(Handle);

impl Counter {
    pub(crate) fn add(&self, labels: &[&str], value: f64) {
        self.0.update(labels, Update::Add(value));
    }

    pub(crate) fn series(&self, labels: &[&str]) -> Series {
        self.0.series(labels)
    }
}

#[derive(Debug)]
pub(crate) struct Gauge(Handle);

impl Gauge {
    pub(crate) fn set(&self, labels: &[&str], value: f64) {
        self.0.update(labels, Update::Set(value));
    }

    pub(crate) fn add(&self, labels: &[&str], delta: f64) {
        self.0.update(labels, Update::Add(delta));
    }

    pub(crate) fn series(&self, labels: &[&str]) -> Series {
        self.0.series(labels)
    }
}

#[derive(Debug)]
pub(crate) struct Histogram(Handle);

impl Histogram {
    pub(crate) fn observe(&self, labels: &[&str], value: f64) {
        self.0.update(labels, Update::Observe(value));
    }

    pub(crate) fn series(&self, labels: &[&str]) -> Series {
        self.0.series(labels)
    }
}

pub(crate) fn declare_counter(name: &str, _help: &str, labels: &[&str]) -> Result<Counter, String> {
    declare(name, Kind::Counter, labels, &[]).map(Counter)
}

pub(crate) fn declare_gauge(name: &str, _help: &str, labels: &[&str]) -> Result<Gauge, String> {
    declare(name, Kind::Gauge, labels, &[]).map(Gauge)
}

pub(crate) fn declare_histogram(
    name: &str,
    _help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<Histogram, String> {
    declare(name, Kind::Histogram, labels, buckets).map(Histogram)
}

// ---------------------------------------------------------------------------------------
// Log
// ---------------------------------------------------------------------------------------

pub(crate) fn log(level: Level, message: &str) {
    if enabled(level) {
        // Captured by the test harness and shown when a test fails.
        eprintln!("[plugin {level}] {message}");
        with_state(|state| state.logs.push((level, message.to_owned())));
    }
}

pub(crate) fn enabled(level: Level) -> bool {
    with_state(|state| level >= state.log_level)
}

// ---------------------------------------------------------------------------------------
// Clocks
// ---------------------------------------------------------------------------------------

pub(crate) mod clocks {
    use super::with_state;

    /// The wall clock's reading, as the WIT's `datetime`.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Datetime {
        pub(crate) seconds: u64,
        pub(crate) nanoseconds: u32,
    }

    pub(crate) fn monotonic_now() -> u64 {
        with_state(|state| state.monotonic_ns)
    }

    pub(crate) fn wall_now() -> Datetime {
        with_state(|state| Datetime {
            seconds: u64::try_from(state.wall_ns / 1_000_000_000).unwrap_or(u64::MAX),
            nanoseconds: (state.wall_ns % 1_000_000_000) as u32,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------

pub(crate) mod store {
    use std::collections::BTreeMap;

    use super::with_state;
    use crate::store::StoreError;

    /// Keys longer than this are refused, as the ABI says.
    pub(crate) const MAX_KEY_BYTES: usize = 1024;
    /// The gateway's default bounds (`store_entries`, `store_value_bytes`).
    pub(crate) const DEFAULT_MAX_ENTRIES: usize = 10_000;
    pub(crate) const DEFAULT_MAX_VALUE_BYTES: usize = 64 << 10;

    #[derive(Debug)]
    struct Entry {
        value: Vec<u8>,
        /// Monotonic nanoseconds at which it expires.
        expires: Option<u64>,
        /// When it was last written, in writes: the least recently written goes first.
        written: u64,
    }

    /// The plugin's store, shared by every plugin value of the thread, with the gateway's
    /// bounds in entries and value size (its byte bound is not imitated).
    #[derive(Debug)]
    pub(crate) struct Store {
        entries: BTreeMap<String, Entry>,
        writes: u64,
        pub(crate) max_entries: usize,
        pub(crate) max_value_bytes: usize,
    }

    impl Store {
        pub(crate) const fn new() -> Self {
            Store {
                entries: BTreeMap::new(),
                writes: 0,
                max_entries: DEFAULT_MAX_ENTRIES,
                max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            }
        }

        fn live(&self, key: &str, now: u64) -> Option<&Entry> {
            self.entries
                .get(key)
                .filter(|entry| entry.expires.is_none_or(|at| at > now))
        }

        fn check(&self, key: &str, value_len: usize) -> Result<(), StoreError> {
            if key.len() > MAX_KEY_BYTES || value_len > self.max_value_bytes {
                return Err(StoreError::TooLarge);
            }
            Ok(())
        }

        /// Writes `key`, evicting as the gateway does when a new key does not fit: expired
        /// entries, then the one closest to expiring, then the least recently written.
        fn write(
            &mut self,
            key: &str,
            value: Vec<u8>,
            expires: Option<u64>,
            now: u64,
        ) -> Result<(), StoreError> {
            if !self.entries.contains_key(key) {
                self.entries
                    .retain(|_, entry| entry.expires.is_none_or(|at| at > now));
                if self.max_entries == 0 {
                    return Err(StoreError::Full);
                }
                while self.entries.len() >= self.max_entries {
                    let victim = self
                        .entries
                        .iter()
                        .min_by_key(|(_, entry)| {
                            (entry.expires.is_none(), entry.expires, entry.written)
                        })
                        .map(|(key, _)| key.clone())
                        .ok_or(StoreError::Full)?;
                    self.entries.remove(&victim);
                }
            }
            self.writes += 1;
            self.entries.insert(
                key.to_owned(),
                Entry {
                    value,
                    expires,
                    written: self.writes,
                },
            );
            Ok(())
        }
    }

    fn expiry(now: u64, ttl_ms: Option<u64>) -> Option<u64> {
        ttl_ms.map(|ms| now.saturating_add(ms.saturating_mul(1_000_000)))
    }

    pub(crate) fn get(key: &str) -> Option<Vec<u8>> {
        with_state(|state| {
            let now = state.monotonic_ns;
            state.store.live(key, now).map(|entry| entry.value.clone())
        })
    }

    pub(crate) fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), StoreError> {
        with_state(|state| {
            let now = state.monotonic_ns;
            state.store.check(key, value.len())?;
            state
                .store
                .write(key, value.to_vec(), expiry(now, ttl_ms), now)
        })
    }

    pub(crate) fn delete(key: &str) -> bool {
        with_state(|state| {
            let now = state.monotonic_ns;
            let was_set = state.store.live(key, now).is_some();
            state.store.entries.remove(key);
            was_set
        })
    }

    pub(crate) fn increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, StoreError> {
        with_state(|state| {
            let now = state.monotonic_ns;
            state.store.check(key, 0)?;
            let (current, expires) = match state.store.live(key, now) {
                Some(entry) => {
                    let text =
                        std::str::from_utf8(&entry.value).map_err(|_| StoreError::NotANumber)?;
                    let n: i64 = text.parse().map_err(|_| StoreError::NotANumber)?;
                    (n, entry.expires)
                }
                None => (0, expiry(now, ttl_ms)),
            };
            let sum = current.checked_add(delta).ok_or(StoreError::NotANumber)?;
            let value = sum.to_string().into_bytes();
            state.store.check(key, value.len())?;
            state.store.write(key, value, expires, now)?;
            Ok(sum)
        })
    }

    pub(crate) fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<bool, StoreError> {
        with_state(|state| {
            let now = state.monotonic_ns;
            state.store.check(key, value.len())?;
            let current = state
                .store
                .live(key, now)
                .map(|entry| entry.value.as_slice());
            if current != expected {
                return Ok(false);
            }
            state
                .store
                .write(key, value.to_vec(), expiry(now, ttl_ms), now)?;
            Ok(true)
        })
    }
}

// ---------------------------------------------------------------------------------------
// Outbound HTTP
// ---------------------------------------------------------------------------------------

pub(crate) mod outbound {
    use super::with_state;
    use crate::outbound::{OutboundError, OutboundRequest, OutboundResponse};

    pub(crate) fn send(request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        with_state(|state| {
            if state.inline_hook {
                return Err(OutboundError::NotHere);
            }
            let url = request.url.clone();
            state.outbound_sent.push(request);
            state
                .outbound_replies
                .iter()
                .rev()
                .find(|(scripted, _)| *scripted == url)
                .map(|(_, reply)| reply.clone())
                .unwrap_or_else(|| {
                    Err(OutboundError::NotAllowed(format!(
                        "{url} is not allowed (script it with testing::outbound_reply)"
                    )))
                })
        })
    }
}

// ---------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------

pub(crate) mod gateway {
    use super::with_state;
    use crate::gateway::UpstreamInfo;

    pub(crate) fn upstreams() -> Vec<UpstreamInfo> {
        with_state(|state| state.upstreams.clone())
    }
}
