//! Phase 6, fetched keys: the bounded cache of keys fetched from key id URLs and of fetches
//! that failed (negative entries), read on every signed request whose key id is not in the
//! trust store.
//!
//! The map is split in shards, each behind its own `RwLock`, so lookups of different key ids
//! do not contend and a lookup never waits behind a fetch (no lock is held across an await).
//! Each shard evicts in insertion order once full: a queue of (key id, sequence) records the
//! order, and records a later insert of the same key id made stale are skipped when popped,
//! so every operation is O(1) amortised. Time comes from tokio's clock, so tests can pause it.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::key::PublicKey;

/// What the cache holds for a key id.
#[derive(Debug, Clone)]
pub enum Cached {
    /// A key, and when it was fetched.
    Key(Arc<PublicKey>, Instant),
    /// A fetch that failed recently, and why.
    Failed(Arc<str>),
}

#[derive(Debug)]
struct Entry {
    value: Cached,
    expires: Instant,
    seq: u64,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Arc<str>, Entry>,
    order: VecDeque<(Arc<str>, u64)>,
}

/// The cache; see the module documentation.
#[derive(Debug)]
pub struct KeyCache {
    shards: Box<[RwLock<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    seq: AtomicU64,
    len: AtomicUsize,
}

impl KeyCache {
    /// A cache of at most `max_entries` entries.
    pub fn new(max_entries: usize) -> KeyCache {
        let max_entries = max_entries.max(1);
        // Small caches keep one shard, so the bound and the eviction order are exact.
        let shards = (max_entries / 256).clamp(1, 16);
        KeyCache {
            shards: (0..shards).map(|_| RwLock::default()).collect(),
            per_shard: max_entries / shards,
            hasher: RandomState::new(),
            seq: AtomicU64::new(0),
            len: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key_id: &str) -> &RwLock<Shard> {
        let i = self.hasher.hash_one(key_id) as usize % self.shards.len();
        &self.shards[i]
    }

    /// The live entry for `key_id`, if any.
    pub fn get(&self, key_id: &str) -> Option<Cached> {
        let now = Instant::now();
        let shard = self.shard(key_id).read().unwrap_or_else(|p| p.into_inner());
        shard
            .map
            .get(key_id)
            .filter(|e| e.expires > now)
            .map(|e| e.value.clone())
    }

    /// Stores `value` for `key_id` for `ttl`, evicting the oldest entries of a full shard.
    pub fn insert(&self, key_id: &str, value: Cached, ttl: Duration) {
        let now = Instant::now();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut shard = self
            .shard(key_id)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let shard = &mut *shard;
        let entry = Entry {
            value,
            expires: now + ttl,
            seq,
        };
        if let Some(k) = shard.map.get_key_value(key_id).map(|(k, _)| k.clone()) {
            shard.map.insert(k.clone(), entry);
            shard.order.push_back((k, seq));
        } else {
            while shard.map.len() >= self.per_shard {
                let Some((k, s)) = shard.order.pop_front() else {
                    break;
                };
                if shard.map.get(&k).is_some_and(|e| e.seq == s) {
                    shard.map.remove(&k);
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
            }
            let k: Arc<str> = Arc::from(key_id);
            shard.map.insert(k.clone(), entry);
            shard.order.push_back((k, seq));
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        // Replaced entries leave stale records behind; drop them before they outnumber
        // the live ones, keeping the queue within twice the shard's size.
        if shard.order.len() > 2 * self.per_shard + 8 {
            let map = &shard.map;
            shard
                .order
                .retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    /// Marks the key held for `key_id` as fetched now, without changing it or its expiry:
    /// a refetch that failed keeps the key, and waits its interval before trying again.
    pub fn touch(&self, key_id: &str) {
        let mut shard = self
            .shard(key_id)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(Entry {
            value: Cached::Key(_, fetched),
            ..
        }) = shard.map.get_mut(key_id)
        {
            *fetched = Instant::now();
        }
    }

    /// Entries held, live or expired but not yet evicted.
    pub fn entries(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::key::tests::RSA_PUB;
    use super::*;

    fn key() -> Arc<PublicKey> {
        Arc::new(PublicKey::from_pem(RSA_PUB).unwrap())
    }

    fn is_key(c: Option<&Cached>) -> bool {
        matches!(c, Some(Cached::Key(..)))
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl() {
        let cache = KeyCache::new(10);
        let minute = Duration::from_secs(60);
        cache.insert("a", Cached::Key(key(), Instant::now()), 60 * minute);
        cache.insert("b", Cached::Failed("status 404".into()), 5 * minute);
        assert!(is_key(cache.get("a").as_ref()));
        assert!(matches!(cache.get("b"), Some(Cached::Failed(r)) if &*r == "status 404"));
        assert!(cache.get("c").is_none());

        tokio::time::advance(5 * minute - Duration::from_millis(1)).await;
        assert!(cache.get("b").is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.get("b").is_none(), "the negative entry expired");
        assert!(is_key(cache.get("a").as_ref()));
        tokio::time::advance(55 * minute).await;
        assert!(cache.get("a").is_none(), "the key expired");
        assert_eq!(
            cache.entries(),
            2,
            "expired entries wait to be evicted or replaced"
        );

        // A replaced entry starts a new ttl.
        cache.insert("a", Cached::Failed("timeout".into()), minute);
        assert!(matches!(cache.get("a"), Some(Cached::Failed(_))));
        assert_eq!(cache.entries(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_evicts_the_oldest_entry() {
        let cache = KeyCache::new(3);
        let hour = Duration::from_secs(3600);
        for id in ["a", "b", "c"] {
            cache.insert(id, Cached::Key(key(), Instant::now()), hour);
        }
        // Replacing `a` makes it the newest: `b` is now the oldest.
        cache.insert("a", Cached::Failed("x".into()), hour);
        cache.insert("d", Cached::Key(key(), Instant::now()), hour);
        assert_eq!(cache.entries(), 3);
        assert!(cache.get("b").is_none());
        for id in ["a", "c", "d"] {
            assert!(cache.get(id).is_some(), "{id}");
        }
        // Many entries through a small cache: the bound holds and the queue stays small.
        for i in 0..1000 {
            cache.insert(&format!("k{i}"), Cached::Failed("x".into()), hour);
            cache.insert("hot", Cached::Failed("y".into()), hour);
        }
        assert_eq!(cache.entries(), 3);
        let shard = cache.shards[0].read().unwrap();
        assert!(shard.order.len() <= 2 * 3 + 9, "{}", shard.order.len());
        assert!(shard.map.len() <= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_cache_keeps_its_bound_across_shards() {
        let cache = KeyCache::new(1000);
        assert!(cache.shards.len() > 1);
        for i in 0..5000 {
            cache.insert(
                &format!("https://h{i}.example/k"),
                Cached::Failed("x".into()),
                Duration::from_secs(60),
            );
        }
        assert!(cache.entries() <= 1000, "{}", cache.entries());
        assert!(cache.entries() >= 900, "{}", cache.entries());
    }

    #[tokio::test(start_paused = true)]
    async fn touch_moves_the_fetch_time_only() {
        let cache = KeyCache::new(4);
        let t0 = Instant::now();
        cache.insert("a", Cached::Key(key(), t0), Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(10)).await;
        cache.touch("a");
        match cache.get("a") {
            Some(Cached::Key(_, fetched)) => assert_eq!(fetched, t0 + Duration::from_secs(10)),
            other => panic!("{other:?}"),
        }
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(cache.get("a").is_none(), "touch does not extend the ttl");
    }
}
