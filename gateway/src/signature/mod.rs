//! Phase 6: HTTP signatures. A remote instance signs each request it delivers; this module
//! checks the signature against the sender's public key and the body against its digest.
//!
//! Two schemes: [`cavage`] (draft-cavage-http-signatures-12, as Mastodon, GoToSocial,
//! Misskey, Lemmy and PeerTube send it: a `Signature` header) and [`rfc9421`] (HTTP Message
//! Signatures: `Signature-Input` with `Signature`). [`key`] turns the keys servers publish
//! (SPKI PEM, PKCS#1 PEM, multibase Ed25519) into verifiers, and [`digest`] checks `Digest`
//! and RFC 9530 `Content-Digest` against the exact body bytes. Keys missing from the trust
//! store can be fetched from their key id URL: [`fetch`] (with [`keycache`] and the
//! document reader [`actor`]).
//!
//! Every check ends in an [`Outcome`]: its label is the `result` of
//! `fedgate_signature_verifications_total`.

pub mod actor;
pub mod cavage;
pub mod digest;
pub mod fetch;
pub mod key;
pub mod keycache;
pub mod peers;
pub mod rfc9421;
pub mod verifier;

/// Most fields or components one signature may cover (draft-cavage `headers`, RFC 9421
/// `Signature-Input` items). Mastodon, GoToSocial, Misskey and the RFC examples cover at
/// most about a dozen.
pub const MAX_COVERED: usize = 64;

use std::time::{Duration, SystemTime};

use crate::register;
use http::{HeaderMap, Method};
use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge, Registry};
use std::sync::Arc;

/// The scheme a request was signed with; the `scheme` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Cavage,
    Rfc9421,
    /// No signature at all.
    None,
}

impl Scheme {
    /// Every scheme, in declaration order (`scheme as usize` indexes it).
    pub const ALL: [Scheme; 3] = [Scheme::Cavage, Scheme::Rfc9421, Scheme::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Cavage => "cavage",
            Scheme::Rfc9421 => "rfc9421",
            Scheme::None => "none",
        }
    }
}

/// How a verification ended; the `result` label of the verification metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Valid,
    /// No signature on the request.
    Missing,
    /// A signature that cannot be parsed, or that does not cover what it must.
    Malformed,
    /// The signature does not verify with the key.
    Invalid,
    /// Outside the clock-skew window, or past its `expires`.
    Expired,
    /// No key for its key id.
    UnknownKey,
    /// The body does not match its `Digest` or `Content-Digest`.
    DigestMismatch,
    /// An algorithm (or key type) this gateway does not verify.
    UnsupportedAlgorithm,
}

impl Outcome {
    /// Every outcome, in declaration order (`outcome as usize` indexes it).
    pub const ALL: [Outcome; 8] = [
        Outcome::Valid,
        Outcome::Missing,
        Outcome::Malformed,
        Outcome::Invalid,
        Outcome::Expired,
        Outcome::UnknownKey,
        Outcome::DigestMismatch,
        Outcome::UnsupportedAlgorithm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Valid => "valid",
            Outcome::Missing => "missing",
            Outcome::Malformed => "malformed",
            Outcome::Invalid => "invalid",
            Outcome::Expired => "expired",
            Outcome::UnknownKey => "unknown_key",
            Outcome::DigestMismatch => "digest_mismatch",
            Outcome::UnsupportedAlgorithm => "unsupported_algorithm",
        }
    }
}

/// A failed check: the outcome for the metrics and a reason for the log and the 401 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    pub outcome: Outcome,
    pub reason: String,
}

impl Rejection {
    pub fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Rejection {
            outcome,
            reason: reason.into(),
        }
    }

    pub fn malformed(reason: impl Into<String>) -> Self {
        Rejection::new(Outcome::Malformed, reason)
    }
}

/// The parts of a request a signature can cover, as the gateway received them.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub method: &'a Method,
    /// The request target's path and query, byte for byte (`/users/a/inbox?x=1`).
    pub path_and_query: &'a str,
    /// `Host`, or the HTTP/2 `:authority`.
    pub authority: Option<&'a str>,
    /// `http` or `https`, for RFC 9421's `@scheme` and `@target-uri`.
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
}

impl Message<'_> {
    /// The values of field `name` as one line: every field line's value, trimmed, joined by
    /// `", "`, as both schemes canonicalise them. `host` falls back to the authority.
    /// `None` when the request has no such field.
    pub fn field(&self, name: &str) -> Option<String> {
        match field_line(self.headers, name) {
            None if name == "host" => Some(self.authority?.to_string()),
            line => line,
        }
    }

    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query, |(p, _)| p)
    }

    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }
}

/// The values of field `name` as one line: every field line's value, trimmed, joined by
/// `", "`. `None` when `headers` have no such field.
pub fn field_line(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut line = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            line.push_str(", ");
        }
        line.push_str(String::from_utf8_lossy(v.as_bytes()).trim());
    }
    Some(line)
}

/// The scheme phase 6 verifies a request with: RFC 9421 when it has `Signature-Input`,
/// else draft-cavage when it has `Signature` or `Authorization: Signature`.
pub fn scheme_of(headers: &HeaderMap) -> Scheme {
    if headers.contains_key("signature-input") {
        Scheme::Rfc9421
    } else if cavage::present(headers) {
        Scheme::Cavage
    } else {
        Scheme::None
    }
}

/// The key id a request's signature names, read by the same parser phase 6 verifies it
/// with, without verifying anything. `None` when the request is not signed or its signature
/// cannot be read (then it cannot verify either).
pub fn claimed_key_id(headers: &HeaderMap) -> Option<String> {
    match scheme_of(headers) {
        Scheme::Rfc9421 => rfc9421::claimed_key_id(headers),
        Scheme::Cavage => cavage::claimed_key_id(headers),
        Scheme::None => None,
    }
}

/// The instance of a key id or actor URL: its host (with a port, if any), lowercased;
/// empty when it has none. `remote.example` for `https://remote.example/users/bob#main-key`.
pub fn instance_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    host.chars()
        .take(253)
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The clock window both schemes share, Mastodon's (`matches_time_window?` in its
/// `SignatureVerification`): a signature is made at its `created` time, else at its `Date`;
/// it expires at its `expires` time, else `max_age` after it was made, and at the latest
/// `max_expires` after it was made. It is refused when made more than `skew` in the future,
/// or when it expired more than `skew` ago. With the defaults, a `Date` is accepted from an
/// hour ahead to 65 minutes behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// How far a signer's clock may be ahead of or behind the gateway's (Mastodon's
    /// `CLOCK_SKEW_MARGIN`, 1 hour).
    pub skew: Duration,
    /// How long a signature without `expires` is valid after it was made (Mastodon: 5
    /// minutes).
    pub max_age: Duration,
    /// The latest an `expires` may be after the signature was made; a later one counts as
    /// this (Mastodon's `EXPIRATION_WINDOW_LIMIT`, 12 hours).
    pub max_expires: Duration,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            skew: Duration::from_secs(3600),
            max_age: Duration::from_secs(5 * 60),
            max_expires: Duration::from_secs(12 * 3600),
        }
    }
}

impl Window {
    /// Checks a signing time (and an optional expiry) against `now`.
    pub fn check(
        &self,
        signed: SystemTime,
        expires: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        if signed > now + self.skew {
            return Err(Rejection::new(
                Outcome::Expired,
                "the signature is dated in the future",
            ));
        }
        let (ends, reason) = match expires {
            Some(e) => (e, "the signature has expired"),
            None => (signed + self.max_age, "the signature is too old"),
        };
        if now > ends.min(signed + self.max_expires) + self.skew {
            return Err(Rejection::new(Outcome::Expired, reason));
        }
        Ok(())
    }
}

impl Window {
    /// Checks when a signature was made: its `created` parameter if it has one, else the
    /// request's `Date` field (which the signature covers), and its `expires` parameter.
    /// Both schemes date their signatures this way.
    pub fn check_signed_at(
        &self,
        created: Option<i64>,
        expires: Option<i64>,
        date: Option<&str>,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        let signed = match created {
            Some(created) => {
                unix_time(created).ok_or_else(|| Rejection::malformed("created is out of range"))?
            }
            None => {
                let date =
                    date.ok_or_else(|| Rejection::malformed("no Date to check the time against"))?;
                httpdate::parse_http_date(date)
                    .map_err(|_| Rejection::malformed("Date is not an HTTP date"))?
            }
        };
        let expires = expires
            .map(|e| unix_time(e).ok_or_else(|| Rejection::malformed("expires is out of range")))
            .transpose()?;
        self.check(signed, expires, now)
    }
}

/// Seconds since the Unix epoch, as `created` and `expires` carry them.
pub fn unix_time(seconds: i64) -> Option<SystemTime> {
    let s = u64::try_from(seconds).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s))
}

/// The `fedgate_signature_*` families (phase 6), registered by
/// [`SignatureFamilies::register`].
#[derive(Debug)]
pub struct SignatureFamilies {
    /// `fedgate_trust_store_size`: keys in the trust store of the running config.
    pub trust_store_size: IntGauge,
    /// `fedgate_federation_peers`, kept across reloads.
    pub peers: Arc<peers::Peers>,
    pub verifications: IntCounterVec,
    pub failures_by_instance: IntCounterVec,
    pub duration: HistogramVec,
    /// `fedgate_signature_key_cache_lookups_total{result}`: hit, miss, negative_hit.
    pub key_cache_lookups: IntCounterVec,
    /// `fedgate_signature_key_fetches_total{result}`.
    pub key_fetches: IntCounterVec,
    pub key_fetch_duration: Histogram,
    /// `fedgate_signature_key_cache_entries`: fetched keys and failures held.
    pub key_cache_entries: IntGauge,
}

/// Signature verification latency buckets, in seconds: 10 µs to 10 ms.
pub const SIGNATURE_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
];

/// Key fetch latency buckets, in seconds: 5 ms to the longest fetch timeout.
pub const KEY_FETCH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl SignatureFamilies {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let peers = Arc::new(peers::Peers::new()?);
        registry.register(Box::new(PeersCollector(peers.clone())))?;
        Ok(SignatureFamilies {
            trust_store_size: register::gauge(
                registry,
                "fedgate_trust_store_size",
                "Keys in the signature trust store of the running configuration.",
            )?,
            peers,
            verifications: register::counter_vec(
                registry,
                "fedgate_signature_verifications_total",
                "HTTP signature checks on routes that verify them, by route, scheme (cavage, rfc9421, none) and result.",
                &["route", "scheme", "result"],
            )?,
            failures_by_instance: register::counter_vec(
                registry,
                "fedgate_signature_failures_by_instance_total",
                "Failed signature checks by the instance named in the key id (capped; the rest count as other) and result.",
                &["instance", "result"],
            )?,
            duration: register::histogram_vec(
                registry,
                "fedgate_signature_verification_duration_seconds",
                "Time to check one request's signature and body digest, by scheme.",
                SIGNATURE_BUCKETS,
                &["scheme"],
            )?,
            key_cache_lookups: register::counter_vec(
                registry,
                "fedgate_signature_key_cache_lookups_total",
                "Lookups of keys missing from the trust store in the fetched-key cache, by result (hit, miss, negative_hit).",
                &["result"],
            )?,
            key_fetches: register::counter_vec(
                registry,
                "fedgate_signature_key_fetches_total",
                "Fetches of key documents from key id URLs, by result (ok, timeout, connect, status, too_large, invalid_document, refused_address, breaker_open).",
                &["result"],
            )?,
            key_fetch_duration: register::histogram(
                registry,
                "fedgate_signature_key_fetch_duration_seconds",
                "Time of one key document fetch, from resolving the host to the parsed key.",
                KEY_FETCH_BUCKETS,
            )?,
            key_cache_entries: register::gauge(
                registry,
                "fedgate_signature_key_cache_entries",
                "Fetched keys and remembered fetch failures in the key cache.",
            )?,
        })
    }
}

/// Registers the shared peer table as a collector.
struct PeersCollector(Arc<peers::Peers>);

impl prometheus::core::Collector for PeersCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_follow_declaration_order() {
        for (i, s) in Scheme::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }

    #[test]
    fn the_window_takes_skew_age_and_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let w = Window::default();
        let s = Duration::from_secs;
        let m = |n: u64| s(n * 60);
        let h = |n: u64| s(n * 3600);
        let expired = |r: Result<(), Rejection>| r.unwrap_err().outcome == Outcome::Expired;
        assert!(w.check(now, None, now).is_ok());
        // Without expires: five minutes, plus the hour of skew.
        assert!(w.check(now - m(65), None, now).is_ok());
        assert!(expired(w.check(now - m(65) - s(1), None, now)));
        // Up to an hour ahead, whatever expires says.
        assert!(w.check(now + h(1), None, now).is_ok());
        assert!(expired(w.check(now + h(1) + s(1), None, now)));
        assert!(expired(w.check(now + h(1) + s(1), Some(now + h(3)), now)));
        // An expires, plus the skew, instead of the five minutes: later or sooner.
        assert!(w.check(now - h(3), Some(now - h(1)), now).is_ok());
        assert!(expired(w.check(now - h(3), Some(now - h(1) - s(1)), now)));
        assert!(expired(w.check(now, Some(now - h(1) - s(1)), now)));
        assert!(w.check(now - m(10), Some(now - m(9)), now).is_ok());
        // ... capped at twelve hours after the signature was made.
        assert!(w.check(now - h(13), Some(now + h(24)), now).is_ok());
        assert!(expired(w.check(now - h(13) - s(1), Some(now + h(24)), now)));
        assert!(w.check(now - h(13), Some(now - h(1)), now).is_ok());
        assert!(expired(w.check(now - h(13) - s(1), Some(now - h(1)), now)));
        // Other windows, as configured.
        let strict = Window {
            skew: Duration::ZERO,
            max_age: m(1),
            max_expires: m(2),
        };
        assert!(strict.check(now - m(1), None, now).is_ok());
        assert!(expired(strict.check(now - m(1) - s(1), None, now)));
        assert!(expired(strict.check(now + s(1), None, now)));
        assert!(expired(strict.check(
            now - m(2) - s(1),
            Some(now + h(1)),
            now
        )));
    }

    #[test]
    fn fields_join_their_lines_and_host_falls_back_to_the_authority() {
        let mut headers = HeaderMap::new();
        headers.append("accept", " a ".parse().unwrap());
        headers.append("accept", "b".parse().unwrap());
        let m = Message {
            method: &Method::GET,
            path_and_query: "/x?y=1",
            authority: Some("example.org"),
            scheme: "https",
            headers: &headers,
        };
        assert_eq!(m.field("accept").as_deref(), Some("a, b"));
        assert_eq!(m.field("host").as_deref(), Some("example.org"));
        assert_eq!(m.field("date"), None);
        assert_eq!((m.path(), m.query()), ("/x", Some("y=1")));
    }
}
