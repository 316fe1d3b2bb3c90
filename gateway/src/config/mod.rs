//! Configuration: file → validated [`Config`] → runtime.
//!
//! [`load`] reads a TOML file, [`validate`] turns the raw sections of [`file`] into typed values
//! (socket addresses, durations, URIs, methods, loaded certificates) and names the field at
//! fault. Nothing binds a port or touches the running gateway until a file has passed here.

mod auth;
pub mod file;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri};
use rustls::sign::CertifiedKey;

pub use auth::ClientAuth;
pub use file::FileConfig;

/// A configuration error that names the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("{0}")]
    Parse(String),
    #[error("`{field}`: {message}")]
    Field { field: String, message: String },
}

impl ConfigError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub reload: ReloadConfig,
    pub forwarding: ForwardingConfig,
    pub listeners: Vec<ListenerConfig>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub plugins: BTreeMap<String, PluginConfig>,
    pub signatures: SignaturesConfig,
    /// Phase 4: the named limiters.
    pub rate_limits: BTreeMap<String, crate::ratelimit::LimiterConfig>,
    /// Phase 3: the blocklist, file entries included.
    pub blocklist: BlocklistConfig,
    /// Phase 5: API keys and the JWT verifier routes with `auth` use.
    pub auth: crate::auth::AuthConfig,
    /// The raw sections, kept to tell which parts a reload changed.
    pub source: FileConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Reads one `[server]` setting, as text.
pub type ReadSetting = fn(&ServerConfig) -> String;

/// The `[server]` settings fixed for the life of the process (the worker runtime, the log
/// format and the plugin memory pool are built once, at start), each with how to read it
/// from a configuration: the one list reload compares and `fedgate_config_restart_required`
/// is labelled by.
pub const RESTART_ONLY: [(&str, ReadSetting); 4] = [
    ("workers", |s| s.workers.to_string()),
    ("event_interval", |s| s.event_interval.to_string()),
    ("log_format", |s| format!("{:?}", s.log_format)),
    ("plugin_memory", |s| s.plugin_memory.to_string()),
];

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Worker threads; never zero (0 in the file is resolved to the core count).
    pub workers: usize,
    /// Tasks a worker polls between two checks for new I/O events (tokio's
    /// `event_interval`).
    pub event_interval: u32,
    pub shutdown_grace: Duration,
    pub access_log: bool,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Linear memory all plugin instances may hold together.
    pub plugin_memory: usize,
    /// Where compiled plugins are kept between starts; none: compiled on every start.
    pub plugin_cache: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// The longest `/health` takes: plugin health checks not answered by then are reported
    /// unhealthy (timed out).
    pub health_timeout: Duration,
    /// Connections served at once; the admin listener stops accepting at the limit.
    pub max_connections: usize,
    /// Longest wait for a connection's first bytes and for each request head.
    pub header_read_timeout: Duration,
}

/// Default of `admin.max_connections`: scrapers and probes need a handful.
pub const DEFAULT_ADMIN_CONNECTIONS: usize = 256;
/// Default of `listeners[].idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of `admin.header_read_timeout`.
pub const DEFAULT_ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Default of `admin.health_timeout`.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ReloadConfig {
    pub watch: bool,
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingConfig {
    pub x_forwarded: bool,
    pub forwarded: bool,
    /// `Via` entry pseudonym; `None` disables `Via`.
    pub via: Option<String>,
    pub preserve_host: bool,
    pub request_id_header: HeaderName,
    pub trust_request_id: bool,
    /// Proxies whose `X-Forwarded-For` names the client (rate limits, blocklist).
    pub trusted_proxies: crate::netset::NetSet,
}

/// `[blocklist]`, validated: the file is read when the config is loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlocklistConfig {
    pub list: crate::blocklist::Blocklist,
    /// Watched with the config file: a change reloads the config.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// How long a connection may have no request in progress before it is closed.
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub tls: Option<ListenerTls>,
}

#[derive(Clone)]
pub struct ListenerTls {
    /// Certificates with the names they serve; the first is the default for unknown SNI.
    pub certificates: Vec<(Vec<String>, Arc<CertifiedKey>)>,
    pub http2: bool,
    pub handshake_timeout: Duration,
    /// mTLS: verify client certificates against these CAs.
    pub client_auth: Option<ClientAuth>,
    /// The certificate, key and client CA files, resolved: watched with the config file, so
    /// a renewed certificate is served without a restart.
    pub files: Vec<PathBuf>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field(
                "certificates",
                &self.certificates.iter().map(|c| &c.0).collect::<Vec<_>>(),
            )
            .field("http2", &self.http2)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastInFlight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
}

impl fmt::Display for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub endpoints: Vec<EndpointConfig>,
    pub balance: Balance,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    /// Most HTTP/1.1 connections open to the upstream at once (idle and in use, all
    /// endpoints together; upgraded tunnels not counted).
    pub max_connections: usize,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    /// An unhealthy critical upstream makes `/health` unhealthy (503); others degrade it.
    pub critical: bool,
    pub breaker: Option<crate::breaker::BreakerConfig>,
    pub retries: Option<crate::retry::RetryConfig>,
    /// Active checks of every endpoint; `None`: none run.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive ejection of endpoints whose requests keep failing; `None`: off.
    pub outlier_detection: Option<OutlierConfig>,
    /// What balancing does when no endpoint is eligible.
    pub no_healthy: NoHealthy,
}

/// What an upstream does when none of its endpoints is eligible for traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoHealthy {
    /// 503 `no healthy upstream`.
    Fail,
    /// Spread traffic over every endpoint, as Envoy's panic threshold does.
    Panic,
}

/// How an active check probes an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A GET of `path`: passes when the status is in `expected` (inclusive ranges) and the
    /// body contains `body_contains`, if set.
    Http {
        path: http::uri::PathAndQuery,
        expected: Vec<(u16, u16)>,
        body_contains: Option<String>,
    },
    /// A TCP connect to the endpoint (no TLS handshake, no request).
    Tcp,
}

/// The random extra wait added to each check interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Up to this percentage of the interval.
    Percent(u32),
    /// Up to this duration.
    Fixed(Duration),
}

impl Jitter {
    /// The largest extra wait for `interval`.
    pub fn max(self, interval: Duration) -> Duration {
        match self {
            Jitter::Percent(p) => interval * p / 100,
            Jitter::Fixed(d) => d,
        }
    }
}

/// `[upstreams.NAME.health_check]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: CheckKind,
    pub interval: Duration,
    pub jitter: Jitter,
    pub timeout: Duration,
    /// Consecutive passing checks that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failing checks that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// `[upstreams.NAME.outlier_detection]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// At most this share (0-100) of the endpoints are ejected at once.
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.org`, stored as `.example.org`: matches any subdomain, not the apex.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub name: String,
    pub hosts: Vec<HostMatch>,
    pub path_prefix: String,
    pub methods: Vec<Method>,
    pub upstream: String,
    pub timeout: Option<Duration>,
    /// Plugins of this route, global ones first, in the order they run.
    pub plugins: Vec<String>,
    /// Request bodies are read whole up to this many bytes before the plugins run.
    pub buffer_body: Option<usize>,
    pub signatures: SignatureMode,
    /// Names of the limiters this route applies, in order.
    pub rate_limits: Vec<String>,
    /// Whether the blocklist applies to this route.
    pub blocklist: bool,
    /// Phase 5: accepted methods and allowed principals; `None` for an open route.
    pub auth: Option<crate::auth::RouteAuthConfig>,
    /// Protocols an `Upgrade` may switch to on this route (lower case; `websocket` by
    /// default). Upgrades to anything else are dropped and the request goes as a plain one.
    pub upgrades: Vec<String>,
}

/// What a route does with HTTP signatures (phase 6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignatureMode {
    #[default]
    Off,
    /// Verify and count; forward whatever the result.
    Observe,
    /// Verify; anything but a valid signature is answered 401.
    Enforce,
}

/// `[signatures]`, validated: keys are parsed when the config is loaded, so a bad key file
/// refuses the config and names the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignaturesConfig {
    pub window: crate::signature::Window,
    pub max_body: usize,
    pub max_instances: usize,
    pub keys: Vec<(String, crate::signature::key::PublicKey)>,
    pub fetch: FetchConfig,
}

impl Default for SignaturesConfig {
    fn default() -> Self {
        SignaturesConfig {
            window: crate::signature::Window::default(),
            max_body: 1 << 20,
            max_instances: 1000,
            keys: Vec::new(),
            fetch: FetchConfig::default(),
        }
    }
}

/// `[signatures.fetch]`, validated: how keys missing from the trust store are fetched from
/// their key id URL and cached. A reload that leaves it equal keeps the key cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    pub enabled: bool,
    pub timeout: Duration,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub refetch_interval: Duration,
    pub max_entries: usize,
    pub max_document_bytes: usize,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    pub allow_private_addresses: bool,
    pub allow_http: bool,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            enabled: false,
            timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(300),
            refetch_interval: Duration::from_secs(60),
            max_entries: 10_000,
            max_document_bytes: 256 << 10,
            breaker_failures: 5,
            breaker_open: Duration::from_secs(30),
            allow_private_addresses: false,
            allow_http: false,
        }
    }
}

/// What a plugin's failure (trap, timeout, error) does to the request it was called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Skip the plugin and serve the request.
    Open,
    /// Answer 503.
    Closed,
}

/// One Wasm plugin, validated; the component itself is compiled when the runtime is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    pub name: String,
    pub path: PathBuf,
    pub failure: FailurePolicy,
    pub timeout: Duration,
    /// Deadline of a health-check call (on a blocking thread, not a worker).
    pub health_check_timeout: Duration,
    pub memory_limit: usize,
    pub max_series: usize,
    /// Bounds of the plugin's key-value store (ABI 0.2.0).
    pub store: crate::plugin::store::StoreLimits,
    /// How finished exchanges reach `observe` (ABI 0.2.0).
    pub observe: crate::plugin::observer::ObserverConfig,
    /// Deadline of an `observe` or `on-tick` call (off the request path).
    pub observe_timeout: Duration,
    /// Outbound HTTP from `on-tick` and `observe` (ABI 0.2.0).
    pub outbound: OutboundConfig,
    /// The `config` table as a JSON object, as `init` receives it.
    pub config_json: String,
}

/// What a plugin may call over HTTP from `on-tick` and `observe`
/// (`plugins.NAME.outbound`); nothing by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundConfig {
    /// Allowed hosts, lowercased: `host` allows any port, `host:port` one.
    pub allow: Vec<String>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow: Vec::new(),
            timeout: Duration::from_secs(5),
            max_response_bytes: 1 << 20,
        }
    }
}

/// Longest deadline of an `observe` or `on-tick` call, and of an outbound request.
pub const MAX_PLUGIN_BACKGROUND_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline of an `observe` or `on-tick` call.
pub const DEFAULT_PLUGIN_OBSERVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Default deadline of one plugin call.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Default linear-memory cap of one plugin instance.
pub const DEFAULT_PLUGIN_MEMORY: usize = 16 << 20;
/// Default deadline of a plugin's health-check call.
pub const DEFAULT_PLUGIN_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest per-call deadline a plugin may have on the request path.
pub const MAX_PLUGIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Default of `server.plugin_memory`: the linear memory of all plugin instances together.
pub const DEFAULT_PLUGIN_MEMORY_BUDGET: usize = 1 << 30;
/// Default series cap of one plugin-declared metric.
pub const DEFAULT_PLUGIN_SERIES: usize = 1000;

/// Default of `upstreams.NAME.max_connections`.
pub const DEFAULT_UPSTREAM_CONNECTIONS: usize = 1024;

/// The longest duration any setting takes.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86400);

/// Default admin address, also used by `demo`.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";

/// The smallest `max_header_bytes`: hyper's HTTP/1.1 read buffer, which holds the request
/// head, refuses to be smaller.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Why a field cannot be set by the gateway on every request and response: it frames
/// the message, routes it, belongs to the connection or is covered by signatures.
fn reserved_field(name: &HeaderName) -> Option<&'static str> {
    use crate::headers::Hop;
    if crate::headers::hop(name.as_str().as_bytes()) != Hop::EndToEnd {
        return Some("it is a hop-by-hop field");
    }
    match name.as_str() {
        "content-length" | "content-encoding" | "content-type" | "content-range" => {
            Some("it describes the message body")
        }
        "host" => Some("it routes the request"),
        "date" | "digest" | "content-digest" | "signature" | "signature-input"
        | "authorization" | "cookie" | "set-cookie" | "www-authenticate" | "via" | "forwarded"
        | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto" | "traceparent"
        | "location" => Some("the gateway or the peers rely on its value"),
        _ => None,
    }
}

/// Largest files the configuration names, by kind.
pub const MAX_CONFIG_FILE: u64 = 16 << 20;
pub const MAX_BLOCKLIST_FILE: u64 = 64 << 20;
pub const MAX_KEY_FILE: u64 = 1 << 20;
pub const MAX_PLUGIN_FILE: u64 = 256 << 20;

/// Reads a file the configuration names: a regular file (never a FIFO, a device or a
/// directory, which could block or never end) of at most `max` bytes. Opened without
/// blocking, so a FIFO with no writer does not hang the caller.
pub fn read_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("larger than {max} bytes"),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while it is read: never past the limit.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// [`read_file`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_file(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path, MAX_CONFIG_FILE).map_err(|e| ConfigError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    from_str(&text, base)
}

/// Parses and validates configuration text; relative file paths resolve against `base`.
pub fn from_str(text: &str, base: &Path) -> Result<Config, ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
    validate(file, base)
}

/// Turns the raw file into a typed configuration, naming the first bad field.
pub fn validate(file: FileConfig, base: &Path) -> Result<Config, ConfigError> {
    let mut server = validate_server(&file.server)?;
    server.plugin_cache = match file.server.plugin_cache.as_deref() {
        None => None,
        Some(p) if p.trim().is_empty() => {
            return Err(ConfigError::field(
                "server.plugin_cache",
                "must be a directory path (leave it out to compile plugins on every start)",
            ))
        }
        Some(p) => Some(resolve(base, p)),
    };
    let admin = AdminConfig {
        address: parse_addr(
            "admin.address",
            file.admin
                .address
                .as_deref()
                .unwrap_or(DEFAULT_ADMIN_ADDRESS),
        )?,
        health_timeout: duration(
            "admin.health_timeout",
            file.admin.health_timeout.as_deref(),
            DEFAULT_HEALTH_TIMEOUT,
        )?,
        max_connections: match file.admin.max_connections {
            None => DEFAULT_ADMIN_CONNECTIONS,
            Some(n) if (1..=100_000).contains(&n) => n,
            Some(_) => {
                return Err(ConfigError::field(
                    "admin.max_connections",
                    "must be between 1 and 100000",
                ))
            }
        },
        header_read_timeout: duration(
            "admin.header_read_timeout",
            file.admin.header_read_timeout.as_deref(),
            DEFAULT_ADMIN_HEADER_READ_TIMEOUT,
        )?,
    };
    let reload = ReloadConfig {
        watch: file.reload.watch.unwrap_or(true),
        poll_interval: duration(
            "reload.poll_interval",
            file.reload.poll_interval.as_deref(),
            Duration::from_secs(2),
        )?,
    };
    let forwarding = validate_forwarding(&file.forwarding)?;

    if file.listeners.is_empty() {
        return Err(ConfigError::field(
            "listeners",
            "at least one [[listeners]] entry is required",
        ));
    }
    let mut listeners = Vec::with_capacity(file.listeners.len());
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in file.listeners.iter().enumerate() {
        let listener = validate_listener(i, l, base)?;
        if !names.insert(listener.name.clone()) {
            return Err(ConfigError::field(
                format!("listeners[{i}].name"),
                format!("duplicate listener name {:?}", listener.name),
            ));
        }
        if listener.address.port() != 0 && !addrs.insert(listener.address) {
            return Err(ConfigError::field(
                format!("listeners[{i}].address"),
                format!("{} is used by another listener", listener.address),
            ));
        }
        listeners.push(listener);
    }

    let mut upstreams = BTreeMap::new();
    for (name, u) in &file.upstreams {
        upstreams.insert(name.clone(), validate_upstream(name, u, base)?);
    }

    let mut plugins = BTreeMap::new();
    for (name, p) in &file.plugins {
        let plugin = validate_plugin(name, p, base)?;
        if plugin.memory_limit > server.plugin_memory {
            return Err(ConfigError::field(
                format!("plugins.{name}.memory_limit"),
                format!(
                    "{} bytes is more than server.plugin_memory ({} bytes), which all plugins share",
                    plugin.memory_limit, server.plugin_memory
                ),
            ));
        }
        plugins.insert(name.clone(), plugin);
    }
    for (j, p) in file.global.plugins.iter().enumerate() {
        if !plugins.contains_key(p) {
            return Err(ConfigError::field(
                format!("global.plugins[{j}]"),
                format!("no plugin named {p:?} is defined"),
            ));
        }
        if file.global.plugins[..j].contains(p) {
            return Err(ConfigError::field(
                format!("global.plugins[{j}]"),
                format!("{p:?} is listed twice"),
            ));
        }
    }

    let auth = auth::validate_auth(&file.auth, base)?;
    let mut routes = Vec::with_capacity(file.routes.len());
    let mut route_names = HashSet::new();
    for (i, r) in file.routes.iter().enumerate() {
        let route = validate_route(i, r, &upstreams, &plugins, &file.global.plugins)?;
        if !route_names.insert(route.name.clone()) {
            return Err(ConfigError::field(
                format!("routes[{i}].name"),
                format!("duplicate route name {:?}", route.name),
            ));
        }
        routes.push(route);
    }
    auth::check_route_methods(&routes, &auth, &listeners)?;

    let signatures = validate_signatures(&file.signatures, base)?;
    let mut rate_limits = BTreeMap::new();
    for (name, l) in &file.rate_limits {
        rate_limits.insert(name.clone(), validate_rate_limit(name, l)?);
    }
    for (i, route) in routes.iter().enumerate() {
        for (j, name) in route.rate_limits.iter().enumerate() {
            let field = format!("routes[{i}].rate_limits[{j}]");
            let Some(limiter) = rate_limits.get(name) else {
                return Err(ConfigError::field(
                    field,
                    format!("no limiter named {name:?} is defined"),
                ));
            };
            if route.rate_limits[..j].contains(name) {
                return Err(ConfigError::field(
                    field,
                    format!("{name:?} is listed twice"),
                ));
            }
            if limiter.key == crate::ratelimit::KeyKind::Principal && route.auth.is_none() {
                return Err(ConfigError::field(
                    field,
                    format!("{name:?} is keyed by principal, which needs `auth` on this route"),
                ));
            }
            if limiter.key == crate::ratelimit::KeyKind::Instance
                && route.signatures == SignatureMode::Off
            {
                return Err(ConfigError::field(
                    field,
                    format!(
                        "{name:?} is keyed by instance, which needs `signatures` on this route (observe or enforce)"
                    ),
                ));
            }
        }
    }
    let blocklist = validate_blocklist(&file.blocklist, base)?;
    Ok(Config {
        rate_limits,
        blocklist,
        server,
        admin,
        reload,
        forwarding,
        listeners,
        upstreams,
        routes,
        plugins,
        signatures,
        auth,
        source: file,
    })
}

/// Limiters with a larger default key cap would hold too much state per limiter: about
/// 100 bytes a key.
const DEFAULT_LIMITER_KEYS: usize = 100_000;

fn validate_rate_limit(
    name: &str,
    l: &file::RateLimitSection,
) -> Result<crate::ratelimit::LimiterConfig, ConfigError> {
    use crate::ratelimit::{KeyKind, LimiterConfig, Mode};
    let field = |k: &str| format!("rate_limits.{name}.{k}");
    if !is_label_safe(name) {
        return Err(ConfigError::field(
            format!("rate_limits.{name}"),
            "limiter names use letters, digits, '_', '-' or '.'",
        ));
    }
    let key = match l.key.as_deref() {
        Some("client") => KeyKind::Client,
        Some("instance") => KeyKind::Instance,
        Some("principal") => KeyKind::Principal,
        Some("route") => KeyKind::Route,
        Some(other) => {
            return Err(ConfigError::field(
                field("key"),
                format!("{other:?} is not one of client, instance, principal, route"),
            ))
        }
        None => return Err(ConfigError::field(field("key"), "missing")),
    };
    let rate = l
        .rate
        .as_deref()
        .ok_or_else(|| ConfigError::field(field("rate"), "missing"))?;
    let (count, per) = parse_rate(rate).map_err(|m| ConfigError::field(field("rate"), m))?;
    let burst = match l.burst {
        None => count,
        Some(0) => return Err(ConfigError::field(field("burst"), "must be at least 1")),
        Some(b) => b,
    };
    let mode = match l.mode.as_deref().unwrap_or("enforce") {
        "enforce" => Mode::Enforce,
        "observe" => Mode::Observe,
        other => {
            return Err(ConfigError::field(
                field("mode"),
                format!("{other:?} is not one of enforce, observe"),
            ))
        }
    };
    let max_keys = match l.max_keys.unwrap_or(DEFAULT_LIMITER_KEYS) {
        n @ 1..=10_000_000 => n,
        _ => {
            return Err(ConfigError::field(
                field("max_keys"),
                "must be between 1 and 10000000",
            ))
        }
    };
    let ipv6_prefix = match l.ipv6_prefix.unwrap_or(64) {
        p @ 1..=128 => p,
        _ => {
            return Err(ConfigError::field(
                field("ipv6_prefix"),
                "must be between 1 and 128",
            ))
        }
    };
    Ok(LimiterConfig {
        name: name.to_string(),
        key,
        count,
        per,
        burst,
        mode,
        max_keys,
        ipv6_prefix,
    })
}

/// `"100/s"`, `"6000/min"`, `"300/5m"`: a count and the period it is spread over.
fn parse_rate(rate: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("{rate:?} is not a rate such as \"100/s\", \"6000/min\" or \"300/5m\"");
    let (count, period) = rate.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err("the count must be at least 1".into());
    }
    let per = match period.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86400),
        other => humantime::parse_duration(other).map_err(|_| bad())?,
    };
    if per.is_zero() || per > Duration::from_secs(86400 * 7) {
        return Err("the period must be between 1ns and 7 days".into());
    }
    Ok((count, per))
}

fn validate_blocklist(
    b: &file::BlocklistSection,
    base: &Path,
) -> Result<BlocklistConfig, ConfigError> {
    let mut list = crate::blocklist::Blocklist::default();
    for (i, entry) in b.entries.iter().enumerate() {
        list.add(entry)
            .map_err(|m| ConfigError::field(format!("blocklist.entries[{i}]"), m))?;
    }
    let file = b.file.as_deref().map(|f| resolve(base, f));
    if let Some(path) = &file {
        let text = read_text(path, MAX_BLOCKLIST_FILE).map_err(|e| {
            ConfigError::field("blocklist.file", format!("{}: {e}", path.display()))
        })?;
        list.add_file(&text).map_err(|m| {
            ConfigError::field("blocklist.file", format!("{}: {m}", path.display()))
        })?;
    }
    Ok(BlocklistConfig { list, file })
}

fn validate_signatures(
    s: &file::SignaturesSection,
    base: &Path,
) -> Result<SignaturesConfig, ConfigError> {
    use crate::signature::key::PublicKey;
    let defaults = SignaturesConfig::default();
    let window = crate::signature::Window {
        skew: duration_or_zero(
            "signatures.clock_skew",
            s.clock_skew.as_deref(),
            defaults.window.skew,
        )?,
        max_age: duration(
            "signatures.max_age",
            s.max_age.as_deref(),
            defaults.window.max_age,
        )?,
        max_expires: duration(
            "signatures.max_expires",
            s.max_expires.as_deref(),
            defaults.window.max_expires,
        )?,
    };
    let max_body = match &s.max_body {
        None => defaults.max_body,
        Some(v) => byte_size("signatures.max_body", v, 1 << 30)?,
    };
    let mut keys: Vec<(String, PublicKey)> = Vec::with_capacity(s.keys.len());
    for (i, k) in s.keys.iter().enumerate() {
        let field = |f: &str| format!("signatures.keys[{i}].{f}");
        let key_id = k
            .key_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| ConfigError::field(field("key_id"), "missing"))?;
        if keys.iter().any(|(id, _)| *id == key_id) {
            return Err(ConfigError::field(
                field("key_id"),
                format!("{key_id:?} is listed twice"),
            ));
        }
        let key = match (&k.pem, &k.pem_file, &k.multibase) {
            (Some(pem), None, None) => PublicKey::from_pem(pem)
                .map_err(|e| ConfigError::field(field("pem"), e.to_string()))?,
            (None, Some(path), None) => {
                let path = resolve(base, path);
                let text = read_text(&path, MAX_KEY_FILE).map_err(|e| {
                    ConfigError::field(field("pem_file"), format!("{}: {e}", path.display()))
                })?;
                PublicKey::from_pem(&text).map_err(|e| {
                    ConfigError::field(field("pem_file"), format!("{}: {e}", path.display()))
                })?
            }
            (None, None, Some(m)) => PublicKey::from_multibase(m)
                .map_err(|e| ConfigError::field(field("multibase"), e.to_string()))?,
            _ => {
                return Err(ConfigError::field(
                    format!("signatures.keys[{i}]"),
                    "give exactly one of pem, pem_file or multibase",
                ))
            }
        };
        keys.push((key_id, key));
    }
    Ok(SignaturesConfig {
        window,
        max_body,
        max_instances: s.max_instances.unwrap_or(defaults.max_instances),
        keys,
        fetch: validate_fetch(&s.fetch)?,
    })
}

fn validate_fetch(f: &file::FetchSection) -> Result<FetchConfig, ConfigError> {
    let d = FetchConfig::default();
    let field = |n: &str| format!("signatures.fetch.{n}");
    let max_entries = f.max_entries.unwrap_or(d.max_entries);
    if max_entries == 0 || max_entries > 10_000_000 {
        return Err(ConfigError::field(
            field("max_entries"),
            "must be between 1 and 10000000",
        ));
    }
    let breaker_failures = f.breaker_failures.unwrap_or(d.breaker_failures);
    if breaker_failures == 0 {
        return Err(ConfigError::field(
            field("breaker_failures"),
            "must be at least 1",
        ));
    }
    let timeout = duration(&field("timeout"), f.timeout.as_deref(), d.timeout)?;
    if timeout > Duration::from_secs(60) {
        return Err(ConfigError::field(
            field("timeout"),
            "must be at most 60s: requests wait for the fetch",
        ));
    }
    Ok(FetchConfig {
        enabled: f.enabled.unwrap_or(d.enabled),
        timeout,
        ttl: duration(&field("ttl"), f.ttl.as_deref(), d.ttl)?,
        negative_ttl: duration(
            &field("negative_ttl"),
            f.negative_ttl.as_deref(),
            d.negative_ttl,
        )?,
        refetch_interval: duration(
            &field("refetch_interval"),
            f.refetch_interval.as_deref(),
            d.refetch_interval,
        )?,
        max_entries,
        max_document_bytes: match &f.max_document_bytes {
            None => d.max_document_bytes,
            Some(v) => byte_size(&field("max_document_bytes"), v, 16 << 20)?,
        },
        breaker_failures,
        breaker_open: duration(
            &field("breaker_open"),
            f.breaker_open.as_deref(),
            d.breaker_open,
        )?,
        allow_private_addresses: f
            .allow_private_addresses
            .unwrap_or(d.allow_private_addresses),
        allow_http: f.allow_http.unwrap_or(d.allow_http),
    })
}

/// Like [`duration`], but zero is allowed.
fn duration_or_zero(
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value.map(str::trim) {
        Some("0") | Some("0s") => Ok(Duration::ZERO),
        v => duration(field, v, default),
    }
}

/// Checking for socket events every 16 task polls rather than tokio's 61 keeps a connection
/// whose data has arrived from waiting behind a whole round of other connections: it lowers
/// the p90 and p99 of a loaded worker by 5 to 20 % at no measurable cost in throughput
/// (`bench/run.sh`, docs/benchmarks.md).
pub const DEFAULT_EVENT_INTERVAL: u32 = 16;

fn validate_server(s: &file::ServerSection) -> Result<ServerConfig, ConfigError> {
    let workers = match s.workers.unwrap_or(0) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n if n > 1024 => {
            return Err(ConfigError::field(
                "server.workers",
                "must be between 0 and 1024",
            ))
        }
        n => n,
    };
    let event_interval = match s.event_interval.unwrap_or(DEFAULT_EVENT_INTERVAL) {
        n @ 1..=1024 => n,
        _ => {
            return Err(ConfigError::field(
                "server.event_interval",
                "must be between 1 and 1024",
            ))
        }
    };
    let log_format = match s.log_format.as_deref().unwrap_or("json") {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            return Err(ConfigError::field(
                "server.log_format",
                format!("expected \"json\" or \"text\", got {other:?}"),
            ))
        }
    };
    let log_level = s.log_level.clone().unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        return Err(ConfigError::field(
            "server.log_level",
            format!("not a valid filter directive: {log_level:?}"),
        ));
    }
    Ok(ServerConfig {
        workers,
        event_interval,
        shutdown_grace: duration(
            "server.shutdown_grace",
            s.shutdown_grace.as_deref(),
            Duration::from_secs(30),
        )?,
        access_log: s.access_log.unwrap_or(true),
        log_format,
        log_level,
        plugin_memory: match &s.plugin_memory {
            None => DEFAULT_PLUGIN_MEMORY_BUDGET,
            Some(v) => byte_size("server.plugin_memory", v, 64 << 30)?,
        },
        plugin_cache: None,
    })
}

fn validate_forwarding(f: &file::ForwardingSection) -> Result<ForwardingConfig, ConfigError> {
    let (x_forwarded, forwarded) = match f.client_headers.as_deref().unwrap_or("x-forwarded") {
        "x-forwarded" => (true, false),
        "forwarded" => (false, true),
        "both" => (true, true),
        "none" => (false, false),
        other => {
            return Err(ConfigError::field(
                "forwarding.client_headers",
                format!(
                    "expected \"x-forwarded\", \"forwarded\", \"both\" or \"none\", got {other:?}"
                ),
            ))
        }
    };
    let via = match f.via.as_deref() {
        None => Some("fedgate".to_string()),
        Some("") => None,
        Some(v) if is_token(v) => Some(v.to_string()),
        Some(v) => {
            return Err(ConfigError::field(
                "forwarding.via",
                format!("{v:?} is not an HTTP token"),
            ))
        }
    };
    let header = f.request_id_header.as_deref().unwrap_or("x-request-id");
    let request_id_header = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
        ConfigError::field(
            "forwarding.request_id_header",
            format!("{header:?} is not a valid header name"),
        )
    })?;
    if let Some(why) = reserved_field(&request_id_header) {
        return Err(ConfigError::field(
            "forwarding.request_id_header",
            format!("{header:?} cannot carry the request id: {why}"),
        ));
    }
    let mut trusted_proxies = crate::netset::NetSet::default();
    for (i, p) in f.trusted_proxies.iter().enumerate() {
        let net = crate::netset::parse_net(p)
            .map_err(|m| ConfigError::field(format!("forwarding.trusted_proxies[{i}]"), m))?;
        trusted_proxies.insert(net);
    }
    Ok(ForwardingConfig {
        trusted_proxies,
        x_forwarded,
        forwarded,
        via,
        preserve_host: f.preserve_host.unwrap_or(true),
        request_id_header,
        trust_request_id: f.trust_request_id.unwrap_or(true),
    })
}

fn validate_listener(
    i: usize,
    l: &file::ListenerSection,
    base: &Path,
) -> Result<ListenerConfig, ConfigError> {
    let field = |k: &str| format!("listeners[{i}].{k}");
    let name = l.name.clone().unwrap_or_else(|| format!("listener{i}"));
    if !is_label_safe(&name) {
        return Err(ConfigError::field(
            field("name"),
            "use letters, digits, '_', '-' or '.'",
        ));
    }
    let address = parse_addr(
        &field("address"),
        l.address
            .as_deref()
            .ok_or_else(|| ConfigError::field(field("address"), "missing"))?,
    )?;
    let max_connections = l.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        return Err(ConfigError::field(
            field("max_connections"),
            "must be at least 1",
        ));
    }
    let max_header_bytes = l.max_header_bytes.unwrap_or(64 * 1024);
    // The HTTP/1.1 head is bounded by hyper's read buffer, which cannot be smaller than
    // 8 KiB: a lower limit would silently act as 8192.
    if !(MIN_HEADER_BYTES..=16 * 1024 * 1024).contains(&max_header_bytes) {
        return Err(ConfigError::field(
            field("max_header_bytes"),
            "must be between 8192 and 16777216 (the HTTP/1.1 read buffer that holds the \
             request head cannot be smaller than 8192 bytes)",
        ));
    }
    let tls = match &l.tls {
        None => None,
        Some(t) => Some(validate_listener_tls(i, t, base)?),
    };
    Ok(ListenerConfig {
        name,
        address,
        max_connections,
        header_read_timeout: duration(
            &field("header_read_timeout"),
            l.header_read_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        idle_timeout: duration(
            &field("idle_timeout"),
            l.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
        )?,
        max_header_bytes,
        tls,
    })
}

fn validate_listener_tls(
    i: usize,
    t: &file::ListenerTlsSection,
    base: &Path,
) -> Result<ListenerTls, ConfigError> {
    if t.certificates.is_empty() {
        return Err(ConfigError::field(
            format!("listeners[{i}].tls.certificates"),
            "at least one certificate is required",
        ));
    }
    let mut certificates = Vec::with_capacity(t.certificates.len());
    let mut files = Vec::with_capacity(t.certificates.len() * 2 + 1);
    for (j, c) in t.certificates.iter().enumerate() {
        let field = |k: &str| format!("listeners[{i}].tls.certificates[{j}].{k}");
        let cert_path = resolve(
            base,
            c.cert
                .as_deref()
                .ok_or_else(|| ConfigError::field(field("cert"), "missing"))?,
        );
        let key_path = resolve(
            base,
            c.key
                .as_deref()
                .ok_or_else(|| ConfigError::field(field("key"), "missing"))?,
        );
        let key = crate::tls::load_certified_key(&cert_path, &key_path)
            .map_err(|e| ConfigError::field(field("cert"), e))?;
        files.push(cert_path);
        files.push(key_path);
        let mut names = Vec::new();
        for (k, n) in c.server_names.iter().enumerate() {
            let n = n.trim().to_ascii_lowercase();
            if n.is_empty() || n.contains(['/', ' ', ':']) {
                return Err(ConfigError::field(
                    format!("listeners[{i}].tls.certificates[{j}].server_names[{k}]"),
                    format!("{n:?} is not a host name"),
                ));
            }
            names.push(n);
        }
        if names.is_empty() {
            names = crate::tls::certificate_names(&key);
        }
        certificates.push((names, Arc::new(key)));
    }
    Ok(ListenerTls {
        certificates,
        http2: t.http2.unwrap_or(true),
        handshake_timeout: duration(
            &format!("listeners[{i}].tls.handshake_timeout"),
            t.handshake_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        client_auth: auth::validate_client_auth(i, t, base)?,
        files: files
            .into_iter()
            .chain(t.client_ca_file.as_deref().map(|f| resolve(base, f)))
            .collect(),
    })
}

fn validate_upstream(
    name: &str,
    u: &file::UpstreamSection,
    base: &Path,
) -> Result<UpstreamConfig, ConfigError> {
    let field = |k: &str| format!("upstreams.{name}.{k}");
    if !is_label_safe(name) {
        return Err(ConfigError::field(
            format!("upstreams.{name}"),
            "upstream names use letters, digits, '_', '-' or '.'",
        ));
    }
    if u.endpoints.is_empty() {
        return Err(ConfigError::field(
            field("endpoints"),
            "at least one endpoint is required",
        ));
    }
    let mut endpoints = Vec::with_capacity(u.endpoints.len());
    for (i, e) in u.endpoints.iter().enumerate() {
        let ep = parse_endpoint(e)
            .map_err(|m| ConfigError::field(format!("upstreams.{name}.endpoints[{i}]"), m))?;
        if endpoints.contains(&ep) {
            return Err(ConfigError::field(
                format!("upstreams.{name}.endpoints[{i}]"),
                format!("{e} is listed twice"),
            ));
        }
        endpoints.push(ep);
    }
    let balance = match u.balance.as_deref().unwrap_or("round_robin") {
        "round_robin" => Balance::RoundRobin,
        "least_in_flight" => Balance::LeastInFlight,
        other => {
            return Err(ConfigError::field(
                field("balance"),
                format!("expected \"round_robin\" or \"least_in_flight\", got {other:?}"),
            ))
        }
    };
    let protocol = match u.protocol.as_deref().unwrap_or("http1") {
        "http1" => UpstreamProtocol::Http1,
        "http2" => UpstreamProtocol::Http2,
        other => {
            return Err(ConfigError::field(
                field("protocol"),
                format!("expected \"http1\" or \"http2\", got {other:?}"),
            ))
        }
    };
    let (tls_ca_file, tls_server_name) = match &u.tls {
        None => (None, None),
        Some(t) => {
            let ca = t.ca_file.as_deref().map(|p| resolve(base, p));
            if let Some(ca) = &ca {
                crate::tls::load_roots(ca)
                    .map_err(|e| ConfigError::field(field("tls.ca_file"), e))?;
            }
            if let Some(sn) = &t.server_name {
                if rustls::pki_types::ServerName::try_from(sn.as_str()).is_err() {
                    return Err(ConfigError::field(
                        field("tls.server_name"),
                        format!("{sn:?} is not a valid server name"),
                    ));
                }
            }
            (ca, t.server_name.clone())
        }
    };
    let max_idle_per_endpoint = u.max_idle_per_endpoint.unwrap_or(256);
    let max_connections = u.max_connections.unwrap_or(DEFAULT_UPSTREAM_CONNECTIONS);
    if !(1..=1_000_000).contains(&max_connections) {
        return Err(ConfigError::field(
            field("max_connections"),
            "must be between 1 and 1000000",
        ));
    }
    let health_check = u
        .health_check
        .as_ref()
        .map(|h| validate_health_check(&field("health_check"), h))
        .transpose()?;
    let outlier_detection = u
        .outlier_detection
        .as_ref()
        .map(|o| validate_outlier(&field("outlier_detection"), o))
        .transpose()?;
    let no_healthy = match u.no_healthy.as_deref().unwrap_or("fail") {
        "fail" => NoHealthy::Fail,
        "panic" => NoHealthy::Panic,
        other => {
            return Err(ConfigError::field(
                field("no_healthy"),
                format!("expected \"fail\" or \"panic\", got {other:?}"),
            ))
        }
    };
    Ok(UpstreamConfig {
        health_check,
        outlier_detection,
        no_healthy,
        name: name.to_string(),
        endpoints,
        balance,
        protocol,
        connect_timeout: duration(
            &field("connect_timeout"),
            u.connect_timeout.as_deref(),
            Duration::from_secs(5),
        )?,
        response_timeout: duration(
            &field("response_timeout"),
            u.response_timeout.as_deref(),
            Duration::from_secs(60),
        )?,
        idle_timeout: duration(
            &field("idle_timeout"),
            u.idle_timeout.as_deref(),
            Duration::from_secs(90),
        )?,
        max_idle_per_endpoint,
        max_connections,
        tls_ca_file,
        tls_server_name,
        critical: u.critical.unwrap_or(true),
        breaker: u
            .circuit_breaker
            .as_ref()
            .map(|b| validate_breaker(name, b))
            .transpose()?,
        retries: u
            .retries
            .as_ref()
            .map(|r| validate_retries(name, r))
            .transpose()?,
    })
}

fn statuses(field: &str, list: &[u16]) -> Result<Vec<u16>, ConfigError> {
    if let Some(bad) = list.iter().find(|s| !(500..=599).contains(*s)) {
        return Err(ConfigError::field(
            field,
            format!(
                "{bad} is not a 5xx status (a 4xx is the client's failure, not the upstream's)"
            ),
        ));
    }
    Ok(list.to_vec())
}

fn share(field: &str, v: f64, zero_ok: bool) -> Result<f64, ConfigError> {
    if v.is_finite() && v <= 1.0 && (v > 0.0 || (zero_ok && v == 0.0)) {
        Ok(v)
    } else {
        Err(ConfigError::field(
            field,
            format!("{v} is not a share between 0 and 1"),
        ))
    }
}

fn validate_breaker(
    name: &str,
    b: &file::CircuitBreakerSection,
) -> Result<crate::breaker::BreakerConfig, ConfigError> {
    let d = crate::breaker::BreakerConfig::default();
    let field = |k: &str| format!("upstreams.{name}.circuit_breaker.{k}");
    let failure_rate = b
        .failure_rate
        .map(|r| share(&field("failure_rate"), r, false))
        .transpose()?;
    let consecutive_failures = b.consecutive_failures.unwrap_or(d.consecutive_failures);
    if consecutive_failures == 0 && failure_rate.is_none() {
        return Err(ConfigError::field(
            field("consecutive_failures"),
            "0 turns the consecutive trigger off, and no failure_rate is set: the breaker could never open",
        ));
    }
    let open_duration = duration(
        &field("open_duration"),
        b.open_duration.as_deref(),
        d.open_duration,
    )?;
    let max_open_duration = duration(
        &field("max_open_duration"),
        b.max_open_duration.as_deref(),
        d.max_open_duration.max(open_duration),
    )?;
    if max_open_duration < open_duration {
        return Err(ConfigError::field(
            field("max_open_duration"),
            "must not be shorter than open_duration",
        ));
    }
    let half_open_probes = b.half_open_probes.unwrap_or(d.half_open_probes);
    if half_open_probes == 0 {
        return Err(ConfigError::field(
            field("half_open_probes"),
            "must be at least 1",
        ));
    }
    Ok(crate::breaker::BreakerConfig {
        consecutive_failures,
        failure_rate,
        window: duration(&field("window"), b.window.as_deref(), d.window)?,
        min_requests: b.min_requests.unwrap_or(d.min_requests),
        open_duration,
        max_open_duration,
        jitter: b
            .jitter
            .map(|j| share(&field("jitter"), j, true))
            .transpose()?
            .unwrap_or(d.jitter),
        half_open_probes,
        failure_statuses: match &b.failure_statuses {
            Some(list) => statuses(&field("failure_statuses"), list)?,
            None => d.failure_statuses,
        },
    })
}

fn validate_retries(
    name: &str,
    r: &file::RetriesSection,
) -> Result<crate::retry::RetryConfig, ConfigError> {
    let d = crate::retry::RetryConfig::default();
    let field = |k: &str| format!("upstreams.{name}.retries.{k}");
    let max_retries = r.max_retries.unwrap_or(d.max_retries);
    if max_retries > 10 {
        return Err(ConfigError::field(field("max_retries"), "at most 10"));
    }
    let methods = match &r.methods {
        None => d.methods,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (j, m) in list.iter().enumerate() {
                let method =
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                        ConfigError::field(
                            format!("{}[{j}]", field("methods")),
                            format!("{m:?} is not a method"),
                        )
                    })?;
                // A retry sends the request again: only methods whose repetition has the
                // effect of one request (RFC 9110 §9.2.2) may be retried. A POST (an inbox
                // delivery) or a PATCH repeated could deliver or apply twice.
                if !matches!(
                    method,
                    Method::GET
                        | Method::HEAD
                        | Method::OPTIONS
                        | Method::TRACE
                        | Method::PUT
                        | Method::DELETE
                ) {
                    return Err(ConfigError::field(
                        format!("{}[{j}]", field("methods")),
                        format!(
                            "{method} is not idempotent (RFC 9110 §9.2.2): only GET, HEAD, OPTIONS, TRACE, PUT and DELETE may be retried"
                        ),
                    ));
                }
                out.push(method);
            }
            out
        }
    };
    let budget_percent = r.budget_percent.unwrap_or(d.budget_percent);
    if !(budget_percent.is_finite() && (0.0..=100.0).contains(&budget_percent)) {
        return Err(ConfigError::field(
            field("budget_percent"),
            "must be between 0 and 100",
        ));
    }
    Ok(crate::retry::RetryConfig {
        max_retries,
        methods,
        statuses: match &r.statuses {
            Some(list) => statuses(&field("statuses"), list)?,
            None => d.statuses,
        },
        per_try_timeout: r
            .per_try_timeout
            .as_deref()
            .map(|t| duration(&field("per_try_timeout"), Some(t), Duration::ZERO))
            .transpose()?,
        budget_percent,
        min_concurrency: r.min_concurrency.unwrap_or(d.min_concurrency),
    })
}

fn validate_health_check(
    at: &str,
    h: &file::HealthCheckSection,
) -> Result<HealthCheckConfig, ConfigError> {
    let field = |k: &str| format!("{at}.{k}");
    let kind = match h.kind.as_deref().unwrap_or("http") {
        "http" => {
            let path = h.path.as_deref().unwrap_or("/");
            let path = match path.parse::<http::uri::PathAndQuery>() {
                Ok(p) if path.starts_with('/') => p,
                _ => {
                    return Err(ConfigError::field(
                        field("path"),
                        format!("{path:?} is not a path starting with '/'"),
                    ))
                }
            };
            let mut expected = Vec::with_capacity(h.expected_statuses.len());
            for (i, v) in h.expected_statuses.iter().enumerate() {
                let range = status_range(v).ok_or_else(|| {
                    ConfigError::field(
                        format!("{at}.expected_statuses[{i}]"),
                        format!("{v} is not a status (100-599) or a range such as \"200-399\""),
                    )
                })?;
                expected.push(range);
            }
            if expected.is_empty() {
                expected.push((200, 399));
            }
            if h.body_contains.as_deref() == Some("") {
                return Err(ConfigError::field(
                    field("body_contains"),
                    "must not be empty",
                ));
            }
            CheckKind::Http {
                path,
                expected,
                body_contains: h.body_contains.clone(),
            }
        }
        "tcp" => {
            for (set, k) in [
                (h.path.is_some(), "path"),
                (!h.expected_statuses.is_empty(), "expected_statuses"),
                (h.body_contains.is_some(), "body_contains"),
            ] {
                if set {
                    return Err(ConfigError::field(field(k), "only HTTP checks have it"));
                }
            }
            CheckKind::Tcp
        }
        other => {
            return Err(ConfigError::field(
                field("type"),
                format!("expected \"http\" or \"tcp\", got {other:?}"),
            ))
        }
    };
    let interval = duration(
        &field("interval"),
        h.interval.as_deref(),
        Duration::from_secs(10),
    )?;
    let jitter = match h.jitter.as_deref().map(str::trim) {
        None => Jitter::Percent(10),
        Some(j) => match j.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u32>() {
                Ok(p) if p <= 100 => Jitter::Percent(p),
                _ => {
                    return Err(ConfigError::field(
                        field("jitter"),
                        format!("{j:?} is not a percentage between 0% and 100%"),
                    ))
                }
            },
            None => Jitter::Fixed(duration_or_zero(&field("jitter"), Some(j), Duration::ZERO)?),
        },
    };
    let timeout = duration(
        &field("timeout"),
        h.timeout.as_deref(),
        Duration::from_secs(2),
    )?;
    let threshold = |k: &str, v: Option<u32>, default: u32| match v.unwrap_or(default) {
        0 => Err(ConfigError::field(field(k), "must be at least 1")),
        n => Ok(n),
    };
    Ok(HealthCheckConfig {
        kind,
        interval,
        jitter,
        timeout,
        healthy_threshold: threshold("healthy_threshold", h.healthy_threshold, 2)?,
        unhealthy_threshold: threshold("unhealthy_threshold", h.unhealthy_threshold, 3)?,
    })
}

/// A status code or an inclusive range `"A-B"`, within 100-599.
fn status_range(v: &toml::Value) -> Option<(u16, u16)> {
    let (lo, hi) = match v {
        toml::Value::Integer(i) => (u16::try_from(*i).ok()?, u16::try_from(*i).ok()?),
        toml::Value::String(s) => match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let n = s.trim().parse().ok()?;
                (n, n)
            }
        },
        _ => return None,
    };
    ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi).then_some((lo, hi))
}

fn validate_outlier(
    at: &str,
    o: &file::OutlierDetectionSection,
) -> Result<OutlierConfig, ConfigError> {
    let field = |k: &str| format!("{at}.{k}");
    let consecutive_failures = match o.consecutive_failures.unwrap_or(5) {
        0 => {
            return Err(ConfigError::field(
                field("consecutive_failures"),
                "must be at least 1",
            ))
        }
        n => n,
    };
    let base_ejection_time = duration(
        &field("base_ejection_time"),
        o.base_ejection_time.as_deref(),
        Duration::from_secs(30),
    )?;
    let max_ejection_time = duration(
        &field("max_ejection_time"),
        o.max_ejection_time.as_deref(),
        Duration::from_secs(300).max(base_ejection_time),
    )?;
    if max_ejection_time < base_ejection_time {
        return Err(ConfigError::field(
            field("max_ejection_time"),
            "must not be shorter than base_ejection_time",
        ));
    }
    let max_ejection_percent = o.max_ejection_percent.unwrap_or(50);
    if max_ejection_percent > 100 {
        return Err(ConfigError::field(
            field("max_ejection_percent"),
            "must be between 0 and 100",
        ));
    }
    Ok(OutlierConfig {
        consecutive_failures,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent,
    })
}

fn parse_endpoint(s: &str) -> Result<EndpointConfig, String> {
    let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URI: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("{s:?} needs a scheme (http:// or https://)"))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(format!("{s:?}: the scheme must be http or https"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{s:?} needs a host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{s:?}: credentials in endpoint URIs are not supported"
        ));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!(
            "{s:?}: endpoints are scheme://host:port, without a path"
        ));
    }
    Ok(EndpointConfig { scheme, authority })
}

fn validate_route(
    i: usize,
    r: &file::RouteSection,
    upstreams: &BTreeMap<String, UpstreamConfig>,
    plugins: &BTreeMap<String, PluginConfig>,
    global_plugins: &[String],
) -> Result<RouteConfig, ConfigError> {
    let field = |k: &str| format!("routes[{i}].{k}");
    let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
    if !is_label_safe(&name) {
        return Err(ConfigError::field(
            field("name"),
            "use letters, digits, '_', '-' or '.'",
        ));
    }
    let mut hosts = Vec::with_capacity(r.hosts.len());
    for (j, h) in r.hosts.iter().enumerate() {
        let h = h.trim().to_ascii_lowercase();
        let bad = |m: &str| ConfigError::field(format!("routes[{i}].hosts[{j}]"), m.to_string());
        if let Some(rest) = h.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') {
                return Err(bad("a wildcard is written *.domain"));
            }
            hosts.push(HostMatch::Suffix(format!(".{rest}")));
        } else if h.is_empty() || h.contains(['*', '/', ' ']) {
            return Err(bad("expected a host name or *.domain"));
        } else {
            hosts.push(HostMatch::Exact(h));
        }
    }
    let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_string());
    if !path_prefix.starts_with('/') {
        return Err(ConfigError::field(
            field("path_prefix"),
            "must start with '/'",
        ));
    }
    let mut methods = Vec::with_capacity(r.methods.len());
    for (j, m) in r.methods.iter().enumerate() {
        let m = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
            ConfigError::field(
                format!("routes[{i}].methods[{j}]"),
                format!("{m:?} is not a method"),
            )
        })?;
        methods.push(m);
    }
    let upstream = r
        .upstream
        .clone()
        .ok_or_else(|| ConfigError::field(field("upstream"), "missing"))?;
    if !upstreams.contains_key(&upstream) {
        return Err(ConfigError::field(
            field("upstream"),
            format!("no upstream named {upstream:?} is defined"),
        ));
    }
    let timeout = match &r.timeout {
        None => None,
        Some(t) => Some(duration(&field("timeout"), Some(t), Duration::ZERO)?),
    };
    let mut chain = global_plugins.to_vec();
    for (j, p) in r.plugins.iter().enumerate() {
        let field = format!("routes[{i}].plugins[{j}]");
        if !plugins.contains_key(p) {
            return Err(ConfigError::field(
                field,
                format!("no plugin named {p:?} is defined"),
            ));
        }
        if chain.contains(p) {
            return Err(ConfigError::field(
                field,
                format!("{p:?} is already in this route's chain (listed twice, or global)"),
            ));
        }
        chain.push(p.clone());
    }
    let buffer_body = match &r.buffer_body {
        None => None,
        Some(v) => Some(byte_size(&field("buffer_body"), v, 1 << 30)?),
    };
    let signatures = match r.signatures.as_deref() {
        None | Some("off") => SignatureMode::Off,
        Some("observe") => SignatureMode::Observe,
        Some("enforce") => SignatureMode::Enforce,
        Some(other) => {
            return Err(ConfigError::field(
                field("signatures"),
                format!("{other:?} is not one of off, observe, enforce"),
            ))
        }
    };
    let auth = auth::validate_route_auth(i, r)?;
    let upgrades = match &r.upgrades {
        None => vec!["websocket".to_string()],
        Some(list) => {
            let mut upgrades = Vec::with_capacity(list.len());
            for (j, u) in list.iter().enumerate() {
                let u = u.trim().to_ascii_lowercase();
                let bad = |m: &str| ConfigError::field(format!("routes[{i}].upgrades[{j}]"), m);
                if u.is_empty()
                    || !u
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                {
                    return Err(bad("not a protocol name (a token such as \"websocket\")"));
                }
                if u == "h2c" {
                    return Err(bad(
                        "h2c cannot be allowed: the upgraded connection would reach the upstream \
                         past routing, auth, signatures, limits and plugins",
                    ));
                }
                upgrades.push(u);
            }
            upgrades
        }
    };
    Ok(RouteConfig {
        name,
        hosts,
        path_prefix,
        methods,
        upstream,
        timeout,
        plugins: chain,
        buffer_body,
        signatures,
        rate_limits: r.rate_limits.clone(),
        blocklist: r.blocklist.unwrap_or(true),
        auth,
        upgrades,
    })
}

fn validate_plugin(
    name: &str,
    p: &file::PluginSection,
    base: &Path,
) -> Result<PluginConfig, ConfigError> {
    let field = |k: &str| format!("plugins.{name}.{k}");
    if !is_label_safe(name) {
        return Err(ConfigError::field(
            format!("plugins.{name}"),
            "plugin names use letters, digits, '_', '-' or '.'",
        ));
    }
    let path = p
        .path
        .as_deref()
        .ok_or_else(|| ConfigError::field(field("path"), "missing"))?;
    let failure = match p.failure.as_deref().unwrap_or("fail_open") {
        "fail_open" => FailurePolicy::Open,
        "fail_closed" => FailurePolicy::Closed,
        other => {
            return Err(ConfigError::field(
                field("failure"),
                format!("expected \"fail_open\" or \"fail_closed\", got {other:?}"),
            ))
        }
    };
    let timeout = duration(
        &field("timeout"),
        p.timeout.as_deref(),
        DEFAULT_PLUGIN_TIMEOUT,
    )?;
    // A call runs on the worker thread that serves the request: while it runs, every
    // other connection of that worker waits. The ceiling bounds that stall.
    if timeout > MAX_PLUGIN_TIMEOUT {
        return Err(ConfigError::field(
            field("timeout"),
            "at most 100ms: a call holds its worker thread, and every connection on it, \
             until it returns",
        ));
    }
    let health_check_timeout = duration(
        &field("health_check_timeout"),
        p.health_check_timeout.as_deref(),
        DEFAULT_PLUGIN_HEALTH_TIMEOUT,
    )?;
    if health_check_timeout > Duration::from_secs(10) {
        return Err(ConfigError::field(
            field("health_check_timeout"),
            "at most 10s",
        ));
    }
    let memory_limit = match &p.memory_limit {
        None => DEFAULT_PLUGIN_MEMORY,
        Some(v) => byte_size(&field("memory_limit"), v, 4 << 30)?,
    };
    if memory_limit < 64 << 10 {
        return Err(ConfigError::field(
            field("memory_limit"),
            "at least 64KiB (one Wasm page)",
        ));
    }
    let max_series = p.max_series.unwrap_or(DEFAULT_PLUGIN_SERIES);
    if max_series == 0 || max_series > 1_000_000 {
        return Err(ConfigError::field(
            field("max_series"),
            "must be between 1 and 1000000",
        ));
    }
    let defaults = crate::plugin::store::StoreLimits::default();
    let store_entries = p.store_entries.unwrap_or(defaults.max_entries);
    if !(1..=10_000_000).contains(&store_entries) {
        return Err(ConfigError::field(
            field("store_entries"),
            "must be between 1 and 10000000",
        ));
    }
    let store = crate::plugin::store::StoreLimits {
        max_entries: store_entries,
        max_bytes: match &p.store_bytes {
            None => defaults.max_bytes,
            Some(v) => byte_size(&field("store_bytes"), v, 16 << 30)?,
        },
        max_key_bytes: defaults.max_key_bytes,
        max_value_bytes: match &p.store_value_bytes {
            None => defaults.max_value_bytes,
            Some(v) => byte_size(&field("store_value_bytes"), v, 64 << 20)?,
        },
    };
    if store.max_value_bytes > store.max_bytes {
        return Err(ConfigError::field(
            field("store_value_bytes"),
            "must not exceed store_bytes",
        ));
    }
    let (observe, observe_timeout) = validate_observe(p.observe.as_ref(), &field)?;
    let outbound = validate_outbound(p.outbound.as_ref(), &field)?;
    let config_json = serde_json::to_string(&p.config.clone().unwrap_or_default())
        .map_err(|e| ConfigError::field(field("config"), e.to_string()))?;
    Ok(PluginConfig {
        name: name.to_string(),
        path: resolve(base, path),
        failure,
        timeout,
        health_check_timeout,
        memory_limit,
        max_series,
        store,
        observe,
        observe_timeout,
        outbound,
        config_json,
    })
}

/// `plugins.NAME.observe`: batching of finished exchanges and the background deadline.
fn validate_observe(
    o: Option<&file::ObserveSection>,
    field: &dyn Fn(&str) -> String,
) -> Result<(crate::plugin::observer::ObserverConfig, Duration), ConfigError> {
    let defaults = crate::plugin::observer::ObserverConfig::default();
    let Some(o) = o else {
        return Ok((defaults, DEFAULT_PLUGIN_OBSERVE_TIMEOUT));
    };
    let queue = o.queue.unwrap_or(defaults.queue);
    if !(1..=1_000_000).contains(&queue) {
        return Err(ConfigError::field(
            field("observe.queue"),
            "must be between 1 and 1000000",
        ));
    }
    let batch = o.batch.unwrap_or(defaults.batch.min(queue));
    if !(1..=4096).contains(&batch) || batch > queue {
        return Err(ConfigError::field(
            field("observe.batch"),
            "must be between 1 and 4096, and at most observe.queue",
        ));
    }
    let max_delay = duration(
        &field("observe.max_delay"),
        o.max_delay.as_deref(),
        defaults.max_delay,
    )?;
    if max_delay > Duration::from_secs(60) {
        return Err(ConfigError::field(
            field("observe.max_delay"),
            "at most 60s",
        ));
    }
    let timeout = duration(
        &field("observe.timeout"),
        o.timeout.as_deref(),
        DEFAULT_PLUGIN_OBSERVE_TIMEOUT,
    )?;
    if timeout > MAX_PLUGIN_BACKGROUND_TIMEOUT {
        return Err(ConfigError::field(field("observe.timeout"), "at most 10s"));
    }
    Ok((
        crate::plugin::observer::ObserverConfig {
            batch,
            max_delay,
            queue,
        },
        timeout,
    ))
}

/// `plugins.NAME.outbound`: the hosts a plugin may call and the bounds of a call.
fn validate_outbound(
    o: Option<&file::OutboundSection>,
    field: &dyn Fn(&str) -> String,
) -> Result<OutboundConfig, ConfigError> {
    let defaults = OutboundConfig::default();
    let Some(o) = o else { return Ok(defaults) };
    let mut allow = Vec::with_capacity(o.allow.len());
    for (i, h) in o.allow.iter().enumerate() {
        let h = h.trim().to_ascii_lowercase();
        let valid = !h.is_empty()
            && !h.contains(['/', '@', '?', '#', ' ', '*'])
            && http::uri::Authority::try_from(h.as_str()).is_ok();
        if !valid {
            return Err(ConfigError::field(
                format!("{}[{i}]", field("outbound.allow")),
                format!("{h:?} is not a host or host:port (no scheme, path or wildcard)"),
            ));
        }
        allow.push(h);
    }
    let timeout = duration(
        &field("outbound.timeout"),
        o.timeout.as_deref(),
        defaults.timeout,
    )?;
    if timeout > MAX_PLUGIN_BACKGROUND_TIMEOUT {
        return Err(ConfigError::field(field("outbound.timeout"), "at most 10s"));
    }
    let max_response_bytes = match &o.max_response_bytes {
        None => defaults.max_response_bytes,
        Some(v) => byte_size(&field("outbound.max_response_bytes"), v, 64 << 20)?,
    };
    Ok(OutboundConfig {
        allow,
        timeout,
        max_response_bytes,
    })
}

/// A size in bytes: an integer, or a string with a unit (`"64KiB"`, `"16MiB"`, `"1GiB"`,
/// `"512B"`), at least 1 and at most `max`.
fn byte_size(field: &str, v: &toml::Value, max: usize) -> Result<usize, ConfigError> {
    let bad = || {
        ConfigError::field(
            field,
            format!("{v} is not a size (bytes, or a string such as \"64KiB\" or \"16MiB\")"),
        )
    };
    let n: u64 = match v {
        toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| bad())?,
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let n: u64 = digits.parse().map_err(|_| bad())?;
            let scale: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                _ => return Err(bad()),
            };
            n.checked_mul(scale).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if n == 0 || n > max as u64 {
        return Err(ConfigError::field(
            field,
            format!("must be between 1 byte and {max} bytes"),
        ));
    }
    Ok(n as usize)
}

fn duration(field: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    let d = humantime::parse_duration(v.trim()).map_err(|e| {
        ConfigError::field(
            field,
            format!("{v:?} is not a duration (e.g. \"5s\", \"250ms\"): {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::field(field, "must be greater than zero"));
    }
    // Every duration is added to an instant somewhere (a deadline, a timer); one that
    // overflows it would panic on the request path.
    if d > MAX_DURATION {
        return Err(ConfigError::field(
            field,
            format!("{v:?} is too long: at most 365 days"),
        ));
    }
    Ok(d)
}

fn parse_addr(field: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| {
        ConfigError::field(
            field,
            format!("{v:?} is not an address (e.g. \"0.0.0.0:8080\" or \"[::]:8443\")"),
        )
    })
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Names used as metric label values: short and from a safe alphabet.
fn is_label_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `true` when the value is a plausible request id to keep: visible ASCII, bounded length.
pub(crate) fn is_valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        from_str(text, Path::new("."))
    }

    const MINIMAL: &str = r#"
[[listeners]]
address = "127.0.0.1:0"
[upstreams.app]
endpoints = ["http://127.0.0.1:3000"]
[[routes]]
upstream = "app"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.admin.address, DEFAULT_ADMIN_ADDRESS.parse().unwrap());
        assert_eq!(c.admin.health_timeout, DEFAULT_HEALTH_TIMEOUT);
        assert_eq!(c.listeners[0].name, "listener0");
        assert_eq!(c.routes[0].name, "route0");
        assert_eq!(c.routes[0].path_prefix, "/");
        let u = &c.upstreams["app"];
        assert_eq!(u.connect_timeout, Duration::from_secs(5));
        assert_eq!(u.balance, Balance::RoundRobin);
        assert!(c.forwarding.x_forwarded && !c.forwarding.forwarded);
        assert_eq!(c.forwarding.via.as_deref(), Some("fedgate"));
        assert_eq!(c.server.event_interval, DEFAULT_EVENT_INTERVAL);
    }

    fn field_of(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn max_header_bytes_below_the_http1_buffer_is_refused() {
        let with = |n: usize| {
            MINIMAL.replace(
                "address = \"127.0.0.1:0\"",
                &format!("address = \"127.0.0.1:0\"\nmax_header_bytes = {n}"),
            )
        };
        match parse(&with(4096)) {
            Err(ConfigError::Field { field, message }) => {
                assert_eq!(field, "listeners[0].max_header_bytes");
                assert!(message.contains("8192"), "{message}");
                assert!(message.contains("read buffer"), "{message}");
            }
            other => panic!("4096 must be refused, got {other:?}"),
        }
        assert_eq!(field_of(&with(8191)), "listeners[0].max_header_bytes");
        assert_eq!(
            parse(&with(8192)).unwrap().listeners[0].max_header_bytes,
            8192
        );
        assert_eq!(
            field_of(&with(16 * 1024 * 1024 + 1)),
            "listeners[0].max_header_bytes"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let unknown_upstream = MINIMAL.replace("upstream = \"app\"", "upstream = \"nope\"");
        assert_eq!(field_of(&unknown_upstream), "routes[0].upstream");
        let bad_duration = format!(
            "{MINIMAL}\n[upstreams.b]\nendpoints=[\"http://x:1\"]\nconnect_timeout = \"soon\"\n"
        );
        assert_eq!(field_of(&bad_duration), "upstreams.b.connect_timeout");
        let bad_endpoint = MINIMAL.replace("http://127.0.0.1:3000", "ftp://x");
        assert_eq!(field_of(&bad_endpoint), "upstreams.app.endpoints[0]");
        let with_path = MINIMAL.replace("http://127.0.0.1:3000", "http://x:1/api");
        assert_eq!(field_of(&with_path), "upstreams.app.endpoints[0]");
        let bad_addr = MINIMAL.replace("127.0.0.1:0", "localhost");
        assert_eq!(field_of(&bad_addr), "listeners[0].address");
        let bad_prefix = format!("{MINIMAL}path_prefix = \"inbox\"\n");
        assert_eq!(field_of(&bad_prefix), "routes[0].path_prefix");
        let bad_host = format!("{MINIMAL}hosts = [\"*.\"]\n");
        assert_eq!(field_of(&bad_host), "routes[0].hosts[0]");
        let zero = MINIMAL.replace(
            "[upstreams.app]",
            "[upstreams.app]\nresponse_timeout = \"0s\"",
        );
        assert_eq!(field_of(&zero), "upstreams.app.response_timeout");
        let no_listener = MINIMAL.replace("[[listeners]]\naddress = \"127.0.0.1:0\"", "");
        assert_eq!(field_of(&no_listener), "listeners");
        let no_health_time = format!("[admin]\nhealth_timeout = \"0s\"\n{MINIMAL}");
        assert_eq!(field_of(&no_health_time), "admin.health_timeout");
        let no_events = format!("[server]\nevent_interval = 0\n{MINIMAL}");
        assert_eq!(field_of(&no_events), "server.event_interval");
    }

    #[test]
    fn health_sections_get_defaults_and_name_bad_fields() {
        let c = parse(MINIMAL).unwrap();
        let u = &c.upstreams["app"];
        assert_eq!(u.health_check, None);
        assert_eq!(u.outlier_detection, None);
        assert_eq!(u.no_healthy, NoHealthy::Fail);
        let with = |section: &str| MINIMAL.replace("[[routes]]", &format!("{section}\n[[routes]]"));
        let c = parse(&with(
            "[upstreams.app.health_check]\n[upstreams.app.outlier_detection]",
        ))
        .unwrap();
        let u = &c.upstreams["app"];
        let h = u.health_check.as_ref().unwrap();
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/".parse().unwrap(),
                expected: vec![(200, 399)],
                body_contains: None
            }
        );
        assert_eq!(h.interval, Duration::from_secs(10));
        assert_eq!(h.jitter, Jitter::Percent(10));
        assert_eq!(h.timeout, Duration::from_secs(2));
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (2, 3));
        let o = u.outlier_detection.as_ref().unwrap();
        assert_eq!(o.consecutive_failures, 5);
        assert_eq!(o.base_ejection_time, Duration::from_secs(30));
        assert_eq!(o.max_ejection_time, Duration::from_secs(300));
        assert_eq!(o.max_ejection_percent, 50);

        let c = parse(&with(
            "[upstreams.app.health_check]\npath = \"/healthz?full=1\"\nexpected_statuses = [204, \"200-299\"]\nbody_contains = \"ok\"\njitter = \"250ms\"",
        ))
        .unwrap();
        let h = c.upstreams["app"].health_check.clone().unwrap();
        assert_eq!(h.jitter, Jitter::Fixed(Duration::from_millis(250)));
        match h.kind {
            CheckKind::Http {
                path,
                expected,
                body_contains,
            } => {
                assert_eq!(path.as_str(), "/healthz?full=1");
                assert_eq!(expected, vec![(204, 204), (200, 299)]);
                assert_eq!(body_contains.as_deref(), Some("ok"));
            }
            CheckKind::Tcp => panic!("an HTTP check was configured"),
        }

        let hc = "upstreams.app.health_check";
        for (section, at) in [
            ("[upstreams.app.health_check]\ntype = \"udp\"", format!("{hc}.type")),
            ("[upstreams.app.health_check]\ninterval = \"0s\"", format!("{hc}.interval")),
            ("[upstreams.app.health_check]\ninterval = \"often\"", format!("{hc}.interval")),
            ("[upstreams.app.health_check]\ntimeout = \"0s\"", format!("{hc}.timeout")),
            ("[upstreams.app.health_check]\njitter = \"150%\"", format!("{hc}.jitter")),
            ("[upstreams.app.health_check]\npath = \"healthz\"", format!("{hc}.path")),
            ("[upstreams.app.health_check]\nexpected_statuses = [200, \"399-200\"]", format!("{hc}.expected_statuses[1]")),
            ("[upstreams.app.health_check]\nexpected_statuses = [99]", format!("{hc}.expected_statuses[0]")),
            ("[upstreams.app.health_check]\nhealthy_threshold = 0", format!("{hc}.healthy_threshold")),
            ("[upstreams.app.health_check]\nunhealthy_threshold = 0", format!("{hc}.unhealthy_threshold")),
            ("[upstreams.app.health_check]\ntype = \"tcp\"\npath = \"/\"", format!("{hc}.path")),
            ("[upstreams.app.outlier_detection]\nconsecutive_failures = 0", "upstreams.app.outlier_detection.consecutive_failures".into()),
            ("[upstreams.app.outlier_detection]\nmax_ejection_percent = 101", "upstreams.app.outlier_detection.max_ejection_percent".into()),
            ("[upstreams.app.outlier_detection]\nbase_ejection_time = \"1m\"\nmax_ejection_time = \"30s\"", "upstreams.app.outlier_detection.max_ejection_time".into()),
        ] {
            assert_eq!(field_of(&with(section)), at, "{section}");
        }
        let panic = MINIMAL.replace("[upstreams.app]", "[upstreams.app]\nno_healthy = \"panic\"");
        assert_eq!(
            parse(&panic).unwrap().upstreams["app"].no_healthy,
            NoHealthy::Panic
        );
        let bad = MINIMAL.replace(
            "[upstreams.app]",
            "[upstreams.app]\nno_healthy = \"ignore\"",
        );
        assert_eq!(field_of(&bad), "upstreams.app.no_healthy");
    }

    #[test]
    fn retries_only_take_idempotent_methods() {
        let with = |section: &str| MINIMAL.replace("[[routes]]", &format!("{section}\n[[routes]]"));
        let c = parse(&with(
            "[upstreams.app.retries]\nmethods = [\"get\", \"HEAD\", \"OPTIONS\", \"TRACE\", \"PUT\", \"DELETE\"]",
        ))
        .unwrap();
        let r = c.upstreams["app"].retries.clone().unwrap();
        assert_eq!(r.methods.len(), 6);
        assert_eq!(r.methods[0], Method::GET);
        for (methods, index) in [
            ("[\"POST\"]", 0),
            ("[\"GET\", \"patch\"]", 1),
            ("[\"GET\", \"PUT\", \"CONNECT\"]", 2),
            ("[\"PROPFIND\"]", 0),
        ] {
            let text = with(&format!("[upstreams.app.retries]\nmethods = {methods}"));
            match parse(&text) {
                Err(ConfigError::Field { field, message }) => {
                    assert_eq!(field, format!("upstreams.app.retries.methods[{index}]"));
                    assert!(message.contains("not idempotent"), "{message}");
                }
                other => panic!("{methods}: expected a field error, got {other:?}"),
            }
        }
    }

    #[test]
    fn breaker_and_retry_sections_name_bad_fields() {
        let with = |section: &str| MINIMAL.replace("[[routes]]", &format!("{section}\n[[routes]]"));
        let cb = "upstreams.app.circuit_breaker";
        let rt = "upstreams.app.retries";
        for (section, at, says) in [
            (
                "[upstreams.app.circuit_breaker]\nfailure_statuses = [502, 429]",
                format!("{cb}.failure_statuses"),
                "429 is not a 5xx",
            ),
            (
                "[upstreams.app.retries]\nstatuses = [404, 503]",
                format!("{rt}.statuses"),
                "404 is not a 5xx",
            ),
            (
                "[upstreams.app.circuit_breaker]\nconsecutive_failures = 0",
                format!("{cb}.consecutive_failures"),
                "could never open",
            ),
            (
                "[upstreams.app.circuit_breaker]\nhalf_open_probes = 0",
                format!("{cb}.half_open_probes"),
                "at least 1",
            ),
        ] {
            match parse(&with(section)) {
                Err(ConfigError::Field { field, message }) => {
                    assert_eq!(field, at, "{section}");
                    assert!(message.contains(says), "{section}: {message}");
                }
                other => panic!("{section}: expected a field error, got {other:?}"),
            }
        }
        // With a failure rate, the consecutive trigger may be off.
        let rate_only =
            with("[upstreams.app.circuit_breaker]\nconsecutive_failures = 0\nfailure_rate = 0.5");
        let b = parse(&rate_only).unwrap().upstreams["app"]
            .breaker
            .clone()
            .unwrap();
        assert_eq!((b.consecutive_failures, b.failure_rate), (0, Some(0.5)));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = MINIMAL.replace("[upstreams.app]", "[upstreams.app]\nendpoint = \"x\"");
        match parse(&text) {
            Err(ConfigError::Parse(m)) => assert!(m.contains("endpoint"), "{m}"),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn wildcard_hosts_and_methods() {
        let text = format!(
            "{MINIMAL}hosts = [\"Example.org\", \"*.social.example\"]\nmethods = [\"post\"]\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.routes[0].hosts,
            vec![
                HostMatch::Exact("example.org".into()),
                HostMatch::Suffix(".social.example".into())
            ]
        );
        assert_eq!(c.routes[0].methods, vec![Method::POST]);
    }

    #[test]
    fn fetch_settings_have_defaults_and_bad_ones_name_their_field() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.signatures.fetch, FetchConfig::default());
        assert!(!c.signatures.fetch.enabled);
        let set = format!(
            "{MINIMAL}[signatures.fetch]\nenabled = true\ntimeout = \"2s\"\nmax_document_bytes = \"64KiB\"\nallow_http = true\n"
        );
        let f = parse(&set).unwrap().signatures.fetch;
        assert!(f.enabled && f.allow_http && !f.allow_private_addresses);
        assert_eq!(f.timeout, Duration::from_secs(2));
        assert_eq!(f.max_document_bytes, 64 << 10);
        for (line, name) in [
            ("timeout = \"soon\"", "timeout"),
            ("timeout = \"5m\"", "timeout"),
            ("ttl = \"0s\"", "ttl"),
            ("negative_ttl = \"x\"", "negative_ttl"),
            ("max_entries = 0", "max_entries"),
            ("max_document_bytes = \"1TB\"", "max_document_bytes"),
            ("breaker_failures = 0", "breaker_failures"),
            ("breaker_open = \"-\"", "breaker_open"),
        ] {
            let text = format!("{MINIMAL}[signatures.fetch]\n{line}\n");
            assert_eq!(
                field_of(&text),
                format!("signatures.fetch.{name}"),
                "{line}"
            );
        }
    }

    #[test]
    fn rate_limits_and_blocklist_are_validated() {
        use crate::ratelimit::{KeyKind, Mode};
        let limiter =
            |body: &str| format!("{MINIMAL}rate_limits = [\"l\"]\n[rate_limits.l]\n{body}\n");
        let c = parse(&limiter("key = \"client\"\nrate = \"300/5m\"")).unwrap();
        let l = &c.rate_limits["l"];
        assert_eq!(
            (l.key, l.count, l.per, l.burst),
            (KeyKind::Client, 300, Duration::from_secs(300), 300)
        );
        assert_eq!(
            (l.mode, l.max_keys, l.ipv6_prefix),
            (Mode::Enforce, 100_000, 64)
        );
        assert_eq!(c.routes[0].rate_limits, vec!["l".to_string()]);
        assert!(c.routes[0].blocklist);
        let c = parse(&limiter(
            "key = \"route\"\nrate = \"6000/min\"\nburst = 10\nmode = \"observe\"",
        ))
        .unwrap();
        assert_eq!(
            (c.rate_limits["l"].per, c.rate_limits["l"].burst),
            (Duration::from_secs(60), 10)
        );

        assert_eq!(field_of(&limiter("rate = \"1/s\"")), "rate_limits.l.key");
        assert_eq!(
            field_of(&limiter("key = \"ip\"\nrate = \"1/s\"")),
            "rate_limits.l.key"
        );
        for bad in ["\"fast\"", "\"0/s\"", "\"10/fortnight\"", "\"10\""] {
            assert_eq!(
                field_of(&limiter(&format!("key = \"client\"\nrate = {bad}"))),
                "rate_limits.l.rate",
                "{bad}"
            );
        }
        assert_eq!(
            field_of(&limiter("key = \"client\"\nrate = \"1/s\"\nburst = 0")),
            "rate_limits.l.burst"
        );
        assert_eq!(
            field_of(&limiter(
                "key = \"client\"\nrate = \"1/s\"\nmode = \"shadow\""
            )),
            "rate_limits.l.mode"
        );
        // Principal keys need auth on the route, instance keys signature checks.
        assert_eq!(
            field_of(&limiter("key = \"principal\"\nrate = \"1/s\"")),
            "routes[0].rate_limits[0]"
        );
        // Instance keys need the route to check signatures.
        assert_eq!(
            field_of(&limiter("key = \"instance\"\nrate = \"1/s\"")),
            "routes[0].rate_limits[0]"
        );
        let unknown = format!("{MINIMAL}rate_limits = [\"nope\"]\n");
        assert_eq!(field_of(&unknown), "routes[0].rate_limits[0]");

        let proxies =
            format!("{MINIMAL}[forwarding]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.1.2.3/8\"]\n");
        assert_eq!(field_of(&proxies), "forwarding.trusted_proxies[1]");
        let entries = format!("{MINIMAL}[blocklist]\nentries = [\"evil.example\", \"192.0.2.0/24\", \"not a domain\"]\n");
        assert_eq!(field_of(&entries), "blocklist.entries[2]");
        let dir = tempfile_dir();
        let file = dir.join("blocklist.txt");
        std::fs::write(&file, "evil.example\n# a comment\n192.0.2.0/24\n").unwrap();
        let with_file = format!(
            "{MINIMAL}[blocklist]\nfile = {:?}\nentries = [\"spam.example\"]\n",
            file.display().to_string()
        );
        let c = parse(&with_file).unwrap();
        assert_eq!(c.blocklist.list.len(), 3);
        assert_eq!(c.blocklist.file.as_deref(), Some(file.as_path()));
        std::fs::write(&file, "evil.example\nbad entry\n").unwrap();
        match parse(&with_file) {
            Err(ConfigError::Field { field, message }) => {
                assert_eq!(field, "blocklist.file");
                assert!(message.contains("line 2"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let missing = format!("{MINIMAL}[blocklist]\nfile = \"/nonexistent/blocklist.txt\"\n");
        assert_eq!(field_of(&missing), "blocklist.file");
    }

    /// A fresh directory under the system temp dir for one test's files.
    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fedgate-config-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
