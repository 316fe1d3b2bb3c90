//! Judges each upstream against service-level thresholds over its most recent responses, and
//! reports the verdict through the gateway's `/health`.
//!
//! An **observer**: it reads each finished exchange off the request path, in the batches the
//! gateway hands it, and keeps a window of the last `window` responses of each upstream.
//! An error is a 5xx status or an answer the gateway gave in the upstream's place
//! (`connect`, `timeout`, `reset`, `protocol`, no healthy endpoint, connection limit, open
//! circuit); requests the gateway refused itself (blocklist, rate limit, auth, signatures)
//! and plugins' local replies say nothing about the upstream and are not counted.
//! `health-check` reports `degraded` or `unhealthy` when an upstream's error ratio, or its
//! latency at `latency_quantile`, exceeds the matching threshold, naming the upstream and
//! the figures; an upstream that is not `critical` in the gateway's configuration is
//! reported at most `degraded`. Gauges `upstream_slo_error_ratio{upstream}`,
//! `upstream_slo_latency_seconds{upstream,percentile}` and
//! `upstream_slo_window_responses{upstream}` show the same figures.
//!
//! **The window lives in the plugin's store**, shared by all its instances: `observe` runs
//! on one instance at a time but not always the same one, and `health-check` runs on any
//! instance, so every instance must see the same window. Per upstream the store holds the
//! window as a ring of samples in chunks of [`CHUNK`] (`slo/<upstream>/<n>`), its position
//! (`slo/<upstream>/pushed`), and a summary the health check reads
//! (`slo/<upstream>/summary`: count, errors and the exported latency quantiles). An
//! instance keeps the window it last wrote and reads it back from the store only when
//! another instance wrote since; each batch writes back only the chunks it changed.
//!
//! The latency gauge's label is `percentile`, with values `p50`, `p90`, `p99` (and, for a
//! `latency_quantile` of 0.999, `p99.9`), not `quantile="0.99"`: Prometheus reserves
//! `quantile` for the samples of a summary, and `promtool check metrics` rejects a gauge that
//! carries it. A summary would be the wrong type: its quantiles are over a time window,
//! come with `_sum` and `_count`, and must not be averaged or aggregated, whereas these are
//! plain figures over the last `window` responses that may be set, compared and graphed like
//! any gauge. One metric with one label keeps every quantile on one dashboard query
//! (`upstream_slo_latency_seconds{percentile="p99"}`), and `p99` is how the health report
//! names the same figure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use fedgate_sdk::{
    export_plugin, gateway, log, store, Config, Exchange, Gauge, HealthReport, HealthStatus, Hooks,
    Origin, Plugin,
};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The largest window allowed.
const MAX_WINDOW: usize = 100_000;

/// Samples per store value: 8 KiB, well within the store's default value bound (64 KiB).
const CHUNK: usize = 1024;

/// Quantiles always exported on `upstream_slo_latency_seconds` (as `percentile` `p50`, `p90`
/// and `p99`), besides `latency_quantile`.
const EXPORTED_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_window")]
    window: usize,
    #[serde(default = "default_min_samples")]
    min_samples: usize,
    #[serde(default = "default_degraded_error_ratio")]
    degraded_error_ratio: f64,
    #[serde(default = "default_unhealthy_error_ratio")]
    unhealthy_error_ratio: f64,
    #[serde(default = "default_latency_quantile")]
    latency_quantile: f64,
    #[serde(default = "default_degraded_latency")]
    degraded_latency: Threshold,
    #[serde(default = "default_unhealthy_latency")]
    unhealthy_latency: Threshold,
    #[serde(default = "default_publish_every")]
    publish_every: usize,
}

fn default_window() -> usize {
    100
}

fn default_min_samples() -> usize {
    20
}

fn default_degraded_error_ratio() -> f64 {
    0.05
}

fn default_unhealthy_error_ratio() -> f64 {
    0.25
}

fn default_latency_quantile() -> f64 {
    0.99
}

fn default_degraded_latency() -> Threshold {
    Threshold(Some(Duration::from_secs(1)))
}

fn default_unhealthy_latency() -> Threshold {
    Threshold(Some(Duration::from_secs(5)))
}

fn default_publish_every() -> usize {
    10
}

/// A latency threshold: seconds as a number, a duration such as `"250ms"` or `"2s"`, or
/// `"off"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Threshold(Option<Duration>);

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ThresholdVisitor;

        impl Visitor<'_> for ThresholdVisitor {
            type Value = Threshold;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds, a duration such as \"250ms\", or \"off\"")
            }

            fn visit_f64<E: de::Error>(self, seconds: f64) -> Result<Threshold, E> {
                Duration::try_from_secs_f64(seconds)
                    .ok()
                    .filter(|duration| !duration.is_zero())
                    .map(|duration| Threshold(Some(duration)))
                    .ok_or_else(|| E::custom("a latency threshold must be above 0"))
            }

            fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Threshold, E> {
                self.visit_f64(seconds as f64)
            }

            fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Threshold, E> {
                self.visit_f64(seconds as f64)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Threshold, E> {
                if text.trim() == "off" {
                    return Ok(Threshold(None));
                }
                parse_duration(text)
                    .map(|duration| Threshold(Some(duration)))
                    .map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ThresholdVisitor)
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as \"250ms\""))?;
    let seconds = match unit.trim() {
        "ns" => number / 1e9,
        "us" | "µs" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "" => return Err(format!("{text:?} has no unit (ms, s, m)")),
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("{text:?} must be above 0"))
}

/// One response as the window keeps it, packed in a `u64`: bit 63 says it was an error,
/// bit 62 that it has a latency, the low 62 bits are the latency in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample(u64);

impl Sample {
    const ERROR: u64 = 1 << 63;
    const HAS_LATENCY: u64 = 1 << 62;
    const LATENCY: u64 = Self::HAS_LATENCY - 1;

    fn new(error: bool, latency: Option<Duration>) -> Self {
        let mut bits = if error { Self::ERROR } else { 0 };
        if let Some(latency) = latency {
            let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
            bits |= Self::HAS_LATENCY | nanos.min(Self::LATENCY);
        }
        Sample(bits)
    }

    fn error(self) -> bool {
        self.0 & Self::ERROR != 0
    }

    fn latency(self) -> Option<u64> {
        (self.0 & Self::HAS_LATENCY != 0).then_some(self.0 & Self::LATENCY)
    }

    /// The sample an exchange makes, or `None` when it says nothing about the upstream.
    fn of(exchange: &Exchange<'_>) -> Option<Sample> {
        if !exchange.admitted() {
            return None;
        }
        let latency = match (exchange.upstream_latency, exchange.origin) {
            (Some(latency), _) => Some(latency),
            // A timeout's duration is what the client waited for the upstream; other
            // failures (connect, reset, protocol) say nothing about its latency.
            (None, Origin::Gateway) if exchange.error.as_deref() == Some("timeout") => {
                Some(exchange.duration)
            }
            (None, _) => None,
        };
        Some(Sample::new(exchange.is_error(), latency))
    }
}

/// The last responses of one upstream: a ring of at most `capacity` samples, the next one
/// written at `pushed % capacity`. Order within the window does not matter to the figures.
#[derive(Debug, Default)]
struct Window {
    ring: Vec<Sample>,
    /// Samples pushed since the window started.
    pushed: u64,
    errors: usize,
    /// Responses recorded since the latency gauges were last published.
    unpublished: usize,
}

impl Window {
    fn push(&mut self, sample: Sample, capacity: usize) {
        let at = (self.pushed % capacity as u64) as usize;
        if self.ring.len() < capacity {
            self.ring.push(sample);
        } else {
            self.errors -= usize::from(self.ring[at].error());
            self.ring[at] = sample;
        }
        self.errors += usize::from(sample.error());
        self.pushed += 1;
        self.unpublished += 1;
    }

    /// The chunks that pushes since `before` changed (every chunk when the whole ring was
    /// written over).
    fn changed_chunks(&self, before: u64, capacity: usize) -> BTreeSet<usize> {
        let chunks = self.ring.len().div_ceil(CHUNK);
        if self.pushed - before >= self.ring.len() as u64 {
            return (0..chunks).collect();
        }
        (before..self.pushed)
            .map(|n| (n % capacity as u64) as usize / CHUNK)
            .collect()
    }

    fn encode_chunk(&self, chunk: usize) -> Vec<u8> {
        let end = ((chunk + 1) * CHUNK).min(self.ring.len());
        self.ring[chunk * CHUNK..end]
            .iter()
            .flat_map(|sample| sample.0.to_le_bytes())
            .collect()
    }

    /// The window's figures.
    fn summary(&self, quantiles: &[(f64, String)]) -> Summary {
        let mut latencies: Vec<u64> = self.ring.iter().filter_map(|s| s.latency()).collect();
        latencies.sort_unstable();
        Summary {
            count: self.ring.len(),
            errors: self.errors,
            latencies: latencies.len(),
            quantiles: quantiles
                .iter()
                .map(|(q, _)| quantile(&latencies, *q))
                .collect(),
        }
    }
}

/// What the health check and the gauges need of a window, as the store keeps it for every
/// instance: `<count> <errors> <latency samples> <nanos at each exported quantile, or ->`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Summary {
    count: usize,
    errors: usize,
    latencies: usize,
    /// At the exported quantiles, in order.
    quantiles: Vec<Option<u64>>,
}

impl Summary {
    fn encode(&self) -> String {
        let mut text = format!("{} {} {}", self.count, self.errors, self.latencies);
        for q in &self.quantiles {
            match q {
                Some(nanos) => text.push_str(&format!(" {nanos}")),
                None => text.push_str(" -"),
            }
        }
        text
    }

    /// `None` for anything but a summary with `quantiles` quantiles (one written under
    /// another configuration is ignored until the next batch replaces it).
    fn decode(bytes: &[u8], quantiles: usize) -> Option<Summary> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut words = text.split(' ');
        let mut number = || words.next()?.parse::<usize>().ok();
        let (count, errors, latencies) = (number()?, number()?, number()?);
        let quantiles: Vec<Option<u64>> = words
            .map(|word| match word {
                "-" => Some(None),
                nanos => nanos.parse().ok().map(Some),
            })
            .collect::<Option<_>>()
            .filter(|found: &Vec<_>| found.len() == quantiles)?;
        Some(Summary {
            count,
            errors,
            latencies,
            quantiles,
        })
    }

    fn error_ratio(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.errors as f64 / self.count as f64
        }
    }
}

fn pushed_key(upstream: &str) -> String {
    format!("slo/{upstream}/pushed")
}

fn chunk_key(upstream: &str, chunk: usize) -> String {
    format!("slo/{upstream}/{chunk}")
}

fn summary_key(upstream: &str) -> String {
    format!("slo/{upstream}/summary")
}

/// The window's position as the store keeps it: `<pushed> <capacity>`.
fn read_pushed(upstream: &str) -> Option<(u64, usize)> {
    let bytes = store::get(&pushed_key(upstream))?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let (pushed, capacity) = text.split_once(' ')?;
    Some((pushed.parse().ok()?, capacity.parse().ok()?))
}

#[derive(Debug)]
struct UpstreamSlo {
    capacity: usize,
    min_samples: usize,
    degraded_error_ratio: f64,
    unhealthy_error_ratio: f64,
    latency_quantile: f64,
    /// Where `latency_quantile` sits among `quantiles`.
    judged_quantile: usize,
    degraded_latency: Option<Duration>,
    unhealthy_latency: Option<Duration>,
    publish_every: usize,
    /// The exported quantiles with their `percentile` label values, one quantile per value.
    quantiles: Vec<(f64, String)>,
    /// The windows this instance last wrote or read; the store is the truth.
    windows: BTreeMap<String, Window>,
    /// Whether a failed store write was logged, so it is logged once per instance.
    warned_store: bool,
    error_ratio: Gauge,
    latency: Gauge,
    responses: Gauge,
}

impl Plugin for UpstreamSlo {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        validate(&settings)?;
        let quantiles = exported_quantiles(settings.latency_quantile);
        let judged = percentile_label(settings.latency_quantile);
        let judged_quantile = quantiles
            .iter()
            .position(|(_, label)| *label == judged)
            .unwrap_or_default();
        Ok(UpstreamSlo {
            capacity: settings.window,
            min_samples: settings.min_samples,
            degraded_error_ratio: settings.degraded_error_ratio,
            unhealthy_error_ratio: settings.unhealthy_error_ratio,
            latency_quantile: settings.latency_quantile,
            judged_quantile,
            degraded_latency: settings.degraded_latency.0,
            unhealthy_latency: settings.unhealthy_latency.0,
            publish_every: settings.publish_every,
            quantiles,
            windows: BTreeMap::new(),
            warned_store: false,
            error_ratio: Gauge::declare(
                "upstream_slo_error_ratio",
                "Share of errors (5xx, or answered by the gateway) over the upstream's last \
                 responses.",
                &["upstream"],
            )?,
            latency: Gauge::declare(
                "upstream_slo_latency_seconds",
                "Upstream latency percentiles (p50, p90, p99, ...) over the upstream's last \
                 responses.",
                &["upstream", "percentile"],
            )?,
            responses: Gauge::declare(
                "upstream_slo_window_responses",
                "Responses in the upstream's window.",
                &["upstream"],
            )?,
        })
    }

    fn hooks(&self) -> Hooks {
        Hooks::OBSERVE | Hooks::HEALTH_CHECK
    }

    fn observe(&mut self, exchanges: &[Exchange<'_>]) {
        // Each upstream's window as it was before this batch: read back once, written once.
        let mut before: BTreeMap<String, u64> = BTreeMap::new();
        for exchange in exchanges {
            let Some(sample) = Sample::of(exchange) else {
                continue;
            };
            let upstream = &*exchange.upstream;
            if !before.contains_key(upstream) {
                let pushed = self.load(upstream);
                before.insert(upstream.to_owned(), pushed);
            }
            let capacity = self.capacity;
            // Found by `&str`: an upstream's name is copied once, not per exchange.
            match self.windows.get_mut(upstream) {
                Some(window) => window.push(sample, capacity),
                None => self
                    .windows
                    .entry(upstream.to_owned())
                    .or_default()
                    .push(sample, capacity),
            }
        }
        for (upstream, pushed) in before {
            self.save(&upstream, pushed);
        }
    }

    fn health_check(&mut self) -> HealthReport {
        let mut upstreams = gateway::upstreams();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        let mut worst = HealthStatus::Healthy;
        let mut problems = Vec::new();
        let (mut seen, mut judged) = (0, 0);
        for upstream in &upstreams {
            let Some(summary) = store::get(&summary_key(&upstream.name))
                .and_then(|bytes| Summary::decode(&bytes, self.quantiles.len()))
            else {
                continue;
            };
            seen += 1;
            judged += usize::from(summary.count >= self.min_samples);
            self.publish(&upstream.name, &summary, true);
            let (mut status, findings) = self.judge(&summary);
            let mut name = upstream.name.clone();
            if !upstream.critical && status > HealthStatus::Degraded {
                status = HealthStatus::Degraded;
                name.push_str(" (not critical)");
            }
            if status > HealthStatus::Healthy {
                problems.push(format!("upstream {name} {status}: {}", findings.join(", ")));
            }
            worst = worst.max(status);
        }
        if worst == HealthStatus::Healthy {
            return HealthReport::healthy().with_message(format!(
                "{judged} of {seen} upstreams judged, all within thresholds"
            ));
        }
        HealthReport {
            status: worst,
            message: problems.join("; "),
        }
    }
}

impl UpstreamSlo {
    /// Makes the cached window of `upstream` the store's, reading it back when another
    /// instance wrote since (or none is cached); returns its position.
    fn load(&mut self, upstream: &str) -> u64 {
        let stored = read_pushed(upstream).filter(|(_, capacity)| *capacity == self.capacity);
        let Some((pushed, _)) = stored else {
            // Nothing stored, or a window of another size: start afresh.
            self.windows.insert(upstream.to_owned(), Window::default());
            return 0;
        };
        if self
            .windows
            .get(upstream)
            .is_some_and(|window| window.pushed == pushed)
        {
            return pushed;
        }
        let len = usize::try_from(pushed)
            .unwrap_or(usize::MAX)
            .min(self.capacity);
        let mut ring = Vec::with_capacity(len);
        for chunk in 0..len.div_ceil(CHUNK) {
            let want = (len - chunk * CHUNK).min(CHUNK) * 8;
            match store::get(&chunk_key(upstream, chunk)) {
                Some(bytes) if bytes.len() == want => ring.extend(
                    bytes
                        .chunks_exact(8)
                        .map(|b| Sample(u64::from_le_bytes(b.try_into().unwrap_or_default()))),
                ),
                // Evicted or damaged: the window cannot be trusted, start afresh.
                _ => {
                    log::warn!("the window of upstream {upstream} was lost from the store; it starts again");
                    self.windows.insert(upstream.to_owned(), Window::default());
                    return 0;
                }
            }
        }
        let errors = ring.iter().filter(|s| s.error()).count();
        self.windows.insert(
            upstream.to_owned(),
            Window {
                ring,
                pushed,
                errors,
                unpublished: 0,
            },
        );
        pushed
    }

    /// Writes what this batch changed of `upstream`'s window back to the store, with its
    /// summary, and sets its gauges.
    fn save(&mut self, upstream: &str, before: u64) {
        let Some(window) = self.windows.get(upstream) else {
            return;
        };
        let mut result = Ok(());
        for chunk in window.changed_chunks(before, self.capacity) {
            result = result.and(store::set(
                &chunk_key(upstream, chunk),
                &window.encode_chunk(chunk),
                None,
            ));
        }
        let pushed = format!("{} {}", window.pushed, self.capacity);
        result = result.and(store::set(&pushed_key(upstream), pushed.as_bytes(), None));
        let summary = window.summary(&self.quantiles);
        result = result.and(store::set(
            &summary_key(upstream),
            summary.encode().as_bytes(),
            None,
        ));
        if let Err(error) = result {
            if !self.warned_store {
                self.warned_store = true;
                log::warn!(
                    "the window of upstream {upstream} could not be stored ({error}): raise \
                     the plugin's store_entries or store_value_bytes"
                );
            }
        }
        let with_latency = window.unpublished >= self.publish_every;
        if with_latency {
            if let Some(window) = self.windows.get_mut(upstream) {
                window.unpublished = 0;
            }
        }
        self.publish(upstream, &summary, with_latency);
    }

    /// Sets the upstream's gauges: the error ratio and window size always, the latency
    /// quantiles when `with_latency`.
    fn publish(&self, upstream: &str, summary: &Summary, with_latency: bool) {
        self.error_ratio.set(&[upstream], summary.error_ratio());
        self.responses.set(&[upstream], summary.count as f64);
        if !with_latency {
            return;
        }
        for ((_, label), nanos) in self.quantiles.iter().zip(&summary.quantiles) {
            if let Some(nanos) = nanos {
                self.latency.set(&[upstream, label], *nanos as f64 / 1e9);
            }
        }
    }

    /// The window's status and what is wrong with it.
    fn judge(&self, summary: &Summary) -> (HealthStatus, Vec<String>) {
        let count = summary.count;
        if count < self.min_samples {
            return (HealthStatus::Healthy, Vec::new());
        }
        let mut status = HealthStatus::Healthy;
        let mut findings = Vec::new();

        let ratio = summary.error_ratio();
        let ratio_status = if ratio > self.unhealthy_error_ratio {
            Some((HealthStatus::Unhealthy, self.unhealthy_error_ratio))
        } else if ratio > self.degraded_error_ratio {
            Some((HealthStatus::Degraded, self.degraded_error_ratio))
        } else {
            None
        };
        if let Some((level, threshold)) = ratio_status {
            status = status.max(level);
            findings.push(format!(
                "error ratio {} over the last {count} responses ({level} above {})",
                percent(ratio),
                percent(threshold)
            ));
        }

        if let Some(Some(nanos)) = summary.quantiles.get(self.judged_quantile) {
            let latency = Duration::from_nanos(*nanos);
            let latency_status = match (self.unhealthy_latency, self.degraded_latency) {
                (Some(limit), _) if latency > limit => Some((HealthStatus::Unhealthy, limit)),
                (_, Some(limit)) if latency > limit => Some((HealthStatus::Degraded, limit)),
                _ => None,
            };
            if let Some((level, limit)) = latency_status {
                status = status.max(level);
                findings.push(format!(
                    "{} latency {} over the last {} responses ({level} above {})",
                    percentile_label(self.latency_quantile),
                    seconds(latency),
                    summary.latencies,
                    seconds(limit)
                ));
            }
        }
        (status, findings)
    }
}

/// The nearest-rank quantile of sorted values.
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A number in the shortest form up to 6 decimals: `50`, `99`, `99.9`.
fn short_number(n: f64) -> String {
    let text = format!("{n:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A quantile as its `percentile` label value (and as the health report names it): `p50`,
/// `p99`, `p99.9`.
fn percentile_label(q: f64) -> String {
    format!("p{}", short_number(q * 100.0))
}

/// The quantiles exported on the latency gauge, ascending, with their label values: the
/// fixed ones and `latency_quantile`. A `latency_quantile` whose label is one of theirs
/// (`0.99` or `0.9900000001` both give `p99`) adds no series.
fn exported_quantiles(latency_quantile: f64) -> Vec<(f64, String)> {
    let mut quantiles: Vec<(f64, String)> = EXPORTED_QUANTILES
        .iter()
        .map(|&q| (q, percentile_label(q)))
        .collect();
    let label = percentile_label(latency_quantile);
    if !quantiles.iter().any(|(_, known)| *known == label) {
        quantiles.push((latency_quantile, label));
        quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    quantiles
}

fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{:.1}ms", duration.as_secs_f64() * 1e3)
    } else {
        format!("{:.3}s", duration.as_secs_f64())
    }
}

fn validate(settings: &Settings) -> Result<(), String> {
    let fail = |key: &str, why: String| Err(format!("invalid config: `{key}`: {why}"));
    if settings.window == 0 || settings.window > MAX_WINDOW {
        return fail("window", format!("must be 1 to {MAX_WINDOW}"));
    }
    if settings.min_samples == 0 || settings.min_samples > settings.window {
        return fail(
            "min_samples",
            format!("must be 1 to `window` ({})", settings.window),
        );
    }
    for (key, ratio) in [
        ("degraded_error_ratio", settings.degraded_error_ratio),
        ("unhealthy_error_ratio", settings.unhealthy_error_ratio),
    ] {
        if !(0.0..=1.0).contains(&ratio) {
            return fail(key, format!("{ratio} is not a ratio from 0 to 1"));
        }
    }
    if settings.degraded_error_ratio > settings.unhealthy_error_ratio {
        return fail(
            "degraded_error_ratio",
            "is above `unhealthy_error_ratio`".to_owned(),
        );
    }
    if !(settings.latency_quantile > 0.0 && settings.latency_quantile <= 1.0) {
        return fail(
            "latency_quantile",
            format!("{} is not in (0, 1]", settings.latency_quantile),
        );
    }
    if let (Some(degraded), Some(unhealthy)) =
        (settings.degraded_latency.0, settings.unhealthy_latency.0)
    {
        if degraded > unhealthy {
            return fail(
                "degraded_latency",
                "is above `unhealthy_latency`".to_owned(),
            );
        }
    }
    if settings.publish_every == 0 {
        return fail("publish_every", "must be at least 1".to_owned());
    }
    Ok(())
}

export_plugin!(UpstreamSlo);

#[cfg(test)]
mod tests {
    use super::*;
    use fedgate_sdk::testing::{self, TestExchange};

    /// A plugin value, as one of the gateway's instances; the upstreams it may judge are
    /// all critical.
    fn plugin(config: &str) -> UpstreamSlo {
        testing::set_upstreams(&[
            ("api", true),
            ("app", true),
            ("inbox", true),
            ("media", true),
        ]);
        testing::init(config).expect("config is valid")
    }

    /// One batch of `times` exchanges of `upstream`.
    fn respond(plugin: &mut UpstreamSlo, upstream: &str, exchange: TestExchange, times: usize) {
        let exchange = exchange.upstream(upstream).build();
        plugin.observe(&vec![exchange; times]);
    }

    fn ok(latency_ms: u64) -> TestExchange {
        TestExchange::get("/").upstream_latency(Duration::from_millis(latency_ms))
    }

    fn upstream(status: u16) -> TestExchange {
        TestExchange::get("/").status(status)
    }

    fn gateway(status: u16, error: &str) -> TestExchange {
        TestExchange::get("/").gateway(status, error)
    }

    #[test]
    fn healthy_until_the_window_has_enough_responses() {
        let mut p = plugin(r#"{"window": 10, "min_samples": 5}"#);
        assert_eq!(p.hooks(), Hooks::OBSERVE | Hooks::HEALTH_CHECK);
        assert_eq!(p.health_check().status, HealthStatus::Healthy);
        respond(&mut p, "app", upstream(503), 4);
        let report = p.health_check();
        assert_eq!(report.status, HealthStatus::Healthy);
        assert_eq!(
            report.message,
            "0 of 1 upstreams judged, all within thresholds"
        );
        respond(&mut p, "app", upstream(503), 1);
        assert_eq!(p.health_check().status, HealthStatus::Unhealthy);
    }

    #[test]
    fn error_ratio_thresholds() {
        let mut p = plugin(
            r#"{"window": 100, "min_samples": 10, "degraded_error_ratio": 0.1,
                "unhealthy_error_ratio": 0.3}"#,
        );
        respond(&mut p, "app", ok(10), 90);
        respond(&mut p, "app", upstream(500), 10);
        assert_eq!(
            p.health_check().status,
            HealthStatus::Healthy,
            "10% is not above 10%"
        );
        respond(&mut p, "app", gateway(502, "connect"), 5);
        let report = p.health_check();
        assert_eq!(report.status, HealthStatus::Degraded);
        assert_eq!(
            report.message,
            "upstream app degraded: error ratio 15.0% over the last 100 responses \
             (degraded above 10.0%)"
        );
        respond(&mut p, "app", upstream(503), 20);
        let report = p.health_check();
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(
            report.message.contains("error ratio 35.0%"),
            "{}",
            report.message
        );
        assert_eq!(
            testing::gauge_value("upstream_slo_error_ratio", &["app"]),
            Some(0.35)
        );
        assert_eq!(
            testing::gauge_value("upstream_slo_window_responses", &["app"]),
            Some(100.0)
        );
        // 4xx are the client's business, not errors.
        respond(&mut p, "app", upstream(404), 100);
        assert_eq!(p.health_check().status, HealthStatus::Healthy);
        assert_eq!(
            testing::gauge_value("upstream_slo_error_ratio", &["app"]),
            Some(0.0)
        );
    }

    #[test]
    fn latency_thresholds_at_the_quantile() {
        let mut p = plugin(
            r#"{"window": 100, "min_samples": 10, "latency_quantile": 0.9,
                "degraded_latency": "200ms", "unhealthy_latency": 2}"#,
        );
        respond(&mut p, "app", ok(50), 90);
        respond(&mut p, "app", ok(300), 10);
        assert_eq!(
            p.health_check().status,
            HealthStatus::Healthy,
            "p90 is 50ms"
        );
        respond(&mut p, "app", ok(300), 1);
        let report = p.health_check();
        assert_eq!(report.status, HealthStatus::Degraded);
        assert_eq!(
            report.message,
            "upstream app degraded: p90 latency 300.0ms over the last 100 responses \
             (degraded above 200.0ms)"
        );
        respond(&mut p, "app", ok(2500), 20);
        let report = p.health_check();
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(
            report.message.contains("p90 latency 2.500s"),
            "{}",
            report.message
        );
        assert!(
            report.message.contains("(unhealthy above 2.000s)"),
            "{}",
            report.message
        );
    }

    #[test]
    fn reports_name_every_upstream_in_trouble() {
        let mut p = plugin(r#"{"window": 20, "min_samples": 20}"#);
        respond(&mut p, "api", ok(10), 20);
        respond(
            &mut p,
            "media",
            gateway(504, "timeout").duration(Duration::from_secs(30)),
            20,
        );
        respond(&mut p, "inbox", ok(10), 18);
        respond(&mut p, "inbox", upstream(500), 2);
        let report = p.health_check();
        assert_eq!(report.status, HealthStatus::Unhealthy);
        let parts: Vec<&str> = report.message.split("; ").collect();
        assert_eq!(parts.len(), 2, "{}", report.message);
        assert!(
            parts[0].starts_with("upstream inbox degraded: error ratio 10.0%"),
            "{}",
            parts[0]
        );
        assert!(
            parts[1].starts_with("upstream media unhealthy: error ratio 100.0%"),
            "{}",
            parts[1]
        );
        assert!(parts[1].contains("p99 latency 30.000s"), "{}", parts[1]);
    }

    #[test]
    fn the_window_forgets_old_responses() {
        let mut p = plugin(r#"{"window": 10, "min_samples": 10}"#);
        respond(&mut p, "app", upstream(500), 10);
        assert_eq!(p.health_check().status, HealthStatus::Unhealthy);
        respond(&mut p, "app", ok(1), 10);
        assert_eq!(p.health_check().status, HealthStatus::Healthy);
        assert_eq!(
            testing::gauge_value("upstream_slo_window_responses", &["app"]),
            Some(10.0)
        );
    }

    #[test]
    fn gauges_follow_the_responses() {
        let mut p = plugin(r#"{"window": 100, "min_samples": 1, "publish_every": 5}"#);
        respond(&mut p, "app", ok(100), 4);
        assert_eq!(
            testing::gauge_value("upstream_slo_error_ratio", &["app"]),
            Some(0.0)
        );
        assert_eq!(
            testing::gauge_value("upstream_slo_latency_seconds", &["app", "p50"]),
            None
        );
        respond(&mut p, "app", ok(100), 1);
        assert_eq!(
            testing::gauge_value("upstream_slo_latency_seconds", &["app", "p50"]),
            Some(0.1)
        );
        respond(&mut p, "app", ok(400), 1);
        assert_eq!(
            testing::gauge_value("upstream_slo_latency_seconds", &["app", "p99"]),
            Some(0.1),
            "not published yet"
        );
        p.health_check();
        assert_eq!(
            testing::gauge_value("upstream_slo_latency_seconds", &["app", "p99"]),
            Some(0.4)
        );
        assert_eq!(
            testing::gauge_value("upstream_slo_latency_seconds", &["app", "p90"]),
            Some(0.4)
        );
        // Connection failures count as errors but add no latency.
        respond(&mut p, "app", gateway(502, "connect"), 1);
        p.health_check();
        assert_eq!(
            testing::gauge_value("upstream_slo_error_ratio", &["app"]),
            Some(1.0 / 7.0)
        );
    }

    #[test]
    fn extra_quantiles_are_exported() {
        let mut p = plugin(r#"{"latency_quantile": 0.999, "min_samples": 1}"#);
        respond(&mut p, "app", ok(5), 1);
        p.health_check();
        assert!(testing::gauge_value("upstream_slo_latency_seconds", &["app", "p99.9"]).is_some());
        let mut percentiles: Vec<String> = testing::series("upstream_slo_latency_seconds")
            .into_iter()
            .map(|labels| labels.join(","))
            .collect();
        percentiles.sort();
        assert_eq!(percentiles, ["app,p50", "app,p90", "app,p99", "app,p99.9"]);
    }

    #[test]
    fn latency_thresholds_can_be_off() {
        let mut p =
            plugin(r#"{"min_samples": 1, "degraded_latency": "off", "unhealthy_latency": "off"}"#);
        respond(&mut p, "app", ok(60_000), 5);
        assert_eq!(p.health_check().status, HealthStatus::Healthy);
    }

    #[test]
    fn every_instance_sees_the_same_window() {
        let config = r#"{"window": 10, "min_samples": 10, "publish_every": 1}"#;
        let (mut first, mut second, mut third) = (plugin(config), plugin(config), plugin(config));
        // Batches land on whichever instance is idle.
        respond(&mut first, "app", upstream(500), 4);
        respond(&mut second, "app", ok(20), 4);
        respond(&mut first, "app", upstream(503), 2);
        // A health check on an instance that never observed judges all ten.
        let report = third.health_check();
        assert_eq!(report.status, HealthStatus::Unhealthy, "{}", report.message);
        assert!(
            report
                .message
                .contains("error ratio 60.0% over the last 10 responses"),
            "{}",
            report.message
        );
        // The ring wraps across instances: ten good responses push the errors out.
        respond(&mut second, "app", ok(20), 6);
        respond(&mut first, "app", ok(20), 4);
        assert_eq!(third.health_check().status, HealthStatus::Healthy);
        assert_eq!(
            testing::gauge_value("upstream_slo_latency_seconds", &["app", "p50"]),
            Some(0.02)
        );
    }

    #[test]
    fn large_windows_are_stored_in_chunks() {
        let config = r#"{"window": 2500, "min_samples": 2500}"#;
        let (mut first, mut second) = (plugin(config), plugin(config));
        respond(&mut first, "app", ok(10), 2000);
        respond(&mut second, "app", upstream(500), 1000);
        assert!(fedgate_sdk::store::get("slo/app/2").is_some());
        let report = plugin(config).health_check();
        // 1000 errors of the last 2500: the oldest 500 good ones were pushed out.
        assert!(
            report
                .message
                .contains("error ratio 40.0% over the last 2500"),
            "{}",
            report.message
        );
        assert_eq!(
            first.windows["app"].errors, 0,
            "not read back until it observes"
        );
        respond(&mut first, "app", upstream(500), 1);
        assert_eq!(first.windows["app"].errors, 1001);
        assert_eq!(
            first.windows["app"].changed_chunks(3000, 2500),
            BTreeSet::from([0])
        );
    }

    #[test]
    fn a_lost_or_resized_window_starts_again() {
        let mut p = plugin(r#"{"window": 10, "min_samples": 5}"#);
        respond(&mut p, "app", upstream(500), 8);
        // Another window size (after a reload): the stored window is not this one's.
        let mut resized = plugin(r#"{"window": 20, "min_samples": 5}"#);
        respond(&mut resized, "app", ok(1), 5);
        assert_eq!(resized.health_check().status, HealthStatus::Healthy);
        // A chunk evicted from the store: the window cannot be trusted.
        respond(&mut p, "api", upstream(500), 8);
        fedgate_sdk::store::delete("slo/api/0");
        let mut other = plugin(r#"{"window": 10, "min_samples": 5}"#);
        respond(&mut other, "api", ok(1), 1);
        assert_eq!(other.windows["api"].ring.len(), 1);
        assert!(testing::logs()
            .iter()
            .any(|line| line.message.contains("was lost from the store")));
    }

    #[test]
    fn upstreams_that_are_not_critical_are_at_most_degraded() {
        testing::set_upstreams(&[("app", true), ("extras", false)]);
        let mut p: UpstreamSlo = testing::init(r#"{"window": 4, "min_samples": 4}"#).unwrap();
        respond(&mut p, "extras", upstream(502), 4);
        let report = p.health_check();
        assert_eq!(report.status, HealthStatus::Degraded);
        assert_eq!(
            report.message,
            "upstream extras (not critical) degraded: error ratio 100.0% over the last 4 \
             responses (unhealthy above 25.0%)"
        );
        respond(&mut p, "app", upstream(502), 4);
        assert_eq!(p.health_check().status, HealthStatus::Unhealthy);
        // An upstream gone from the configuration is no longer judged.
        testing::set_upstreams(&[("extras", false)]);
        assert_eq!(p.health_check().status, HealthStatus::Degraded);
    }

    #[test]
    fn requests_the_gateway_refused_say_nothing_about_the_upstream() {
        let mut p = plugin(r#"{"window": 10, "min_samples": 1}"#);
        respond(&mut p, "app", gateway(429, "rate_limited"), 3);
        respond(&mut p, "app", gateway(403, "blocked"), 3);
        respond(&mut p, "app", TestExchange::get("/").local_reply(202), 3);
        assert_eq!(
            p.health_check().message,
            "0 of 0 upstreams judged, all within thresholds"
        );
        respond(&mut p, "app", gateway(503, "circuit_open"), 1);
        respond(&mut p, "app", gateway(503, "no_healthy_endpoint"), 1);
        assert_eq!(
            testing::gauge_value("upstream_slo_window_responses", &["app"]),
            Some(2.0)
        );
        assert_eq!(p.health_check().status, HealthStatus::Unhealthy);
    }

    #[test]
    fn samples_and_summaries_round_trip() {
        let sample = Sample::new(true, Some(Duration::from_millis(5)));
        assert!(sample.error());
        assert_eq!(sample.latency(), Some(5_000_000));
        assert_eq!(Sample::new(false, None).latency(), None);
        let summary = Summary {
            count: 4,
            errors: 1,
            latencies: 3,
            quantiles: vec![Some(1), None, Some(3)],
        };
        assert_eq!(summary.encode(), "4 1 3 1 - 3");
        assert_eq!(
            Summary::decode(summary.encode().as_bytes(), 3),
            Some(summary)
        );
        assert_eq!(Summary::decode(b"4 1 3 1 - 3", 4), None);
        assert_eq!(Summary::decode(b"4 x", 0), None);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&values, 0.5), Some(50));
        assert_eq!(quantile(&values, 0.99), Some(99));
        assert_eq!(quantile(&values, 1.0), Some(100));
        assert_eq!(quantile(&[7], 0.01), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn percentiles_label_the_latency_gauge() {
        assert_eq!(percentile_label(0.5), "p50");
        assert_eq!(percentile_label(0.9), "p90");
        assert_eq!(percentile_label(0.99), "p99");
        assert_eq!(percentile_label(0.999), "p99.9");
        assert_eq!(percentile_label(0.9999), "p99.99");
        assert_eq!(percentile_label(1.0), "p100");
        assert_eq!(percentile_label(0.05), "p5");
        let labels =
            |q: f64| -> Vec<String> { exported_quantiles(q).into_iter().map(|(_, l)| l).collect() };
        assert_eq!(labels(0.99), ["p50", "p90", "p99"]);
        assert_eq!(labels(0.9900000001), ["p50", "p90", "p99"]);
        assert_eq!(labels(0.75), ["p50", "p75", "p90", "p99"]);
        assert_eq!(labels(0.999), ["p50", "p90", "p99", "p99.9"]);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
    }

    #[test]
    fn bad_configuration_is_refused_with_the_key() {
        for (config, key) in [
            (r#"{"window": 0}"#, "`window`"),
            (r#"{"window": 10, "min_samples": 11}"#, "`min_samples`"),
            (r#"{"degraded_error_ratio": 1.5}"#, "`degraded_error_ratio`"),
            (
                r#"{"degraded_error_ratio": 0.5, "unhealthy_error_ratio": 0.4}"#,
                "`degraded_error_ratio`",
            ),
            (r#"{"latency_quantile": 0}"#, "`latency_quantile`"),
            (r#"{"degraded_latency": "10s"}"#, "`degraded_latency`"),
            (r#"{"unhealthy_latency": "fast"}"#, "`unhealthy_latency`"),
            (r#"{"unhealthy_latency": -1}"#, "`unhealthy_latency`"),
            (r#"{"publish_every": 0}"#, "`publish_every`"),
            (r#"{"windw": 3}"#, "unknown field `windw`"),
        ] {
            let error = testing::init::<UpstreamSlo>(config).unwrap_err();
            assert!(error.contains(key), "{config}: {error}");
        }
    }
}
