//! Phase 9: retries. An idempotent request (by method, configurable) whose try failed to
//! connect, timed out, was reset, or was answered 502, 503 or 504 (configurable) is sent
//! again, to another endpoint where there is one, each try under its own deadline within the
//! route's. Only bodies the gateway holds whole (or no body) are sent again: a streamed body
//! is gone once sent.
//!
//! A retry budget keeps retries from multiplying an outage: at any moment, retries in flight
//! may be at most `budget_percent` of the upstream's active requests, or
//! `min_concurrency`, whichever is larger (Envoy's retry budget). A retry the budget refuses
//! is not made, and the failure stands.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::register;
use http::Method;
use prometheus::IntCounter;
use prometheus::{IntCounterVec, Registry};

/// The validated `[upstreams.NAME.retries]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first try.
    pub max_retries: u32,
    pub methods: Vec<Method>,
    /// Upstream statuses that are retried (besides connect errors, timeouts and resets).
    pub statuses: Vec<u16>,
    /// Deadline of one try; the route's response timeout bounds them all.
    pub per_try_timeout: Option<Duration>,
    /// Retries in flight as a share of active requests, in percent.
    pub budget_percent: f64,
    /// Retries in flight always allowed, however few requests are active.
    pub min_concurrency: usize,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 2,
            methods: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE,
                Method::TRACE,
            ],
            statuses: vec![502, 503, 504],
            per_try_timeout: None,
            budget_percent: 20.0,
            min_concurrency: 3,
        }
    }
}

/// The `result` label of `fedgate_retries_total`, one per retry wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The retry was made and its answer was not one to retry.
    Success,
    /// The retry was made and failed too.
    Failure,
    /// The budget refused it.
    BudgetExhausted,
    /// No endpoint (or the breaker) would take it.
    NoEndpoint,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::BudgetExhausted,
        Outcome::NoEndpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::BudgetExhausted => "budget_exhausted",
            Outcome::NoEndpoint => "no_endpoint",
        }
    }
}

/// One upstream's retry policy and budget.
#[derive(Debug)]
pub struct Retries {
    pub config: RetryConfig,
    active: AtomicUsize,
    retrying: AtomicUsize,
    counters: [IntCounter; 4],
}

/// Counts a request as active for the budget while it lives.
#[derive(Debug)]
pub struct Active<'a>(&'a AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Retries {
    pub fn new(config: RetryConfig, counters: [IntCounter; 4]) -> Self {
        Retries {
            config,
            active: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
            counters,
        }
    }

    /// Whether requests with `method` are retried at all.
    pub fn eligible(&self, method: &Method) -> bool {
        self.config.methods.contains(method)
    }

    pub fn retries_status(&self, status: u16) -> bool {
        self.config.statuses.contains(&status)
    }

    /// Marks one request to the upstream as active until the guard drops.
    pub fn active(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(&self.active)
    }

    /// Takes a place in the budget for one retry, or counts `budget_exhausted`.
    pub fn admit(&self) -> Option<Active<'_>> {
        let active = self.active.load(Ordering::Relaxed);
        let cap = ((active as f64 * self.config.budget_percent / 100.0) as usize)
            .max(self.config.min_concurrency);
        let took = self
            .retrying
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        if took {
            Some(Active(&self.retrying))
        } else {
            self.count(Outcome::BudgetExhausted);
            None
        }
    }

    pub fn count(&self, outcome: Outcome) {
        self.counters[outcome as usize].inc();
    }

    /// Retries in flight (for tests and `/health`).
    pub fn in_flight(&self) -> usize {
        self.retrying.load(Ordering::Relaxed)
    }
}

/// `fedgate_retries_total{upstream,result}` (phase 9).
#[derive(Debug, Clone)]
pub struct RetryFamilies {
    pub retries: IntCounterVec,
}

impl RetryFamilies {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(RetryFamilies {
            retries: register::counter_vec(
                registry,
                "fedgate_retries_total",
                "Retries by upstream and result (success, failure, budget_exhausted, no_endpoint).",
                &["upstream", "result"],
            )?,
        })
    }

    /// Handles of one upstream's retry counters, by [`Outcome`].
    pub fn upstream(&self, upstream: &str) -> [IntCounter; 4] {
        Outcome::ALL.map(|o| self.retries.with_label_values(&[upstream, o.as_str()]))
    }

    /// Removes the series of an upstream (dropped, or its retries turned off).
    pub fn forget(&self, upstream: &str) {
        for o in Outcome::ALL {
            let _ = self.retries.remove_label_values(&[upstream, o.as_str()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries(config: RetryConfig) -> (Retries, [IntCounter; 4]) {
        let m = crate::metrics::Metrics::new(prometheus::Registry::new()).unwrap();
        let c = m.retries("app");
        (Retries::new(config, c.clone()), c)
    }

    #[test]
    fn the_budget_is_a_share_of_active_requests_with_a_floor() {
        let (r, c) = retries(RetryConfig::default());
        // 10 active requests: 20 % is 2, the floor 3 applies.
        let active: Vec<_> = (0..10).map(|_| r.active()).collect();
        let held: Vec<_> = (0..3).map(|_| r.admit().unwrap()).collect();
        assert!(r.admit().is_none());
        assert_eq!(c[Outcome::BudgetExhausted as usize].get(), 1);
        drop(held);
        // 50 active: 10 retries at once.
        let more: Vec<_> = (0..40).map(|_| r.active()).collect();
        let held: Vec<_> = (0..10).map(|_| r.admit().unwrap()).collect();
        assert!(r.admit().is_none());
        assert_eq!(r.in_flight(), 10);
        drop((held, more, active));
        assert_eq!(r.in_flight(), 0);
        assert_eq!(c[Outcome::BudgetExhausted as usize].get(), 2);
    }

    #[test]
    fn idempotent_methods_and_statuses_by_default() {
        let (r, _) = retries(RetryConfig::default());
        assert!(r.eligible(&Method::GET) && r.eligible(&Method::PUT));
        assert!(!r.eligible(&Method::POST) && !r.eligible(&Method::PATCH));
        assert!(r.retries_status(503) && !r.retries_status(500) && !r.retries_status(404));
    }
}
