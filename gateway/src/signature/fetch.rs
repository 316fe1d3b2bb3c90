//! Phase 6, fetched keys: when a signed request names a key id the trust store does not
//! hold, and `[signatures.fetch]` is enabled, the key is fetched from the key id URL (the
//! actor document, or the key document itself), cached, and used to verify.
//!
//! Order on the request path: the cache ([`super::keycache`]: a hit costs one sharded read
//! lock, no allocation of note), then one fetch per key id at a time (single flight: others
//! asking for the same key id wait for its result), guarded by a breaker per remote host and by
//! address checks. A fetch:
//! - refuses key ids that are not `https://` (unless `allow_http`) and hosts that resolve to
//!   any loopback, private, link-local or otherwise non-public address (unless
//!   `allow_private_addresses`); every resolved address is checked, and the connection goes to
//!   a checked address, so a second DNS answer cannot point it elsewhere;
//! - sends `GET` for the key id without its fragment, asking for ActivityPub JSON, over
//!   HTTP/1.1 (rustls with the Mozilla roots for `https`);
//! - follows at most [`MAX_REDIRECTS`] redirects, and only to the same scheme, host and port
//!   (on the same connection): a redirect elsewhere would be a fetch the address checks never
//!   saw;
//! - reads at most `max_document_bytes`, all within `timeout` from resolving to the last byte.
//!
//! Every fetch ends as one `result` of `fedgate_signature_key_fetches_total`. A failed fetch
//! (other than `breaker_open`) is cached as a negative entry for `negative_ttl`, so a key id
//! that does not resolve is not fetched again on each of its requests. Failures that say the
//! host is unwell (`timeout`, `connect`, a 5xx `status`) count towards its breaker.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::time::Instant;

use super::actor::key_from_document;
use super::key::PublicKey;
use super::keycache::{Cached, KeyCache};
use crate::backoff::Consecutive;
use crate::config::FetchConfig;
use crate::signature::SignatureFamilies;

/// Redirects followed within the key id's origin.
pub const MAX_REDIRECTS: usize = 3;

/// Longest key id fetched (and cached): real ones are URLs of a few dozen bytes, and the cache
/// holds `max_entries` of them.
pub const MAX_KEY_ID: usize = 1024;

/// What ActivityPub servers answer with an actor document (Mastodon checks for both).
const ACCEPT: &str =
    "application/activity+json, application/ld+json; profile=\"https://www.w3.org/ns/activitystreams\"";

/// How a fetch ended; the `result` label of `fedgate_signature_key_fetches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    Ok,
    /// The whole fetch took longer than `timeout`.
    Timeout,
    /// The host did not resolve, or no connection or TLS session could be made.
    Connect,
    /// An answer other than 2xx (or a redirect out of the key id's origin).
    Status,
    /// A document larger than `max_document_bytes`.
    TooLarge,
    /// A document without a usable key for the key id (or whose key's owner is elsewhere).
    InvalidDocument,
    /// A key id whose scheme or addresses the settings do not allow.
    RefusedAddress,
    /// The host's breaker is open: not contacted.
    BreakerOpen,
}

impl FetchResult {
    /// Every result, in declaration order (`result as usize` indexes it).
    pub const ALL: [FetchResult; 8] = [
        FetchResult::Ok,
        FetchResult::Timeout,
        FetchResult::Connect,
        FetchResult::Status,
        FetchResult::TooLarge,
        FetchResult::InvalidDocument,
        FetchResult::RefusedAddress,
        FetchResult::BreakerOpen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FetchResult::Ok => "ok",
            FetchResult::Timeout => "timeout",
            FetchResult::Connect => "connect",
            FetchResult::Status => "status",
            FetchResult::TooLarge => "too_large",
            FetchResult::InvalidDocument => "invalid_document",
            FetchResult::RefusedAddress => "refused_address",
            FetchResult::BreakerOpen => "breaker_open",
        }
    }
}

/// A fetch that failed: its result and a reason for the debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub result: FetchResult,
    pub reason: String,
    /// Whether the failure says the host is unwell (counts towards its breaker).
    unwell: bool,
}

impl FetchError {
    fn new(result: FetchResult, reason: impl Into<String>) -> Self {
        FetchError {
            result,
            reason: reason.into(),
            unwell: matches!(result, FetchResult::Timeout | FetchResult::Connect),
        }
    }
}

/// Cache lookup results; the `result` label of `fedgate_signature_key_cache_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Hit,
    Miss,
    NegativeHit,
}

/// Metric handles of the fetcher, resolved once.
#[derive(Debug)]
struct FetchMetrics {
    lookups: [IntCounter; 3],
    fetches: [IntCounter; 8],
    duration: Histogram,
    entries: IntGauge,
}

impl FetchMetrics {
    fn new(f: &SignatureFamilies) -> Self {
        FetchMetrics {
            lookups: ["hit", "miss", "negative_hit"]
                .map(|r| f.key_cache_lookups.with_label_values(&[r])),
            fetches: FetchResult::ALL.map(|r| f.key_fetches.with_label_values(&[r.as_str()])),
            duration: f.key_fetch_duration.clone(),
            entries: f.key_cache_entries.clone(),
        }
    }
}

/// A key id URL, split for the fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    https: bool,
    /// The host as DNS and SNI take it (no brackets around IPv6).
    host: String,
    port: u16,
    /// `Host` of the request.
    authority: String,
    path_and_query: String,
}

impl Target {
    /// The key id without its fragment; `None` when it is not an `http(s)` URL with a host.
    fn parse(key_id: &str) -> Option<Target> {
        let url = key_id.split('#').next()?;
        let uri: Uri = url.parse().ok()?;
        let https = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority
            .host()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Target {
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_string(),
            path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            host,
        })
    }
}

/// A fetch under way, as its waiters share it.
type Flight = Shared<BoxFuture<'static, Result<Arc<PublicKey>, Arc<str>>>>;

/// Fetches, caches and hands out keys for key ids the trust store lacks. One per
/// `[signatures.fetch]` setting: a reload that keeps the setting keeps the fetcher and its
/// cache, breakers included.
#[derive(Debug)]
pub struct KeyFetcher {
    config: FetchConfig,
    cache: KeyCache,
    /// Fetches under way, by key id, each with a number telling it from a later one: touched
    /// only on a cache miss.
    flights: Mutex<HashMap<Arc<str>, (u64, Flight)>>,
    next_flight: AtomicU64,
    breaker: Breaker,
    tls: Tls,
    metrics: FetchMetrics,
}

/// The TLS client of fetches (the connector has no `Debug`).
struct Tls(tokio_rustls::TlsConnector);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl KeyFetcher {
    pub fn new(config: &FetchConfig, families: &SignatureFamilies) -> KeyFetcher {
        // HTTP/1.1 is all a fetch speaks, and it says so by ALPN.
        let tls = crate::transport::client_tls(None, &[b"http/1.1"]);
        KeyFetcher {
            cache: KeyCache::new(config.max_entries),
            flights: Mutex::default(),
            next_flight: AtomicU64::new(0),
            breaker: Breaker::new(
                config.breaker_failures,
                config.breaker_open,
                config.max_entries,
            ),
            tls: Tls(tokio_rustls::TlsConnector::from(Arc::new(tls))),
            metrics: FetchMetrics::new(families),
            config: config.clone(),
        }
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Shows this fetcher's cache on `fedgate_signature_key_cache_entries`.
    pub fn publish(&self) {
        self.metrics.entries.set(self.cache.entries() as i64);
    }

    /// The key for `key_id`: cached, or fetched now. `Err` says why there is none.
    pub async fn key(self: &Arc<Self>, key_id: &str) -> Result<Arc<PublicKey>, Arc<str>> {
        if key_id.len() > MAX_KEY_ID {
            return Err(Arc::from("the key id is too long to fetch"));
        }
        match self.cache.get(key_id) {
            Some(Cached::Key(key, _)) => {
                self.count(Lookup::Hit);
                return Ok(key);
            }
            Some(Cached::Failed(reason)) => {
                self.count(Lookup::NegativeHit);
                return Err(reason);
            }
            None => self.count(Lookup::Miss),
        }
        self.fly(key_id, None).await
    }

    /// After `stale` (a key this fetcher gave) failed to verify a signature: the key fetched
    /// again, if the key id's key was last fetched at least `refetch_interval` ago, since its
    /// owner may have rotated it. `None` when no other key is to be had.
    pub async fn refetch(
        self: &Arc<Self>,
        key_id: &str,
        stale: &Arc<PublicKey>,
    ) -> Option<Arc<PublicKey>> {
        match self.cache.get(key_id) {
            // Someone else refetched it meanwhile.
            Some(Cached::Key(key, _)) if !Arc::ptr_eq(&key, stale) => return Some(key),
            Some(Cached::Key(_, fetched)) if fetched.elapsed() < self.config.refetch_interval => {
                return None
            }
            Some(Cached::Key(..)) => {}
            _ => return None,
        }
        let fresh = self.fly(key_id, Some(stale)).await.ok()?;
        (!Arc::ptr_eq(&fresh, stale) && *fresh != **stale).then_some(fresh)
    }

    fn count(&self, lookup: Lookup) {
        self.metrics.lookups[lookup as usize].inc();
    }

    /// One fetch for `key_id` at a time: the first caller starts it, the others wait for its
    /// result. `replacing` is the key a refetch would replace. The fetch runs as a task of its
    /// own, so a client that gives up does not abort it halfway: it still lands in the cache.
    async fn fly(
        self: &Arc<Self>,
        key_id: &str,
        replacing: Option<&Arc<PublicKey>>,
    ) -> Result<Arc<PublicKey>, Arc<str>> {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, f)) = flights.get(key_id) {
                f.clone()
            } else {
                // A fetch that ended between the cache lookup and here left its result in
                // the cache (it stores before it leaves the table).
                match (self.cache.get(key_id), replacing) {
                    (Some(Cached::Key(key, _)), None) => return Ok(key),
                    (Some(Cached::Failed(reason)), None) => return Err(reason),
                    (Some(Cached::Key(key, _)), Some(stale)) if !Arc::ptr_eq(&key, stale) => {
                        return Ok(key)
                    }
                    _ => {}
                }
                let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
                let (me, key, refetch) =
                    (self.clone(), Arc::<str>::from(key_id), replacing.is_some());
                let task = tokio::spawn(async move {
                    let result = me.fetch_and_store(&key, refetch).await;
                    let mut flights = me.flights.lock().unwrap_or_else(|p| p.into_inner());
                    if flights.get(&*key).is_some_and(|(i, _)| *i == id) {
                        flights.remove(&*key);
                    }
                    result
                });
                let f: Flight = async move {
                    task.await
                        .unwrap_or_else(|_| Err(Arc::from("the key fetch task failed")))
                }
                .boxed()
                .shared();
                flights.insert(Arc::from(key_id), (id, f.clone()));
                f
            }
        };
        flight.await
    }

    /// Fetches, counts and caches. A failed refetch keeps the key it would have replaced.
    async fn fetch_and_store(
        &self,
        key_id: &str,
        refetch: bool,
    ) -> Result<Arc<PublicKey>, Arc<str>> {
        let started = Instant::now();
        let result = self.fetch(key_id).await;
        let outcome = match &result {
            Ok(_) => FetchResult::Ok,
            Err(e) => e.result,
        };
        self.metrics.fetches[outcome as usize].inc();
        if outcome != FetchResult::BreakerOpen {
            self.metrics
                .duration
                .observe(started.elapsed().as_secs_f64());
        }
        let result = match result {
            Ok(key) => {
                let key = Arc::new(key);
                self.cache.insert(
                    key_id,
                    Cached::Key(key.clone(), Instant::now()),
                    self.config.ttl,
                );
                Ok(key)
            }
            Err(e) => {
                tracing::debug!(key_id, result = outcome.as_str(), reason = %e.reason, "key fetch failed");
                let reason: Arc<str> =
                    Arc::from(format!("fetching key {key_id} failed: {}", e.reason));
                if refetch {
                    self.cache.touch(key_id);
                } else if outcome != FetchResult::BreakerOpen {
                    self.cache.insert(
                        key_id,
                        Cached::Failed(reason.clone()),
                        self.config.negative_ttl,
                    );
                }
                Err(reason)
            }
        };
        self.publish();
        result
    }

    /// One fetch, with the breaker of the key id's host around it.
    async fn fetch(&self, key_id: &str) -> Result<PublicKey, FetchError> {
        let Some(target) = Target::parse(key_id) else {
            return Err(FetchError::new(
                FetchResult::RefusedAddress,
                "the key id is not an http(s) URL",
            ));
        };
        if !target.https && !self.config.allow_http {
            return Err(FetchError::new(
                FetchResult::RefusedAddress,
                "plain http key ids are not fetched (allow_http)",
            ));
        }
        if !self.breaker.admit(&target.host) {
            return Err(FetchError::new(
                FetchResult::BreakerOpen,
                format!("the breaker of {} is open", target.host),
            ));
        }
        let result = match tokio::time::timeout(self.config.timeout, self.get(&target)).await {
            Ok(Ok(document)) => key_from_document(&document, key_id)
                .map_err(|reason| FetchError::new(FetchResult::InvalidDocument, reason)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FetchError::new(
                FetchResult::Timeout,
                format!("no document within {:?}", self.config.timeout),
            )),
        };
        let unwell = result.as_ref().err().is_some_and(|e| e.unwell);
        self.breaker.record(&target.host, !unwell);
        result
    }

    /// Resolves, checks, connects and reads the document at `target`.
    async fn get(&self, target: &Target) -> Result<Bytes, FetchError> {
        let connect = |r: String| FetchError::new(FetchResult::Connect, r);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| connect(format!("cannot resolve {}: {e}", target.host)))?
            .collect();
        if addrs.is_empty() {
            return Err(connect(format!("{} has no address", target.host)));
        }
        if !self.config.allow_private_addresses {
            if let Some(a) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(FetchError::new(
                    FetchResult::RefusedAddress,
                    format!(
                        "{} resolves to {}, not a public address",
                        target.host,
                        a.ip()
                    ),
                ));
            }
        }
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(tcp) = tcp else {
            return Err(connect(format!(
                "cannot connect to {}: {}",
                target.host,
                last.map(|e| e.to_string()).unwrap_or_default()
            )));
        };
        let _ = tcp.set_nodelay(true);
        if target.https {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| connect(format!("{}: {e}", target.host)))?;
            let tls = self
                .tls
                .0
                .connect(name, tcp)
                .await
                .map_err(|e| connect(format!("TLS with {}: {e}", target.host)))?;
            self.exchange(TokioIo::new(tls), target).await
        } else {
            self.exchange(TokioIo::new(tcp), target).await
        }
    }

    /// GETs the document over one HTTP/1.1 connection, following redirects in the origin.
    async fn exchange<T>(&self, io: T, target: &Target) -> Result<Bytes, FetchError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let connect = |r: String| FetchError::new(FetchResult::Connect, r);
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
            .await
            .map_err(|e| connect(format!("HTTP with {}: {e}", target.host)))?;
        // The connection is driven beside the exchange and ends with it, timeout included.
        let conn = AbortOnDrop(tokio::spawn(conn));
        let mut path = target.path_and_query.clone();
        for _ in 0..=MAX_REDIRECTS {
            sender
                .ready()
                .await
                .map_err(|e| connect(format!("HTTP with {}: {e}", target.host)))?;
            let req = Request::get(path.as_str())
                .header(header::HOST, target.authority.as_str())
                .header(header::ACCEPT, ACCEPT)
                .header(
                    header::USER_AGENT,
                    concat!("fedgate/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::new())
                .map_err(|e| FetchError::new(FetchResult::RefusedAddress, e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| connect(format!("HTTP with {}: {e}", target.host)))?;
            let status = resp.status();
            if status.is_redirection() {
                path =
                    same_origin(resp.headers().get(header::LOCATION), target).ok_or_else(|| {
                        FetchError::new(
                            FetchResult::Status,
                            format!("{status} to another origin, or without a Location"),
                        )
                    })?;
                // Read (and drop) the redirect's body so the connection can carry the next.
                let _ = Limited::new(resp.into_body(), 64 << 10).collect().await;
                continue;
            }
            if !status.is_success() {
                let mut e = FetchError::new(FetchResult::Status, format!("status {status}"));
                e.unwell = status.is_server_error();
                return Err(e);
            }
            let max = self.config.max_document_bytes;
            let declared = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max as u64) {
                return Err(too_large(max));
            }
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        too_large(max)
                    } else {
                        connect(format!("reading the document: {e}"))
                    }
                })?;
            drop(conn);
            return Ok(body.to_bytes());
        }
        Err(FetchError::new(
            FetchResult::Status,
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }
}

fn too_large(max: usize) -> FetchError {
    FetchError::new(
        FetchResult::TooLarge,
        format!("the document is larger than {max} bytes"),
    )
}

/// The path a redirect's `Location` leads to, if it stays in `target`'s origin.
fn same_origin(location: Option<&http::HeaderValue>, target: &Target) -> Option<String> {
    let location = location?.to_str().ok()?;
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(location.split('#').next()?.to_string());
    }
    let next = Target::parse(location)?;
    (next.https == target.https && next.host == target.host && next.port == target.port)
        .then_some(next.path_and_query)
}

/// Aborts the task when dropped.
#[derive(Debug)]
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local,
/// shared (CGNAT), multicast, documentation, benchmarking or reserved, also when an IPv6
/// address carries an IPv4 one (mapped, NAT64).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, shared
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, protocol assignments
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // 64:ff9b::/96, NAT64: the IPv4 address it translates to decides.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(
                    o[12], o[13], o[14], o[15],
                )));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
                || (s[0] & 0xffc0) == 0xfe80 // fe80::/10, link-local
                || (s[0] & 0xffc0) == 0xfec0 // fec0::/10, site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[0] == 0x2002 // 6to4: carries an IPv4 address that may be private
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
        }
    }
}

/// Host state of the breaker.
#[derive(Debug, Default)]
struct HostState {
    failures: Consecutive,
    open_until: Option<Instant>,
}

/// Consecutive-failure breakers, one per remote host: `failures` in a row open it for
/// `open_for`, during which fetches from the host fail at once as `breaker_open`. Then one
/// fetch is let through: a success closes the breaker, a failure opens it again.
#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_for: Duration,
    max_hosts: usize,
    hosts: Mutex<HashMap<String, HostState>>,
}

impl Breaker {
    fn new(failures: u32, open_for: Duration, max_hosts: usize) -> Breaker {
        Breaker {
            failures,
            open_for,
            max_hosts,
            hosts: Mutex::default(),
        }
    }

    /// Whether a fetch from `host` may go ahead now.
    fn admit(&self, host: &str) -> bool {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = hosts.get_mut(host) else {
            return true;
        };
        match state.open_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // Half open: this fetch is the trial; until it ends, others are refused.
                state.open_until = Some(Instant::now() + self.open_for);
                tracing::info!(host, "key fetch breaker half-open: trying the host again");
                true
            }
            None => true,
        }
    }

    /// Records how a fetch from `host` went.
    fn record(&self, host: &str, ok: bool) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            if let Some(state) = hosts.remove(host) {
                if state.open_until.is_some() {
                    tracing::info!(host, "key fetch breaker closed: the host answered");
                }
            }
            return;
        }
        if !hosts.contains_key(host) && hosts.len() >= self.max_hosts {
            // Bounded: hosts with a closed breaker are forgotten first.
            hosts.retain(|_, s| s.open_until.is_some());
            if hosts.len() >= self.max_hosts {
                return;
            }
        }
        let state = hosts.entry(host.to_string()).or_default();
        let failures = state.failures.failure();
        if failures >= self.failures {
            if state.open_until.is_none() || failures == self.failures {
                tracing::warn!(
                    host,
                    failures,
                    open_seconds = self.open_for.as_secs_f64(),
                    "key fetch breaker opened: consecutive failed fetches"
                );
            }
            state.open_until = Some(Instant::now() + self.open_for);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::atomic::AtomicUsize;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_pass() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "2002:7f00:1::1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip(a)), "{a} must be refused");
        }
        for a in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2a01:4f8::1",
            "2606:4700::6810:84e5",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert!(is_public(ip(a)), "{a} is public");
        }
        assert!(!is_public(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!is_public(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn targets_drop_the_fragment_and_keep_the_origin() {
        let t = Target::parse("https://Remote.Example/users/bob?x=1#main-key").unwrap();
        assert_eq!(
            t,
            Target {
                https: true,
                host: "remote.example".into(),
                port: 443,
                authority: "Remote.Example".into(),
                path_and_query: "/users/bob?x=1".into(),
            }
        );
        let t = Target::parse("http://[::1]:8080/k").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.https), ("::1", 8080, false));
        assert_eq!(Target::parse("acct:bob@remote.example"), None);
        assert_eq!(Target::parse("key-1"), None);
        assert_eq!(Target::parse("https://user@remote.example/k"), None);

        let t = Target::parse("https://remote.example/users/bob").unwrap();
        let loc = |s: &'static str| Some(http::HeaderValue::from_static(s));
        assert_eq!(
            same_origin(loc("/users/bob/main-key#x").as_ref(), &t).as_deref(),
            Some("/users/bob/main-key")
        );
        assert_eq!(
            same_origin(loc("https://remote.example:443/a").as_ref(), &t).as_deref(),
            Some("/a")
        );
        assert_eq!(
            same_origin(loc("https://evil.example/a").as_ref(), &t),
            None
        );
        assert_eq!(
            same_origin(loc("http://remote.example/a").as_ref(), &t),
            None
        );
        assert_eq!(same_origin(loc("//evil.example/a").as_ref(), &t), None);
        assert_eq!(same_origin(None, &t), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_consecutive_failures_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_secs(30), 100);
        for _ in 0..2 {
            assert!(b.admit("a.example"));
            b.record("a.example", false);
        }
        // A success in between starts the count again.
        b.record("a.example", true);
        for _ in 0..3 {
            assert!(b.admit("a.example"));
            b.record("a.example", false);
        }
        assert!(!b.admit("a.example"), "open after three failures in a row");
        assert!(b.admit("b.example"), "other hosts are not affected");
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!b.admit("a.example"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.admit("a.example"), "half open: one trial");
        assert!(!b.admit("a.example"), "only one trial at a time");
        b.record("a.example", false);
        assert!(!b.admit("a.example"), "a failed trial opens it again");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(b.admit("a.example"));
        b.record("a.example", true);
        assert!(b.admit("a.example") && b.admit("a.example"), "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_table_is_bounded() {
        let b = Breaker::new(1, Duration::from_secs(30), 2);
        b.record("a", false);
        b.record("b", false);
        b.record("c", false);
        assert!(!b.admit("a") && !b.admit("b"));
        assert!(b.admit("c"), "no room for a third open breaker");
        assert!(b.hosts.lock().unwrap().len() <= 2);
    }

    /// A raw HTTP/1.1 server on 127.0.0.1:0 answering every request with `answer`; counts
    /// the requests it reads.
    async fn serve(answer: String) -> (SocketAddr, Arc<AtomicUsize>) {
        serve_with(|_| answer).await
    }

    /// Like [`serve`], with an answer made from the server's address.
    async fn serve_with(
        answer: impl FnOnce(SocketAddr) -> String,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = answer(addr);
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (answer, seen) = (answer.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    // Hold the answer a little, so concurrent askers overlap with the fetch.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        (addr, count)
    }

    fn fetcher(max_document_bytes: usize) -> KeyFetcher {
        let metrics = crate::metrics::Metrics::new(prometheus::Registry::new()).unwrap();
        let config = FetchConfig {
            enabled: true,
            max_document_bytes,
            allow_http: true,
            allow_private_addresses: true,
            ..FetchConfig::default()
        };
        KeyFetcher::new(&config, &metrics.signature_families())
    }

    fn actor(addr: SocketAddr) -> (String, String) {
        let actor = format!("http://{addr}/users/bob");
        let doc = serde_json::json!({
            "id": actor,
            "type": "Person",
            "publicKey": {"id": format!("{actor}#main-key"), "owner": actor,
                          "publicKeyPem": super::super::key::tests::RSA_PUB},
        })
        .to_string();
        (format!("{actor}#main-key"), doc)
    }

    #[tokio::test]
    async fn oversized_documents_are_refused_with_or_without_a_length() {
        let big = "x".repeat(2000);
        let with_length = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/activity+json\r\ncontent-length: {}\r\n\r\n{big}",
            big.len()
        );
        let chunked = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        );
        for answer in [with_length, chunked] {
            let (addr, count) = serve(answer).await;
            let f = fetcher(1000);
            let err = f
                .fetch(&format!("http://{addr}/users/bob#main-key"))
                .await
                .unwrap_err();
            assert_eq!(err.result, FetchResult::TooLarge, "{}", err.reason);
            assert_eq!(count.load(Ordering::SeqCst), 1);
        }
        // The same document within the limit is read (and is no key document).
        let (addr, _) = serve(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{big}",
            big.len()
        ))
        .await;
        let err = fetcher(4000)
            .fetch(&format!("http://{addr}/k"))
            .await
            .unwrap_err();
        assert_eq!(err.result, FetchResult::InvalidDocument);
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_key_id_share_one_fetch() {
        let (addr, count) = serve_with(|addr| {
            let (_, doc) = actor(addr);
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/activity+json\r\ncontent-length: {}\r\n\r\n{doc}",
                doc.len()
            )
        })
        .await;
        let (key_id, _) = actor(addr);
        let f = Arc::new(fetcher(1 << 16));
        let lookups = (0..8).map(|_| f.key(&key_id));
        let keys = futures_util::future::join_all(lookups).await;
        assert!(keys.iter().all(|k| k.is_ok()));
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(f.key(&key_id).await.is_ok());
        assert_eq!(count.load(Ordering::SeqCst), 1, "cached");
        let long = format!("{key_id}{}", "x".repeat(MAX_KEY_ID));
        assert!(f.key(&long).await.is_err());
        assert_eq!(f.metrics.lookups[Lookup::Hit as usize].get(), 1);
        assert_eq!(f.metrics.lookups[Lookup::Miss as usize].get(), 8);
        assert_eq!(f.metrics.fetches[FetchResult::Ok as usize].get(), 1);
        assert_eq!(f.metrics.entries.get(), 1);
    }

    #[tokio::test]
    async fn a_fetch_outlives_the_request_that_started_it() {
        let (addr, count) = serve_with(|addr| {
            let (_, doc) = actor(addr);
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{doc}",
                doc.len()
            )
        })
        .await;
        let (key_id, _) = actor(addr);
        let f = Arc::new(fetcher(1 << 16));
        // The server takes 50ms; the asker gives up after 5ms.
        let gave_up = tokio::time::timeout(Duration::from_millis(5), f.key(&key_id)).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(f.cache.get(&key_id), Some(Cached::Key(..))));
        assert!(f.key(&key_id).await.is_ok());
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(f.metrics.fetches[FetchResult::Ok as usize].get(), 1);
        assert!(f.flights.lock().unwrap().is_empty());
    }
}
