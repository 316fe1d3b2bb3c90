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
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

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

/// Every metric family of the request path, plus build info and process metrics.
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
    limits: Arc<LimitFamilies>,
    resilience: Arc<ResilienceFamilies>,
    auth_attempts: IntCounterVec,
    health: Arc<HealthFamilies>,
    tls_handshake_errors: IntCounterVec,
}

/// The families of phases 8 and 9: circuit breakers and retries.
#[derive(Debug)]
pub struct ResilienceFamilies {
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    pub breaker_rejections: IntCounterVec,
    pub retries: IntCounterVec,
}

/// The endpoint health families (phase 8).
#[derive(Debug)]
pub struct HealthFamilies {
    /// `fedgate_upstream_endpoint_healthy{upstream,endpoint}`: 1 while eligible for traffic.
    pub endpoint_healthy: IntGaugeVec,
    /// `fedgate_health_checks_total{upstream,result}`.
    pub checks: IntCounterVec,
    /// `fedgate_outlier_ejections_total{upstream}`.
    pub ejections: IntCounterVec,
}

/// The `result` label of `fedgate_health_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    Success,
    Failure,
    Timeout,
}

impl CheckResult {
    pub const ALL: [Self; 3] = [Self::Success, Self::Failure, Self::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
        }
    }
}

/// The families of phases 3 and 4: the blocklist and the rate limiters.
#[derive(Debug)]
pub struct LimitFamilies {
    /// `fedgate_rate_limit_decisions_total{limiter,decision}`.
    pub decisions: IntCounterVec,
    /// `fedgate_rate_limit_keys{limiter}`: keys a limiter tracks, as of its last sweep.
    pub keys: IntGaugeVec,
    /// `fedgate_blocked_requests_total{reason}`.
    pub blocked: IntCounterVec,
    /// `fedgate_blocklist_size`: domains and networks on the blocklist.
    pub blocklist_size: IntGauge,
}

/// The `fedgate_signature_*` families (phase 6).
#[derive(Debug)]
pub struct SignatureFamilies {
    /// `fedgate_trust_store_size`: keys in the trust store of the running config.
    pub trust_store_size: prometheus::IntGauge,
    /// `fedgate_federation_peers`, kept across reloads.
    pub peers: Arc<crate::signature::peers::Peers>,
    pub verifications: IntCounterVec,
    pub failures_by_instance: IntCounterVec,
    pub duration: HistogramVec,
    /// `fedgate_signature_key_cache_lookups_total{result}`: hit, miss, negative_hit.
    pub key_cache_lookups: IntCounterVec,
    /// `fedgate_signature_key_fetches_total{result}`.
    pub key_fetches: IntCounterVec,
    pub key_fetch_duration: Histogram,
    /// `fedgate_signature_key_cache_entries`: fetched keys and failures held.
    pub key_cache_entries: prometheus::IntGauge,
}

/// Registers the shared peer table as a collector.
struct PeersCollector(Arc<crate::signature::peers::Peers>);

impl prometheus::core::Collector for PeersCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

/// Signature verification latency buckets, in seconds: 10 µs to 10 ms.
pub const SIGNATURE_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
];

/// Key fetch latency buckets, in seconds: 5 ms to the longest fetch timeout.
pub const KEY_FETCH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The `fedgate_plugin_*` families.
#[derive(Debug)]
pub struct PluginFamilies {
    pub invocations: IntCounterVec,
    pub duration: HistogramVec,
    pub memory: IntGaugeVec,
    pub reloads: IntCounterVec,
    /// `fedgate_plugin_compilations_total{plugin,result}`: each load of a component, by
    /// where its machine code came from.
    pub compilations: IntCounterVec,
    /// ABI 0.2.0 key-value stores: entries and bytes held, entries dropped by reason.
    pub store_entries: IntGaugeVec,
    pub store_bytes: IntGaugeVec,
    pub store_evictions: IntCounterVec,
    /// ABI 0.2.0 observers: finished exchanges by what became of them (delivered,
    /// dropped), batches delivered, and exchanges waiting in each queue.
    pub observed: IntCounterVec,
    pub observer_batches: IntCounterVec,
    pub observer_queued: IntGaugeVec,
    /// ABI 0.2.0 outbound HTTP calls, by result.
    pub outbound: IntCounterVec,
}

/// Plugin call latency buckets, in seconds: a microsecond to the longest deadline.
pub const PLUGIN_BUCKETS: &[f64] = &[
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
];

impl Metrics {
    /// Registers all families on `registry`.
    pub fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let requests_total = IntCounterVec::new(
            Opts::new(
                "fedgate_requests_total",
                "Requests answered, by route, upstream, method and status.",
            ),
            &["route", "upstream", "method", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "fedgate_request_duration_seconds",
                "Time from receiving request headers to the end of the response body.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "upstream", "method"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "fedgate_upstream_request_duration_seconds",
                "Time from sending a request upstream to receiving its response headers.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        let request_size = HistogramVec::new(
            HistogramOpts::new(
                "fedgate_request_size_bytes",
                "Request body bytes received from clients.",
            )
            .buckets(SIZE_BUCKETS.to_vec()),
            &["route"],
        )?;
        let response_size = HistogramVec::new(
            HistogramOpts::new(
                "fedgate_response_size_bytes",
                "Response body bytes sent to clients.",
            )
            .buckets(SIZE_BUCKETS.to_vec()),
            &["route"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "fedgate_requests_in_flight",
                "Requests being served, by route.",
            ),
            &["route"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "fedgate_upstream_errors_total",
                "Failed upstream requests, by upstream and kind of failure.",
            ),
            &["upstream", "kind"],
        )?;
        let upstream_connections = IntGaugeVec::new(
            Opts::new(
                "fedgate_upstream_connections",
                "Open upstream connections: active (carrying a request) and idle (pooled).",
            ),
            &["upstream", "state"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "fedgate_config_reloads_total",
                "Configuration reloads, by result.",
            ),
            &["result"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "fedgate_build_info",
                "Always 1; the version label identifies the build.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for r in ["success", "error"] {
            config_reloads.with_label_values(&[r]);
        }
        let restart_required = IntGaugeVec::new(
            Opts::new(
                "fedgate_config_restart_required",
                "1 when the running configuration file sets a process-wide setting \
                 (server.workers, server.event_interval, server.log_format) to a value \
                 that takes effect only after a restart.",
            ),
            &["setting"],
        )?;
        for (s, _) in crate::config::RESTART_ONLY {
            restart_required.with_label_values(&[s]);
        }

        registry.register(Box::new(requests_total.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(request_size.clone()))?;
        registry.register(Box::new(response_size.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(upstream_connections.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(restart_required.clone()))?;
        registry.register(Box::new(build_info))?;
        let plugins = Arc::new(PluginFamilies {
            invocations: IntCounterVec::new(
                Opts::new(
                    "fedgate_plugin_invocations_total",
                    "Plugin hook calls, by plugin, hook and result (ok, deny, trap, timeout, error, skipped).",
                ),
                &["plugin", "hook", "result"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "fedgate_plugin_duration_seconds",
                    "Time spent in plugin hook calls, including instantiation when one was needed.",
                )
                .buckets(PLUGIN_BUCKETS.to_vec()),
                &["plugin", "hook"],
            )?,
            memory: IntGaugeVec::new(
                Opts::new(
                    "fedgate_plugin_memory_bytes",
                    "Linear memory of a plugin's live instances.",
                ),
                &["plugin"],
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "fedgate_plugin_reloads_total",
                    "Plugin loads after start-up (a changed file or config), by result.",
                ),
                &["plugin", "result"],
            )?,
            compilations: IntCounterVec::new(
                Opts::new(
                    "fedgate_plugin_compilations_total",
                    "Component loads, by where the machine code came from: cached (server.plugin_cache), compiled (and stored when a cache is set), or cache_error (compiled: the cached copy was unusable).",
                ),
                &["plugin", "result"],
            )?,
            store_entries: IntGaugeVec::new(
                Opts::new(
                    "fedgate_plugin_store_entries",
                    "Entries in a plugin's key-value store.",
                ),
                &["plugin"],
            )?,
            store_bytes: IntGaugeVec::new(
                Opts::new(
                    "fedgate_plugin_store_bytes",
                    "Bytes a plugin's key-value store holds: keys, values and a fixed overhead per entry.",
                ),
                &["plugin"],
            )?,
            store_evictions: IntCounterVec::new(
                Opts::new(
                    "fedgate_plugin_store_evictions_total",
                    "Entries dropped from a plugin's key-value store, by reason: expired, or capacity (evicted to make room).",
                ),
                &["plugin", "reason"],
            )?,
            observed: IntCounterVec::new(
                Opts::new(
                    "fedgate_plugin_observed_exchanges_total",
                    "Finished exchanges for a plugin's observe hook: delivered (handed to observe), or dropped (its queue was full).",
                ),
                &["plugin", "result"],
            )?,
            observer_batches: IntCounterVec::new(
                Opts::new(
                    "fedgate_plugin_observer_batches_total",
                    "Batches of finished exchanges handed to a plugin's observe hook.",
                ),
                &["plugin"],
            )?,
            observer_queued: IntGaugeVec::new(
                Opts::new(
                    "fedgate_plugin_observer_queued",
                    "Finished exchanges waiting in a plugin's observer queue.",
                ),
                &["plugin"],
            )?,
            outbound: IntCounterVec::new(
                Opts::new(
                    "fedgate_plugin_outbound_requests_total",
                    "HTTP requests plugins sent from on-tick and observe, by result: ok, not_allowed, not_here, timeout, too_large, connect, invalid.",
                ),
                &["plugin", "result"],
            )?,
        });
        let drops = IntCounterVec::new(
            Opts::new(
                "fedgate_plugin_metric_drops_total",
                "Updates of plugin-declared metrics not recorded as asked: series_cap (folded into the other series), labels, value.",
            ),
            &["plugin", "metric", "reason"],
        )?;
        registry.register(Box::new(plugins.invocations.clone()))?;
        registry.register(Box::new(plugins.duration.clone()))?;
        registry.register(Box::new(plugins.memory.clone()))?;
        registry.register(Box::new(plugins.reloads.clone()))?;
        registry.register(Box::new(plugins.compilations.clone()))?;
        registry.register(Box::new(plugins.store_entries.clone()))?;
        registry.register(Box::new(plugins.store_bytes.clone()))?;
        registry.register(Box::new(plugins.store_evictions.clone()))?;
        registry.register(Box::new(plugins.observed.clone()))?;
        registry.register(Box::new(plugins.observer_batches.clone()))?;
        registry.register(Box::new(plugins.observer_queued.clone()))?;
        registry.register(Box::new(plugins.outbound.clone()))?;
        registry.register(Box::new(drops.clone()))?;
        let declared = Arc::new(crate::plugin::declared::Declared::new(
            registry.clone(),
            drops,
        ));
        let signatures = Arc::new(SignatureFamilies {
            trust_store_size: prometheus::IntGauge::new(
                "fedgate_trust_store_size",
                "Keys in the signature trust store of the running configuration.",
            )?,
            peers: Arc::new(crate::signature::peers::Peers::new()?),
            verifications: IntCounterVec::new(
                Opts::new(
                    "fedgate_signature_verifications_total",
                    "HTTP signature checks on routes that verify them, by route, scheme (cavage, rfc9421, none) and result.",
                ),
                &["route", "scheme", "result"],
            )?,
            failures_by_instance: IntCounterVec::new(
                Opts::new(
                    "fedgate_signature_failures_by_instance_total",
                    "Failed signature checks by the instance named in the key id (capped; the rest count as other) and result.",
                ),
                &["instance", "result"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "fedgate_signature_verification_duration_seconds",
                    "Time to check one request's signature and body digest, by scheme.",
                )
                .buckets(SIGNATURE_BUCKETS.to_vec()),
                &["scheme"],
            )?,
            key_cache_lookups: IntCounterVec::new(
                Opts::new(
                    "fedgate_signature_key_cache_lookups_total",
                    "Lookups of keys missing from the trust store in the fetched-key cache, by result (hit, miss, negative_hit).",
                ),
                &["result"],
            )?,
            key_fetches: IntCounterVec::new(
                Opts::new(
                    "fedgate_signature_key_fetches_total",
                    "Fetches of key documents from key id URLs, by result (ok, timeout, connect, status, too_large, invalid_document, refused_address, breaker_open).",
                ),
                &["result"],
            )?,
            key_fetch_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "fedgate_signature_key_fetch_duration_seconds",
                    "Time of one key document fetch, from resolving the host to the parsed key.",
                )
                .buckets(KEY_FETCH_BUCKETS.to_vec()),
            )?,
            key_cache_entries: prometheus::IntGauge::new(
                "fedgate_signature_key_cache_entries",
                "Fetched keys and remembered fetch failures in the key cache.",
            )?,
        });
        registry.register(Box::new(signatures.trust_store_size.clone()))?;
        registry.register(Box::new(PeersCollector(signatures.peers.clone())))?;
        registry.register(Box::new(signatures.verifications.clone()))?;
        registry.register(Box::new(signatures.failures_by_instance.clone()))?;
        registry.register(Box::new(signatures.duration.clone()))?;
        let limits = Arc::new(LimitFamilies {
            decisions: IntCounterVec::new(
                Opts::new(
                    "fedgate_rate_limit_decisions_total",
                    "Rate limit decisions by limiter and decision (allowed, limited, would_limit in observe mode).",
                ),
                &["limiter", "decision"],
            )?,
            keys: IntGaugeVec::new(
                Opts::new(
                    "fedgate_rate_limit_keys",
                    "Keys a rate limiter holds state for, as of its last sweep.",
                ),
                &["limiter"],
            )?,
            blocked: IntCounterVec::new(
                Opts::new(
                    "fedgate_blocked_requests_total",
                    "Requests refused by the blocklist, by reason (address, instance).",
                ),
                &["reason"],
            )?,
            blocklist_size: IntGauge::new(
                "fedgate_blocklist_size",
                "Domains and networks on the blocklist of the running configuration.",
            )?,
        });
        registry.register(Box::new(limits.decisions.clone()))?;
        registry.register(Box::new(limits.keys.clone()))?;
        registry.register(Box::new(limits.blocked.clone()))?;
        registry.register(Box::new(limits.blocklist_size.clone()))?;
        let resilience = Arc::new(ResilienceFamilies {
            breaker_state: IntGaugeVec::new(
                Opts::new(
                    "fedgate_circuit_breaker_state",
                    "Circuit breaker state by upstream: 0 closed, 1 open, 2 half-open.",
                ),
                &["upstream"],
            )?,
            breaker_transitions: IntCounterVec::new(
                Opts::new(
                    "fedgate_circuit_breaker_transitions_total",
                    "Circuit breaker transitions by upstream, from and to.",
                ),
                &["upstream", "from", "to"],
            )?,
            breaker_rejections: IntCounterVec::new(
                Opts::new(
                    "fedgate_circuit_breaker_rejections_total",
                    "Requests refused with 503 by an open (or fully probing half-open) circuit breaker.",
                ),
                &["upstream"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "fedgate_retries_total",
                    "Retries by upstream and result (success, failure, budget_exhausted, no_endpoint).",
                ),
                &["upstream", "result"],
            )?,
        });
        registry.register(Box::new(resilience.breaker_state.clone()))?;
        registry.register(Box::new(resilience.breaker_transitions.clone()))?;
        registry.register(Box::new(resilience.breaker_rejections.clone()))?;
        registry.register(Box::new(resilience.retries.clone()))?;
        let auth_attempts = IntCounterVec::new(
            Opts::new(
                "fedgate_auth_attempts_total",
                "Authentication attempts on routes with auth, by route, method (api_key, jwt, mtls) and result (ok, missing, invalid, expired, forbidden).",
            ),
            &["route", "method", "result"],
        )?;
        registry.register(Box::new(auth_attempts.clone()))?;
        registry.register(Box::new(signatures.key_cache_lookups.clone()))?;
        registry.register(Box::new(signatures.key_fetches.clone()))?;
        registry.register(Box::new(signatures.key_fetch_duration.clone()))?;
        registry.register(Box::new(signatures.key_cache_entries.clone()))?;
        let health = Arc::new(HealthFamilies {
            endpoint_healthy: IntGaugeVec::new(
                Opts::new(
                    "fedgate_upstream_endpoint_healthy",
                    "1 while an endpoint is eligible for traffic (healthy and not ejected), else 0.",
                ),
                &["upstream", "endpoint"],
            )?,
            checks: IntCounterVec::new(
                Opts::new(
                    "fedgate_health_checks_total",
                    "Active health checks, by upstream and result (success, failure, timeout).",
                ),
                &["upstream", "result"],
            )?,
            ejections: IntCounterVec::new(
                Opts::new(
                    "fedgate_outlier_ejections_total",
                    "Endpoints ejected by outlier detection, by upstream.",
                ),
                &["upstream"],
            )?,
        });
        registry.register(Box::new(health.endpoint_healthy.clone()))?;
        registry.register(Box::new(health.checks.clone()))?;
        registry.register(Box::new(health.ejections.clone()))?;
        let tls_handshake_errors = IntCounterVec::new(
            Opts::new(
                "fedgate_tls_handshake_errors_total",
                "Failed TLS handshakes on listeners, by listener and reason (client_certificate, protocol, timeout, other).",
            ),
            &["listener", "reason"],
        )?;
        registry.register(Box::new(tls_handshake_errors.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Metrics {
            registry,
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
            signatures,
            limits,
            resilience,
            auth_attempts,
            health,
            tls_handshake_errors,
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
        use crate::breaker::State;
        let r = &self.resilience;
        crate::breaker::BreakerMetrics {
            state: r.breaker_state.with_label_values(&[upstream]),
            // Only the four transitions the state machine makes get series.
            transitions: State::ALL.map(|from| {
                State::ALL.map(|to| {
                    crate::breaker::is_transition(from, to).then(|| {
                        r.breaker_transitions.with_label_values(&[
                            upstream,
                            from.as_str(),
                            to.as_str(),
                        ])
                    })
                })
            }),
            rejections: r.breaker_rejections.with_label_values(&[upstream]),
        }
    }

    /// Removes the breaker and retry series of an upstream (dropped, or its breaker or
    /// retries turned off).
    pub fn forget_resilience(&self, upstream: &str, breaker: bool, retries: bool) {
        use crate::breaker::State;
        let r = &self.resilience;
        if breaker {
            let _ = r.breaker_state.remove_label_values(&[upstream]);
            let _ = r.breaker_rejections.remove_label_values(&[upstream]);
            for from in State::ALL {
                for to in State::ALL {
                    let _ = r.breaker_transitions.remove_label_values(&[
                        upstream,
                        from.as_str(),
                        to.as_str(),
                    ]);
                }
            }
        }
        if retries {
            for o in crate::retry::Outcome::ALL {
                let _ = r.retries.remove_label_values(&[upstream, o.as_str()]);
            }
        }
    }

    /// Handles of one upstream's retry counters, by [`crate::retry::Outcome`].
    pub fn retries(&self, upstream: &str) -> [IntCounter; 4] {
        crate::retry::Outcome::ALL.map(|o| {
            self.resilience
                .retries
                .with_label_values(&[upstream, o.as_str()])
        })
    }

    /// The blocklist and rate limit families.
    pub fn limit_families(&self) -> &LimitFamilies {
        &self.limits
    }

    /// Handles of one rate limiter; resolved when the limiter is built.
    pub fn limiter(&self, name: &str) -> crate::ratelimit::LimiterMetrics {
        let d = &self.limits.decisions;
        crate::ratelimit::LimiterMetrics {
            allowed: d.with_label_values(&[name, "allowed"]),
            limited: d.with_label_values(&[name, "limited"]),
            would_limit: d.with_label_values(&[name, "would_limit"]),
            keys: self.limits.keys.with_label_values(&[name]),
        }
    }

    /// Removes the series of a limiter that a reload dropped.
    pub fn forget_limiter(&self, name: &str) {
        for d in ["allowed", "limited", "would_limit"] {
            let _ = self.limits.decisions.remove_label_values(&[name, d]);
        }
        let _ = self.limits.keys.remove_label_values(&[name]);
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

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn plugin_families(&self) -> &PluginFamilies {
        &self.plugins
    }

    /// The families plugins declare.
    pub fn declared(&self) -> Arc<crate::plugin::declared::Declared> {
        self.declared.clone()
    }

    /// Counts a plugin load done by a reload.
    pub fn plugin_reload(&self, plugin: &str, ok: bool) {
        self.plugins
            .reloads
            .with_label_values(&[plugin, if ok { "success" } else { "error" }])
            .inc();
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
            health: HealthMetrics {
                checks: CheckResult::ALL.map(|r| {
                    self.health
                        .checks
                        .with_label_values(&[upstream, r.as_str()])
                }),
                ejections: self.health.ejections.with_label_values(&[upstream]),
                families: self.health.clone(),
            },
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
        for r in CheckResult::ALL {
            let _ = self
                .health
                .checks
                .remove_label_values(&[upstream, r.as_str()]);
        }
        let _ = self.health.ejections.remove_label_values(&[upstream]);
    }

    /// Removes the health gauge of an endpoint that a reload dropped.
    pub fn forget_endpoint(&self, upstream: &str, endpoint: &str) {
        let _ = self
            .health
            .endpoint_healthy
            .remove_label_values(&[upstream, endpoint]);
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

/// Health handles of one upstream; endpoint gauges are resolved as its endpoints are built.
#[derive(Debug, Clone)]
pub struct HealthMetrics {
    /// By `CheckResult as usize`.
    pub checks: [IntCounter; 3],
    pub ejections: IntCounter,
    families: Arc<HealthFamilies>,
}

impl HealthMetrics {
    pub fn check(&self, result: CheckResult) {
        self.checks[result as usize].inc();
    }

    /// The `fedgate_upstream_endpoint_healthy` gauge of one endpoint.
    pub fn endpoint(&self, upstream: &str, endpoint: &str) -> IntGauge {
        self.families
            .endpoint_healthy
            .with_label_values(&[upstream, endpoint])
    }
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
