//! The configuration file as written by operators: TOML, deserialised with unknown fields
//! refused. Nothing here is trusted yet; [`super::validate`] turns it into typed runtime
//! values and names the field at fault.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::{
    Balance, CheckType, ClientAuthMode, ClientHeaders, FailurePolicy, LogFormat, NoHealthy,
    SignatureMode, UpstreamProtocol,
};
use crate::auth::AuthMethod;
use crate::ratelimit::{KeyKind, Mode};

/// Top level of a `fedgate.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub(crate) server: ServerSection,
    #[serde(default)]
    pub(crate) admin: AdminSection,
    #[serde(default)]
    pub(crate) reload: ReloadSection,
    #[serde(default)]
    pub(crate) forwarding: ForwardingSection,
    #[serde(default)]
    pub(crate) listeners: Vec<ListenerSection>,
    #[serde(default)]
    pub(crate) upstreams: BTreeMap<String, UpstreamSection>,
    #[serde(default)]
    pub(crate) routes: Vec<RouteSection>,
    /// `[plugins.NAME]`: Wasm plugins, attached to routes by name.
    #[serde(default)]
    pub(crate) plugins: BTreeMap<String, PluginSection>,
    #[serde(default)]
    pub(crate) global: GlobalSection,
    /// `[signatures]`: what routes with `signatures` set verify against.
    #[serde(default)]
    pub(crate) signatures: SignaturesSection,
    /// `[rate_limits.NAME]`: named limiters, applied by the routes that list them.
    #[serde(default)]
    pub(crate) rate_limits: BTreeMap<String, RateLimitSection>,
    /// `[blocklist]`: domains and networks refused on every route.
    #[serde(default)]
    pub(crate) blocklist: BlocklistSection,
    /// `[auth]`: what routes with `auth` check credentials against.
    #[serde(default)]
    pub(crate) auth: AuthSection,
}

/// `[rate_limits.NAME]`: one limiter.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitSection {
    /// `client`, `instance`, `principal` or `route`.
    pub(crate) key: Option<KeyKind>,
    /// Requests per period, e.g. `"100/s"`, `"300/5m"`, `"1000/h"`.
    pub(crate) rate: Option<String>,
    /// Requests allowed at once (default: the rate's count).
    pub(crate) burst: Option<u32>,
    /// `enforce` (default) or `observe`.
    pub(crate) mode: Option<Mode>,
    /// Keys tracked one by one (default 100000).
    pub(crate) max_keys: Option<usize>,
    /// IPv6 clients are keyed by this prefix length (default 64).
    pub ipv6_prefix: Option<u8>,
}

/// `[blocklist]`: entries in the config, in a file, or both.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlocklistSection {
    /// A file of domains, addresses and CIDR blocks, relative to the config file; read
    /// again on every reload and watched with the config file.
    pub(crate) file: Option<String>,
    /// Domains (each with its subdomains), addresses and CIDR blocks.
    #[serde(default)]
    pub(crate) entries: Vec<String>,
}

/// `[auth]`: API keys and the JWT settings of phase 5 (mTLS is set on TLS listeners).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    /// Header API keys are sent in (default `x-api-key`; `authorization` takes `ApiKey <key>`).
    pub(crate) api_key_header: Option<String>,
    /// `[[auth.api_keys]]`: one principal and the SHA-256 of its key each.
    #[serde(default)]
    pub(crate) api_keys: Vec<ApiKeySection>,
    /// `[auth.jwt]`: bearer tokens verified against a JWKS file.
    pub(crate) jwt: Option<JwtSection>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKeySection {
    pub(crate) principal: Option<String>,
    /// Hex SHA-256 of the key (e.g. `printf %s "$KEY" | sha256sum`).
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtSection {
    /// A JWKS (RFC 7517) file, relative to the config file; re-read on every reload.
    pub(crate) jwks_file: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    /// Clock tolerance for `exp` and `nbf` (default 60s).
    pub(crate) leeway: Option<String>,
    /// Accepted algorithms (default: every supported one the JWKS has keys for).
    pub(crate) algorithms: Option<Vec<String>>,
}

/// `[signatures]`: the clock window, the body limit and the trust store of HTTP signature
/// checks.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignaturesSection {
    /// How far a signer's clock may be off (default 1h).
    pub(crate) clock_skew: Option<String>,
    /// How long a signature without `expires` is valid after it was made (default 5m).
    pub(crate) max_age: Option<String>,
    /// The latest an `expires` may be after the signature was made (default 12h).
    pub(crate) max_expires: Option<String>,
    /// Bodies of signed requests are read whole up to this size to check their digest
    /// (default 1MiB; a route's `buffer_body`, if set, applies instead).
    pub(crate) max_body: Option<toml::Value>,
    /// Instances with their own `instance` label in the failure counter (default 1000).
    pub(crate) max_instances: Option<usize>,
    /// `[[signatures.keys]]`: known keys by key id.
    #[serde(default)]
    pub(crate) keys: Vec<KeySection>,
    /// `[signatures.fetch]`: keys not in the trust store fetched from the key id URL.
    #[serde(default)]
    pub(crate) fetch: FetchSection,
}

/// `[signatures.fetch]`: fetching actor documents for key ids the trust store lacks.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FetchSection {
    /// Fetch unknown keys at all (default false).
    pub(crate) enabled: Option<bool>,
    /// Limit on one whole fetch: resolve, connect, TLS, request, body (default 5s).
    pub(crate) timeout: Option<String>,
    /// How long a fetched key is kept (default 1h).
    pub(crate) ttl: Option<String>,
    /// How long a failed fetch is remembered (default 5m).
    pub(crate) negative_ttl: Option<String>,
    /// Least time between two fetches of one key id to follow a key rotation (default 1m).
    pub(crate) refetch_interval: Option<String>,
    /// Keys and failures kept at most (default 10000).
    pub(crate) max_entries: Option<usize>,
    /// Largest actor document read: bytes or a string such as `"256KiB"` (default 256KiB).
    pub(crate) max_document_bytes: Option<toml::Value>,
    /// Consecutive failed fetches from one host that open its breaker (default 5).
    pub(crate) breaker_failures: Option<u32>,
    /// How long an open breaker refuses fetches from its host (default 30s).
    pub(crate) breaker_open: Option<String>,
    /// Fetch from loopback, private and link-local addresses (default false).
    pub(crate) allow_private_addresses: Option<bool>,
    /// Fetch `http://` key ids (default false: only `https://`).
    pub(crate) allow_http: Option<bool>,
}

/// One trusted key: its id and exactly one of `pem`, `pem_file` or `multibase`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeySection {
    pub(crate) key_id: Option<String>,
    pub(crate) pem: Option<String>,
    /// A PEM file, relative to the config file.
    pub(crate) pem_file: Option<String>,
    pub(crate) multibase: Option<String>,
}

/// `[plugins.NAME]`: one Wasm plugin and its limits.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PluginSection {
    /// The component file, relative to the config file.
    pub(crate) path: Option<String>,
    /// `fail_open` (default) or `fail_closed`.
    pub(crate) failure: Option<FailurePolicy>,
    /// Deadline of one call on the request path (at most 100ms).
    pub(crate) timeout: Option<String>,
    /// Deadline of one health-check call, which runs off the request path.
    pub(crate) health_check_timeout: Option<String>,
    /// Linear memory cap per instance: bytes, or a string such as `"16MiB"`.
    pub(crate) memory_limit: Option<toml::Value>,
    /// Series cap per metric the plugin declares.
    pub(crate) max_series: Option<usize>,
    /// ABI 0.2.0 key-value store: entries and bytes held at most, longest value.
    pub(crate) store_entries: Option<usize>,
    pub(crate) store_bytes: Option<toml::Value>,
    pub(crate) store_value_bytes: Option<toml::Value>,
    /// ABI 0.2.0 observers: how finished exchanges are queued and batched for `observe`,
    /// and the deadline of an `observe` or `on-tick` call (which run off the request path).
    pub(crate) observe: Option<ObserveSection>,
    /// ABI 0.2.0 outbound HTTP from `on-tick` and `observe`.
    pub(crate) outbound: Option<OutboundSection>,
    /// The plugin's own settings, passed to its `init` as JSON.
    pub(crate) config: Option<toml::Table>,
}

/// `[plugins.NAME.observe]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ObserveSection {
    /// Exchanges per `observe` call, at most.
    pub(crate) batch: Option<usize>,
    /// Longest an exchange waits before its batch is delivered.
    pub(crate) max_delay: Option<String>,
    /// Exchanges queued at most; beyond it, new ones are dropped and counted.
    pub(crate) queue: Option<usize>,
    /// Deadline of one `observe` or `on-tick` call.
    pub(crate) timeout: Option<String>,
}

/// `[plugins.NAME.outbound]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutboundSection {
    /// Hosts the plugin may call: `host` (any port) or `host:port`.
    #[serde(default)]
    pub(crate) allow: Vec<String>,
    /// Longest one call may take, connection and body included.
    pub(crate) timeout: Option<String>,
    /// Largest response body accepted.
    pub(crate) max_response_bytes: Option<toml::Value>,
}

/// `[global]`: what applies to every matched route.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct GlobalSection {
    /// Plugins run on every matched route, before the route's own.
    #[serde(default)]
    pub(crate) plugins: Vec<String>,
}

/// `[server]`: process-wide settings (read at start; changing them needs a restart).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    /// Worker threads; 0 means one per available core.
    pub(crate) workers: Option<usize>,
    /// Tasks a worker runs between two looks for new socket events.
    pub(crate) event_interval: Option<u32>,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    pub(crate) shutdown_grace: Option<String>,
    /// One log line per request on the `access` target.
    pub(crate) access_log: Option<bool>,
    /// `json` (default) or `text`.
    pub(crate) log_format: Option<LogFormat>,
    /// tracing filter directive, e.g. `info` or `fedgate=debug`; `RUST_LOG` overrides it.
    pub(crate) log_level: Option<String>,
    /// Linear memory all plugin instances may hold together (bytes or `"1GiB"`).
    pub(crate) plugin_memory: Option<toml::Value>,
    /// Directory for compiled plugins, so a restart does not compile them again.
    pub(crate) plugin_cache: Option<String>,
}

/// `[admin]`: the separate listener for `/metrics`, `/health`, `/ready`, `/live`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminSection {
    pub(crate) address: Option<String>,
    /// The longest `/health` waits for plugins' health checks.
    pub(crate) health_timeout: Option<String>,
    /// Most connections open at once; further clients wait in the kernel's backlog.
    pub(crate) max_connections: Option<usize>,
    /// Longest a client may take to send a request head (and the first bytes of a
    /// connection).
    pub(crate) header_read_timeout: Option<String>,
}

/// `[reload]`: hot reload on SIGHUP and on file change.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReloadSection {
    /// Watch the config file for changes (content hash, polled).
    pub(crate) watch: Option<bool>,
    pub(crate) poll_interval: Option<String>,
}

/// `[forwarding]`: what the proxy adds to and keeps in forwarded requests.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForwardingSection {
    /// `x-forwarded` (default), `forwarded` (RFC 7239), `both` or `none`.
    pub(crate) client_headers: Option<ClientHeaders>,
    /// Pseudonym used in `Via`; an empty string disables `Via`.
    pub(crate) via: Option<String>,
    /// Keep the client's `Host` (default true); false sends the endpoint's authority.
    pub(crate) preserve_host: Option<bool>,
    /// Header carrying the request id (default `x-request-id`).
    pub(crate) request_id_header: Option<String>,
    /// Keep an incoming request id (default true); false always replaces it.
    pub(crate) trust_request_id: Option<bool>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client for rate
    /// limits and the blocklist.
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
}

/// `[[listeners]]`: a public socket, plain or TLS.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerSection {
    pub(crate) name: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) header_read_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) max_header_bytes: Option<usize>,
    pub(crate) tls: Option<ListenerTlsSection>,
}

/// `[listeners.tls]`: certificates chosen by SNI; the first one is the default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerTlsSection {
    #[serde(default)]
    pub(crate) certificates: Vec<CertificateSection>,
    /// Offer HTTP/2 through ALPN (default true).
    pub http2: Option<bool>,
    pub(crate) handshake_timeout: Option<String>,
    /// PEM bundle of the CAs client certificates are verified against (mTLS).
    pub(crate) client_ca_file: Option<String>,
    /// `required` (default: no handshake without a valid client certificate) or `optional`
    /// (a client may present none; one it presents must verify).
    pub(crate) client_auth: Option<ClientAuthMode>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateSection {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    /// Names served by this certificate; empty means the names in the certificate itself.
    #[serde(default)]
    pub(crate) server_names: Vec<String>,
}

/// `[upstreams.NAME]`: a named service with one or more endpoints.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamSection {
    #[serde(default)]
    pub(crate) endpoints: Vec<String>,
    /// `round_robin` (default) or `least_in_flight`.
    pub(crate) balance: Option<Balance>,
    /// `http1` (default) or `http2`.
    pub(crate) protocol: Option<UpstreamProtocol>,
    pub(crate) connect_timeout: Option<String>,
    /// Time allowed from sending the request to receiving response headers.
    pub(crate) response_timeout: Option<String>,
    /// Idle pooled connections are closed after this long.
    pub(crate) idle_timeout: Option<String>,
    pub(crate) max_idle_per_endpoint: Option<usize>,
    /// Most HTTP/1.1 connections open to the upstream at once, all endpoints together.
    pub(crate) max_connections: Option<usize>,
    pub(crate) tls: Option<UpstreamTlsSection>,
    /// Whether `/health` is unhealthy when this upstream is down (default true).
    pub(crate) critical: Option<bool>,
    pub(crate) circuit_breaker: Option<CircuitBreakerSection>,
    pub(crate) retries: Option<RetriesSection>,
    /// `[upstreams.NAME.health_check]`: active checks of every endpoint.
    pub(crate) health_check: Option<HealthCheckSection>,
    /// `[upstreams.NAME.outlier_detection]`: passive ejection of failing endpoints.
    pub(crate) outlier_detection: Option<OutlierDetectionSection>,
    /// `fail` (default: 503 when no endpoint is eligible) or `panic` (use them all).
    pub(crate) no_healthy: Option<NoHealthy>,
}

/// `[upstreams.NAME.circuit_breaker]`: present turns the breaker on.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct CircuitBreakerSection {
    pub(crate) consecutive_failures: Option<u32>,
    /// A share between 0 and 1, e.g. 0.5.
    pub(crate) failure_rate: Option<f64>,
    pub(crate) window: Option<String>,
    pub(crate) min_requests: Option<u32>,
    pub(crate) open_duration: Option<String>,
    pub(crate) max_open_duration: Option<String>,
    /// A share between 0 and 1 of the open period.
    pub(crate) jitter: Option<f64>,
    pub(crate) half_open_probes: Option<u32>,
    pub(crate) failure_statuses: Option<Vec<u16>>,
}

/// `[upstreams.NAME.retries]`: present turns retries on.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetriesSection {
    pub(crate) max_retries: Option<u32>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) statuses: Option<Vec<u16>>,
    pub(crate) per_try_timeout: Option<String>,
    pub(crate) budget_percent: Option<f64>,
    pub(crate) min_concurrency: Option<usize>,
}

/// `[upstreams.NAME.health_check]`: an HTTP request or a TCP connect per endpoint.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheckSection {
    /// `http` (default) or `tcp`.
    #[serde(rename = "type")]
    pub(crate) kind: Option<CheckType>,
    /// Path (and query) of the HTTP check (default `/`).
    pub(crate) path: Option<String>,
    /// Statuses that pass: integers or ranges such as `"200-399"` (default 200-399).
    #[serde(default)]
    pub(crate) expected_statuses: Vec<toml::Value>,
    /// A string the response body must contain.
    pub(crate) body_contains: Option<String>,
    pub(crate) interval: Option<String>,
    /// Random extra wait per check: a share of the interval (`"10%"`) or a duration.
    pub(crate) jitter: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) healthy_threshold: Option<u32>,
    pub(crate) unhealthy_threshold: Option<u32>,
}

/// `[upstreams.NAME.outlier_detection]`: consecutive failures eject an endpoint.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutlierDetectionSection {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) base_ejection_time: Option<String>,
    pub(crate) max_ejection_time: Option<String>,
    pub(crate) max_ejection_percent: Option<u32>,
}

/// `[upstreams.NAME.tls]`: for `https://` endpoints.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTlsSection {
    /// PEM bundle of trusted roots; default the Mozilla roots.
    pub(crate) ca_file: Option<String>,
    /// Name to verify and send as SNI instead of the endpoint host.
    pub(crate) server_name: Option<String>,
}

/// `[[routes]]`: matched in file order; the first match wins.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSection {
    pub(crate) name: Option<String>,
    /// Exact host names or `*.domain` wildcards; empty matches any host.
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    pub(crate) path_prefix: Option<String>,
    /// Methods matched; empty matches any method.
    #[serde(default)]
    pub(crate) methods: Vec<String>,
    pub(crate) upstream: Option<String>,
    /// Overall limit for the upstream to produce response headers on this route.
    pub(crate) timeout: Option<String>,
    /// Plugins run on this route (after the global ones), in order.
    #[serde(default)]
    pub(crate) plugins: Vec<String>,
    /// Read request bodies whole, up to this size (bytes or `"1MiB"`), before the plugins
    /// run, so they can read them; larger bodies are refused with 413.
    pub(crate) buffer_body: Option<toml::Value>,
    /// HTTP signature checks: `off` (default), `observe` (verify and count, forward
    /// anyway) or `enforce` (401 unless valid).
    pub(crate) signatures: Option<SignatureMode>,
    /// Limiters applied to this route, in order.
    #[serde(default)]
    pub(crate) rate_limits: Vec<String>,
    /// Whether the blocklist applies (default true).
    pub(crate) blocklist: Option<bool>,
    /// Phase 5: methods accepted (`api_key`, `jwt`, `mtls`); unset means no authentication.
    pub(crate) auth: Option<Vec<AuthMethod>>,
    /// Principals allowed on the route (default: every authenticated one).
    pub(crate) principals: Option<Vec<String>>,
    /// Protocols an `Upgrade` may switch to (default `["websocket"]`; `[]` allows none).
    pub(crate) upgrades: Option<Vec<String>>,
}
