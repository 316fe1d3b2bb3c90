//! The in-memory stand-in for the gateway's imports, used off `wasm32`. It exposes the same
//! names and signatures as the generated bindings so the SDK's wrappers read the same on
//! both targets, and it imitates the host's checks (metric names, label counts, values,
//! the series cap) so a plugin's tests catch what the gateway would drop.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::log::Level;
use crate::{Header, Origin};

/// Label values longer than this are dropped by the host.
const MAX_LABEL_VALUE_BYTES: usize = 256;

/// The series cap the gateway applies by default (`max_series`).
pub(crate) const DEFAULT_MAX_SERIES: usize = 1000;

/// The Prometheus default buckets, which the host uses when a histogram declares none.
const DEFAULT_BUCKETS: [f64; 11] = [
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
    pub(crate) signer: Option<Signer>,
}

/// The verified signer, as the gateway's `signer` record carries it.
#[derive(Clone, Debug)]
pub(crate) struct Signer {
    pub(crate) key_id: String,
    pub(crate) instance: String,
}

fn first_value(headers: &[Header], name: &str) -> Option<String> {
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

    pub(crate) fn signer(&self) -> Option<Signer> {
        self.signer.clone()
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
}

impl State {
    const fn new(generation: u64) -> Self {
        State {
            generation,
            metrics: BTreeMap::new(),
            max_series: DEFAULT_MAX_SERIES,
            logs: Vec::new(),
            log_level: Level::Trace,
            resolved: Vec::new(),
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
            (Update::Add(value) | Update::Set(value), Kind::Gauge) => value.is_finite(),
            (Update::Observe(value), Kind::Histogram) => value.is_finite(),
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
