//! Phase 8 admission: a circuit breaker per upstream (closed, open, half-open).
//!
//! The request path only reads the state and reports outcomes, with atomics: [`Breaker::admit`]
//! is one load while closed, and [`Breaker::report`] one load on a success when nothing needs
//! resetting. A task per breaker owns the state machine: it is woken when a report may have
//! crossed a threshold, decides, logs every transition with its reason, counts it, and sleeps
//! through the open period. One thing the request path does itself: the failure report that
//! makes the consecutive count reach its threshold marks a closed breaker open (one
//! compare-and-swap), so requests that start before the task has run are refused already.
//! Failures are connect errors, timeouts, resets and the configured statuses (502, 503, 504
//! by default), never a 4xx.
//!
//! ```text
//!            N consecutive failures, or
//!            failure rate >= R over the window (with >= M requests)
//!   closed ─────────────────────────────────────────────► open ◄──────┐
//!     ▲                                                    │          │ a probe fails
//!     │ K probes succeed          open period (base × 2^trips, capped, │ (the period grows)
//!     │                           with jitter) elapsed     ▼          │
//!     └─────────────────────────────────────────────── half-open ─────┘
//! ```
//!
//! While open, requests fail fast with 503 and `Retry-After`, without touching the upstream;
//! half-open admits K requests at a time as probes and refuses the rest the same way.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backoff::{Backoff, Consecutive, Growth};
use crate::register;
use prometheus::{IntCounterVec, IntGaugeVec, Registry};

/// The validated `[upstreams.NAME.circuit_breaker]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 turns this trigger off.
    pub consecutive_failures: u32,
    /// Failure share over the window that opens it (0 < R <= 1); `None` turns it off.
    pub failure_rate: Option<f64>,
    /// The rolling window of the failure rate.
    pub window: Duration,
    /// Requests the window must hold before the rate counts.
    pub min_requests: u32,
    /// The first open period; each further trip without a recovery doubles it...
    pub open_duration: Duration,
    /// ... up to this.
    pub max_open_duration: Duration,
    /// The open period varies by up to this share either way, so that gateways sharing an
    /// upstream do not probe it in step.
    pub jitter: f64,
    /// Requests admitted in half-open; all must succeed to close.
    pub half_open_probes: u32,
    /// Upstream statuses that count as failures.
    pub failure_statuses: Vec<u16>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: None,
            window: Duration::from_secs(10),
            min_requests: 20,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
            jitter: 0.1,
            half_open_probes: 3,
            failure_statuses: vec![502, 503, 504],
        }
    }
}

/// The breaker's state, also the value of `fedgate_circuit_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    pub const ALL: [State; 3] = [State::Closed, State::Open, State::HalfOpen];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }
}

/// Handles of one upstream's breaker series, resolved once.
#[derive(Debug, Clone)]
pub struct BreakerMetrics {
    pub state: IntGauge,
    /// `transitions[from][to]`, by `State as usize`; `None` where [`is_transition`] is not.
    pub transitions: [[Option<IntCounter>; 3]; 3],
    pub rejections: IntCounter,
}

/// The transitions the state machine makes.
pub fn is_transition(from: State, to: State) -> bool {
    matches!(
        (from, to),
        (State::Closed, State::Open)
            | (State::Open, State::HalfOpen)
            | (State::HalfOpen, State::Open)
            | (State::HalfOpen, State::Closed)
    )
}

/// What [`Breaker::admit`] let through: a normal request or a half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Normal,
    Probe,
}

/// A request the breaker let through, until its outcome is reported. Dropped unreported
/// (its client went away, or it found no endpoint to go to) it gives its place back, so
/// a half-open breaker's probe slot is never lost to an abandoned request.
#[derive(Debug)]
#[must_use = "report the outcome, or drop the admission to give its place back"]
pub struct Admission<'a> {
    breaker: &'a Breaker,
    permit: Permit,
    reported: bool,
}

impl Admission<'_> {
    /// A normal request, or one of a half-open breaker's probes.
    pub fn permit(&self) -> Permit {
        self.permit
    }

    /// Reports the request's outcome now.
    pub fn report(self, failure: bool) {
        self.report_at(failure, Instant::now());
    }

    /// Reports the outcome of the request sent at `at`, which the proxy has already read.
    pub fn report_at(mut self, failure: bool, at: Instant) {
        self.reported = true;
        self.breaker.report(self.permit, failure, at);
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.release(self.permit);
        }
    }
}

/// Buckets of the rolling window.
const BUCKETS: usize = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket period (since the breaker's epoch) the counts belong to.
    period: AtomicU64,
    total: AtomicU32,
    failures: AtomicU32,
}

#[derive(Debug)]
struct Inner {
    upstream: Arc<str>,
    config: BreakerConfig,
    epoch: Instant,
    bucket_ms: u64,
    state: AtomicU8,
    /// Milliseconds since `epoch` when the open period ends (for `Retry-After`).
    open_until: AtomicU64,
    consecutive: Consecutive,
    buckets: [Bucket; BUCKETS],
    probes_left: AtomicU32,
    probes_ok: AtomicU32,
    probes_failed: AtomicU32,
    wake: Notify,
    metrics: BreakerMetrics,
}

/// One upstream's breaker. Dropping it stops its task.
#[derive(Debug)]
pub struct Breaker {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Breaker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Breaker {
    /// A closed breaker and its task (spawned on the current tokio runtime).
    pub fn new(upstream: &str, config: BreakerConfig, metrics: BreakerMetrics) -> Breaker {
        let bucket_ms = (config.window.as_millis() as u64 / BUCKETS as u64).max(1);
        metrics.state.set(State::Closed as i64);
        let inner = Arc::new(Inner {
            upstream: upstream.into(),
            config,
            epoch: Instant::now(),
            bucket_ms,
            state: AtomicU8::new(State::Closed as u8),
            open_until: AtomicU64::new(0),
            consecutive: Consecutive::default(),
            buckets: Default::default(),
            probes_left: AtomicU32::new(0),
            probes_ok: AtomicU32::new(0),
            probes_failed: AtomicU32::new(0),
            wake: Notify::new(),
            metrics,
        });
        let task = tokio::spawn(run(inner.clone()));
        Breaker { inner, task }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }

    pub fn state(&self) -> State {
        State::from_u8(self.inner.state.load(Ordering::Acquire))
    }

    /// Phase 8: may a request go to the upstream? `Err` carries how long until the breaker
    /// next admits one (for `Retry-After`); the rejection is counted. The admission is
    /// reported with the request's outcome, or gives its place back when dropped.
    pub fn admit(&self) -> Result<Admission<'_>, Duration> {
        let inner = &*self.inner;
        let permit = match self.state() {
            State::Closed => Permit::Normal,
            State::HalfOpen => {
                let took = inner
                    .probes_left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok();
                if !took {
                    inner.metrics.rejections.inc();
                    // The probes in flight decide within one upstream round trip.
                    return Err(Duration::from_secs(1));
                }
                Permit::Probe
            }
            State::Open => {
                inner.metrics.rejections.inc();
                let now = inner.now_ms();
                let until = inner.open_until.load(Ordering::Acquire);
                return Err(Duration::from_millis(until.saturating_sub(now)));
            }
        };
        Ok(Admission {
            breaker: self,
            permit,
            reported: false,
        })
    }

    /// Whether an upstream status counts as a failure.
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.inner.config.failure_statuses.contains(&status)
    }

    /// Gives back the place of a request that never got an outcome: a probe's place is
    /// free again; a normal request counts nothing.
    fn release(&self, permit: Permit) {
        if permit == Permit::Probe {
            self.inner.probes_left.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Counts the outcome of a request sent at `at` (the rolling window's buckets are a
    /// tenth of the window wide, so the send time places it well enough, and no clock is
    /// read).
    fn report(&self, permit: Permit, failure: bool, at: Instant) {
        let inner = &*self.inner;
        if permit == Permit::Probe {
            let counter = if failure {
                &inner.probes_failed
            } else {
                &inner.probes_ok
            };
            counter.fetch_add(1, Ordering::AcqRel);
            inner.wake.notify_one();
            return;
        }
        let rate = inner.config.failure_rate.is_some();
        if !failure {
            inner.consecutive.success();
            if rate {
                inner.record(false, at);
            }
            return;
        }
        let n = inner.consecutive.failure();
        let mut wake =
            inner.config.consecutive_failures > 0 && n >= inner.config.consecutive_failures;
        if wake {
            // The request path marks the breaker open itself, with one compare-and-swap, so
            // that no request admitted after this report reaches the upstream while the
            // task is still waking; the task makes the transition proper (the open period,
            // the log line, the metrics). Only a closed breaker is marked: a late report of
            // a request admitted before a trip changes nothing.
            let _ = inner.state.compare_exchange(
                State::Closed as u8,
                State::Open as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        if rate {
            inner.record(true, at);
            wake = wake || inner.rate_tripped().is_some();
        }
        if wake {
            inner.wake.notify_one();
        }
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        Instant::now().duration_since(self.epoch).as_millis() as u64
    }

    fn record(&self, failure: bool, at: Instant) {
        let period = at.saturating_duration_since(self.epoch).as_millis() as u64 / self.bucket_ms;
        let b = &self.buckets[(period % BUCKETS as u64) as usize];
        let seen = b.period.load(Ordering::Acquire);
        if seen != period
            && b.period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This bucket last held an older period: start it over. (A report racing the
            // reset may land in either period; the window is a statistic.)
            b.total.store(0, Ordering::Relaxed);
            b.failures.store(0, Ordering::Relaxed);
        }
        b.total.fetch_add(1, Ordering::Relaxed);
        if failure {
            b.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(failures, total)` of the window when its failure rate has reached the threshold.
    fn rate_tripped(&self) -> Option<(u32, u32)> {
        let threshold = self.config.failure_rate?;
        let period = self.now_ms() / self.bucket_ms;
        let (mut total, mut failures) = (0u32, 0u32);
        for b in &self.buckets {
            if period.saturating_sub(b.period.load(Ordering::Acquire)) < BUCKETS as u64 {
                total += b.total.load(Ordering::Relaxed);
                failures += b.failures.load(Ordering::Relaxed);
            }
        }
        (total >= self.config.min_requests.max(1)
            && f64::from(failures) >= threshold * f64::from(total))
        .then_some((failures, total))
    }

    fn clear_window(&self) {
        self.consecutive.reset();
        for b in &self.buckets {
            b.total.store(0, Ordering::Relaxed);
            b.failures.store(0, Ordering::Relaxed);
        }
    }

    fn transition(&self, from: State, to: State, reason: &str) {
        self.state.store(to as u8, Ordering::Release);
        self.metrics.state.set(to as i64);
        if let Some(c) = &self.metrics.transitions[from as usize][to as usize] {
            c.inc();
        }
        if to == State::Closed {
            tracing::info!(upstream = %self.upstream, from = from.as_str(), to = to.as_str(), reason, "circuit breaker transition");
        } else {
            tracing::warn!(upstream = %self.upstream, from = from.as_str(), to = to.as_str(), reason, "circuit breaker transition");
        }
    }

    /// The open period after `trips` consecutive trips: doubled each time, capped, jittered.
    fn open_period(&self, trips: u32) -> Duration {
        let c = &self.config;
        Backoff {
            base: c.open_duration,
            max: c.max_open_duration,
            growth: Growth::Doubling,
            jitter: c.jitter,
        }
        .period(trips)
    }
}

/// The state machine: the only writer of `state` but for the request path's mark of a
/// closed breaker as open ([`Breaker::report_at`]). It follows the state it made itself, so
/// a mark made while it looks at the counts is seen on its next wake-up (the mark's own).
async fn run(inner: Arc<Inner>) {
    let mut trips = 0u32;
    let mut state = State::Closed;
    loop {
        match state {
            State::Closed => {
                inner.wake.notified().await;
                let consecutive = inner.consecutive.get();
                // Marked open by the report that reached the count (a success reported
                // since may have reset the count: the trip stands).
                let marked = State::from_u8(inner.state.load(Ordering::Acquire)) == State::Open;
                let reason = if marked
                    || (inner.config.consecutive_failures > 0
                        && consecutive >= inner.config.consecutive_failures)
                {
                    format!(
                        "{} consecutive failures",
                        consecutive.max(inner.config.consecutive_failures)
                    )
                } else if let Some((failures, total)) = inner.rate_tripped() {
                    format!(
                        "{failures} of {total} requests failed in the last {:?}",
                        inner.config.window
                    )
                } else {
                    continue;
                };
                trips += 1;
                open(&inner, State::Closed, trips, &reason);
                state = State::Open;
            }
            State::Open => {
                let until =
                    inner.epoch + Duration::from_millis(inner.open_until.load(Ordering::Acquire));
                tokio::time::sleep_until(until).await;
                inner.probes_ok.store(0, Ordering::Release);
                inner.probes_failed.store(0, Ordering::Release);
                inner
                    .probes_left
                    .store(inner.config.half_open_probes, Ordering::Release);
                inner.transition(State::Open, State::HalfOpen, "open period elapsed");
                state = State::HalfOpen;
            }
            State::HalfOpen => {
                // A probe whose client went away never reports: after a while without a
                // decision, the permits of the probes not heard from are given back.
                let quiet = inner.config.open_duration.max(Duration::from_secs(1));
                if tokio::time::timeout(quiet, inner.wake.notified())
                    .await
                    .is_err()
                {
                    let heard = inner.probes_ok.load(Ordering::Acquire);
                    inner.probes_left.store(
                        inner.config.half_open_probes.saturating_sub(heard),
                        Ordering::Release,
                    );
                    continue;
                }
                if inner.probes_failed.load(Ordering::Acquire) > 0 {
                    trips += 1;
                    inner.probes_left.store(0, Ordering::Release);
                    open(&inner, State::HalfOpen, trips, "a half-open probe failed");
                    state = State::Open;
                } else if inner.probes_ok.load(Ordering::Acquire) >= inner.config.half_open_probes {
                    trips = 0;
                    inner.clear_window();
                    inner.transition(
                        State::HalfOpen,
                        State::Closed,
                        &format!(
                            "{} half-open probes succeeded",
                            inner.config.half_open_probes
                        ),
                    );
                    state = State::Closed;
                }
            }
        }
    }
}

fn open(inner: &Inner, from: State, trips: u32, reason: &str) {
    let period = inner.open_period(trips);
    let until = inner.now_ms() + period.as_millis() as u64;
    inner.open_until.store(until, Ordering::Release);
    inner.clear_window();
    inner.transition(
        from,
        State::Open,
        &format!(
            "{reason}; open for {:.1}s (trip {trips})",
            period.as_secs_f64()
        ),
    );
}

/// The circuit breaker families (phase 8), registered by [`BreakerFamilies::register`].
#[derive(Debug, Clone)]
pub struct BreakerFamilies {
    pub state: IntGaugeVec,
    pub transitions: IntCounterVec,
    pub rejections: IntCounterVec,
}

impl BreakerFamilies {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(BreakerFamilies {
            state: register::gauge_vec(
                registry,
                "fedgate_circuit_breaker_state",
                "Circuit breaker state by upstream: 0 closed, 1 open, 2 half-open.",
                &["upstream"],
            )?,
            transitions: register::counter_vec(
                registry,
                "fedgate_circuit_breaker_transitions_total",
                "Circuit breaker transitions by upstream, from and to.",
                &["upstream", "from", "to"],
            )?,
            rejections: register::counter_vec(
                registry,
                "fedgate_circuit_breaker_rejections_total",
                "Requests refused with 503 by an open (or fully probing half-open) circuit breaker.",
                &["upstream"],
            )?,
        })
    }

    /// Handles of one upstream's breaker.
    pub fn upstream(&self, upstream: &str) -> BreakerMetrics {
        BreakerMetrics {
            state: self.state.with_label_values(&[upstream]),
            // Only the four transitions the state machine makes get series.
            transitions: State::ALL.map(|from| {
                State::ALL.map(|to| {
                    is_transition(from, to).then(|| {
                        self.transitions
                            .with_label_values(&[upstream, from.as_str(), to.as_str()])
                    })
                })
            }),
            rejections: self.rejections.with_label_values(&[upstream]),
        }
    }

    /// Removes the series of an upstream's breaker (the upstream dropped, or its breaker
    /// turned off).
    pub fn forget(&self, upstream: &str) {
        let _ = self.state.remove_label_values(&[upstream]);
        let _ = self.rejections.remove_label_values(&[upstream]);
        for from in State::ALL {
            for to in State::ALL {
                let _ =
                    self.transitions
                        .remove_label_values(&[upstream, from.as_str(), to.as_str()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> (crate::metrics::Metrics, BreakerMetrics) {
        let m = crate::metrics::Metrics::new(prometheus::Registry::new()).unwrap();
        let b = m.breaker("app");
        (m, b)
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            jitter: 0.0,
            half_open_probes: 2,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(12),
            ..BreakerConfig::default()
        }
    }

    /// Lets the breaker's task run until it waits again.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn transitions(m: &BreakerMetrics, from: State, to: State) -> u64 {
        m.transitions[from as usize][to as usize]
            .as_ref()
            .map_or(0, |c| c.get())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_exactly_n_consecutive_failures() {
        let (_m, bm) = metrics();
        let b = Breaker::new("app", config(), bm.clone());
        for _ in 0..2 {
            b.admit().unwrap().report(true);
        }
        // A success in between starts the count over.
        b.admit().unwrap().report(false);
        for _ in 0..2 {
            b.admit().unwrap().report(true);
        }
        settle().await;
        assert_eq!(b.state(), State::Closed);
        b.admit().unwrap().report(true);
        settle().await;
        assert_eq!(b.state(), State::Open);
        assert_eq!(bm.state.get(), 1);
        assert_eq!(transitions(&bm, State::Closed, State::Open), 1);
        // Open: refused, with the rest of the open period as the wait.
        let wait = b.admit().unwrap_err();
        assert!(
            wait <= Duration::from_secs(5) && wait > Duration::from_secs(4),
            "{wait:?}"
        );
        assert_eq!(bm.rejections.get(), 1);
    }

    /// A breaker tripped by three failures, its open period over: half-open.
    async fn half_open() -> (crate::metrics::Metrics, Breaker) {
        let (m, bm) = metrics();
        let b = Breaker::new("app", config(), bm);
        for _ in 0..3 {
            b.admit().unwrap().report(true);
        }
        settle().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(b.state(), State::HalfOpen);
        (m, b)
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_gives_its_place_back() {
        let (_m, b) = half_open().await;
        let kept = b.admit().unwrap();
        let abandoned = b.admit().unwrap();
        assert!(b.admit().is_err(), "two probes at a time");
        // Its client went away: the probe's place is free at once, not after a timeout.
        drop(abandoned);
        let again = b.admit().expect("the abandoned probe's place");
        assert_eq!(again.permit(), Permit::Probe);
        kept.report(false);
        again.report(false);
        settle().await;
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_nth_failure_refuses_the_next_request_before_the_task_runs() {
        let (_m, bm) = metrics();
        let b = Breaker::new("app", config(), bm.clone());
        // Requests admitted before the trip, whose outcomes come late.
        let mut early: Vec<_> = (0..4).map(|_| b.admit().unwrap()).collect();
        for _ in 0..3 {
            b.admit().unwrap().report(true);
        }
        // No yield since the third failure: the task has not run, yet the breaker refuses.
        assert_eq!(b.state(), State::Open);
        assert!(b.admit().is_err());
        // A request admitted earlier succeeds and resets the count before the task runs:
        // the trip stands, and the task makes it in full.
        early.pop().unwrap().report(false);
        settle().await;
        assert_eq!(b.state(), State::Open);
        assert_eq!(bm.state.get(), 1);
        assert_eq!(transitions(&bm, State::Closed, State::Open), 1);
        let wait = b.admit().unwrap_err();
        assert!(
            wait <= Duration::from_secs(5) && wait > Duration::from_secs(4),
            "{wait:?}"
        );
        assert_eq!(bm.rejections.get(), 2);
        // Late failures of requests admitted before the trip change nothing.
        for admission in early {
            admission.report(true);
        }
        settle().await;
        assert_eq!(transitions(&bm, State::Closed, State::Open), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(transitions(&bm, State::Open, State::HalfOpen), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_probes_close_it_and_a_failed_probe_reopens_for_longer() {
        let (_m, bm) = metrics();
        let b = Breaker::new("app", config(), bm.clone());
        for _ in 0..3 {
            b.admit().unwrap().report(true);
        }
        settle().await;
        assert_eq!(b.state(), State::Open);

        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(b.state(), State::HalfOpen);
        // Two probes at a time; a third request is refused.
        let p1 = b.admit().unwrap();
        let p2 = b.admit().unwrap();
        assert_eq!((p1.permit(), p2.permit()), (Permit::Probe, Permit::Probe));
        assert!(b.admit().is_err());
        p1.report(false);
        p2.report(true);
        settle().await;
        assert_eq!(b.state(), State::Open);
        assert_eq!(transitions(&bm, State::HalfOpen, State::Open), 1);
        // Second trip: 10 s.
        let wait = b.admit().unwrap_err();
        assert!(wait > Duration::from_secs(9), "{wait:?}");
        tokio::time::advance(Duration::from_secs(9)).await;
        settle().await;
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(b.state(), State::HalfOpen);
        for p in [b.admit().unwrap(), b.admit().unwrap()] {
            p.report(false);
        }
        settle().await;
        assert_eq!(b.state(), State::Closed);
        assert_eq!(bm.state.get(), 0);
        assert_eq!(transitions(&bm, State::HalfOpen, State::Closed), 1);
        assert_eq!(transitions(&bm, State::Open, State::HalfOpen), 2);
        // Closed again: the count starts from zero.
        for _ in 0..2 {
            b.admit().unwrap().report(true);
        }
        settle().await;
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_period_grows_to_its_cap() {
        let (_m, bm) = metrics();
        let b = Breaker::new("app", config(), bm);
        let periods: Vec<Duration> = (1..=4).map(|t| b.inner.open_period(t)).collect();
        assert_eq!(periods, [5, 10, 12, 12].map(Duration::from_secs).to_vec());
        let mut jittered = config();
        jittered.jitter = 0.2;
        let (_m, bm) = metrics();
        let j = Breaker::new("app", jittered, bm);
        for _ in 0..100 {
            let p = j.inner.open_period(1);
            assert!(
                p >= Duration::from_secs(4) && p <= Duration::from_secs(6),
                "{p:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_failure_rate_with_enough_requests() {
        let (_m, bm) = metrics();
        let b = Breaker::new(
            "app",
            BreakerConfig {
                consecutive_failures: 0,
                failure_rate: Some(0.5),
                min_requests: 10,
                ..config()
            },
            bm,
        );
        // Alternating outcomes never make 3 in a row, and 4 of 9 is below the minimum.
        for i in 0..9 {
            b.admit().unwrap().report(i % 2 == 1);
        }
        settle().await;
        assert_eq!(b.state(), State::Closed);
        b.admit().unwrap().report(true);
        settle().await;
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn old_outcomes_leave_the_window() {
        let (_m, bm) = metrics();
        let b = Breaker::new(
            "app",
            BreakerConfig {
                consecutive_failures: 0,
                failure_rate: Some(0.5),
                min_requests: 4,
                window: Duration::from_secs(10),
                ..config()
            },
            bm,
        );
        for _ in 0..3 {
            b.admit().unwrap().report(true);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        // Three failures 11 s ago no longer count: one failure in one request is too few.
        b.admit().unwrap().report(true);
        settle().await;
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn probes_that_never_report_are_given_back() {
        let (_m, b) = half_open().await;
        // One probe reports, the other's client went away.
        let (p1, _p2) = (b.admit().unwrap(), b.admit().unwrap());
        p1.report(false);
        settle().await;
        assert!(b.admit().is_err());
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        let p3 = b.admit().unwrap();
        assert!(b.admit().is_err());
        p3.report(false);
        settle().await;
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_breaker_stops_its_task() {
        let (_m, bm) = metrics();
        let b = Breaker::new("app", config(), bm);
        let weak = Arc::downgrade(&b.inner);
        drop(b);
        settle().await;
        assert!(weak.upgrade().is_none());
    }
}
