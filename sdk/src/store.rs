//! A key-value store of the plugin's own, shared by all its instances on every worker
//! (and, when the gateway is configured with a shared store, by every gateway).
//!
//! The operator bounds it (`store_entries`, `store_bytes`, `store_value_bytes`): when it is
//! full, the entries closest to expiring, then the least recently written, are evicted, and
//! a write that cannot fit fails with [`StoreError::Full`]. It survives instance replacement
//! and reloads of the same plugin and starts empty when the gateway starts. Keys are at
//! most 1 KiB.
//!
//! State kept in the plugin value is per instance; state every instance must agree on (a
//! window of recent responses that any instance's health check judges, a counter of
//! deliveries per instance) belongs here.
//!
//! ```
//! use std::time::Duration;
//! use fedgate_sdk::store;
//!
//! store::set("last-seen", b"example.org", Some(Duration::from_secs(60)))?;
//! assert_eq!(store::get("last-seen").as_deref(), Some(&b"example.org"[..]));
//! assert_eq!(store::increment("deliveries", 2, None)?, 2);
//! assert!(store::compare_and_swap("leader", None, b"me", None)?);
//! assert!(!store::compare_and_swap("leader", None, b"you", None)?);
//! assert!(store::delete("leader"));
//! # Ok::<(), store::StoreError>(())
//! ```
//!
//! Natively the store is in memory, shared by every plugin value of the test's thread, and
//! TTLs run on the test clock ([`testing::advance`](crate::testing::advance)).

use std::fmt;
use std::time::Duration;

#[cfg(target_arch = "wasm32")]
use crate::host::bindings::fedgate::plugin::store as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::backend::store as imp;

/// Why a write failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreError {
    /// The store is at its bound and nothing could be evicted for this entry.
    Full,
    /// The key (at most 1 KiB) or the value (at most the store's `store_value_bytes`) is too
    /// large.
    TooLarge,
    /// [`increment`] on a value that is not a decimal 64-bit integer, or a sum that
    /// overflows.
    NotANumber,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreError::Full => "the store is full",
            StoreError::TooLarge => "the key or the value is too large",
            StoreError::NotANumber => "the value is not a decimal 64-bit integer",
        })
    }
}

impl std::error::Error for StoreError {}

/// Milliseconds of a TTL, at least 1 for a non-zero duration that rounds to 0.
fn ttl_ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|ttl| {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 && !ttl.is_zero() {
            1
        } else {
            ms
        }
    })
}

/// The value of `key`, if it is set and has not expired.
pub fn get(key: &str) -> Option<Vec<u8>> {
    imp::get(key)
}

/// Sets `key` to `value`; with `ttl`, it expires after that long (whole milliseconds).
// The conversions are from the generated types on wasm32 and the identity natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
    imp::set(key, value, ttl_ms(ttl)).map_err(StoreError::from)
}

/// Removes `key`; whether it was set.
pub fn delete(key: &str) -> bool {
    imp::delete(key)
}

/// Adds `delta` to the decimal integer stored at `key` (0 when unset) and returns the sum;
/// `ttl` applies when the key is created, an existing key keeps its expiry. A value that is
/// not a decimal `i64`, or a sum that overflows, fails with [`StoreError::NotANumber`] and
/// changes nothing.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, StoreError> {
    imp::increment(key, delta, ttl_ms(ttl)).map_err(StoreError::from)
}

/// Sets `key` to `value` only if its current value is `expected` (`None`: unset); whether it
/// did. Nothing else sees or changes the key in between.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    value: &[u8],
    ttl: Option<Duration>,
) -> Result<bool, StoreError> {
    imp::compare_and_swap(key, expected, value, ttl_ms(ttl)).map_err(StoreError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn values_expire_on_the_test_clock() {
        set("k", b"v", Some(Duration::from_millis(100))).unwrap();
        set("forever", b"v", None).unwrap();
        testing::advance(Duration::from_millis(99));
        assert_eq!(get("k").as_deref(), Some(&b"v"[..]));
        testing::advance(Duration::from_millis(1));
        assert_eq!(get("k"), None);
        assert!(!delete("k"));
        assert!(get("forever").is_some());
    }

    #[test]
    fn increments_and_swaps() {
        assert_eq!(increment("n", 5, Some(Duration::from_secs(1))), Ok(5));
        assert_eq!(increment("n", -7, None), Ok(-2));
        assert_eq!(get("n").as_deref(), Some(&b"-2"[..]));
        set("text", b"abc", None).unwrap();
        assert_eq!(increment("text", 1, None), Err(StoreError::NotANumber));
        set("max", i64::MAX.to_string().as_bytes(), None).unwrap();
        assert_eq!(increment("max", 1, None), Err(StoreError::NotANumber));
        testing::advance(Duration::from_secs(1));
        assert_eq!(get("n"), None, "the TTL given at creation applies");

        assert_eq!(compare_and_swap("c", None, b"1", None), Ok(true));
        assert_eq!(compare_and_swap("c", Some(b"2"), b"3", None), Ok(false));
        assert_eq!(compare_and_swap("c", Some(b"1"), b"3", None), Ok(true));
        assert_eq!(get("c").as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn bounds_are_enforced() {
        assert_eq!(set(&"k".repeat(1025), b"", None), Err(StoreError::TooLarge));
        testing::set_store_limits(2, 4);
        assert_eq!(set("big", b"12345", None), Err(StoreError::TooLarge));
        set("a", b"1", None).unwrap();
        set("b", b"2", Some(Duration::from_secs(5))).unwrap();
        // Full: the entry closest to expiring goes first.
        set("c", b"3", None).unwrap();
        assert_eq!(get("b"), None);
        assert!(get("a").is_some() && get("c").is_some());
        // Then the least recently written.
        set("a", b"4", None).unwrap();
        set("d", b"5", None).unwrap();
        assert_eq!(get("c"), None);
        assert_eq!(StoreError::Full.to_string(), "the store is full");
    }

    #[test]
    fn ttls_round_to_milliseconds() {
        assert_eq!(ttl_ms(None), None);
        assert_eq!(ttl_ms(Some(Duration::from_micros(10))), Some(1));
        assert_eq!(ttl_ms(Some(Duration::ZERO)), Some(0));
        assert_eq!(ttl_ms(Some(Duration::from_millis(1500))), Some(1500));
    }
}
