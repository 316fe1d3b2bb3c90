//! Judges each upstream against service-level thresholds over its most recent responses, and
//! reports the verdict through the gateway's `/health`.
//!
//! `on-response` records every response in a window of the last `window` responses of its
//! upstream (plugins have no clock, so the window is a count, not a duration). An error is a
//! 5xx status or an answer the gateway gave in the upstream's place. `health-check` reports
//! `degraded` or `unhealthy` when an upstream's error ratio, or its latency at
//! `latency_quantile`, exceeds the matching threshold, naming the upstream and the figures.
//! Gauges `upstream_slo_error_ratio{upstream}`,
//! `upstream_slo_latency_seconds{upstream,percentile}` and
//! `upstream_slo_window_responses{upstream}` show the same figures.
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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use fedgate_sdk::{
    export_plugin, Config, Gauge, HealthReport, HealthStatus, Hooks, Origin, Plugin, Request,
    Response, ResponseEdit,
};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The largest window allowed: every response keeps a sample until it leaves the window.
const MAX_WINDOW: usize = 100_000;

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

/// One response as the window keeps it.
#[derive(Clone, Copy, Debug)]
struct Sample {
    error: bool,
    /// Nanoseconds; `None` when the response says nothing about latency.
    latency: Option<u64>,
}

/// The last responses of one upstream.
#[derive(Debug, Default)]
struct Window {
    samples: VecDeque<Sample>,
    errors: usize,
    /// Responses recorded since the latency gauges were last published.
    unpublished: usize,
}

impl Window {
    fn push(&mut self, sample: Sample, capacity: usize) {
        if self.samples.len() == capacity {
            if let Some(old) = self.samples.pop_front() {
                self.errors -= usize::from(old.error);
            }
        }
        self.errors += usize::from(sample.error);
        self.samples.push_back(sample);
        self.unpublished += 1;
    }

    fn error_ratio(&self) -> f64 {
        if self.samples.is_empty() {
            0.0
        } else {
            self.errors as f64 / self.samples.len() as f64
        }
    }

    /// The latencies in the window, sorted.
    fn sorted_latencies(&self) -> Vec<u64> {
        let mut latencies: Vec<u64> = self.samples.iter().filter_map(|s| s.latency).collect();
        latencies.sort_unstable();
        latencies
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

#[derive(Debug)]
struct UpstreamSlo {
    capacity: usize,
    min_samples: usize,
    degraded_error_ratio: f64,
    unhealthy_error_ratio: f64,
    latency_quantile: f64,
    degraded_latency: Option<Duration>,
    unhealthy_latency: Option<Duration>,
    publish_every: usize,
    /// The exported quantiles with their `percentile` label values, one quantile per value.
    quantiles: Vec<(f64, String)>,
    windows: BTreeMap<String, Window>,
    error_ratio: Gauge,
    latency: Gauge,
    responses: Gauge,
}

impl Plugin for UpstreamSlo {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        validate(&settings)?;
        Ok(UpstreamSlo {
            capacity: settings.window,
            min_samples: settings.min_samples,
            degraded_error_ratio: settings.degraded_error_ratio,
            unhealthy_error_ratio: settings.unhealthy_error_ratio,
            latency_quantile: settings.latency_quantile,
            degraded_latency: settings.degraded_latency.0,
            unhealthy_latency: settings.unhealthy_latency.0,
            publish_every: settings.publish_every,
            quantiles: exported_quantiles(settings.latency_quantile),
            windows: BTreeMap::new(),
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
        Hooks::ON_RESPONSE | Hooks::HEALTH_CHECK
    }

    fn on_response(&mut self, request: &Request, response: &Response) -> ResponseEdit {
        let origin = response.origin();
        let latency = match (response.upstream_latency(), origin) {
            (Some(latency), _) => Some(latency),
            // A timeout's elapsed time is what the client waited for the upstream; other
            // failures (connect, reset, protocol) say nothing about its latency.
            (None, Origin::Gateway) if response.error().as_deref() == Some("timeout") => {
                Some(response.elapsed())
            }
            (None, _) => None,
        };
        let sample = Sample {
            error: response.status() >= 500 || origin == Origin::Gateway,
            latency: latency.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        };
        let upstream = request.upstream();
        let window = self.windows.entry(upstream.clone()).or_default();
        window.push(sample, self.capacity);
        let publish_latency = window.unpublished >= self.publish_every;
        self.publish(&upstream, publish_latency);
        ResponseEdit::default()
    }

    fn health_check(&mut self) -> HealthReport {
        let upstreams: Vec<String> = self.windows.keys().cloned().collect();
        let mut worst = HealthStatus::Healthy;
        let mut problems = Vec::new();
        for upstream in &upstreams {
            self.publish(upstream, true);
            let (status, findings) = self.judge(&self.windows[upstream]);
            if status > HealthStatus::Healthy {
                problems.push(format!(
                    "upstream {upstream} {status}: {}",
                    findings.join(", ")
                ));
            }
            worst = worst.max(status);
        }
        if worst == HealthStatus::Healthy {
            let judged = self
                .windows
                .values()
                .filter(|window| window.samples.len() >= self.min_samples)
                .count();
            return HealthReport::healthy().with_message(format!(
                "{judged} of {} upstreams judged, all within thresholds",
                upstreams.len()
            ));
        }
        HealthReport {
            status: worst,
            message: problems.join("; "),
        }
    }
}

impl UpstreamSlo {
    /// Sets the upstream's gauges: the error ratio and window size always, the latency
    /// quantiles when `with_latency` (sorting the window costs more).
    fn publish(&mut self, upstream: &str, with_latency: bool) {
        let Some(window) = self.windows.get_mut(upstream) else {
            return;
        };
        self.error_ratio.set(&[upstream], window.error_ratio());
        self.responses.set(&[upstream], window.samples.len() as f64);
        if !with_latency {
            return;
        }
        window.unpublished = 0;
        let sorted = window.sorted_latencies();
        for (q, label) in &self.quantiles {
            if let Some(nanos) = quantile(&sorted, *q) {
                self.latency.set(&[upstream, label], nanos as f64 / 1e9);
            }
        }
    }

    /// The window's status and what is wrong with it.
    fn judge(&self, window: &Window) -> (HealthStatus, Vec<String>) {
        let count = window.samples.len();
        if count < self.min_samples {
            return (HealthStatus::Healthy, Vec::new());
        }
        let mut status = HealthStatus::Healthy;
        let mut findings = Vec::new();

        let ratio = window.error_ratio();
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

        let sorted = window.sorted_latencies();
        if let Some(nanos) = quantile(&sorted, self.latency_quantile) {
            let latency = Duration::from_nanos(nanos);
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
                    sorted.len(),
                    seconds(limit)
                ));
            }
        }
        (status, findings)
    }
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
    use fedgate_sdk::testing::{self, TestRequest, TestResponse};

    fn plugin(config: &str) -> UpstreamSlo {
        testing::init(config).expect("config is valid")
    }

    fn respond(plugin: &mut UpstreamSlo, upstream: &str, response: TestResponse, times: usize) {
        let request = TestRequest::get("/").upstream(upstream).build();
        let response = response.build();
        for _ in 0..times {
            plugin.on_response(&request, &response);
        }
    }

    fn ok(latency_ms: u64) -> TestResponse {
        TestResponse::upstream(200).upstream_latency(Duration::from_millis(latency_ms))
    }

    #[test]
    fn healthy_until_the_window_has_enough_responses() {
        let mut p = plugin(r#"{"window": 10, "min_samples": 5}"#);
        assert_eq!(p.hooks(), Hooks::ON_RESPONSE | Hooks::HEALTH_CHECK);
        assert_eq!(p.health_check().status, HealthStatus::Healthy);
        respond(&mut p, "app", TestResponse::upstream(503), 4);
        let report = p.health_check();
        assert_eq!(report.status, HealthStatus::Healthy);
        assert_eq!(
            report.message,
            "0 of 1 upstreams judged, all within thresholds"
        );
        respond(&mut p, "app", TestResponse::upstream(503), 1);
        assert_eq!(p.health_check().status, HealthStatus::Unhealthy);
    }

    #[test]
    fn error_ratio_thresholds() {
        let mut p = plugin(
            r#"{"window": 100, "min_samples": 10, "degraded_error_ratio": 0.1,
                "unhealthy_error_ratio": 0.3}"#,
        );
        respond(&mut p, "app", ok(10), 90);
        respond(&mut p, "app", TestResponse::upstream(500), 10);
        assert_eq!(
            p.health_check().status,
            HealthStatus::Healthy,
            "10% is not above 10%"
        );
        respond(&mut p, "app", TestResponse::gateway(502, "connect"), 5);
        let report = p.health_check();
        assert_eq!(report.status, HealthStatus::Degraded);
        assert_eq!(
            report.message,
            "upstream app degraded: error ratio 15.0% over the last 100 responses \
             (degraded above 10.0%)"
        );
        respond(&mut p, "app", TestResponse::upstream(503), 20);
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
        respond(&mut p, "app", TestResponse::upstream(404), 100);
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
            TestResponse::gateway(504, "timeout").elapsed(Duration::from_secs(30)),
            20,
        );
        respond(&mut p, "inbox", ok(10), 18);
        respond(&mut p, "inbox", TestResponse::upstream(500), 2);
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
        respond(&mut p, "app", TestResponse::upstream(500), 10);
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
        respond(&mut p, "app", TestResponse::gateway(502, "connect"), 1);
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
