//! The gateway's metric families, registered once on a registry passed in (no globals).
//!
//! Phase 11 of the request lifecycle records into handles resolved ahead of time:
//! [`RouteMetrics`] when a route is built, [`UpstreamMetrics`] when an upstream is built.
//! Label values come from closed sets (configured names, [`MethodLabel`], status codes,
//! [`UpstreamErrorKind`]), so a request never hashes a label set on the hot path except for
//! rare status codes outside [`STATUS_SLOTS`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use http::Method;
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry,
};

use crate::blocklist::BlocklistFamilies;
use crate::register::{counter_vec, gauge_vec, histogram_vec};
use crate::breaker::BreakerFamilies;
use crate::health::{HealthFamilies, HealthMetrics};
use crate::plugin::families::PluginFamilies;
use crate::ratelimit::LimitFamilies;
use crate::retry::RetryFamilies;
use crate::signature::SignatureFamilies;
use crate::transport::ConnStats;

/// Request latency buckets, in seconds: sub-millisecond proxying up to slow federation fetches.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Body size buckets, in bytes: 64 B to 64 MiB in powers of four.
pub const SIZE_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

/// The HTTP method as a label: the standard methods, everything else as `OTHER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodLabel {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Connect,
    Trace,
    Other,
}

impl MethodLabel {
    pub const COUNT: usize = 10;

    pub fn of(m: &Method) -> Self {
        match *m {
            Method::GET => Self::Get,
            Method::HEAD => Self::Head,
            Method::POST => Self::Post,
            Method::PUT => Self::Put,
            Method::DELETE => Self::Delete,
            Method::PATCH => Self::Patch,
            Method::OPTIONS => Self::Options,
            Method::CONNECT => Self::Connect,
            Method::TRACE => Self::Trace,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Patch => "PATCH",
            Self::Options => "OPTIONS",
            Self::Connect => "CONNECT",
            Self::Trace => "TRACE",
            Self::Other => "OTHER",
        }
    }
}

/// Why a request to an upstream failed; the `kind` label of `fedgate_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Reset,
    Protocol,
    NoHealthyEndpoint,
    /// The upstream's `max_connections` were all in use for `connect_timeout`.
    ConnectionLimit,
}

impl UpstreamErrorKind {
    pub const ALL: [Self; 6] = [
        Self::Connect,
        Self::Timeout,
        Self::Reset,
        Self::Protocol,
        Self::NoHealthyEndpoint,
        Self::ConnectionLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
            Self::NoHealthyEndpoint => "no_healthy_endpoint",
            Self::ConnectionLimit => "connection_limit",
        }
    }
}

/// Status codes with a pre-resolved counter slot; others go through the label map.
const STATUS_SLOTS: [u16; 28] = [
    101, 200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409,
    410, 413, 422, 429, 431, 500, 502, 503, 504,
];

fn status_slot(code: u16) -> Option<usize> {
    STATUS_SLOTS.iter().position(|&c| c == code)
}

/// The gateway's families: the request path's own here, each concern's registered by it.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests_total: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    request_size: HistogramVec,
    response_size: HistogramVec,
    in_flight: IntGaugeVec,
    upstream_errors: IntCounterVec,
    upstream_connections: IntGaugeVec,
    config_reloads: IntCounterVec,
    restart_required: IntGaugeVec,
    plugins: Arc<PluginFamilies>,
    declared: Arc<crate::plugin::declared::Declared>,
    signatures: Arc<SignatureFamilies>,
    limits: LimitFamilies,
    blocklist: BlocklistFamilies,
    breakers: BreakerFamilies,
    retries: RetryFamilies,
    auth_attempts: IntCounterVec,
    health: Arc<HealthFamilies>,
    tls_handshake_errors: IntCounterVec,
}

impl Metrics {
    /// Registers all families on `registry`.
    pub fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let r = &registry;
        let requests_total = counter_vec(
            r,
            "fedgate_requests_total",
            "Requests answered, by route, upstream, method and status.",
            &["route", "upstream", "method", "status"],
        )?;
        let request_duration = histogram_vec(
            r,
            "fedgate_request_duration_seconds",
            "Time from receiving request headers to the end of the response body.",
            LATENCY_BUCKETS,
            &["route", "upstream", "method"],
        )?;
        let upstream_duration = histogram_vec(
            r,
            "fedgate_upstream_request_duration_seconds",
            "Time from sending a request upstream to receiving its response headers.",
            LATENCY_BUCKETS,
            &["upstream"],
        )?;
        let request_size = histogram_vec(
            r,
            "fedgate_request_size_bytes",
            "Request body bytes received from clients.",
            SIZE_BUCKETS,
            &["route"],
        )?;
        let response_size = histogram_vec(
            r,
            "fedgate_response_size_bytes",
            "Response body bytes sent to clients.",
            SIZE_BUCKETS,
            &["route"],
        )?;
        let in_flight = gauge_vec(
            r,
            "fedgate_requests_in_flight",
            "Requests being served, by route.",
            &["route"],
        )?;
        let upstream_errors = counter_vec(
            r,
            "fedgate_upstream_errors_total",
            "Failed upstream requests, by upstream and kind of failure.",
            &["upstream", "kind"],
        )?;
        let upstream_connections = gauge_vec(
            r,
            "fedgate_upstream_connections",
            "Open upstream connections: active (carrying a request) and idle (pooled).",
            &["upstream", "state"],
        )?;
        let config_reloads = counter_vec(
            r,
            "fedgate_config_reloads_total",
            "Configuration reloads, by result.",
            &["result"],
        )?;
        for result in ["success", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        let restart_required = gauge_vec(
            r,
            "fedgate_config_restart_required",
            "1 when the running configuration file sets a process-wide setting \
             (server.workers, server.event_interval, server.log_format) to a value \
             that takes effect only after a restart.",
            &["setting"],
        )?;
        for (setting, _) in crate::config::RESTART_ONLY {
            restart_required.with_label_values(&[setting]);
        }
        gauge_vec(
            r,
            "fedgate_build_info",
            "Always 1; the version label identifies the build.",
            &["version"],
        )?
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let plugins = Arc::new(PluginFamilies::register(r)?);
        let declared = Arc::new(crate::plugin::declared::Declared::new(
            registry.clone(),
            plugins.drops.clone(),
        ));
        Ok(Metrics {
            requests_total,
            request_duration,
            upstream_duration,
            request_size,
            response_size,
            in_flight,
            upstream_errors,
            upstream_connections,
            config_reloads,
            restart_required,
            plugins,
            declared,
            signatures: Arc::new(SignatureFamilies::register(r)?),
            limits: LimitFamilies::register(r)?,
            blocklist: BlocklistFamilies::register(r)?,
            breakers: BreakerFamilies::register(r)?,
            retries: RetryFamilies::register(r)?,
            auth_attempts: crate::auth::attempts_family(r)?,
            health: Arc::new(HealthFamilies::register(r)?),
            tls_handshake_errors: crate::tls::handshake_errors_family(r)?,
            registry,
        })
    }

    /// `fedgate_tls_handshake_errors_total` of one TLS listener, by
    /// `HandshakeFailure as usize`; resolved when its accept loop starts.
    pub fn tls_handshake_errors(&self, listener: &str) -> [IntCounter; 4] {
        crate::tls::HandshakeFailure::ALL.map(|r| {
            self.tls_handshake_errors
                .with_label_values(&[listener, r.as_str()])
        })
    }

    /// Handles of one upstream's circuit breaker.
    pub fn breaker(&self, upstream: &str) -> crate::breaker::BreakerMetrics {
        self.breakers.upstream(upstream)
    }

    /// Removes the breaker and retry series of an upstream (dropped, or its breaker or
    /// retries turned off).
    pub fn forget_resilience(&self, upstream: &str, breaker: bool, retries: bool) {
        if breaker {
            self.breakers.forget(upstream);
        }
        if retries {
            self.retries.forget(upstream);
        }
    }

    /// Handles of one upstream's retry counters, by `retry::Outcome`.
    pub fn retries(&self, upstream: &str) -> [IntCounter; 4] {
        self.retries.upstream(upstream)
    }

    /// The blocklist's families.
    pub fn blocklist_families(&self) -> &BlocklistFamilies {
        &self.blocklist
    }

    /// Handles of one rate limiter; resolved when the limiter is built.
    pub fn limiter(&self, name: &str) -> crate::ratelimit::LimiterMetrics {
        self.limits.limiter(name)
    }

    /// Removes the series of a limiter that a reload dropped.
    pub fn forget_limiter(&self, name: &str) {
        self.limits.forget(name);
    }

    /// `fedgate_auth_attempts_total` (phase 5), whose children each route with `auth`
    /// resolves when it is built.
    pub fn auth_attempts(&self) -> &IntCounterVec {
        &self.auth_attempts
    }

    /// The `fedgate_signature_*` families.
    pub fn signature_families(&self) -> Arc<SignatureFamilies> {
        self.signatures.clone()
    }

    /// The registry every family is registered on, the one given to [`Metrics::new`]:
    /// what `/metrics` renders.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The `fedgate_plugin_*` families the gateway keeps about plugins (calls, memory,
    /// reloads, stores, observers, outbound calls).
    pub fn plugin_families(&self) -> &PluginFamilies {
        &self.plugins
    }

    /// The families plugins declare.
    pub fn declared(&self) -> Arc<crate::plugin::declared::Declared> {
        self.declared.clone()
    }

    /// Counts a plugin load done by a reload.
    pub fn plugin_reload(&self, plugin: &str, ok: bool) {
        self.plugins.reload(plugin, ok);
    }

    /// Handles for one route; resolved when the route is built.
    pub fn route(&self, route: &str, upstream: &str) -> Arc<RouteMetrics> {
        Arc::new(RouteMetrics {
            route: route.into(),
            upstream: upstream.into(),
            requests_total: self.requests_total.clone(),
            request_duration: self.request_duration.clone(),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            durations: std::array::from_fn(|_| OnceLock::new()),
            request_size: self.request_size.with_label_values(&[route]),
            response_size: self.response_size.with_label_values(&[route]),
            in_flight: self.in_flight.with_label_values(&[route]),
        })
    }

    /// Handles for one upstream; resolved when the upstream is built.
    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            duration: self.upstream_duration.with_label_values(&[upstream]),
            errors: UpstreamErrorKind::ALL.map(|k| {
                self.upstream_errors
                    .with_label_values(&[upstream, k.as_str()])
            }),
            connections_active: self
                .upstream_connections
                .with_label_values(&[upstream, "active"]),
            connections_idle: self
                .upstream_connections
                .with_label_values(&[upstream, "idle"]),
            conns: Arc::new(ConnStats::default()),
            health: self.health.upstream(upstream),
        }
    }

    /// Counts a configuration reload.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "success" } else { "error" }])
            .inc();
    }

    /// Whether the running file's `setting` (one of [`crate::config::RESTART_ONLY`]) differs from the value
    /// the process started with.
    pub fn restart_required(&self, setting: &str, pending: bool) {
        self.restart_required
            .with_label_values(&[setting])
            .set(i64::from(pending));
    }

    /// Removes the series of an upstream that a reload dropped.
    pub fn forget_upstream(&self, upstream: &str) {
        self.forget_resilience(upstream, true, true);
        let _ = self.upstream_duration.remove_label_values(&[upstream]);
        for k in UpstreamErrorKind::ALL {
            let _ = self
                .upstream_errors
                .remove_label_values(&[upstream, k.as_str()]);
        }
        for s in ["active", "idle"] {
            let _ = self
                .upstream_connections
                .remove_label_values(&[upstream, s]);
        }
        self.health.forget_upstream(upstream);
    }

    /// Removes the health gauge of an endpoint that a reload dropped.
    pub fn forget_endpoint(&self, upstream: &str, endpoint: &str) {
        self.health.forget_endpoint(upstream, endpoint);
    }

    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Pre-resolved handles for one route (and its upstream).
#[derive(Debug)]
pub struct RouteMetrics {
    route: Box<str>,
    upstream: Box<str>,
    requests_total: IntCounterVec,
    request_duration: HistogramVec,
    requests: [[OnceLock<IntCounter>; STATUS_SLOTS.len()]; MethodLabel::COUNT],
    durations: [OnceLock<Histogram>; MethodLabel::COUNT],
    pub request_size: Histogram,
    pub response_size: Histogram,
    pub in_flight: IntGauge,
}

impl RouteMetrics {
    pub fn route(&self) -> &str {
        &self.route
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Records one finished request.
    pub fn record(
        &self,
        method: MethodLabel,
        status: u16,
        seconds: f64,
        req_bytes: u64,
        resp_bytes: u64,
    ) {
        let m = method as usize;
        match status_slot(status) {
            Some(slot) => self.requests[m][slot]
                .get_or_init(|| self.counter(method, status))
                .inc(),
            None => self.counter(method, status).inc(),
        }
        self.durations[m]
            .get_or_init(|| {
                self.request_duration.with_label_values(&[
                    &*self.route,
                    &*self.upstream,
                    method.as_str(),
                ])
            })
            .observe(seconds);
        self.request_size.observe(req_bytes as f64);
        self.response_size.observe(resp_bytes as f64);
    }

    fn counter(&self, method: MethodLabel, status: u16) -> IntCounter {
        let mut buf = [0u8; 5];
        self.requests_total.with_label_values(&[
            &*self.route,
            &*self.upstream,
            method.as_str(),
            status_str(&mut buf, status),
        ])
    }
}

fn status_str(buf: &mut [u8; 5], status: u16) -> &str {
    let mut n = status;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Pre-resolved handles for one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    pub duration: Histogram,
    errors: [IntCounter; 6],
    connections_active: IntGauge,
    connections_idle: IntGauge,
    pub conns: Arc<ConnStats>,
    pub health: HealthMetrics,
}

impl UpstreamMetrics {
    pub fn error(&self, kind: UpstreamErrorKind) {
        self.errors[kind as usize].inc();
    }

    /// Publishes the connection gauges; called before each scrape.
    pub fn refresh_connections(&self) {
        let open = self.conns.open.load(Ordering::Relaxed).max(0);
        let active = self.conns.active.load(Ordering::Relaxed).clamp(0, open);
        self.connections_active.set(active);
        self.connections_idle.set(open - active);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_render_as_numbers() {
        let mut b = [0; 5];
        assert_eq!(status_str(&mut b, 200), "200");
        assert_eq!(status_str(&mut b, 7), "7");
    }

    #[test]
    fn route_handles_count_into_the_shared_family() {
        let m = Metrics::new(Registry::new()).unwrap();
        let r = m.route("inbox", "app");
        r.record(MethodLabel::Post, 202, 0.01, 100, 0);
        r.record(MethodLabel::Post, 202, 0.02, 100, 0);
        r.record(MethodLabel::Get, 418, 0.02, 0, 10);
        let c = m
            .requests_total
            .with_label_values(&["inbox", "app", "POST", "202"]);
        assert_eq!(c.get(), 2);
        let teapot = m
            .requests_total
            .with_label_values(&["inbox", "app", "GET", "418"]);
        assert_eq!(teapot.get(), 1);
        let h = m
            .request_duration
            .with_label_values(&["inbox", "app", "POST"]);
        assert_eq!(h.get_sample_count(), 2);
        assert_eq!(r.request_size.get_sample_count(), 3);
    }

    #[test]
    fn methods_outside_the_standard_set_fold_into_other() {
        assert_eq!(
            MethodLabel::of(&Method::from_bytes(b"PROPFIND").unwrap()),
            MethodLabel::Other
        );
        assert_eq!(MethodLabel::of(&Method::POST).as_str(), "POST");
    }
}
