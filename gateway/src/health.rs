//! Endpoint health (phase 8): which endpoints of an upstream balancing may pick.
//!
//! Two sources decide, both owned by one background task per upstream (the [`Monitor`]):
//! - active checks: an HTTP request (path, expected statuses, optional body substring) or a
//!   TCP connect to every endpoint, every `interval` plus a random jitter, bounded by a
//!   timeout; `unhealthy_threshold` consecutive failures make an endpoint unhealthy,
//!   `healthy_threshold` consecutive passes make it healthy again. Endpoints start healthy,
//!   so a (re)start never begins with an outage while the first checks run;
//! - passive outlier detection: the request path reports each forward's outcome
//!   ([`HealthShared::report`]); `consecutive_failures` failures in a row eject the endpoint
//!   for `base_ejection_time × ejections` (capped at `max_ejection_time`), unless more than
//!   `max_ejection_percent` of the endpoints would then be ejected. The ejection ends when
//!   its time is up or an active check passes.
//!
//! The request path only reads one atomic per endpoint ([`HealthShared::eligible`]) and
//! counts failures; every transition happens on the monitor task, is published through
//! those atomics and the `fedgate_upstream_endpoint_healthy` gauge, and is logged with its
//! reason. The task ends when its upstream is dropped or replaced by a reload.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::IntGauge;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::Service;

use crate::backoff::{Backoff, Consecutive, Growth};
use crate::config::{
    CheckKind, EndpointConfig, HealthCheckConfig, NoHealthy, OutlierConfig, UpstreamConfig,
    UpstreamProtocol,
};
use crate::register;
use crate::transport::{https_connector, DialSettings};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Registry};

/// Set while active checks say the endpoint is unhealthy.
const UNHEALTHY: u8 = 1;
/// Set while outlier detection has the endpoint ejected.
const EJECTED: u8 = 2;

/// The most of a check response body searched for `body_contains`.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// What the request path and `/health` read of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    flags: AtomicU8,
    /// Consecutive failed forwards, counted by the request path, reset by the monitor.
    failures: Consecutive,
}

/// Health of one endpoint as balancing and `/health` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointState {
    /// Passes its active checks (or has none).
    pub healthy: bool,
    /// Ejected by outlier detection.
    pub ejected: bool,
}

impl EndpointState {
    /// An endpoint of an upstream without health checks or outlier detection.
    pub const ALWAYS: EndpointState = EndpointState {
        healthy: true,
        ejected: false,
    };

    /// Healthy and not ejected: balancing may pick it.
    pub fn eligible(self) -> bool {
        self.healthy && !self.ejected
    }
}

/// The health state an upstream shares with its monitor task.
#[derive(Debug)]
pub struct HealthShared {
    endpoints: Box<[EndpointHealth]>,
    /// Failures in a row that wake the monitor; 0 when outlier detection is off.
    outlier_threshold: u32,
    panic: bool,
    reports: Notify,
}

impl HealthShared {
    /// Healthy and not ejected: one relaxed load.
    #[inline]
    pub fn eligible(&self, i: usize) -> bool {
        self.endpoints[i].flags.load(Ordering::Relaxed) == 0
    }

    /// Passes its active checks (or has none).
    pub fn healthy(&self, i: usize) -> bool {
        self.endpoints[i].flags.load(Ordering::Relaxed) & UNHEALTHY == 0
    }

    pub fn ejected(&self, i: usize) -> bool {
        self.endpoints[i].flags.load(Ordering::Relaxed) & EJECTED != 0
    }

    /// `no_healthy = "panic"`: with no eligible endpoint, balancing uses them all.
    pub fn panic(&self) -> bool {
        self.panic
    }

    /// The request path reports one forward's outcome. A success with nothing to reset is
    /// one relaxed load; the failure that reaches the threshold wakes the monitor.
    #[inline]
    pub fn report(&self, i: usize, ok: bool) {
        if self.outlier_threshold == 0 {
            return;
        }
        let failures = &self.endpoints[i].failures;
        if ok {
            failures.success();
        } else if failures.failure() == self.outlier_threshold {
            self.reports.notify_one();
        }
    }
}

/// An upstream's health: the shared state, and the monitor until it is started.
#[derive(Debug)]
pub struct Health {
    pub shared: Arc<HealthShared>,
    pending: Mutex<Option<Monitor>>,
    /// Dropped with the upstream (or by [`Health::stop`]): the monitor then ends.
    stop: Mutex<Option<watch::Sender<()>>>,
}

impl Health {
    /// Health state for an upstream whose config has a health check or outlier detection,
    /// `None` otherwise (every endpoint is then always eligible). `gauges` are the
    /// endpoints' `fedgate_upstream_endpoint_healthy` handles, in endpoint order.
    pub fn new(
        config: &UpstreamConfig,
        labels: Vec<Arc<str>>,
        gauges: Vec<IntGauge>,
        metrics: HealthMetrics,
        dial: &DialSettings,
    ) -> Option<Health> {
        if config.health_check.is_none() && config.outlier_detection.is_none() {
            return None;
        }
        let shared = Arc::new(HealthShared {
            endpoints: config
                .endpoints
                .iter()
                .map(|_| EndpointHealth::default())
                .collect(),
            outlier_threshold: config
                .outlier_detection
                .as_ref()
                .map_or(0, |o| o.consecutive_failures),
            panic: config.no_healthy == NoHealthy::Panic,
            reports: Notify::new(),
        });
        let machine = Machine::new(
            config.name.as_str().into(),
            labels,
            gauges,
            shared.clone(),
            config.health_check.clone(),
            config.outlier_detection.clone(),
            metrics,
        );
        let probe = match &config.health_check {
            None => None,
            Some(h) => {
                let prober = Arc::new(Prober {
                    kind: h.kind.clone(),
                    protocol: config.protocol,
                    connector: https_connector(dial),
                    endpoints: config.endpoints.clone(),
                });
                let probe: Probe = Arc::new(move |i| {
                    let p = prober.clone();
                    Box::pin(async move { p.probe(i).await })
                });
                Some(probe)
            }
        };
        Some(Health {
            shared,
            pending: Mutex::new(Some(Monitor { machine, probe })),
            stop: Mutex::new(None),
        })
    }

    /// Starts the monitor task, once; later calls do nothing. Needs a tokio runtime.
    pub fn start(&self) {
        let Some(monitor) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let (tx, rx) = watch::channel(());
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        tokio::spawn(monitor.run(rx));
    }

    /// Ends the monitor task (an upstream replaced by a reload stops judging endpoints
    /// whose gauges its successor now publishes).
    pub fn stop(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// One probe of endpoint `i`: `Ok` when it passes, else why not.
pub(crate) type Probe =
    Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The task that owns an upstream's health state machine.
pub(crate) struct Monitor {
    machine: Machine,
    probe: Option<Probe>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("upstream", &self.machine.upstream)
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Runs checks when they are due, ejections and returns when reported or expired, until
    /// `stop`'s sender is dropped.
    ///
    /// Checks of an endpoint are scheduled start to start: the next is due `interval` (plus
    /// jitter) after the previous one *started*, however long that one took, so a hanging
    /// endpoint is judged every interval, not every interval plus timeout. Checks of one
    /// endpoint never overlap: one still running when the next is due (possible only with a
    /// `timeout` longer than the interval) is not joined by a second; the next starts as
    /// soon as it ends.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<()>) {
        let m = &mut self.machine;
        let shared = m.shared.clone();
        let n = shared.endpoints.len();
        let now = Instant::now();
        let check = m.check.clone();
        // The first round starts at once, spread over the jitter.
        let mut due: Vec<Option<Instant>> = (0..n)
            .map(|_| check.as_ref().map(|c| now + jitter(c, Duration::ZERO)))
            .collect();
        let mut running = vec![false; n];
        let mut probes: JoinSet<(usize, CheckResult, String)> = JoinSet::new();
        loop {
            // A check that is running defers its endpoint's next one until it ends.
            let next_check = due
                .iter()
                .zip(&running)
                .filter(|(_, &r)| !r)
                .filter_map(|(d, _)| *d)
                .min();
            let wake = next_check.into_iter().chain(m.next_expiry()).min();
            tokio::select! {
                _ = stop.changed() => return,
                _ = shared.reports.notified() => m.on_reports(Instant::now()),
                Some(Ok((i, result, detail))) = probes.join_next(), if !probes.is_empty() => {
                    running[i] = false;
                    m.on_check(i, result, &detail, Instant::now());
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    let now = Instant::now();
                    m.expire(now);
                    if let (Some(c), Some(probe)) = (&check, &self.probe) {
                        for (i, d) in due.iter_mut().enumerate() {
                            if running[i] || !d.is_some_and(|d| d <= now) {
                                continue;
                            }
                            // Start to start: the next check is due an interval after
                            // this one starts.
                            *d = Some(now + jitter(c, c.interval));
                            running[i] = true;
                            // A probe that panicked counts as failed, so its endpoint
                            // keeps being checked.
                            let run = std::panic::AssertUnwindSafe(probe(i)).catch_unwind();
                            let timeout = c.timeout;
                            probes.spawn(async move {
                                match tokio::time::timeout(timeout, run).await {
                                    Ok(Ok(Ok(()))) => (i, CheckResult::Success, String::new()),
                                    Ok(Ok(Err(e))) => (i, CheckResult::Failure, e),
                                    Ok(Err(_)) => (i, CheckResult::Failure, "the check panicked".to_string()),
                                    Err(_) => (i, CheckResult::Timeout, format!("no answer within {timeout:?}")),
                                }
                            });
                        }
                    }
                }
            }
        }
    }
}

/// `base` plus a random share of the configured jitter.
fn jitter(c: &HealthCheckConfig, base: Duration) -> Duration {
    let max = c.jitter.max(c.interval).as_nanos().min(u64::MAX as u128) as u64;
    base + Duration::from_nanos(fastrand::u64(0..=max))
}

/// What the monitor keeps of one endpoint beside the flags it publishes: the runs of check
/// results and the ejection history.
#[derive(Debug, Default, Clone)]
struct Tracked {
    unhealthy: bool,
    passes: u32,
    fails: u32,
    ejected_until: Option<Instant>,
    /// Ejections so far: the multiplier of the next ejection time.
    ejections: u32,
    /// When the last ejection ended.
    returned_at: Option<Instant>,
}

/// The health state machine of one upstream's endpoints. Time is passed in, so it runs the
/// same on a paused clock; each transition publishes the endpoint's flags and gauge and
/// logs why.
#[derive(Debug)]
pub(crate) struct Machine {
    upstream: Arc<str>,
    labels: Vec<Arc<str>>,
    gauges: Vec<IntGauge>,
    shared: Arc<HealthShared>,
    check: Option<HealthCheckConfig>,
    outlier: Option<OutlierConfig>,
    metrics: HealthMetrics,
    states: Vec<Tracked>,
    /// Whether some endpoint was eligible after the last transition.
    any_eligible: bool,
}

impl Machine {
    fn new(
        upstream: Arc<str>,
        labels: Vec<Arc<str>>,
        gauges: Vec<IntGauge>,
        shared: Arc<HealthShared>,
        check: Option<HealthCheckConfig>,
        outlier: Option<OutlierConfig>,
        metrics: HealthMetrics,
    ) -> Self {
        for g in &gauges {
            g.set(1);
        }
        Machine {
            states: vec![Tracked::default(); labels.len()],
            upstream,
            labels,
            gauges,
            shared,
            check,
            outlier,
            metrics,
            any_eligible: true,
        }
    }

    /// The outcome of one active check of endpoint `i`.
    fn on_check(&mut self, i: usize, result: CheckResult, detail: &str, now: Instant) {
        self.metrics.check(result);
        let Some(check) = &self.check else { return };
        let (healthy_threshold, unhealthy_threshold) =
            (check.healthy_threshold, check.unhealthy_threshold);
        let s = &mut self.states[i];
        if result == CheckResult::Success {
            s.fails = 0;
            s.passes = s.passes.saturating_add(1);
            if s.ejected_until.is_some() {
                s.ejected_until = None;
                s.returned_at = Some(now);
                self.shared.endpoints[i].failures.reset();
                tracing::info!(upstream = %self.upstream, endpoint = %self.labels[i], reason = "an active check passed", "endpoint returned from ejection");
            }
            let s = &mut self.states[i];
            if s.unhealthy && s.passes >= healthy_threshold {
                s.unhealthy = false;
                tracing::info!(upstream = %self.upstream, endpoint = %self.labels[i], reason = %format!("{} consecutive checks passed", s.passes), "endpoint healthy");
            }
        } else {
            s.passes = 0;
            s.fails = s.fails.saturating_add(1);
            if !s.unhealthy && s.fails >= unhealthy_threshold {
                s.unhealthy = true;
                tracing::warn!(upstream = %self.upstream, endpoint = %self.labels[i], reason = %format!("{} consecutive checks failed, last: {}", s.fails, describe(result, detail)), "endpoint unhealthy");
            } else {
                tracing::debug!(upstream = %self.upstream, endpoint = %self.labels[i], result = result.as_str(), detail, "health check failed");
            }
        }
        self.publish(i);
    }

    /// Looks at the failure counts the request path reached the threshold with.
    fn on_reports(&mut self, now: Instant) {
        let Some(outlier) = self.outlier.clone() else {
            return;
        };
        for i in 0..self.states.len() {
            let failures = &self.shared.endpoints[i].failures;
            let n = failures.get();
            if n < outlier.consecutive_failures {
                continue;
            }
            // Counting starts again whatever is decided: a refused ejection is retried after
            // another run of failures, not after every further one.
            failures.reset();
            if self.states[i].ejected_until.is_some() {
                continue;
            }
            self.eject(i, &outlier, n, now);
        }
    }

    fn eject(&mut self, i: usize, outlier: &OutlierConfig, failures: u32, now: Instant) {
        let total = self.states.len();
        let ejected = self
            .states
            .iter()
            .filter(|s| s.ejected_until.is_some())
            .count();
        if (ejected + 1) * 100 > outlier.max_ejection_percent as usize * total {
            tracing::warn!(upstream = %self.upstream, endpoint = %self.labels[i], failures, ejected, max_ejection_percent = outlier.max_ejection_percent, "endpoint not ejected: max_ejection_percent reached");
            return;
        }
        let s = &mut self.states[i];
        // An endpoint that stayed in service for max_ejection_time since its last return
        // starts over at the base time.
        if s.returned_at
            .is_some_and(|t| now.duration_since(t) >= outlier.max_ejection_time)
        {
            s.ejections = 0;
        }
        s.ejections = s.ejections.saturating_add(1);
        let time = Backoff {
            base: outlier.base_ejection_time,
            max: outlier.max_ejection_time,
            growth: Growth::Linear,
            jitter: 0.0,
        }
        .period(s.ejections);
        s.ejected_until = Some(now + time);
        self.metrics.ejections.inc();
        tracing::warn!(upstream = %self.upstream, endpoint = %self.labels[i], reason = %format!("{failures} consecutive failed requests"), ejection = s.ejections, seconds = time.as_secs_f64(), "endpoint ejected");
        self.publish(i);
    }

    /// Ends the ejections whose time is up.
    fn expire(&mut self, now: Instant) {
        for i in 0..self.states.len() {
            let s = &mut self.states[i];
            if s.ejected_until.is_some_and(|t| t <= now) {
                s.ejected_until = None;
                s.returned_at = Some(now);
                self.shared.endpoints[i].failures.reset();
                tracing::info!(upstream = %self.upstream, endpoint = %self.labels[i], reason = "ejection time over", "endpoint returned from ejection");
                self.publish(i);
            }
        }
    }

    /// When the next ejection ends.
    fn next_expiry(&self) -> Option<Instant> {
        self.states.iter().filter_map(|s| s.ejected_until).min()
    }

    fn publish(&mut self, i: usize) {
        let s = &self.states[i];
        let flags = if s.unhealthy { UNHEALTHY } else { 0 }
            | if s.ejected_until.is_some() {
                EJECTED
            } else {
                0
            };
        self.shared.endpoints[i]
            .flags
            .store(flags, Ordering::Relaxed);
        self.gauges[i].set(i64::from(flags == 0));
        let any = (0..self.states.len()).any(|j| self.shared.eligible(j));
        if any != self.any_eligible {
            self.any_eligible = any;
            if any {
                tracing::info!(upstream = %self.upstream, "an endpoint is eligible again");
            } else if self.shared.panic {
                tracing::warn!(upstream = %self.upstream, endpoints = self.states.len(), "no eligible endpoint: panic mode spreads traffic over all endpoints");
            } else {
                tracing::warn!(upstream = %self.upstream, "no eligible endpoint: requests get 503 no healthy upstream");
            }
        }
    }
}

fn describe(result: CheckResult, detail: &str) -> String {
    match result {
        CheckResult::Timeout => format!("timeout ({detail})"),
        _ => detail.to_string(),
    }
}

/// Active checks of one upstream's endpoints, over connections of their own (never the
/// request pool's): plain or TLS as the endpoint's scheme says, HTTP/1.1 or HTTP/2 as the
/// upstream speaks.
struct Prober {
    kind: CheckKind,
    protocol: UpstreamProtocol,
    connector: HttpsConnector<HttpConnector>,
    endpoints: Vec<EndpointConfig>,
}

impl Prober {
    async fn probe(&self, i: usize) -> Result<(), String> {
        let ep = &self.endpoints[i];
        match &self.kind {
            CheckKind::Tcp => {
                let port =
                    ep.authority
                        .port_u16()
                        .unwrap_or(if ep.scheme == http::uri::Scheme::HTTPS {
                            443
                        } else {
                            80
                        });
                let addr = format!("{}:{port}", ep.authority.host());
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("connect: {e}"))
            }
            CheckKind::Http {
                path,
                expected,
                body_contains,
            } => {
                let (status, body) = self.get(ep, path, body_contains.is_some()).await?;
                let code = status.as_u16();
                if !expected.iter().any(|&(lo, hi)| (lo..=hi).contains(&code)) {
                    return Err(format!("status {code}"));
                }
                match body_contains {
                    Some(want) if !contains(&body, want.as_bytes()) => {
                        Err(format!("the body does not contain {want:?}"))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// GETs `path` from the endpoint; the body is read (up to [`MAX_CHECK_BODY`]) only
    /// when it is to be searched.
    async fn get(
        &self,
        ep: &EndpointConfig,
        path: &http::uri::PathAndQuery,
        read_body: bool,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let uri = Uri::builder()
            .scheme(ep.scheme.clone())
            .authority(ep.authority.clone())
            .path_and_query(path.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let io = self
            .connector
            .clone()
            .call(uri.clone())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let host = HeaderValue::from_str(ep.authority.as_str()).map_err(|e| e.to_string())?;
        let mut req = Request::get(uri)
            .header(header::USER_AGENT, "fedgate-health-check")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let exchange = |resp: Result<Response<hyper::body::Incoming>, hyper::Error>| async move {
            let resp = resp.map_err(|e| format!("request: {e}"))?;
            let status = resp.status();
            let mut body = Vec::new();
            if read_body {
                let mut incoming = resp.into_body();
                while body.len() < MAX_CHECK_BODY {
                    match incoming.frame().await {
                        Some(Ok(f)) => {
                            if let Some(d) = f.data_ref() {
                                body.extend_from_slice(d);
                            }
                        }
                        Some(Err(e)) => return Err(format!("body: {e}")),
                        None => break,
                    }
                }
            }
            Ok((status, body))
        };
        match self.protocol {
            UpstreamProtocol::Http1 => {
                *req.uri_mut() = Uri::from(path.clone());
                req.headers_mut().insert(header::HOST, host);
                req.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                beside(conn, async move { exchange(tx.send_request(req).await).await }).await
            }
            UpstreamProtocol::Http2 => {
                let (mut tx, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| format!("handshake: {e}"))?;
                beside(conn, async move { exchange(tx.send_request(req).await).await }).await
            }
        }
    }
}

/// Runs `exchange` with its connection `conn` driven beside it. The connection is dropped
/// with the exchange: a check that times out leaves nothing running.
async fn beside<C: Future, T>(conn: C, exchange: impl Future<Output = T>) -> T {
    let conn = async move {
        let _ = conn.await;
        std::future::pending::<()>().await
    };
    tokio::select! {
        r = exchange => r,
        _ = conn => unreachable!("the connection future never resolves"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The endpoint health families (phase 8), registered by [`HealthFamilies::register`].
#[derive(Debug)]
pub struct HealthFamilies {
    /// `fedgate_upstream_endpoint_healthy{upstream,endpoint}`: 1 while eligible for traffic.
    pub endpoint_healthy: IntGaugeVec,
    /// `fedgate_health_checks_total{upstream,result}`.
    pub checks: IntCounterVec,
    /// `fedgate_outlier_ejections_total{upstream}`.
    pub ejections: IntCounterVec,
}

impl HealthFamilies {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(HealthFamilies {
            endpoint_healthy: register::gauge_vec(
                registry,
                "fedgate_upstream_endpoint_healthy",
                "1 while an endpoint is eligible for traffic (healthy and not ejected), else 0.",
                &["upstream", "endpoint"],
            )?,
            checks: register::counter_vec(
                registry,
                "fedgate_health_checks_total",
                "Active health checks, by upstream and result (success, failure, timeout).",
                &["upstream", "result"],
            )?,
            ejections: register::counter_vec(
                registry,
                "fedgate_outlier_ejections_total",
                "Endpoints ejected by outlier detection, by upstream.",
                &["upstream"],
            )?,
        })
    }

    /// Handles of one upstream; resolved when the upstream is built.
    pub fn upstream(self: &Arc<Self>, upstream: &str) -> HealthMetrics {
        HealthMetrics {
            checks: CheckResult::ALL
                .map(|r| self.checks.with_label_values(&[upstream, r.as_str()])),
            ejections: self.ejections.with_label_values(&[upstream]),
            families: self.clone(),
        }
    }

    /// Removes the series of an upstream that a reload dropped.
    pub fn forget_upstream(&self, upstream: &str) {
        for r in CheckResult::ALL {
            let _ = self.checks.remove_label_values(&[upstream, r.as_str()]);
        }
        let _ = self.ejections.remove_label_values(&[upstream]);
    }

    /// Removes the gauge of an endpoint that a reload dropped.
    pub fn forget_endpoint(&self, upstream: &str, endpoint: &str) {
        let _ = self
            .endpoint_healthy
            .remove_label_values(&[upstream, endpoint]);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Jitter;
    use crate::metrics::Metrics;
    use std::sync::atomic::AtomicU32;

    struct Fixture {
        machine: Machine,
        shared: Arc<HealthShared>,
        metrics: Metrics,
    }

    fn fixture(
        n: usize,
        check: Option<HealthCheckConfig>,
        outlier: Option<OutlierConfig>,
        panic: bool,
    ) -> Fixture {
        let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
        let um = metrics.upstream("app");
        let labels: Vec<Arc<str>> = (0..n).map(|i| format!("http://e{i}").into()).collect();
        let gauges = labels
            .iter()
            .map(|l| um.health.endpoint("app", l))
            .collect();
        let shared = Arc::new(HealthShared {
            endpoints: (0..n).map(|_| EndpointHealth::default()).collect(),
            outlier_threshold: outlier.as_ref().map_or(0, |o| o.consecutive_failures),
            panic,
            reports: Notify::new(),
        });
        let machine = Machine::new(
            "app".into(),
            labels,
            gauges,
            shared.clone(),
            check,
            outlier,
            um.health.clone(),
        );
        Fixture {
            machine,
            shared,
            metrics,
        }
    }

    fn check(healthy: u32, unhealthy: u32) -> HealthCheckConfig {
        HealthCheckConfig {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(10),
            jitter: Jitter::Percent(10),
            timeout: Duration::from_secs(2),
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
        }
    }

    fn outlier(n: u32, percent: u32) -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: n,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(100),
            max_ejection_percent: percent,
        }
    }

    fn gauge(f: &Fixture, i: usize) -> i64 {
        f.metrics
            .upstream("app")
            .health
            .endpoint("app", &format!("http://e{i}"))
            .get()
    }

    fn fail(f: &Fixture, i: usize, times: u32) {
        for _ in 0..times {
            f.shared.report(i, false);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_flip_an_endpoint_after_consecutive_results_only() {
        let mut f = fixture(2, Some(check(2, 3)), None, false);
        let now = Instant::now();
        assert!(f.shared.eligible(0));
        assert_eq!(gauge(&f, 0), 1);
        f.machine
            .on_check(0, CheckResult::Failure, "status 500", now);
        f.machine.on_check(0, CheckResult::Timeout, "", now);
        // A pass in between starts the count again.
        f.machine.on_check(0, CheckResult::Success, "", now);
        f.machine.on_check(0, CheckResult::Failure, "", now);
        f.machine.on_check(0, CheckResult::Failure, "", now);
        assert!(f.shared.eligible(0));
        f.machine.on_check(0, CheckResult::Failure, "", now);
        assert!(!f.shared.eligible(0) && !f.shared.healthy(0));
        assert_eq!(gauge(&f, 0), 0);
        assert!(f.shared.eligible(1));
        f.machine.on_check(0, CheckResult::Success, "", now);
        assert!(!f.shared.eligible(0));
        f.machine.on_check(0, CheckResult::Success, "", now);
        assert!(f.shared.eligible(0));
        assert_eq!(gauge(&f, 0), 1);
        let counts: Vec<u64> = f.machine.metrics.checks.iter().map(|c| c.get()).collect();
        assert_eq!(counts, vec![3, 4, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_grows_with_each_ejection_up_to_the_cap() {
        let mut f = fixture(2, None, Some(outlier(3, 50)), false);
        let mut lengths = Vec::new();
        for _ in 0..5 {
            fail(&f, 0, 2);
            f.machine.on_reports(Instant::now());
            assert!(f.shared.eligible(0), "two failures do not eject");
            fail(&f, 0, 1);
            f.machine.on_reports(Instant::now());
            assert!(f.shared.ejected(0) && !f.shared.eligible(0));
            assert_eq!(gauge(&f, 0), 0);
            let until = f.machine.next_expiry().unwrap();
            lengths.push((until - Instant::now()).as_secs());
            tokio::time::advance(until - Instant::now()).await;
            f.machine.expire(Instant::now());
            assert!(f.shared.eligible(0));
            assert_eq!(gauge(&f, 0), 1);
        }
        assert_eq!(lengths, vec![30, 60, 90, 100, 100]);
        assert_eq!(f.machine.metrics.ejections.get(), 5);
        // A success resets the run of failures.
        fail(&f, 0, 2);
        f.shared.report(0, true);
        fail(&f, 0, 2);
        f.machine.on_reports(Instant::now());
        assert!(f.shared.eligible(0));
        // After max_ejection_time in service, the next ejection starts over at the base.
        tokio::time::advance(Duration::from_secs(100)).await;
        fail(&f, 0, 3);
        f.machine.on_reports(Instant::now());
        assert_eq!(
            f.machine.next_expiry().unwrap() - Instant::now(),
            Duration::from_secs(30)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_keeps_endpoints_in_service() {
        let mut f = fixture(2, None, Some(outlier(1, 50)), false);
        fail(&f, 0, 1);
        fail(&f, 1, 1);
        f.machine.on_reports(Instant::now());
        assert!(f.shared.ejected(0));
        assert!(!f.shared.ejected(1) && f.shared.eligible(1));
        assert_eq!(f.machine.metrics.ejections.get(), 1);
        // With one endpoint, 50% allows none.
        let mut one = fixture(1, None, Some(outlier(1, 50)), false);
        fail(&one, 0, 1);
        one.machine.on_reports(Instant::now());
        assert!(one.shared.eligible(0));
        // 100% allows all.
        let mut all = fixture(2, None, Some(outlier(1, 100)), false);
        fail(&all, 0, 1);
        fail(&all, 1, 1);
        all.machine.on_reports(Instant::now());
        assert!(!all.shared.eligible(0) && !all.shared.eligible(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_passing_check_ends_an_ejection_early() {
        let mut f = fixture(2, Some(check(2, 3)), Some(outlier(2, 50)), false);
        fail(&f, 1, 2);
        f.machine.on_reports(Instant::now());
        assert!(f.shared.ejected(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        f.machine
            .on_check(1, CheckResult::Success, "", Instant::now());
        assert!(f.shared.eligible(1));
        assert_eq!(f.machine.next_expiry(), None);
    }

    /// A probe for [`Monitor::run`] tests: endpoint 0 passes at once; endpoint 1 hangs while
    /// `down` is set. Every start is counted per endpoint.
    fn counted_probe(
        down: Arc<std::sync::atomic::AtomicBool>,
        starts: Arc<[AtomicU32; 2]>,
    ) -> Probe {
        Arc::new(move |i| {
            starts[i].fetch_add(1, Ordering::Relaxed);
            let hang = i == 1 && down.load(Ordering::Relaxed);
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok(())
            })
        })
    }

    /// The monitor task on a paused clock: checks are scheduled start to start, every
    /// interval (plus jitter, here none) whatever the previous check took; a check that
    /// hangs past its timeout counts as a timeout. A hanging endpoint is evicted
    /// `interval × (threshold - 1) + timeout` after its first failing check starts (within
    /// `interval × threshold + timeout` of the fault), and returns after
    /// `interval × (healthy_threshold - 1)` from its first passing check.
    #[tokio::test(start_paused = true)]
    async fn the_monitor_evicts_and_restores_on_schedule() {
        let mut c = check(2, 3);
        c.interval = Duration::from_millis(100);
        c.timeout = Duration::from_millis(50);
        c.jitter = Jitter::Fixed(Duration::ZERO);
        let f = fixture(2, Some(c), None, false);
        let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let starts: Arc<[AtomicU32; 2]> = Arc::new(Default::default());
        let shared = f.shared.clone();
        let checks = f.machine.metrics.checks.clone();
        let (tx, rx) = watch::channel(());
        let task = tokio::spawn(
            Monitor {
                machine: f.machine,
                probe: Some(counted_probe(down.clone(), starts.clone())),
            }
            .run(rx),
        );
        // Checks of 1 start at 0, 100, 200 ms and time out at 50, 150, 250 ms: evicted at
        // 250 ms = interval × 2 + timeout (it was 3 × (interval + timeout) when the next
        // check was scheduled from the end of the previous one).
        tokio::time::sleep(Duration::from_millis(240)).await;
        assert!(shared.eligible(1));
        assert_eq!(checks[CheckResult::Timeout as usize].get(), 2);
        assert_eq!(starts[1].load(Ordering::Relaxed), 3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!shared.eligible(1));
        assert!(shared.eligible(0));
        assert_eq!(checks[CheckResult::Timeout as usize].get(), 3);
        // Endpoint 0 was checked at 0, 100, 200 ms: the same schedule.
        assert_eq!(starts[0].load(Ordering::Relaxed), 3);
        assert_eq!(checks[CheckResult::Success as usize].get(), 3);
        down.store(false, Ordering::Relaxed);
        // The next checks of 1, at 300 and 400 ms, pass.
        tokio::time::sleep(Duration::from_millis(130)).await;
        assert!(!shared.eligible(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(shared.eligible(1));
        assert_eq!(starts[1].load(Ordering::Relaxed), 5);
        assert_eq!(checks[CheckResult::Timeout as usize].get(), 3);
        drop(tx);
        task.await.unwrap();
    }

    /// With a timeout longer than the interval, a check still running when the next is due
    /// is not joined by another: the next starts when it ends.
    #[tokio::test(start_paused = true)]
    async fn checks_of_an_endpoint_never_pile_up() {
        let mut c = check(2, 3);
        c.interval = Duration::from_millis(100);
        c.timeout = Duration::from_millis(250);
        c.jitter = Jitter::Fixed(Duration::ZERO);
        let f = fixture(2, Some(c), None, false);
        let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let starts: Arc<[AtomicU32; 2]> = Arc::new(Default::default());
        let checks = f.machine.metrics.checks.clone();
        let (tx, rx) = watch::channel(());
        let task = tokio::spawn(
            Monitor {
                machine: f.machine,
                probe: Some(counted_probe(down, starts.clone())),
            }
            .run(rx),
        );
        // Endpoint 1's checks start at 0, 250 and 500 ms (each as the previous times
        // out); endpoint 0's every 100 ms, 0 to 600 ms.
        tokio::time::sleep(Duration::from_millis(650)).await;
        assert_eq!(starts[1].load(Ordering::Relaxed), 3);
        assert_eq!(checks[CheckResult::Timeout as usize].get(), 2);
        assert_eq!(starts[0].load(Ordering::Relaxed), 7);
        assert_eq!(checks[CheckResult::Success as usize].get(), 7);
        drop(tx);
        task.await.unwrap();
    }
}
