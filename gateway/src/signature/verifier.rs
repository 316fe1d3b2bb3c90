//! Phase 6 as the proxy runs it: which scheme a request uses, the key for its key id, the
//! signature, the body digest, and the metrics of the outcome.
//!
//! Keys come from the trust store first (`[[signatures.keys]]`: a hash lookup, nothing
//! awaited), then, when `[signatures.fetch]` is enabled, from the [`KeyFetcher`]'s cache or a
//! fetch of the key id URL. A fetched key that does not verify the signature is fetched
//! again (at most once per `refetch_interval`) in case its owner rotated it, as Mastodon does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use prometheus::{Histogram, IntCounter};

use super::fetch::KeyFetcher;
use super::key::PublicKey;
use super::{
    cavage, digest, instance_of, rfc9421, scheme_of, Message, Outcome, Rejection, Scheme, Window,
};
use crate::config::SignaturesConfig;
use crate::signature::SignatureFamilies;

/// Who signed a request whose signature verified: available to later phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub key_id: String,
    /// The host of the key id (`remote.example` for `https://remote.example/users/bob#main-key`).
    pub instance: String,
}

/// The result of phase 6 for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub scheme: Scheme,
    pub outcome: Outcome,
    /// Why it failed, for the log and the 401 body.
    pub reason: Option<String>,
    pub signer: Option<Signer>,
}

/// The verifier of one runtime: its trust store, clock window and metrics.
#[derive(Debug)]
pub struct Verifier {
    window: Window,
    max_instances: usize,
    keys: HashMap<String, PublicKey>,
    families: Arc<SignatureFamilies>,
    /// The duration histogram of each scheme, by `Scheme as usize`.
    durations: [Histogram; 3],
    /// Instances with their own label in the failure counter.
    instances: Mutex<HashSet<String>>,
    /// Keys fetched from key id URLs, when `[signatures.fetch]` is enabled.
    fetcher: Option<Arc<KeyFetcher>>,
}

/// A parsed signature of either scheme.
enum Parsed {
    Cavage(cavage::Signature),
    Rfc9421(rfc9421::Signature),
}

impl Parsed {
    fn check_unkeyed(&self, window: &Window, now: SystemTime) -> Result<(), Rejection> {
        match self {
            Parsed::Cavage(s) => s.check_unkeyed(window, now),
            Parsed::Rfc9421(s) => s.check_unkeyed(window, now),
        }
    }

    fn verify(&self, key: &PublicKey, window: &Window, now: SystemTime) -> Result<(), Rejection> {
        match self {
            Parsed::Cavage(s) => s.verify(key, window, now),
            Parsed::Rfc9421(s) => s.verify(key, window, now),
        }
    }
}

impl Verifier {
    /// `kept` is the verifier of the runtime being replaced, given when the reload leaves
    /// `[signatures.fetch]` as it is (see [`crate::config::ConfigDiff`]): its key fetcher
    /// (cache and breakers) carries over.
    pub fn new(
        config: &SignaturesConfig,
        families: Arc<SignatureFamilies>,
        kept: Option<&Verifier>,
    ) -> Self {
        let fetcher = config.fetch.enabled.then(|| {
            kept.and_then(|p| p.fetcher.as_ref())
                .cloned()
                .unwrap_or_else(|| Arc::new(KeyFetcher::new(&config.fetch, &families)))
        });
        Verifier {
            window: config.window,
            max_instances: config.max_instances,
            keys: config.keys.iter().cloned().collect(),
            durations: Scheme::ALL.map(|s| families.duration.with_label_values(&[s.as_str()])),
            families,
            instances: Mutex::new(HashSet::new()),
            fetcher,
        }
    }

    /// The key fetcher, when fetching is enabled.
    pub fn fetcher(&self) -> Option<&Arc<KeyFetcher>> {
        self.fetcher.as_ref()
    }

    /// Number of keys in the trust store.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Shows this verifier's trust store on `fedgate_trust_store_size`: called when its
    /// runtime starts serving.
    pub fn publish(&self) {
        self.families.trust_store_size.set(self.keys.len() as i64);
        match &self.fetcher {
            Some(f) => f.publish(),
            None => self.families.key_cache_entries.set(0),
        }
    }

    /// Counter handles of one route, resolved when the route is built.
    pub fn route_counters(&self, route: &str) -> RouteCounters {
        let c = |scheme: Scheme, outcome: Outcome| {
            self.families.verifications.with_label_values(&[
                route,
                scheme.as_str(),
                outcome.as_str(),
            ])
        };
        RouteCounters {
            by: Scheme::ALL.map(|s| Outcome::ALL.map(|o| c(s, o))),
        }
    }

    /// Checks `message` (with its whole `body`) and records the outcome. Awaits only for a key
    /// that is neither in the trust store nor cached: then it fetches it.
    pub async fn verify(
        &self,
        counters: &RouteCounters,
        message: &Message<'_>,
        body: &[u8],
        now: SystemTime,
    ) -> Verification {
        let started = Instant::now();
        let scheme = scheme_of(message.headers);
        let mut key_id = None;
        let parsed = match scheme {
            Scheme::None => Err(Rejection::new(
                Outcome::Missing,
                "the request is not signed",
            )),
            Scheme::Cavage => cavage::parse(message).map(|s| {
                key_id = Some(s.key_id().to_string());
                Parsed::Cavage(s)
            }),
            Scheme::Rfc9421 => rfc9421::parse(message, None).and_then(|s| {
                let id = s
                    .key_id()
                    .ok_or_else(|| Rejection::malformed("the signature has no keyid"))?;
                key_id = Some(id.to_string());
                Ok(Parsed::Rfc9421(s))
            }),
        };
        // Time spent fetching a key is not verification time: it has its own histogram.
        let mut fetching = std::time::Duration::ZERO;
        let result = match (parsed, key_id.as_deref()) {
            (Ok(sig), Some(id)) => match self.keys.get(id) {
                Some(key) => sig.verify(key, &self.window, now),
                None => self.verify_fetched(&sig, id, now, &mut fetching).await,
            },
            (Ok(_), None) => Err(Rejection::malformed("the signature has no keyid")),
            (Err(r), _) => Err(r),
        };
        // The signature covers the digest field; the digest field must cover the body.
        let result = result.and_then(|()| digest::check(message.headers, body).map(|_| ()));
        self.durations[scheme as usize]
            .observe(started.elapsed().saturating_sub(fetching).as_secs_f64());
        let instance = key_id.as_deref().map(instance_of);
        let outcome = match &result {
            Ok(()) => Outcome::Valid,
            Err(r) => r.outcome,
        };
        counters.get(scheme, outcome).inc();
        if outcome == Outcome::Valid {
            if let Some(instance) = instance.as_deref().filter(|i| !i.is_empty()) {
                self.families.peers.saw(instance, Instant::now());
            }
        } else {
            let label = self.instance_label(instance.as_deref());
            self.families
                .failures_by_instance
                .with_label_values(&[label.as_str(), outcome.as_str()])
                .inc();
        }
        Verification {
            scheme,
            outcome,
            reason: result.as_ref().err().map(|r| r.reason.clone()),
            signer: match (result, key_id, instance) {
                (Ok(()), Some(key_id), Some(instance)) => Some(Signer { key_id, instance }),
                _ => None,
            },
        }
    }

    /// Verifies with a fetched key (the trust store has none for `key_id`), refetching it
    /// once if it does not verify. Adds the time spent fetching to `fetching`.
    async fn verify_fetched(
        &self,
        sig: &Parsed,
        key_id: &str,
        now: SystemTime,
        fetching: &mut std::time::Duration,
    ) -> Result<(), Rejection> {
        let unknown =
            || Rejection::new(Outcome::UnknownKey, format!("no key is known for {key_id}"));
        let Some(fetcher) = &self.fetcher else {
            return Err(unknown());
        };
        // A signature that is too old or does not cover what it must fails whatever the key:
        // no fetch for it.
        sig.check_unkeyed(&self.window, now)?;
        let started = Instant::now();
        let key = fetcher.key(key_id).await;
        *fetching += started.elapsed();
        let key = key.map_err(|reason| {
            tracing::debug!(key_id, %reason, "no key for the signature");
            unknown()
        })?;
        match sig.verify(&key, &self.window, now) {
            Err(r) if r.outcome == Outcome::Invalid => {
                let started = Instant::now();
                let fresh = fetcher.refetch(key_id, &key).await;
                *fetching += started.elapsed();
                match fresh {
                    Some(fresh) => {
                        tracing::debug!(key_id, "verifying again with the key fetched anew");
                        sig.verify(&fresh, &self.window, now)
                    }
                    None => Err(r),
                }
            }
            other => other,
        }
    }

    /// The `instance` label: the host itself while fewer than `max_instances` have one,
    /// `other` after; `unknown` when the request named no usable key id.
    fn instance_label(&self, instance: Option<&str>) -> String {
        let Some(instance) = instance.filter(|i| !i.is_empty()) else {
            return "unknown".to_string();
        };
        let mut seen = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(instance) {
            return instance.to_string();
        }
        if seen.len() < self.max_instances {
            seen.insert(instance.to_string());
            return instance.to_string();
        }
        "other".to_string()
    }
}

/// One route's verification counters, by scheme and outcome.
#[derive(Debug, Clone)]
pub struct RouteCounters {
    by: [[IntCounter; 8]; 3],
}

impl RouteCounters {
    fn get(&self, scheme: Scheme, outcome: Outcome) -> &IntCounter {
        &self.by[scheme as usize][outcome as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_hosts_of_key_ids() {
        assert_eq!(
            instance_of("https://Remote.Example/users/bob#main-key"),
            "remote.example"
        );
        assert_eq!(
            instance_of("https://a.example:8443/actor"),
            "a.example:8443"
        );
        assert_eq!(instance_of("acct:bob@x"), "x");
        assert_eq!(instance_of("key-1"), "key-1");
    }
}
