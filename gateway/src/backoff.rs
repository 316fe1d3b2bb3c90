//! Failures in a row, and the backoff they earn: one primitive for the places that count
//! them. The circuit breaker (its open period), outlier detection (an endpoint's ejection
//! time) and plugin hooks grow a backoff; the key fetcher's breaker per remote host counts
//! its failures the same way and opens for a fixed period.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Failures in a row, counted without a lock. A success resets the count, writing only
/// when it is not zero already, so a healthy path writes no memory the other workers read.
#[derive(Debug, Default)]
pub struct Consecutive(AtomicU32);

impl Consecutive {
    /// A success: the run of failures is over.
    pub fn success(&self) {
        self.reset();
    }

    /// Starts counting again (the run was acted on, or the endpoint is back).
    pub fn reset(&self) {
        if self.0.load(Ordering::Relaxed) != 0 {
            self.0.store(0, Ordering::Relaxed);
        }
    }

    /// A failure; the length of the run it extends.
    pub fn failure(&self) -> u32 {
        self.0.fetch_add(1, Ordering::AcqRel).saturating_add(1)
    }

    /// The current run.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}

/// How a backoff grows from one trip to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// The base times the trip number: 1, 2, 3, ... times.
    Linear,
    /// The base doubled on each further trip: 1, 2, 4, ... times.
    Doubling,
}

/// A backoff period: the base, grown by the trip number, capped, then spread by up to
/// `jitter` either way (0.1: ±10 %) so that many of them do not end at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub growth: Growth,
    pub jitter: f64,
}

impl Backoff {
    /// The period of trip `trip`, counted from 1 (0 is taken as 1).
    pub fn period(&self, trip: u32) -> Duration {
        let trip = trip.max(1);
        let grown = match self.growth {
            Growth::Linear => self.base.saturating_mul(trip),
            Growth::Doubling => self.base.saturating_mul(1 << (trip - 1).min(16)),
        };
        let capped = grown.min(self.max);
        if self.jitter == 0.0 {
            return capped;
        }
        let spread = (fastrand::f64() * 2.0 - 1.0) * self.jitter;
        capped.mul_f64((1.0 + spread).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_failures_end_with_a_success() {
        let c = Consecutive::default();
        assert_eq!((c.failure(), c.failure(), c.failure()), (1, 2, 3));
        c.success();
        assert_eq!(c.get(), 0);
        assert_eq!(c.failure(), 1);
    }

    #[test]
    fn periods_grow_by_their_rule_up_to_the_cap() {
        let s = Duration::from_secs;
        let of = |growth, trips: &[u32]| -> Vec<Duration> {
            let b = Backoff {
                base: s(10),
                max: s(45),
                growth,
                jitter: 0.0,
            };
            trips.iter().map(|t| b.period(*t)).collect()
        };
        assert_eq!(
            of(Growth::Linear, &[0, 1, 2, 4, 5]),
            [s(10), s(10), s(20), s(40), s(45)]
        );
        assert_eq!(
            of(Growth::Doubling, &[1, 2, 3, 4, 99]),
            [s(10), s(20), s(40), s(45), s(45)]
        );
    }

    #[test]
    fn jitter_spreads_within_its_bounds() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(10),
            growth: Growth::Linear,
            jitter: 0.2,
        };
        let periods: Vec<Duration> = (0..200).map(|_| b.period(1)).collect();
        assert!(periods
            .iter()
            .all(|p| *p >= Duration::from_secs(8) && *p <= Duration::from_secs(12)));
        assert!(periods.iter().any(|p| *p != periods[0]), "no spread at all");
    }
}
