//! Metrics a plugin declares once, in `init`, and updates by handle. The gateway serves them
//! on `/metrics` under the names the plugin gives them.
//!
//! Rules the gateway enforces (and the native backend in [`testing`](crate::testing)
//! imitates): names follow Prometheus syntax and must not start with `fedgate_`; plugins that
//! declare the same metric alike share it, a different type or label set is refused.
//! Every update names one value per declared label, in declaration order. Label sets beyond
//! the operator's per-metric series cap are counted under `other` for every label. Updates
//! with the wrong number of labels, a label value over 256 bytes or an invalid value
//! (negative or not finite for counters, not finite otherwise) are dropped and counted in
//! `fedgate_plugin_metric_drops_total`.
//!
//! A label set updated on every request is best resolved once, in `init`, with `series`:
//! the update then passes a number instead of label values, and the gateway finds the
//! series without hashing them.
//!
//! ```
//! use fedgate_sdk::Counter;
//!
//! let decisions = Counter::declare("policy_total", "Decisions.", &["decision"])?;
//! let allowed = decisions.series(&["allow"]);
//! allowed.inc();
//! # Ok::<(), String>(())
//! ```

#[cfg(target_arch = "wasm32")]
use crate::host::bindings::fedgate::plugin::metrics as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::backend as imp;

/// A counter: a value that only goes up. Name it with a `_total` suffix.
///
/// ```
/// use fedgate_sdk::Counter;
///
/// let activities = Counter::declare(
///     "federation_activities_total",
///     "ActivityPub activities received, by type and sending instance.",
///     &["type", "instance"],
/// )?;
/// activities.inc(&["Create", "example.org"]);
/// activities.add(&["Like", "example.org"], 2.0);
/// # Ok::<(), String>(())
/// ```
#[derive(Debug)]
pub struct Counter(imp::Counter);

impl Counter {
    /// Declares a counter with these label names. The error says what is wrong with the
    /// declaration.
    pub fn declare(name: &str, help: &str, labels: &[&str]) -> Result<Counter, String> {
        imp::declare_counter(name, help, labels).map(Counter)
    }

    /// Adds one to the series with these label values.
    pub fn inc(&self, labels: &[&str]) {
        self.0.add(labels, 1.0);
    }

    /// Adds `value` (finite, at least 0) to the series with these label values.
    pub fn add(&self, labels: &[&str], value: f64) {
        self.0.add(labels, value);
    }

    /// The series with these label values, resolved once for cheap updates. Resolving the
    /// same labels again gives the same series. Labels past the series cap resolve to the
    /// `other` series; invalid labels to a series that drops every update.
    pub fn series(&self, labels: &[&str]) -> CounterSeries {
        CounterSeries(self.0.series(labels))
    }
}

/// One series of a [`Counter`], from [`Counter::series`].
#[derive(Debug, Clone, Copy)]
pub struct CounterSeries(imp::Series);

impl CounterSeries {
    /// Adds one.
    pub fn inc(&self) {
        imp::series_add(self.0, 1.0);
    }

    /// Adds `value` (finite, at least 0).
    pub fn add(&self, value: f64) {
        imp::series_add(self.0, value);
    }
}

/// A gauge: a value that goes up and down.
///
/// ```
/// use fedgate_sdk::Gauge;
///
/// let ratio = Gauge::declare("upstream_slo_error_ratio", "Errors over the window.", &["upstream"])?;
/// ratio.set(&["app"], 0.25);
/// ratio.add(&["app"], -0.05);
/// # Ok::<(), String>(())
/// ```
#[derive(Debug)]
pub struct Gauge(imp::Gauge);

impl Gauge {
    /// Declares a gauge with these label names.
    pub fn declare(name: &str, help: &str, labels: &[&str]) -> Result<Gauge, String> {
        imp::declare_gauge(name, help, labels).map(Gauge)
    }

    /// Sets the series with these label values.
    pub fn set(&self, labels: &[&str], value: f64) {
        self.0.set(labels, value);
    }

    /// Adds `delta` (may be negative) to the series with these label values.
    pub fn add(&self, labels: &[&str], delta: f64) {
        self.0.add(labels, delta);
    }

    /// The series with these label values, resolved once for cheap updates (see
    /// [`Counter::series`]).
    pub fn series(&self, labels: &[&str]) -> GaugeSeries {
        GaugeSeries(self.0.series(labels))
    }
}

/// One series of a [`Gauge`], from [`Gauge::series`].
#[derive(Debug, Clone, Copy)]
pub struct GaugeSeries(imp::Series);

impl GaugeSeries {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        imp::series_set(self.0, value);
    }

    /// Adds `delta` (may be negative).
    pub fn add(&self, delta: f64) {
        imp::series_add(self.0, delta);
    }
}

/// A histogram with the buckets given at declaration.
///
/// ```
/// use fedgate_sdk::Histogram;
///
/// let sizes = Histogram::declare(
///     "activity_body_bytes",
///     "Sizes of activity bodies.",
///     &[],
///     &[256.0, 1024.0, 4096.0, 16384.0],
/// )?;
/// sizes.observe(&[], 1800.0);
/// # Ok::<(), String>(())
/// ```
#[derive(Debug)]
pub struct Histogram(imp::Histogram);

impl Histogram {
    /// Declares a histogram. `buckets` are the upper bounds, increasing; empty means the
    /// Prometheus defaults (5 ms to 10 s, for values in seconds).
    pub fn declare(
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<Histogram, String> {
        imp::declare_histogram(name, help, labels, buckets).map(Histogram)
    }

    /// Records one observation in the series with these label values.
    pub fn observe(&self, labels: &[&str], value: f64) {
        self.0.observe(labels, value);
    }

    /// The series with these label values, resolved once for cheap updates (see
    /// [`Counter::series`]).
    pub fn series(&self, labels: &[&str]) -> HistogramSeries {
        HistogramSeries(self.0.series(labels))
    }
}

/// One series of a [`Histogram`], from [`Histogram::series`].
#[derive(Debug, Clone, Copy)]
pub struct HistogramSeries(imp::Series);

impl HistogramSeries {
    /// Records one observation.
    pub fn observe(&self, value: f64) {
        imp::series_observe(self.0, value);
    }
}
