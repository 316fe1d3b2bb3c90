//! Time: a monotonic clock for measuring intervals and the wall clock.
//!
//! Plugins have no WASI clocks (calling `std::time::SystemTime::now` or `Instant::now` traps
//! in the gateway); these are the gateway's own.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use fedgate_sdk::clocks;
//!
//! let start = clocks::monotonic_now();
//! let elapsed = clocks::monotonic_now() - start;
//! assert!(elapsed < Duration::from_secs(1));
//! assert!(clocks::wall_now() > UNIX_EPOCH);
//! ```
//!
//! Natively both read the test clock, which stands still until
//! [`testing::advance`](crate::testing::advance) or
//! [`testing::set_wall_time`](crate::testing::set_wall_time) moves it.

use std::time::{Duration, SystemTime};

#[cfg(target_arch = "wasm32")]
use crate::host::bindings::fedgate::plugin::clocks as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::backend::clocks as imp;

/// Time since an arbitrary point that does not change while the gateway runs: subtract two
/// readings to measure an interval. Never goes back.
pub fn monotonic_now() -> Duration {
    Duration::from_nanos(imp::monotonic_now())
}

/// The time of day (may jump when the system clock is set).
pub fn wall_now() -> SystemTime {
    let now = imp::wall_now();
    SystemTime::UNIX_EPOCH + Duration::new(now.seconds, now.nanoseconds)
}

/// The time of day in whole milliseconds since the Unix epoch, as
/// [`Exchange::ended_at_ms`](crate::Exchange::ended_at_ms) counts.
pub fn wall_now_ms() -> u64 {
    let since = wall_now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn the_test_clock_moves_when_told() {
        let start = monotonic_now();
        let wall = wall_now();
        assert_eq!(monotonic_now(), start);
        testing::advance(Duration::from_millis(250));
        assert_eq!(monotonic_now() - start, Duration::from_millis(250));
        assert_eq!(wall_now(), wall + Duration::from_millis(250));
        testing::set_wall_time(SystemTime::UNIX_EPOCH + Duration::from_millis(1_234));
        assert_eq!(wall_now_ms(), 1_234);
        assert_eq!(monotonic_now() - start, Duration::from_millis(250));
    }
}
