//! ABI `fedgate:plugin@0.2.0` (`wit/0.2.0/plugin.wit`): the generated bindings and the host
//! side of its imports. What 0.2.0 shares with 0.1.0 (the request and response accessors,
//! metrics, logging) is the same host code, expanded from `abi`'s macros with this
//! version's types; what it adds (the declared fields lowered in one call, context, clocks,
//! the upstreams) is here.

use std::sync::Arc;

use http::HeaderMap;
use wasmtime::component::Resource;

use super::abi::{
    first, metrics_and_log, request_accessors, response_accessors, text, HostState, MAX_LOG,
};
use super::declared::{Kind, Update};

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit/0.2.0",
    imports: {
        "fedgate:plugin/metrics.series-add": trappable,
        "fedgate:plugin/metrics.series-set": trappable,
        "fedgate:plugin/metrics.series-observe": trappable,
        "fedgate:plugin/outbound.send": trappable,
    },
});

use fedgate::plugin::clocks::Datetime;
use fedgate::plugin::gateway::UpstreamInfo;
pub use fedgate::plugin::log::Level;
pub use fedgate::plugin::metrics::{Counter, Gauge, Histogram};
pub(super) use fedgate::plugin::outbound::{OutboundError, OutboundRequest, OutboundResponse};
use fedgate::plugin::store::StoreError;
pub use fedgate::plugin::types::{
    Activity, Batch, DeclaredFields, Header, HealthStatus, Hooks, HttpVersion, Principal,
    PrincipalKind, Registration, Request, Response, ResponseEdit, ResponseOrigin, Signer,
    TlsInfo, Verdict,
};

/// A `text-ref` to no value.
pub(super) const ABSENT: u64 = u64::MAX;

/// The WIT package version these bindings are for.
pub const VERSION: &str = "0.2.0";
/// The interface a component must export, with its version.
pub const HANDLER_EXPORT: &str = "fedgate:plugin/handler@0.2.0";

fn all(headers: &HeaderMap) -> Vec<Header> {
    super::abi::fields(headers, |name, value| Header { name, value })
}

/// The HTTP version as plugins see it.
pub(super) fn http_version(v: http::Version) -> HttpVersion {
    match v {
        http::Version::HTTP_10 | http::Version::HTTP_09 => HttpVersion::Http10,
        http::Version::HTTP_2 | http::Version::HTTP_3 => HttpVersion::Http2,
        _ => HttpVersion::Http11,
    }
}

/// Strings stored side by side, as ABI 0.2.0 hands several to a plugin in one copy (a
/// batch, the declared fields): each string added answers with its `text-ref` (offset in
/// the high 32 bits, length in the low 32).
#[derive(Debug, Default)]
pub(super) struct Text(String);

impl Text {
    pub(super) fn with_capacity(bytes: usize) -> Self {
        Text(String::with_capacity(bytes))
    }

    fn since(&self, offset: usize) -> u64 {
        ((offset as u64) << 32) | (self.0.len() - offset) as u64
    }

    pub(super) fn str(&mut self, s: &str) -> u64 {
        let offset = self.0.len();
        self.0.push_str(s);
        self.since(offset)
    }

    /// A field value, as `abi::text_of` gives it.
    pub(super) fn value(&mut self, v: &http::HeaderValue) -> u64 {
        self.str(&super::abi::text_of(v))
    }

    /// A string, or the `text-ref` of no value.
    pub(super) fn opt(&mut self, s: Option<&str>) -> u64 {
        s.map_or(ABSENT, |s| self.str(s))
    }

    pub(super) fn display(&mut self, v: impl std::fmt::Display) -> u64 {
        use std::fmt::Write as _;
        let offset = self.0.len();
        let _ = write!(self.0, "{v}");
        self.since(offset)
    }

    pub(super) fn into_string(self) -> String {
        self.0
    }
}

/// The federation view as plugins see it.
pub(super) fn activity(a: &crate::activity::Activity<'_>) -> Activity {
    let s = |v: &Option<std::borrow::Cow<'_, str>>| v.as_deref().map(str::to_string);
    Activity {
        kind: s(&a.kind),
        id: s(&a.id),
        actor: a.actor().map(str::to_string),
        actor_host: a.actor_host().map(|h| h.into_owned()),
        object_kind: s(&a.object_type),
        object_id: s(&a.object_id),
        public: a.public,
        published: s(&a.published),
    }
}

/// How auth established a principal, as plugins see it.
pub(super) fn principal_kind(method: crate::auth::AuthMethod) -> PrincipalKind {
    use crate::auth::AuthMethod;
    match method {
        AuthMethod::ApiKey => PrincipalKind::ApiKey,
        AuthMethod::Jwt => PrincipalKind::Jwt,
        AuthMethod::Mtls => PrincipalKind::Mtls,
    }
}

/// The principal as plugins see it.
pub(super) fn principal(p: &(crate::auth::AuthMethod, Arc<str>)) -> Principal {
    Principal {
        kind: principal_kind(p.0),
        name: p.1.to_string(),
    }
}

impl fedgate::plugin::types::Host for HostState {}

impl fedgate::plugin::types::HostRequest for HostState {
    request_accessors!();

    fn declared_headers(&mut self, _: Resource<Request>) -> DeclaredFields {
        let headers = &self.exchange.headers;
        let mut text = Text::default();
        let values = self
            .plugin
            .request_headers()
            .iter()
            .map(|n| headers.get(n).map_or(ABSENT, |v| text.value(v)))
            .collect();
        DeclaredFields {
            text: text.into_string(),
            values,
        }
    }

    fn activity(&mut self, _: Resource<Request>) -> Option<Activity> {
        self.exchange.activity.as_ref()?.get().map(activity)
    }

    fn principal(&mut self, _: Resource<Request>) -> Option<Principal> {
        self.exchange.principal.as_ref().map(principal)
    }

    fn http_version(&mut self, _: Resource<Request>) -> HttpVersion {
        http_version(self.exchange.version)
    }

    fn tls(&mut self, _: Resource<Request>) -> Option<TlsInfo> {
        self.exchange.tls.as_ref().map(|t| TlsInfo {
            server_name: t.server_name.as_deref().map(str::to_string),
            client_subject: t.client_subject.as_deref().map(str::to_string),
        })
    }

    fn drop(&mut self, _: Resource<Request>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl fedgate::plugin::types::HostResponse for HostState {
    response_accessors!();

    fn drop(&mut self, _: Resource<Response>) -> wasmtime::Result<()> {
        Ok(())
    }
}

metrics_and_log!(fedgate::plugin);

impl fedgate::plugin::clocks::Host for HostState {
    fn monotonic_now(&mut self) -> u64 {
        self.plugin.clock.elapsed().as_nanos() as u64
    }

    fn wall_now(&mut self) -> Datetime {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Datetime {
            seconds: d.as_secs(),
            nanoseconds: d.subsec_nanos(),
        }
    }
}

impl fedgate::plugin::gateway::Host for HostState {
    fn upstreams(&mut self) -> Vec<UpstreamInfo> {
        self.plugin
            .upstreams
            .load()
            .iter()
            .map(|(name, critical)| UpstreamInfo {
                name: name.to_string(),
                critical: *critical,
            })
            .collect()
    }
}

impl fedgate::plugin::outbound::Host for HostState {
    fn send(
        &mut self,
        request: OutboundRequest,
    ) -> wasmtime::Result<Result<OutboundResponse, OutboundError>> {
        // Inline hooks, `init` and health checks never wait on the network: only the
        // observer thread's hooks may.
        Ok(self.plugin.outbound.send(self.hook, request))
    }
}

fn store_error(e: super::store::StoreError) -> StoreError {
    match e {
        super::store::StoreError::Full => StoreError::Full,
        super::store::StoreError::TooLarge => StoreError::TooLarge,
        super::store::StoreError::NotANumber => StoreError::NotANumber,
    }
}

impl fedgate::plugin::store::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.plugin.store.get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), StoreError> {
        self.plugin
            .store
            .set(&key, value, ttl_ms)
            .map_err(store_error)
    }

    fn delete(&mut self, key: String) -> bool {
        self.plugin.store.delete(&key)
    }

    fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, StoreError> {
        self.plugin
            .store
            .increment(&key, delta, ttl_ms)
            .map_err(store_error)
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.plugin
            .store
            .compare_and_swap(&key, expected.as_deref(), value, ttl_ms)
            .map_err(store_error)
    }
}
