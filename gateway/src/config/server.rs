//! `[server]`, `[admin]`, `[reload]` and `[forwarding]`: process-wide settings, the admin
//! listener, hot reload, and what the proxy adds to forwarded requests. Also the list of
//! settings that only a restart applies ([`RESTART_ONLY`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;
use serde::Deserialize;

use super::parse::{byte_size, duration, is_token, parse_addr, resolve};
use super::{file, ConfigError};

/// `server.log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `"json"` (the default): one JSON object per line, the event's fields flattened into it.
    Json,
    /// `"text"`: tracing's human-readable lines.
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

/// `[server]`: process-wide settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Worker threads; never zero (0 in the file is resolved to the core count).
    pub workers: usize,
    /// Tasks a worker polls between two checks for new I/O events (tokio's
    /// `event_interval`).
    pub event_interval: u32,
    /// Time in-flight requests get to finish after SIGTERM or SIGINT (`shutdown_grace`,
    /// default 30 s).
    pub shutdown_grace: Duration,
    /// Whether each request gets a log line on target `fedgate::access` (`access_log`,
    /// default `true`).
    pub access_log: bool,
    /// Format of the log lines (`log_format`, default JSON); fixed at start.
    pub log_format: LogFormat,
    /// tracing filter directive (`log_level`, default `"info"`); `RUST_LOG` overrides it.
    pub log_level: String,
    /// Linear memory all plugin instances may hold together.
    pub plugin_memory: usize,
    /// Where compiled plugins are kept between starts; none: compiled on every start.
    pub plugin_cache: Option<PathBuf>,
}

/// `[admin]`: the listener serving `/metrics`, `/health`, `/ready` and `/live`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address the admin server listens on (`address`, default
    /// [`DEFAULT_ADMIN_ADDRESS`]).
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

/// Default of `admin.header_read_timeout`.
pub const DEFAULT_ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Default of `admin.health_timeout`.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Default admin address, also used by `demo`.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";

/// `[reload]`: watching the configuration file. SIGHUP reloads whatever these say.
#[derive(Debug, Clone)]
pub struct ReloadConfig {
    /// Whether a change of the file's content, or of a file it names (plugin components,
    /// the blocklist file, listener certificates), reloads it (`watch`, default `true`).
    pub watch: bool,
    /// How often the files are checked for changes (`poll_interval`, default 2 s).
    pub poll_interval: Duration,
}

/// `forwarding.client_headers`: which headers tell the upstream about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientHeaders {
    /// `X-Forwarded-For`, `-Host` and `-Proto`.
    XForwarded,
    /// RFC 7239 `Forwarded`.
    Forwarded,
    /// The `X-Forwarded-*` headers and `Forwarded`.
    Both,
    /// No client-address headers.
    None,
}

/// `[forwarding]`: what the gateway adds to the requests it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingConfig {
    /// Whether `X-Forwarded-For` (appended to), `-Proto` and `-Host` are set; `true` for
    /// `client_headers` `"x-forwarded"` (the default) and `"both"`.
    pub x_forwarded: bool,
    /// Whether an RFC 7239 `Forwarded` element is added; `true` for `client_headers`
    /// `"forwarded"` and `"both"`.
    pub forwarded: bool,
    /// `Via` entry pseudonym; `None` disables `Via`.
    pub via: Option<String>,
    /// Whether the client's `Host` is forwarded (`preserve_host`, default `true`); `false`
    /// sends the endpoint's authority.
    pub preserve_host: bool,
    /// Header carrying the request id, forwarded and echoed in the response
    /// (`request_id_header`, default `x-request-id`).
    pub request_id_header: HeaderName,
    /// Whether a client's well-formed request id (visible ASCII, at most 200 bytes) is kept
    /// rather than replaced by a new one (`trust_request_id`, default `true`).
    pub trust_request_id: bool,
    /// Proxies whose `X-Forwarded-For` names the client (rate limits, blocklist).
    pub trusted_proxies: crate::netset::NetSet,
}

/// Checking for socket events every 16 task polls rather than tokio's 61 keeps a connection
/// whose data has arrived from waiting behind a whole round of other connections: it lowers
/// the p90 and p99 of a loaded worker by 5 to 20 % at no measurable cost in throughput
/// (`bench/run.sh`, docs/benchmarks.md).
pub const DEFAULT_EVENT_INTERVAL: u32 = 16;

/// Default of `server.plugin_memory`: the linear memory of all plugin instances together.
pub const DEFAULT_PLUGIN_MEMORY_BUDGET: usize = 1 << 30;

pub(super) fn validate_server(
    s: &file::ServerSection,
    base: &Path,
) -> Result<ServerConfig, ConfigError> {
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
    let log_format = s.log_format.unwrap_or(LogFormat::Json);
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
        plugin_cache: match s.plugin_cache.as_deref() {
            None => None,
            Some(p) if p.trim().is_empty() => {
                return Err(ConfigError::field(
                    "server.plugin_cache",
                    "must be a directory path (leave it out to compile plugins on every start)",
                ))
            }
            Some(p) => Some(resolve(base, p)),
        },
    })
}

pub(super) fn validate_admin(a: &file::AdminSection) -> Result<AdminConfig, ConfigError> {
    Ok(AdminConfig {
        address: parse_addr(
            "admin.address",
            a.address.as_deref().unwrap_or(DEFAULT_ADMIN_ADDRESS),
        )?,
        health_timeout: duration(
            "admin.health_timeout",
            a.health_timeout.as_deref(),
            DEFAULT_HEALTH_TIMEOUT,
        )?,
        max_connections: match a.max_connections {
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
            a.header_read_timeout.as_deref(),
            DEFAULT_ADMIN_HEADER_READ_TIMEOUT,
        )?,
    })
}

pub(super) fn validate_reload(r: &file::ReloadSection) -> Result<ReloadConfig, ConfigError> {
    Ok(ReloadConfig {
        watch: r.watch.unwrap_or(true),
        poll_interval: duration(
            "reload.poll_interval",
            r.poll_interval.as_deref(),
            Duration::from_secs(2),
        )?,
    })
}

pub(super) fn validate_forwarding(
    f: &file::ForwardingSection,
) -> Result<ForwardingConfig, ConfigError> {
    let (x_forwarded, forwarded) = match f.client_headers.unwrap_or(ClientHeaders::XForwarded) {
        ClientHeaders::XForwarded => (true, false),
        ClientHeaders::Forwarded => (false, true),
        ClientHeaders::Both => (true, true),
        ClientHeaders::None => (false, false),
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
