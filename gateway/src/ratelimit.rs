//! Phase 4: rate limits. Named limiters (`[rate_limits.NAME]`) keyed by the client address,
//! the remote instance (the verified signer's host), the principal from auth, or the route;
//! a route lists the limiters it applies, in order. Each limiter is a GCRA (governor) over a
//! keyed state store of our own, [`BoundedStore`], whose size is capped: under a flood of
//! distinct keys, keys past the cap share one overflow bucket instead of growing memory, and
//! keys whose state is indistinguishable from a fresh one are swept in the background.
//!
//! A limiter is decided as soon as its key is known: client and route limiters before auth
//! and before the body is read, principal limiters after auth (phase 5), instance limiters
//! after the signature check (phase 6). Decisions are made per request, never queued: a
//! limited request is answered 429 at once, with `Retry-After` and the `RateLimit` and
//! `RateLimit-Policy` fields of draft-ietf-httpapi-ratelimit-headers. In `observe` mode a
//! limiter counts what it would have refused and lets the request through.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::register;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use http::HeaderValue;
use prometheus::{IntCounter, IntGauge};
use prometheus::{IntCounterVec, IntGaugeVec, Registry};

/// What a limiter's buckets are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The client address (after trusted proxies), IPv6 truncated to a prefix.
    Client,
    /// The verified signer's host; unsigned requests share one bucket.
    Instance,
    /// The principal auth established; unauthenticated requests share one bucket.
    Principal,
    /// The route: one bucket per route that lists the limiter.
    Route,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Client => "client",
            KeyKind::Instance => "instance",
            KeyKind::Principal => "principal",
            KeyKind::Route => "route",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse with 429.
    Enforce,
    /// Count `would_limit` and forward.
    Observe,
}

/// One validated `[rate_limits.NAME]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterConfig {
    pub name: String,
    pub key: KeyKind,
    /// `count` requests per `per` on average...
    pub count: u32,
    pub per: Duration,
    /// ... with bursts of up to `burst` at once.
    pub burst: u32,
    pub mode: Mode,
    /// Keys tracked on their own; more share one overflow bucket until swept.
    pub max_keys: usize,
    /// IPv6 client addresses are keyed by this prefix.
    pub ipv6_prefix: u8,
}

/// The key of one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Addr(IpAddr),
    Name(Arc<str>),
    /// Unsigned requests (instance limiters) or unauthenticated ones (principal limiters).
    Anonymous,
}

const SHARDS: usize = 16;

/// A keyed GCRA state store with a hard cap on the keys it holds. Each shard is a small
/// map behind its own lock, held only for the arithmetic of one decision.
#[derive(Debug)]
pub struct BoundedStore {
    shards: Box<[Mutex<HashMap<LimitKey, u64>>]>,
    hasher: RandomState,
    per_shard: usize,
    /// The shared bucket of keys that found their shard full.
    overflow: Mutex<Option<u64>>,
    /// Decisions made on the overflow bucket since the last sweep (shared with the
    /// [`Limiter`], as governor keeps the store to itself).
    overflowed: Arc<AtomicU64>,
}

impl BoundedStore {
    pub fn new(max_keys: usize, overflowed: Arc<AtomicU64>) -> Self {
        BoundedStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            overflow: Mutex::new(None),
            overflowed,
        }
    }

    fn shard(&self, key: &LimitKey) -> &Mutex<HashMap<LimitKey, u64>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }
}

fn apply<T, E>(
    slot: &mut u64,
    prev: Option<u64>,
    f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Result<T, E> {
    let (t, next) = f(prev.map(Nanos::new))?;
    *slot = next.as_u64();
    Ok(t)
}

impl StateStore for BoundedStore {
    type Key = LimitKey;

    fn measure_and_replace<T, F, E>(&self, key: &LimitKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tat) = map.get_mut(key) {
            let prev = *tat;
            return apply(tat, Some(prev), f);
        }
        if map.len() < self.per_shard {
            let (t, next) = f(None)?;
            map.insert(key.clone(), next.as_u64());
            return Ok(t);
        }
        drop(map);
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        let prev = *overflow;
        let mut slot = prev.unwrap_or_default();
        let result = apply(&mut slot, prev, f);
        if result.is_ok() {
            *overflow = Some(slot);
        }
        result
    }
}

impl ShrinkableKeyedStateStore<LimitKey> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let below = drop_below.as_u64();
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, tat| *tat > below);
            // A flood leaves large tables behind; give the memory back once it has passed.
            if map.capacity() > 64 && map.capacity() > map.len() * 4 {
                map.shrink_to_fit();
            }
        }
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        if overflow.is_some_and(|tat| tat <= below) {
            *overflow = None;
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The decision counters of one limiter, resolved once.
#[derive(Debug, Clone)]
pub struct LimiterMetrics {
    pub allowed: IntCounter,
    pub limited: IntCounter,
    pub would_limit: IntCounter,
    pub keys: IntGauge,
}

/// One named limiter: its GCRA, its bounded keyed state and its counters.
#[derive(Debug)]
pub struct Limiter<C: Clock = DefaultClock> {
    pub config: LimiterConfig,
    limiter: RateLimiter<LimitKey, BoundedStore, C, NoOpMiddleware<C::Instant>>,
    metrics: LimiterMetrics,
    overflowed: Arc<AtomicU64>,
    /// `RateLimit-Policy` as sent on every 429 of this limiter.
    pub policy: HeaderValue,
}

impl<C: Clock> Limiter<C> {
    pub fn with_clock(config: LimiterConfig, metrics: LimiterMetrics, clock: C) -> Self {
        let period = config.per / config.count.max(1);
        let burst = NonZeroU32::new(config.burst.max(1)).expect("non-zero");
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a non-zero period")
            .allow_burst(burst);
        let policy = HeaderValue::from_str(&format!(
            "\"{}\";q={};w={}",
            config.name,
            config.count,
            config.per.as_secs().max(1)
        ))
        .expect("limiter names are tokens");
        let overflowed = Arc::new(AtomicU64::new(0));
        let store = BoundedStore::new(config.max_keys, overflowed.clone());
        Limiter {
            limiter: RateLimiter::new(quota, store, clock),
            overflowed,
            config,
            metrics,
            policy,
        }
    }

    /// Decides one request. `Err` only in enforce mode; observe mode counts and allows.
    pub fn check(&self, key: &LimitKey) -> Result<(), Duration> {
        match self.limiter.check_key(key) {
            Ok(()) => {
                self.metrics.allowed.inc();
                Ok(())
            }
            Err(not_until) => {
                if self.config.mode == Mode::Observe {
                    self.metrics.would_limit.inc();
                    return Ok(());
                }
                self.metrics.limited.inc();
                Err(not_until.wait_time_from(self.limiter.clock().now()))
            }
        }
    }

    /// Drops keys whose buckets are full again (indistinguishable from new ones) and
    /// publishes the number of keys held. Runs off the request path.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.metrics.keys.set(self.limiter.len() as i64);
        let overflowed = self.overflowed.swap(0, Ordering::Relaxed);
        if overflowed > 0 {
            tracing::warn!(
                limiter = %self.config.name,
                max_keys = self.config.max_keys,
                decisions = overflowed,
                "rate limiter key cap reached: new keys shared one bucket"
            );
        }
    }

    /// The key this limiter uses for a request, from what the phases so far established.
    pub fn key(&self, client: Option<IpAddr>, name: Option<&Arc<str>>) -> LimitKey {
        match self.config.key {
            KeyKind::Client => match client {
                Some(ip) => LimitKey::Addr(crate::netset::truncate_v6(ip, self.config.ipv6_prefix)),
                None => LimitKey::Anonymous,
            },
            KeyKind::Instance | KeyKind::Principal | KeyKind::Route => match name {
                Some(n) => LimitKey::Name(n.clone()),
                None => LimitKey::Anonymous,
            },
        }
    }
}

/// A refusal: the limiter that refused and how long until the key's next request conforms.
pub type Refusal = (Arc<Limiter>, Duration);

/// The limiters of one route, grouped by the phase where their key becomes known.
#[derive(Debug, Default)]
pub struct RouteLimits {
    /// Client and route limiters: decided before auth and before the body is read.
    pub early: Box<[Arc<Limiter>]>,
    /// Principal limiters: after auth.
    pub principal: Box<[Arc<Limiter>]>,
    /// Instance limiters: after the signature check.
    pub instance: Box<[Arc<Limiter>]>,
    /// The route's name, the key of its route limiters.
    route_key: Option<Arc<str>>,
}

impl RouteLimits {
    /// `limiters` in the route's order.
    pub fn new(route: &str, limiters: &[Arc<Limiter>]) -> Self {
        let of = |kinds: &[KeyKind]| -> Box<[Arc<Limiter>]> {
            limiters
                .iter()
                .filter(|l| kinds.contains(&l.config.key))
                .cloned()
                .collect()
        };
        RouteLimits {
            early: of(&[KeyKind::Client, KeyKind::Route]),
            principal: of(&[KeyKind::Principal]),
            instance: of(&[KeyKind::Instance]),
            route_key: Some(route.into()),
        }
    }

    /// Phase 4: the client and route limiters, in order; the first refusal wins.
    pub fn check_early(&self, client: IpAddr) -> Result<(), Refusal> {
        check_all(&self.early, Some(client), self.route_key.as_ref())
    }

    /// The principal limiters, once auth has run.
    pub fn check_principal(&self, principal: Option<&Arc<str>>) -> Result<(), Refusal> {
        check_all(&self.principal, None, principal)
    }

    /// The instance limiters, once the signature is checked: `instance` is the verified
    /// signer's host, `None` for unsigned or unverified requests.
    pub fn check_instance(&self, instance: Option<&Arc<str>>) -> Result<(), Refusal> {
        check_all(&self.instance, None, instance)
    }
}

fn check_all(
    limiters: &[Arc<Limiter>],
    client: Option<IpAddr>,
    name: Option<&Arc<str>>,
) -> Result<(), Refusal> {
    for l in limiters {
        l.check(&l.key(client, name))
            .map_err(|wait| (l.clone(), wait))?;
    }
    Ok(())
}

impl Limiter {
    pub fn new(config: LimiterConfig, metrics: LimiterMetrics) -> Self {
        Self::with_clock(config, metrics, DefaultClock::default())
    }
}

/// The rate limit families (phase 4), registered by [`LimitFamilies::register`].
#[derive(Debug, Clone)]
pub struct LimitFamilies {
    /// `fedgate_rate_limit_decisions_total{limiter,decision}`.
    pub decisions: IntCounterVec,
    /// `fedgate_rate_limit_keys{limiter}`: keys a limiter tracks, as of its last sweep.
    pub keys: IntGaugeVec,
}

impl LimitFamilies {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(LimitFamilies {
            decisions: register::counter_vec(
                registry,
                "fedgate_rate_limit_decisions_total",
                "Rate limit decisions by limiter and decision (allowed, limited, would_limit in observe mode).",
                &["limiter", "decision"],
            )?,
            keys: register::gauge_vec(
                registry,
                "fedgate_rate_limit_keys",
                "Keys a rate limiter holds state for, as of its last sweep.",
                &["limiter"],
            )?,
        })
    }

    /// Handles of one rate limiter; resolved when the limiter is built.
    pub fn limiter(&self, name: &str) -> LimiterMetrics {
        let d = &self.decisions;
        LimiterMetrics {
            allowed: d.with_label_values(&[name, "allowed"]),
            limited: d.with_label_values(&[name, "limited"]),
            would_limit: d.with_label_values(&[name, "would_limit"]),
            keys: self.keys.with_label_values(&[name]),
        }
    }

    /// Removes the series of a limiter that a reload dropped.
    pub fn forget(&self, name: &str) {
        for d in ["allowed", "limited", "would_limit"] {
            let _ = self.decisions.remove_label_values(&[name, d]);
        }
        let _ = self.keys.remove_label_values(&[name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn config(key: KeyKind, count: u32, per: Duration, burst: u32, mode: Mode) -> LimiterConfig {
        LimiterConfig {
            name: "test".into(),
            key,
            count,
            per,
            burst,
            mode,
            max_keys: 1000,
            ipv6_prefix: 64,
        }
    }

    fn metrics() -> (Registry, LimiterMetrics) {
        let registry = Registry::new();
        let m = crate::metrics::Metrics::new(registry.clone()).unwrap();
        (registry, m.limiter("test"))
    }

    use prometheus::Registry;

    fn limiter(
        cfg: LimiterConfig,
    ) -> (
        Limiter<FakeRelativeClock>,
        FakeRelativeClock,
        LimiterMetrics,
    ) {
        let clock = FakeRelativeClock::default();
        let (_r, m) = metrics();
        (Limiter::with_clock(cfg, m.clone(), clock.clone()), clock, m)
    }

    fn addr(s: &str) -> LimitKey {
        LimitKey::Addr(s.parse().unwrap())
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let cfg = config(
            KeyKind::Client,
            10,
            Duration::from_secs(1),
            3,
            Mode::Enforce,
        );
        let (l, clock, m) = limiter(cfg);
        let k = addr("192.0.2.1");
        for _ in 0..3 {
            assert!(l.check(&k).is_ok());
        }
        // The fourth waits one emission interval (100 ms).
        let wait = l.check(&k).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Another key has its own bucket.
        assert!(l.check(&addr("192.0.2.2")).is_ok());
        clock.advance(Duration::from_millis(100));
        assert!(l.check(&k).is_ok());
        assert!(l.check(&k).is_err());
        assert_eq!(m.allowed.get(), 5);
        assert_eq!(m.limited.get(), 2);
        assert_eq!(m.would_limit.get(), 0);
    }

    #[test]
    fn observe_mode_counts_and_allows() {
        let cfg = config(KeyKind::Route, 1, Duration::from_secs(60), 1, Mode::Observe);
        let (l, _clock, m) = limiter(cfg);
        let k = LimitKey::Name("r".into());
        for _ in 0..5 {
            assert!(l.check(&k).is_ok());
        }
        assert_eq!(
            (m.allowed.get(), m.would_limit.get(), m.limited.get()),
            (1, 4, 0)
        );
    }

    #[test]
    fn key_state_is_capped_and_overflow_keys_share_a_bucket() {
        let mut cfg = config(
            KeyKind::Client,
            1,
            Duration::from_secs(3600),
            1,
            Mode::Enforce,
        );
        cfg.max_keys = 64;
        let (l, clock, m) = limiter(cfg);
        // A flood of distinct keys: each first request takes a fresh bucket until the shards
        // are full, then all further new keys share one bucket, which allows one request.
        let mut allowed = 0;
        for i in 0..10_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            if l.check(&LimitKey::Addr(ip.into())).is_ok() {
                allowed += 1;
            }
        }
        let held = l.limiter.len();
        assert!(held <= 64, "{held} keys held");
        // Every tracked key got its one request, and the overflow bucket one more.
        assert_eq!(allowed, held + 1);
        assert_eq!(m.limited.get() as usize, 10_000 - allowed);
        // Once the buckets are well past full again a sweep frees them all (governor drops
        // state one emission interval after it became indistinguishable from a new key's).
        clock.advance(Duration::from_secs(2 * 3600));
        l.sweep();
        assert_eq!(l.limiter.len(), 0);
        assert_eq!(m.keys.get(), 0);
        assert!(l.check(&addr("203.0.113.1")).is_ok());
    }

    #[test]
    fn sweep_keeps_keys_still_limited() {
        let cfg = config(
            KeyKind::Client,
            1,
            Duration::from_secs(10),
            1,
            Mode::Enforce,
        );
        let (l, clock, m) = limiter(cfg);
        assert!(l.check(&addr("192.0.2.1")).is_ok());
        clock.advance(Duration::from_secs(15));
        assert!(l.check(&addr("192.0.2.2")).is_ok());
        clock.advance(Duration::from_secs(6));
        l.sweep();
        // The first key's bucket is full again; the second's is not.
        assert_eq!(m.keys.get(), 1);
        assert!(l.check(&addr("192.0.2.2")).is_err());
        assert!(l.check(&addr("192.0.2.1")).is_ok());
    }

    #[test]
    fn keys_by_kind_and_ipv6_prefix() {
        let (l, _c, _m) = limiter(config(
            KeyKind::Client,
            1,
            Duration::from_secs(1),
            1,
            Mode::Enforce,
        ));
        let a = l.key(Some("2001:db8:1:2::1".parse().unwrap()), None);
        let b = l.key(Some("2001:db8:1:2:ffff::9".parse().unwrap()), None);
        assert_eq!(a, b);
        assert_ne!(a, l.key(Some("2001:db8:1:3::1".parse().unwrap()), None));
        let (i, _c, _m) = limiter(config(
            KeyKind::Instance,
            1,
            Duration::from_secs(1),
            1,
            Mode::Enforce,
        ));
        assert_eq!(i.key(None, None), LimitKey::Anonymous);
        assert_eq!(
            i.key(None, Some(&Arc::from("remote.example"))),
            LimitKey::Name("remote.example".into())
        );
        assert_eq!(i.policy.to_str().unwrap(), "\"test\";q=1;w=1");
    }

    #[test]
    fn route_limits_group_by_phase_and_refuse_in_order() {
        let (_r, m) = metrics();
        let mk = |name: &str, key, count| {
            let mut c = config(key, count, Duration::from_secs(60), count, Mode::Enforce);
            c.name = name.into();
            Arc::new(Limiter::new(c, m.clone()))
        };
        let limits = RouteLimits::new(
            "inbox",
            &[
                mk("per-client", KeyKind::Client, 2),
                mk("per-instance", KeyKind::Instance, 1),
                mk("per-route", KeyKind::Route, 3),
            ],
        );
        assert_eq!(limits.early.len(), 2);
        assert_eq!(limits.instance.len(), 1);
        assert!(limits.principal.is_empty());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.check_early(ip).is_ok());
        assert!(limits.check_early(ip).is_ok());
        let (who, _) = limits.check_early(ip).unwrap_err();
        assert_eq!(who.config.name, "per-client");
        // The refusal took nothing from the route's bucket: another client gets its third
        // request, and the fourth is the route limiter's.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limits.check_early(other).is_ok());
        let (who, _) = limits.check_early(other).unwrap_err();
        assert_eq!(who.config.name, "per-route");
        let remote: Arc<str> = "remote.example".into();
        assert!(limits.check_instance(Some(&remote)).is_ok());
        assert!(limits.check_instance(Some(&remote)).is_err());
        // Unsigned requests share one bucket of their own.
        assert!(limits.check_instance(None).is_ok());
        assert!(limits.check_instance(None).is_err());
    }
}
