//! `fedgate_federation_peers`: how many distinct instances sent a verified signature in the
//! last hour. Memory stays bounded under a flood of distinct key ids: at most
//! [`MAX_PEERS`] instances are remembered, and a new one is not counted while the table is
//! full of instances seen within the window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::IntGauge;

/// The window a peer counts in.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// Most instances remembered.
pub const MAX_PEERS: usize = 100_000;

/// Instances by when they last signed a request that verified.
#[derive(Debug)]
pub struct Peers {
    seen: Mutex<HashMap<String, Instant>>,
    window: Duration,
    cap: usize,
    gauge: IntGauge,
}

impl Peers {
    pub fn new() -> Result<Peers, prometheus::Error> {
        Peers::with_limits(WINDOW, MAX_PEERS)
    }

    fn with_limits(window: Duration, cap: usize) -> Result<Peers, prometheus::Error> {
        Ok(Peers {
            seen: Mutex::new(HashMap::new()),
            window,
            cap,
            gauge: IntGauge::new(
                "fedgate_federation_peers",
                "Distinct instances that sent a request with a verified signature in the last hour.",
            )?,
        })
    }

    /// Notes a verified signature from `instance` at `now`.
    pub fn saw(&self, instance: &str, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = seen.get_mut(instance) {
            *last = now;
            return;
        }
        if seen.len() >= self.cap {
            let window = self.window;
            seen.retain(|_, last| now.duration_since(*last) < window);
            if seen.len() >= self.cap {
                return;
            }
        }
        seen.insert(instance.to_string(), now);
    }

    /// The instances seen within the window before `now`, forgetting older ones.
    pub fn count(&self, now: Instant) -> usize {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        seen.retain(|_, last| now.duration_since(*last) < window);
        seen.len()
    }
}

/// Collected at scrape time, so the gauge forgets instances that went quiet.
impl Collector for Peers {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.set(self.count(Instant::now()) as i64);
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_count_distinct_instances_within_the_window_and_stay_bounded() {
        let peers = Peers::with_limits(Duration::from_secs(60), 3).unwrap();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        peers.saw("a.example", at(0));
        peers.saw("b.example", at(10));
        peers.saw("a.example", at(20));
        assert_eq!(peers.count(at(30)), 2);
        // b went quiet 60 s ago; a was seen again at 20.
        assert_eq!(peers.count(at(70)), 1);
        // The table holds 3: a fourth new instance waits until one expires.
        peers.saw("c.example", at(71));
        peers.saw("d.example", at(72));
        peers.saw("e.example", at(73));
        assert_eq!(peers.count(at(74)), 3);
        peers.saw("e.example", at(81));
        assert_eq!(peers.count(at(82)), 3, "a expired at 80, e took its place");
        // A scrape reports the same count.
        let families = peers.collect();
        assert_eq!(families[0].get_metric()[0].get_gauge().get_value(), 3.0);
    }
}
