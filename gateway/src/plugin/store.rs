//! The key-value store of one plugin (ABI 0.2.0, interface `store`): `get`, `set` with a
//! TTL, `delete`, `increment` and `compare-and-swap` on string keys and byte values.
//!
//! # Where it sits
//!
//! One [`Store`] per plugin, held behind an `Arc` by the plugin and shared by all its
//! instances on every worker thread and by its background (`observe`, `on-tick`) thread.
//! It lives outside the instances, so what a plugin stores survives the replacement of an
//! instance (after a trap, a deadline, a memory cap) and reloads of the same plugin; it
//! lives in memory only and starts empty when the gateway starts. The host functions of
//! the `store` interface call it synchronously from inside a Wasm call: every operation is
//! a hash, one lock of one shard and a few map operations, and no lock is held across
//! anything slow (no I/O, no allocation larger than the value being copied).
//!
//! # Bounds
//!
//! Set by the operator in [`StoreLimits`]:
//!
//! - `max_entries`: entries held at most;
//! - `max_bytes`: bytes held at most, counting for each entry its key, its value and a
//!   fixed [`ENTRY_OVERHEAD`] of 128 bytes, about what the maps and the allocator spend
//!   on it beside the key and value themselves, so that a flood of tiny entries is bounded
//!   in real memory too;
//! - `max_key_bytes` (1 KiB, as the ABI says) and `max_value_bytes`: a longer key or
//!   value is refused with [`StoreError::TooLarge`] before anything is looked at.
//!
//! Expired entries count until they are dropped: lazily, when an operation on their key
//! finds them, when eviction reaches them, or when [`Store::purge_expired`] runs.
//!
//! # Eviction
//!
//! A write that would take the store past a bound first evicts, in this order: expired
//! entries, then the entries closest to expiring (soonest first), then entries without an
//! expiry, least recently written first (every write, `increment` and successful
//! `compare-and-swap` included, renews an entry's place; reads do not). Each shard keeps
//! its entries in that order in a `BTreeMap` keyed by (expiry, write sequence), so the next
//! victim is its first entry: one eviction costs O(log n) and a write evicts only as many
//! entries as it needs room for (each entry is evicted at most once, so the work is
//! bounded and amortised O(log n) per write). Only when the entry cannot fit even in an
//! empty shard (a store configured smaller than its largest entry, or with no entries at
//! all) is the write refused with [`StoreError::Full`], and nothing is evicted for it.
//!
//! # Cost
//!
//! A read is two SipHash hashes of the key (shard, map), one lock and a copy of the value.
//! A write adds the clock, an update of the eviction order (a `BTreeMap` removal and
//! insertion), and, for a new key, the key's allocation; a replacement with room to spare
//! and an `increment` that keeps its number of digits change the entry in place. On the
//! benchmark's 40 000-entry store (`cargo bench -p fedgate --bench plugin_store`) that is
//! about 90 ns a read and 200-500 ns a write. The memory held is about the accounted bytes.
//!
//! # Shards, and the precision of the bounds
//!
//! Keys are spread by hash over up to 16 shards, each a `Mutex<HashMap>` with its own
//! share of the bounds: `max_entries` and `max_bytes` are divided exactly between the
//! shards (the shares sum to the bounds), so the store as a whole never holds more than
//! either bound. A write evicts within its key's shard only, which keeps it to one lock
//! and bounded work, at the cost of precision: the order above is exact within a shard,
//! and across the store the entry evicted is the best candidate of its shard (about a
//! `1/shards` sample of the entries) rather than of the whole store, and a write may evict
//! while another shard still has room. Hashing spreads keys evenly, so a store with many
//! entries fills its shards evenly; for small stores the spread would be coarse, so the
//! number of shards is chosen from the bounds: the most (16, 8, 4, 2, 1) with at least
//! [`MIN_SHARD_ENTRIES`] entries per shard and room in each shard for the largest entry
//! the limits allow. A store of fewer than 128 entries, or one whose largest entry is more
//! than half its bytes, is a single shard with exact eviction order.
//!
//! # Semantics
//!
//! - TTLs are milliseconds on the gateway's monotonic clock (injected in tests): an entry
//!   written at `t` with `ttl_ms = d` is seen until `t + d` and not from then on. A TTL of
//!   0 stores nothing (the key is removed); `set` and a successful `compare-and-swap`
//!   without a TTL remove any previous expiry, as Redis's `SET` does.
//! - `increment` works on a value that is a decimal `i64` in ASCII, as Redis's `INCRBY`
//!   (read as Rust's `i64::from_str` does: an optional sign, then digits, no spaces, so
//!   unlike Redis `+5` and `007` count too); an unset (or expired) key counts as 0 and is created
//!   with the TTL given; an existing key keeps its expiry. A sum that overflows `i64` is
//!   refused as [`StoreError::NotANumber`] (the ABI has no overflow error) and changes
//!   nothing.
//! - `compare-and-swap` compares and writes under the shard's lock: no other operation on
//!   the store sees or changes the key in between. `expected = None` means "unset".
//!
//! # Metrics
//!
//! Reported through the handles of [`StoreMetrics`], which the metrics module registers
//! per plugin as `fedgate_plugin_store_entries{plugin}` and
//! `fedgate_plugin_store_bytes{plugin}` (gauges: entries and accounted bytes held,
//! expired ones included until dropped) and `fedgate_plugin_store_evictions_total{plugin,
//! reason}` with `reason="expired"` (dropped after expiring) and `reason="capacity"`
//! (evicted before expiring, to make room). The gauges are updated right after each
//! operation releases its lock, so they are exact whenever the store is quiet.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus::{IntCounter, IntGauge};

/// Bytes counted for each entry beside its key and value: the hash map slot (key pointer,
/// value pointer, expiry, sequence), the key's allocation header, and the entry's place in
/// its shard's eviction order.
pub const ENTRY_OVERHEAD: usize = 128;
/// The most shards a store is split into.
pub const MAX_SHARDS: usize = 16;
/// The fewest entries a shard may be given: stores with fewer than `2 * MIN_SHARD_ENTRIES`
/// entries are a single shard.
pub const MIN_SHARD_ENTRIES: usize = 64;
/// The longest key, as the ABI says.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a write was refused (the ABI's `store-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The entry cannot fit even after evicting everything that could be evicted for it.
    Full,
    /// The key or the value is longer than the store allows.
    TooLarge,
    /// `increment` on a value that is not a decimal `i64`, or whose sum overflows.
    NotANumber,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreError::Full => "the plugin's store is full",
            StoreError::TooLarge => "key or value too large for the plugin's store",
            StoreError::NotANumber => "value is not a decimal 64-bit integer, or the sum overflows",
        })
    }
}

impl std::error::Error for StoreError {}

/// The operator's bounds of one plugin's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Entries held at most.
    pub max_entries: usize,
    /// Bytes held at most: keys, values and `ENTRY_OVERHEAD` per entry.
    pub max_bytes: usize,
    /// The longest key.
    pub max_key_bytes: usize,
    /// The longest value.
    pub max_value_bytes: usize,
}

impl Default for StoreLimits {
    /// 10 000 entries, 16 MiB, keys of 1 KiB, values of 64 KiB.
    fn default() -> Self {
        StoreLimits {
            max_entries: 10_000,
            max_bytes: 16 << 20,
            max_key_bytes: MAX_KEY_BYTES,
            max_value_bytes: 64 << 10,
        }
    }
}

/// The metric handles of one plugin's store, resolved once (see the module doc for the
/// families they belong to).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Entries held (`fedgate_plugin_store_entries`).
    pub entries: IntGauge,
    /// Accounted bytes held (`fedgate_plugin_store_bytes`).
    pub bytes: IntGauge,
    /// Entries dropped after expiring (`fedgate_plugin_store_evictions_total`,
    /// `reason="expired"`).
    pub expired: IntCounter,
    /// Entries evicted before expiring to make room (`reason="capacity"`).
    pub evicted: IntCounter,
}

impl StoreMetrics {
    pub fn new(
        entries: IntGauge,
        bytes: IntGauge,
        expired: IntCounter,
        evicted: IntCounter,
    ) -> Self {
        StoreMetrics {
            entries,
            bytes,
            expired,
            evicted,
        }
    }

    /// Handles registered nowhere: for tests and benchmarks.
    pub fn detached() -> Self {
        StoreMetrics::new(
            IntGauge::new("store_entries", "entries").expect("a valid name"),
            IntGauge::new("store_bytes", "bytes").expect("a valid name"),
            IntCounter::new("store_expired", "expired").expect("a valid name"),
            IntCounter::new("store_evicted", "evicted").expect("a valid name"),
        )
    }
}

/// Milliseconds on a monotonic clock.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// One stored value.
#[derive(Debug)]
struct Entry {
    value: Box<[u8]>,
    /// When it expires, in clock milliseconds; `None`: never.
    expires: Option<u64>,
    /// Its place in the shard's write order.
    seq: u64,
}

impl Entry {
    /// Its key in the shard's eviction order.
    fn rank(&self) -> (u64, u64) {
        (self.expires.unwrap_or(u64::MAX), self.seq)
    }

    fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }
}

fn entry_size(key: usize, value: usize) -> usize {
    key + value + ENTRY_OVERHEAD
}

/// A value to store: given by the caller, or made by the store (`increment`) and copied
/// into the entry's allocation when it has the same length.
#[derive(Debug)]
enum Value<'a> {
    Owned(Vec<u8>),
    Copied(&'a [u8]),
}

impl Value<'_> {
    fn len(&self) -> usize {
        match self {
            Value::Owned(v) => v.len(),
            Value::Copied(v) => v.len(),
        }
    }

    fn into_boxed(self) -> Box<[u8]> {
        match self {
            Value::Owned(v) => v.into_boxed_slice(),
            Value::Copied(v) => v.into(),
        }
    }
}

/// `n` in decimal ASCII, without allocating.
#[derive(Debug)]
struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(n: i64) -> Self {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        let mut m = n.unsigned_abs();
        loop {
            start -= 1;
            buf[start] = b'0' + (m % 10) as u8;
            m /= 10;
            if m == 0 {
                break;
            }
        }
        if n < 0 {
            start -= 1;
            buf[start] = b'-';
        }
        Decimal { buf, start }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// What one operation changed, published to the metrics once the lock is released.
#[derive(Debug, Default)]
struct Delta {
    entries: i64,
    bytes: i64,
    expired: u64,
    evicted: u64,
}

/// One shard: its entries, their eviction order, and its share of the bounds.
#[derive(Debug)]
struct Shard {
    map: HashMap<Arc<str>, Entry>,
    /// (expiry or `u64::MAX`, write sequence) → key: the first is the next to evict.
    order: BTreeMap<(u64, u64), Arc<str>>,
    bytes: usize,
    next_seq: u64,
    max_entries: usize,
    max_bytes: usize,
}

impl Shard {
    fn new(max_entries: usize, max_bytes: usize) -> Self {
        Shard {
            map: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            next_seq: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Takes `key` out, counting it as expired if it was.
    fn remove(&mut self, key: &str, now: u64, d: &mut Delta) -> Option<(Arc<str>, Entry)> {
        let (k, e) = self.map.remove_entry(key)?;
        self.order.remove(&e.rank());
        let size = entry_size(k.len(), e.value.len());
        self.bytes -= size;
        d.entries -= 1;
        d.bytes -= size as i64;
        if e.expired(now) {
            d.expired += 1;
        }
        Some((k, e))
    }

    /// Stores `value` at `key` (replacing any entry there), evicting what it needs room
    /// for. `expires` is in the future or `None`.
    fn put(
        &mut self,
        key: &str,
        value: Value<'_>,
        expires: Option<u64>,
        now: u64,
        d: &mut Delta,
    ) -> Result<(), StoreError> {
        let size = entry_size(key.len(), value.len());
        if size > self.max_bytes || self.max_entries == 0 {
            return Err(StoreError::Full);
        }
        // Replacing an entry with room to spare: in place, one lookup, nothing evicted.
        if let Some(e) = self.map.get_mut(key) {
            let old = entry_size(key.len(), e.value.len());
            if self.bytes - old + size <= self.max_bytes {
                if e.expired(now) {
                    d.expired += 1;
                }
                let rank = e.rank();
                match value {
                    Value::Owned(v) => e.value = v.into_boxed_slice(),
                    Value::Copied(v) if v.len() == e.value.len() => e.value.copy_from_slice(v),
                    Value::Copied(v) => e.value = v.into(),
                }
                e.expires = expires;
                e.seq = self.next_seq;
                self.next_seq += 1;
                let k = self
                    .order
                    .remove(&rank)
                    .expect("the order lists every held key");
                self.order.insert(e.rank(), k);
                self.bytes = self.bytes - old + size;
                d.bytes += size as i64 - old as i64;
                return Ok(());
            }
        }
        let value = value.into_boxed();
        let key = match self.remove(key, now, d) {
            Some((k, _)) => k,
            None => Arc::from(key),
        };
        while self.map.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            // Cannot run dry: an empty shard has room for this entry (checked above).
            let Some(((expiry, _), victim)) = self.order.pop_first() else {
                return Err(StoreError::Full);
            };
            let e = self
                .map
                .remove(&victim)
                .expect("the order lists only held keys");
            let freed = entry_size(victim.len(), e.value.len());
            self.bytes -= freed;
            d.entries -= 1;
            d.bytes -= freed as i64;
            if expiry <= now {
                d.expired += 1;
            } else {
                d.evicted += 1;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Entry {
            value,
            expires,
            seq,
        };
        self.order.insert(entry.rank(), key.clone());
        self.map.insert(key, entry);
        self.bytes += size;
        d.entries += 1;
        d.bytes += size as i64;
        Ok(())
    }
}

/// The bounded key-value store of one plugin. See the module doc.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    limits: StoreLimits,
    metrics: StoreMetrics,
    clock: Clock,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("limits", &self.limits)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// How many shards a store with these limits gets (see the module doc).
fn shard_count(limits: &StoreLimits) -> usize {
    let largest = entry_size(limits.max_key_bytes, limits.max_value_bytes);
    let mut n = MAX_SHARDS;
    while n > 1 && (limits.max_entries / n < MIN_SHARD_ENTRIES || limits.max_bytes / n < largest) {
        n /= 2;
    }
    n
}

/// Shard `i`'s share of `total` split over `n`: the shares sum to `total`.
fn share(total: usize, n: usize, i: usize) -> usize {
    total / n + usize::from(i < total % n)
}

impl Store {
    /// An empty store on the gateway's monotonic clock.
    pub fn new(limits: StoreLimits, metrics: StoreMetrics) -> Self {
        let base = Instant::now();
        Store::with_clock(
            limits,
            metrics,
            Arc::new(move || base.elapsed().as_millis() as u64),
        )
    }

    /// An empty store on `clock` (milliseconds, never going back). Sets the gauges to 0.
    pub fn with_clock(limits: StoreLimits, metrics: StoreMetrics, clock: Clock) -> Self {
        let n = shard_count(&limits);
        let shards = (0..n)
            .map(|i| {
                Mutex::new(Shard::new(
                    share(limits.max_entries, n, i),
                    share(limits.max_bytes, n, i),
                ))
            })
            .collect();
        metrics.entries.set(0);
        metrics.bytes.set(0);
        Store {
            shards,
            hasher: RandomState::new(),
            limits,
            metrics,
            clock,
        }
    }

    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// How many shards the store is split into.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    fn lock(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, d: &Delta) {
        if d.entries != 0 {
            self.metrics.entries.add(d.entries);
        }
        if d.bytes != 0 {
            self.metrics.bytes.add(d.bytes);
        }
        if d.expired != 0 {
            self.metrics.expired.inc_by(d.expired);
        }
        if d.evicted != 0 {
            self.metrics.evicted.inc_by(d.evicted);
        }
    }

    fn check(&self, key: &str, value: usize) -> Result<(), StoreError> {
        if key.len() > self.limits.max_key_bytes || value > self.limits.max_value_bytes {
            return Err(StoreError::TooLarge);
        }
        Ok(())
    }

    /// The expiry of an entry written now with `ttl_ms`; `Err` when it is already due.
    fn expiry(now: u64, ttl_ms: Option<u64>) -> Result<Option<u64>, ()> {
        match ttl_ms {
            None => Ok(None),
            Some(0) => Err(()),
            Some(t) => Ok(Some(now.saturating_add(t))),
        }
    }

    /// The value of `key`, if it is set and has not expired.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        if key.len() > self.limits.max_key_bytes {
            return None;
        }
        let mut d = Delta::default();
        let value = {
            let mut shard = self.lock(key);
            let e = shard.map.get(key)?;
            // The clock is read only for entries that can expire.
            let now = e.expires.map(|_| (self.clock)());
            if e.expires.zip(now).is_some_and(|(t, now)| t <= now) {
                shard.remove(key, now.unwrap_or_default(), &mut d);
                None
            } else {
                Some(e.value.to_vec())
            }
        };
        self.publish(&d);
        value
    }

    /// Sets `key` to `value`; with `ttl_ms`, it expires that many milliseconds from now,
    /// without, never (any previous expiry is dropped).
    pub fn set(&self, key: &str, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), StoreError> {
        self.check(key, value.len())?;
        let now = (self.clock)();
        let mut d = Delta::default();
        let result = {
            let mut shard = self.lock(key);
            match Self::expiry(now, ttl_ms) {
                Ok(expires) => shard.put(key, Value::Owned(value), expires, now, &mut d),
                Err(()) => {
                    shard.remove(key, now, &mut d);
                    Ok(())
                }
            }
        };
        self.publish(&d);
        result
    }

    /// Removes `key`; whether it was set (and had not expired).
    pub fn delete(&self, key: &str) -> bool {
        if key.len() > self.limits.max_key_bytes {
            return false;
        }
        let now = (self.clock)();
        let mut d = Delta::default();
        let was = {
            let mut shard = self.lock(key);
            shard
                .remove(key, now, &mut d)
                .is_some_and(|(_, e)| !e.expired(now))
        };
        self.publish(&d);
        was
    }

    /// Adds `delta` to the decimal integer at `key` (0 when unset) and returns the sum;
    /// `ttl_ms` applies when the key is created, an existing key keeps its expiry.
    pub fn increment(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, StoreError> {
        // The value's length is checked once the sum is known (at most 20 bytes).
        self.check(key, 0)?;
        let now = (self.clock)();
        let mut d = Delta::default();
        let result = {
            let mut shard = self.lock(key);
            let (current, expires) = match shard.map.get(key) {
                Some(e) if !e.expired(now) => {
                    let n = std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok());
                    (n.ok_or(StoreError::NotANumber), Ok(e.expires))
                }
                found => {
                    if found.is_some() {
                        shard.remove(key, now, &mut d);
                    }
                    (Ok(0), Self::expiry(now, ttl_ms))
                }
            };
            current
                .and_then(|n| n.checked_add(delta).ok_or(StoreError::NotANumber))
                .and_then(|sum| {
                    let digits = Decimal::new(sum);
                    if digits.as_bytes().len() > self.limits.max_value_bytes {
                        return Err(StoreError::TooLarge);
                    }
                    // Created with a TTL of 0 (`Err`): due at once, so not stored.
                    if let Ok(expires) = expires {
                        let value = Value::Copied(digits.as_bytes());
                        shard.put(key, value, expires, now, &mut d)?;
                    }
                    Ok(sum)
                })
        };
        self.publish(&d);
        result
    }

    /// Sets `key` to `value` (with `ttl_ms` as [`Store::set`]) only if its current value is
    /// `expected` (`None`: unset or expired); whether it did.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.check(key, value.len())?;
        let now = (self.clock)();
        let mut d = Delta::default();
        let result = {
            let mut shard = self.lock(key);
            let matches = match shard.map.get(key) {
                Some(e) if !e.expired(now) => Some(&*e.value) == expected,
                found => {
                    if found.is_some() {
                        shard.remove(key, now, &mut d);
                    }
                    expected.is_none()
                }
            };
            if !matches {
                Ok(false)
            } else {
                match Self::expiry(now, ttl_ms) {
                    Ok(expires) => shard
                        .put(key, Value::Owned(value), expires, now, &mut d)
                        .map(|()| true),
                    Err(()) => {
                        shard.remove(key, now, &mut d);
                        Ok(true)
                    }
                }
            }
        };
        self.publish(&d);
        result
    }

    /// Drops every expired entry; how many. Costs O(expired · log n) plus one lock per
    /// shard, as each shard's expired entries are the first of its eviction order: for a
    /// background timer, so that entries nobody reads again give their room back.
    pub fn purge_expired(&self) -> usize {
        let now = (self.clock)();
        let mut d = Delta::default();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            while let Some((&(expiry, _), _)) = shard.order.first_key_value() {
                if expiry > now {
                    break;
                }
                let (_, key) = shard.order.pop_first().expect("just seen");
                let e = shard
                    .map
                    .remove(&key)
                    .expect("the order lists only held keys");
                let size = entry_size(key.len(), e.value.len());
                shard.bytes -= size;
                d.entries -= 1;
                d.bytes -= size as i64;
                d.expired += 1;
            }
        }
        let n = d.expired as usize;
        self.publish(&d);
        n
    }

    /// Entries held, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Accounted bytes held (keys, values, [`ENTRY_OVERHEAD`] each).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Fixture {
        store: Store,
        now: Arc<AtomicU64>,
        metrics: StoreMetrics,
    }

    impl Fixture {
        fn advance(&self, ms: u64) {
            self.now.fetch_add(ms, Ordering::SeqCst);
        }
    }

    fn fixture(limits: StoreLimits) -> Fixture {
        let now = Arc::new(AtomicU64::new(1_000));
        let metrics = StoreMetrics::detached();
        let clock = now.clone();
        let store = Store::with_clock(
            limits,
            metrics.clone(),
            Arc::new(move || clock.load(Ordering::SeqCst)),
        );
        Fixture {
            store,
            now,
            metrics,
        }
    }

    fn limits(max_entries: usize, max_bytes: usize) -> StoreLimits {
        StoreLimits {
            max_entries,
            max_bytes,
            max_key_bytes: 1024,
            max_value_bytes: 256,
        }
    }

    fn big() -> Fixture {
        fixture(limits(1000, 1 << 20))
    }

    fn get(f: &Fixture, key: &str) -> Option<String> {
        f.store
            .get(key)
            .map(|v| String::from_utf8(v).expect("utf-8"))
    }

    fn set(f: &Fixture, key: &str, value: &str, ttl: Option<u64>) {
        f.store.set(key, value.into(), ttl).expect("set");
    }

    #[test]
    fn set_get_delete() {
        let f = big();
        assert_eq!(get(&f, "a"), None);
        set(&f, "a", "one", None);
        set(&f, "b", "two", None);
        assert_eq!(get(&f, "a").as_deref(), Some("one"));
        set(&f, "a", "uno", None);
        assert_eq!(get(&f, "a").as_deref(), Some("uno"));
        assert!(f.store.delete("a"));
        assert!(!f.store.delete("a"));
        assert_eq!(get(&f, "a"), None);
        assert_eq!(get(&f, "b").as_deref(), Some("two"));
        // Empty values are values.
        set(&f, "e", "", None);
        assert_eq!(get(&f, "e").as_deref(), Some(""));
        assert_eq!(f.store.len(), 2);
    }

    #[test]
    fn entries_expire_on_the_clock() {
        let f = big();
        set(&f, "t", "v", Some(100));
        set(&f, "forever", "v", None);
        f.advance(99);
        assert_eq!(get(&f, "t").as_deref(), Some("v"));
        f.advance(1);
        assert_eq!(get(&f, "t"), None);
        assert_eq!(f.metrics.expired.get(), 1);
        assert_eq!(f.store.len(), 1);
        assert_eq!(get(&f, "forever").as_deref(), Some("v"));
        // A set without a TTL drops the previous expiry; one with a TTL sets it.
        set(&f, "k", "1", Some(50));
        set(&f, "k", "2", None);
        f.advance(1_000);
        assert_eq!(get(&f, "k").as_deref(), Some("2"));
        set(&f, "k", "3", Some(10));
        f.advance(10);
        assert_eq!(get(&f, "k"), None);
        // Deleting an expired key reports it unset.
        set(&f, "d", "v", Some(5));
        f.advance(5);
        assert!(!f.store.delete("d"));
        // A TTL of 0 stores nothing and removes what was there.
        set(&f, "z", "v", None);
        set(&f, "z", "v", Some(0));
        assert_eq!(get(&f, "z"), None);
        assert_eq!(f.store.len(), 1);
    }

    #[test]
    fn purge_drops_only_expired_entries() {
        let f = big();
        for i in 0..10 {
            set(&f, &format!("short{i}"), "v", Some(10));
            set(&f, &format!("long{i}"), "v", Some(1_000));
            set(&f, &format!("never{i}"), "v", None);
        }
        f.advance(10);
        assert_eq!(f.store.purge_expired(), 10);
        assert_eq!(f.store.len(), 20);
        assert_eq!(f.metrics.entries.get(), 20);
        assert_eq!(f.metrics.expired.get(), 10);
        assert_eq!(f.store.purge_expired(), 0);
    }

    #[test]
    fn increment() {
        let f = big();
        assert_eq!(f.store.increment("n", 5, None), Ok(5));
        assert_eq!(f.store.increment("n", -7, None), Ok(-2));
        assert_eq!(get(&f, "n").as_deref(), Some("-2"));
        // Values written by `set` count when they are decimal integers.
        set(&f, "s", "41", None);
        assert_eq!(f.store.increment("s", 1, None), Ok(42));
        set(&f, "word", "forty", None);
        assert_eq!(
            f.store.increment("word", 1, None),
            Err(StoreError::NotANumber)
        );
        assert_eq!(get(&f, "word").as_deref(), Some("forty"));
        set(&f, "space", " 1", None);
        assert_eq!(
            f.store.increment("space", 1, None),
            Err(StoreError::NotANumber)
        );
        f.store.set("bin", vec![0xff, 0x31], None).unwrap();
        assert_eq!(
            f.store.increment("bin", 1, None),
            Err(StoreError::NotANumber)
        );
        // Overflow changes nothing.
        set(&f, "max", &i64::MAX.to_string(), None);
        assert_eq!(
            f.store.increment("max", 1, None),
            Err(StoreError::NotANumber)
        );
        assert_eq!(get(&f, "max"), Some(i64::MAX.to_string()));
        assert_eq!(f.store.increment("max", -1, None), Ok(i64::MAX - 1));
        assert_eq!(f.store.increment("min", i64::MIN, None), Ok(i64::MIN));
        assert_eq!(
            f.store.increment("min", -1, None),
            Err(StoreError::NotANumber)
        );
    }

    #[test]
    fn increment_creates_with_the_ttl_and_keeps_an_existing_expiry() {
        let f = big();
        assert_eq!(f.store.increment("w", 1, Some(1_000)), Ok(1));
        f.advance(600);
        // The TTL given now is ignored: the window still ends 1 000 ms after creation.
        assert_eq!(f.store.increment("w", 1, Some(10_000)), Ok(2));
        f.advance(399);
        assert_eq!(f.store.increment("w", 1, None), Ok(3));
        f.advance(1);
        assert_eq!(get(&f, "w"), None);
        // Once expired it starts again from 0, with the new TTL.
        assert_eq!(f.store.increment("w", 1, Some(50)), Ok(1));
        f.advance(50);
        assert_eq!(f.store.increment("w", 1, None), Ok(1));
        f.advance(1_000_000);
        assert_eq!(get(&f, "w").as_deref(), Some("1"));
    }

    #[test]
    fn compare_and_swap() {
        let f = big();
        // Unset expected on an unset key: created.
        assert_eq!(
            f.store.compare_and_swap("k", None, b"a".to_vec(), None),
            Ok(true)
        );
        // Unset expected on a set key: refused.
        assert_eq!(
            f.store.compare_and_swap("k", None, b"b".to_vec(), None),
            Ok(false)
        );
        assert_eq!(get(&f, "k").as_deref(), Some("a"));
        // The wrong value: refused, unchanged.
        assert_eq!(
            f.store
                .compare_and_swap("k", Some(b"x"), b"b".to_vec(), None),
            Ok(false)
        );
        assert_eq!(get(&f, "k").as_deref(), Some("a"));
        // The right value: swapped.
        assert_eq!(
            f.store
                .compare_and_swap("k", Some(b"a"), b"b".to_vec(), Some(100)),
            Ok(true)
        );
        assert_eq!(get(&f, "k").as_deref(), Some("b"));
        // An expected value on an unset key: refused, not created.
        assert_eq!(
            f.store
                .compare_and_swap("other", Some(b""), b"b".to_vec(), None),
            Ok(false)
        );
        assert_eq!(get(&f, "other"), None);
        // The swap's TTL applies; once expired the key counts as unset.
        f.advance(100);
        assert_eq!(
            f.store
                .compare_and_swap("k", Some(b"b"), b"c".to_vec(), None),
            Ok(false)
        );
        assert_eq!(
            f.store.compare_and_swap("k", None, b"c".to_vec(), None),
            Ok(true)
        );
        assert_eq!(get(&f, "k").as_deref(), Some("c"));
        // Size limits apply whatever the comparison.
        assert_eq!(
            f.store
                .compare_and_swap("k", Some(b"nope"), vec![0; 257], None),
            Err(StoreError::TooLarge)
        );
    }

    #[test]
    fn the_entry_bound_evicts_the_least_recently_written() {
        let f = fixture(limits(3, 1 << 20));
        assert_eq!(f.store.shards(), 1);
        set(&f, "a", "1", None);
        set(&f, "b", "1", None);
        set(&f, "c", "1", None);
        // Rewriting `a` (an increment counts as a write) renews it; reading `b` does not.
        assert_eq!(f.store.increment("a", 1, None), Ok(2));
        assert!(f.store.get("b").is_some());
        set(&f, "d", "1", None);
        assert_eq!(get(&f, "b"), None);
        assert_eq!(get(&f, "a").as_deref(), Some("2"));
        assert!(f.store.get("c").is_some() && f.store.get("d").is_some());
        set(&f, "e", "1", None);
        assert_eq!(get(&f, "c"), None);
        assert_eq!(f.store.len(), 3);
        assert_eq!(f.metrics.evicted.get(), 2);
        assert_eq!(f.metrics.expired.get(), 0);
        // Replacing a held key evicts nothing.
        set(&f, "e", "2", None);
        assert_eq!(f.metrics.evicted.get(), 2);
    }

    #[test]
    fn expired_then_soonest_expiring_are_evicted_before_entries_without_expiry() {
        let f = fixture(limits(4, 1 << 20));
        set(&f, "never-old", "v", None);
        set(&f, "late", "v", Some(10_000));
        set(&f, "soon", "v", Some(5_000));
        set(&f, "gone", "v", Some(10));
        f.advance(10);
        // `gone` has expired: it goes first, and counts as expired.
        set(&f, "x", "v", None);
        assert_eq!(f.store.len(), 4);
        assert_eq!((f.metrics.expired.get(), f.metrics.evicted.get()), (1, 0));
        assert!(f.store.get("late").is_some() && f.store.get("soon").is_some());
        // Then the one expiring soonest, though written after `late` and `never-old`.
        set(&f, "y", "v", None);
        assert_eq!(get(&f, "soon"), None);
        assert!(f.store.get("late").is_some());
        set(&f, "z", "v", None);
        assert_eq!(get(&f, "late"), None);
        // Only then the entries without expiry, oldest write first.
        assert!(f.store.get("never-old").is_some());
        set(&f, "w", "v", None);
        assert_eq!(get(&f, "never-old"), None);
        for k in ["x", "y", "z", "w"] {
            assert!(f.store.get(k).is_some(), "{k}");
        }
        assert_eq!((f.metrics.expired.get(), f.metrics.evicted.get()), (1, 3));
    }

    #[test]
    fn the_byte_bound_evicts_as_many_as_needed() {
        // Room for exactly three entries of a one-byte key and a 10-byte value.
        let one = entry_size(1, 10);
        let f = fixture(limits(1000, 3 * one));
        assert_eq!(f.store.shards(), 1);
        for k in ["a", "b", "c"] {
            set(&f, k, "0123456789", None);
        }
        assert_eq!(f.store.bytes(), 3 * one);
        set(&f, "d", "0123456789", None);
        assert_eq!(get(&f, "a"), None);
        assert_eq!(f.store.bytes(), 3 * one);
        // An entry the size of two needs two evictions.
        let value = "x".repeat(10 + one);
        set(&f, "e", &value, None);
        assert_eq!(get(&f, "b"), None);
        assert_eq!(get(&f, "c"), None);
        assert!(f.store.get("d").is_some() && f.store.get("e").is_some());
        assert_eq!(f.store.bytes(), 3 * one);
        assert_eq!(f.metrics.evicted.get(), 3);
        // Growing an entry in place evicts too: `d` is the older one.
        set(&f, "e", &"y".repeat(11 + one), None);
        assert_eq!(get(&f, "d"), None);
        assert_eq!(f.store.len(), 1);
    }

    #[test]
    fn too_large_and_full() {
        let f = fixture(limits(10, 1 << 20));
        let long_key = "k".repeat(1025);
        assert_eq!(
            f.store.set(&long_key, b"v".to_vec(), None),
            Err(StoreError::TooLarge)
        );
        assert_eq!(
            f.store.increment(&long_key, 1, None),
            Err(StoreError::TooLarge)
        );
        assert_eq!(f.store.get(&long_key), None);
        assert!(!f.store.delete(&long_key));
        let key = "k".repeat(1024);
        set(&f, &key, "ok", None);
        assert_eq!(
            f.store.set("v", vec![0; 257], None),
            Err(StoreError::TooLarge)
        );
        f.store.set("v", vec![0; 256], None).unwrap();
        assert_eq!(f.store.len(), 2);

        // A store smaller than an entry the limits allow: nothing can make room.
        let tiny = fixture(limits(10, entry_size(1, 100)));
        set(&tiny, "a", &"x".repeat(100), None);
        assert_eq!(
            tiny.store.set("b", vec![0; 101], None),
            Err(StoreError::Full)
        );
        // ... and the refused write evicted nothing.
        assert!(tiny.store.get("a").is_some());
        assert_eq!(tiny.metrics.evicted.get(), 0);
        let none = fixture(limits(0, 1 << 20));
        assert_eq!(none.store.set("a", vec![], None), Err(StoreError::Full));
        assert_eq!(none.store.increment("a", 1, None), Err(StoreError::Full));
        assert_eq!(
            none.store.compare_and_swap("a", None, vec![], None),
            Err(StoreError::Full)
        );
        assert!(none.store.is_empty());
    }

    #[test]
    fn metrics_follow_the_contents() {
        let f = big();
        let size = |k: &str, v: &str| (k.len() + v.len() + ENTRY_OVERHEAD) as i64;
        set(&f, "k", "vv", None);
        assert_eq!(f.metrics.entries.get(), 1);
        assert_eq!(f.metrics.bytes.get(), size("k", "vv"));
        set(&f, "k", "vvvv", None);
        set(&f, "key2", "", Some(10));
        assert_eq!(f.metrics.entries.get(), 2);
        assert_eq!(f.metrics.bytes.get(), size("k", "vvvv") + size("key2", ""));
        assert_eq!(f.store.increment("n", 100, None), Ok(100));
        assert_eq!(
            f.metrics.bytes.get(),
            size("k", "vvvv") + size("key2", "") + size("n", "100")
        );
        assert!(f.store.delete("k"));
        f.advance(10);
        assert_eq!(f.store.get("key2"), None);
        assert_eq!(f.metrics.entries.get(), 1);
        assert_eq!(f.metrics.bytes.get(), size("n", "100"));
        assert_eq!(f.metrics.bytes.get() as usize, f.store.bytes());
        assert_eq!((f.metrics.expired.get(), f.metrics.evicted.get()), (1, 0));
        // A new store starts its gauges at 0.
        f.metrics.entries.set(7);
        let _again = Store::new(limits(10, 1 << 20), f.metrics.clone());
        assert_eq!(f.metrics.entries.get(), 0);
    }

    #[test]
    fn sharded_stores_hold_their_bounds_exactly() {
        let f = fixture(StoreLimits {
            max_entries: 1024,
            max_bytes: 64 << 20,
            max_key_bytes: 1024,
            max_value_bytes: 1024,
        });
        assert_eq!(f.store.shards(), 16);
        for i in 0..10_000 {
            set(&f, &format!("key{i}"), "v", None);
        }
        // Every shard filled its share of exactly 64 entries.
        assert_eq!(f.store.len(), 1024);
        assert_eq!(f.metrics.entries.get(), 1024);
        assert_eq!(f.metrics.evicted.get(), 10_000 - 1024);
        // The most recent writes of each shard are the ones kept.
        assert!(f.store.get("key9999").is_some());
        assert_eq!(f.store.get("key0"), None);
        // Bounds shared unevenly still sum to the bound.
        let odd = fixture(limits(1001, 1 << 20));
        assert_eq!(odd.store.shards(), 8);
        for i in 0..10_000 {
            set(&odd, &format!("key{i}"), "v", None);
        }
        assert_eq!(odd.store.len(), 1001);
    }

    #[test]
    fn shard_counts_follow_the_bounds() {
        let count = |e, b, v| shard_count(&limits_v(e, b, v));
        fn limits_v(e: usize, b: usize, v: usize) -> StoreLimits {
            StoreLimits {
                max_entries: e,
                max_bytes: b,
                max_key_bytes: 1024,
                max_value_bytes: v,
            }
        }
        assert_eq!(count(10_000, 16 << 20, 64 << 10), 16);
        assert_eq!(count(127, 16 << 20, 64 << 10), 1);
        assert_eq!(count(128, 16 << 20, 64 << 10), 2);
        // 1 MiB with values of 64 KiB: 8 shards of 128 KiB each hold the largest entry.
        assert_eq!(count(10_000, 1 << 20, 64 << 10), 8);
        assert_eq!(count(10_000, 1 << 20, 1 << 20), 1);
        assert_eq!(StoreLimits::default().max_key_bytes, 1024);
    }

    #[test]
    fn concurrent_increments_are_atomic() {
        let f = fixture(StoreLimits::default());
        assert_eq!(f.store.shards(), 16);
        const PER_THREAD: i64 = 20_000;
        std::thread::scope(|s| {
            for t in 0..4 {
                let store = &f.store;
                s.spawn(move || {
                    for i in 0..PER_THREAD {
                        store.increment("hits", 1, None).unwrap();
                        // Traffic on other keys and shards in between.
                        store
                            .set(&format!("t{t}-{}", i % 100), b"v".to_vec(), None)
                            .unwrap();
                        if i % 7 == 0 {
                            store.increment("hits", -1, None).unwrap();
                            store.increment("hits", 1, None).unwrap();
                        }
                    }
                });
            }
        });
        assert_eq!(get(&f, "hits"), Some((4 * PER_THREAD).to_string()));
        assert_eq!(f.store.len(), 401);
        assert_eq!(f.metrics.entries.get(), 401);
        assert_eq!(f.metrics.bytes.get() as usize, f.store.bytes());
    }

    #[test]
    fn concurrent_compare_and_swap_loses_no_update() {
        let f = big();
        set(&f, "c", "0", None);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut done = 0;
                    while done < 2_000 {
                        let old = f.store.get("c").unwrap();
                        let n: u64 = std::str::from_utf8(&old).unwrap().parse().unwrap();
                        let new = (n + 1).to_string().into_bytes();
                        if f.store.compare_and_swap("c", Some(&old), new, None) == Ok(true) {
                            done += 1;
                        }
                    }
                });
            }
        });
        assert_eq!(get(&f, "c").as_deref(), Some("8000"));
    }

    #[test]
    fn decimals_are_formatted_as_rust_does() {
        for n in [
            0,
            7,
            -7,
            10,
            -10,
            99,
            100,
            12_345,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes(), "{n}");
        }
        let f = big();
        assert_eq!(f.store.increment("n", 9, None), Ok(9));
        // One more digit: a new allocation, bytes accounted.
        assert_eq!(f.store.increment("n", 1, None), Ok(10));
        assert_eq!(f.store.increment("n", -20, None), Ok(-10));
        assert_eq!(get(&f, "n").as_deref(), Some("-10"));
        assert_eq!(f.store.bytes(), entry_size(1, 3));
        assert_eq!(f.metrics.bytes.get() as usize, entry_size(1, 3));
        // Overwriting an expired entry counts it as expired.
        set(&f, "t", "v", Some(1));
        f.advance(1);
        set(&f, "t", "w", None);
        assert_eq!(f.metrics.expired.get(), 1);
        assert_eq!(get(&f, "t").as_deref(), Some("w"));
    }

    #[test]
    fn errors_display() {
        assert_eq!(StoreError::Full.to_string(), "the plugin's store is full");
        assert!(StoreError::TooLarge.to_string().contains("too large"));
        assert!(StoreError::NotANumber.to_string().contains("integer"));
    }
}
