//! Configuration: file → validated [`Config`] → runtime.
//!
//! [`load`] reads a TOML file into the raw sections of [`file`] (unknown keys refused, the
//! path of a bad value named), and `validate` turns them into typed values (socket
//! addresses, durations, URIs, methods, loaded certificates), one domain module per part of
//! the file, each naming the field at fault. Nothing binds a port or touches the running
//! gateway until a file has passed here. [`diff`] tells a reload what a new configuration
//! changes against the running one.

mod auth;
mod blocklist;
pub mod diff;
pub(crate) mod file;
mod limits;
mod listener;
mod parse;
mod plugin;
mod route;
mod server;
mod signatures;
mod upstream;

use std::collections::BTreeMap;
use std::path::Path;

pub use auth::{ClientAuth, ClientAuthMode};
pub use blocklist::BlocklistConfig;
pub use diff::ConfigDiff;
pub(crate) use file::FileConfig;
pub use listener::{ListenerConfig, ListenerTls, DEFAULT_IDLE_TIMEOUT, MIN_HEADER_BYTES};
pub use parse::MAX_DURATION;
pub use plugin::{
    FailurePolicy, OutboundConfig, PluginConfig, DEFAULT_PLUGIN_HEALTH_TIMEOUT,
    DEFAULT_PLUGIN_MEMORY, DEFAULT_PLUGIN_OBSERVE_TIMEOUT, DEFAULT_PLUGIN_SERIES,
    DEFAULT_PLUGIN_TIMEOUT, MAX_PLUGIN_BACKGROUND_TIMEOUT, MAX_PLUGIN_TIMEOUT,
};
pub use route::{HostMatch, RouteConfig, SignatureMode};
pub use server::{
    AdminConfig, ClientHeaders, ForwardingConfig, LogFormat, ReadSetting, ReloadConfig,
    ServerConfig, DEFAULT_ADMIN_ADDRESS, DEFAULT_ADMIN_CONNECTIONS,
    DEFAULT_ADMIN_HEADER_READ_TIMEOUT, DEFAULT_EVENT_INTERVAL, DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_PLUGIN_MEMORY_BUDGET, RESTART_ONLY,
};
pub use signatures::{FetchConfig, SignaturesConfig};
pub use upstream::{
    Balance, CheckKind, CheckType, EndpointConfig, HealthCheckConfig, Jitter, NoHealthy,
    OutlierConfig, UpstreamConfig, UpstreamProtocol, DEFAULT_UPSTREAM_CONNECTIONS,
};

/// A configuration error that names the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file, as it was given.
        path: String,
        /// Why it could not be read.
        message: String,
    },
    /// The file is not TOML, or does not fit the schema (an unknown key, a value of the
    /// wrong type): TOML's own message, with its line.
    #[error("{0}")]
    Parse(String),
    /// A value the validation refuses.
    #[error("`{field}`: {message}")]
    Field {
        /// The value's path in the file, e.g. `routes[0].upstream`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
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
    /// `[server]`: worker threads, shutdown grace, logging, plugin memory.
    pub server: ServerConfig,
    /// `[admin]`: the admin listener (`/metrics`, `/health`, `/ready`, `/live`).
    pub admin: AdminConfig,
    /// `[reload]`: whether and how often the file is watched for changes.
    pub reload: ReloadConfig,
    /// `[forwarding]`: the headers added to forwarded requests.
    pub forwarding: ForwardingConfig,
    /// `[[listeners]]`, in file order; at least one.
    pub listeners: Vec<ListenerConfig>,
    /// `[upstreams.NAME]`, by name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Phase 2: `[[routes]]`, in file order (the first match wins).
    pub routes: Vec<RouteConfig>,
    /// `[plugins.NAME]`, by name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Phase 6: `[signatures]`, what routes that check HTTP signatures verify against.
    pub signatures: SignaturesConfig,
    /// Phase 4: the named limiters.
    pub rate_limits: BTreeMap<String, crate::ratelimit::LimiterConfig>,
    /// Phase 3: the blocklist, file entries included.
    pub blocklist: BlocklistConfig,
    /// Phase 5: API keys and the JWT verifier routes with `auth` use.
    pub auth: crate::auth::AuthConfig,
}

/// Largest files the configuration names, by kind.
/// This one: the configuration file itself, 16 MiB.
pub const MAX_CONFIG_FILE: u64 = 16 << 20;
/// The blocklist file (`blocklist.file`): 64 MiB.
pub const MAX_BLOCKLIST_FILE: u64 = 64 << 20;
/// A certificate, private key, CA bundle, public key (`pem_file`) or JWKS file: 1 MiB.
pub const MAX_KEY_FILE: u64 = 1 << 20;
/// A plugin component (`plugins.NAME.path`): 256 MiB.
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
    let document =
        toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
    let file: FileConfig = serde_path_to_error::deserialize(document).map_err(schema_error)?;
    validate(&file, base)
}

/// A file the schema refuses. A value that is none of its setting's choices names the
/// setting's path, as the checks of [`validate`] do; anything else (an unknown key, a value
/// of the wrong type) is reported as TOML reports it, with its line.
fn schema_error(e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let field = e.path().to_string();
    let e = e.into_inner();
    // serde's wording for a string that names no variant of an enum.
    if e.message().starts_with("unknown variant") {
        ConfigError::field(field, e.message())
    } else {
        ConfigError::Parse(e.to_string())
    }
}

/// Turns the raw file into a typed configuration, naming the first bad field. The sections
/// are checked in a fixed order (routes after what they name), so the error reported for a
/// file with several faults is always the same one.
pub(crate) fn validate(file: &FileConfig, base: &Path) -> Result<Config, ConfigError> {
    let server = server::validate_server(&file.server, base)?;
    let admin = server::validate_admin(&file.admin)?;
    let reload = server::validate_reload(&file.reload)?;
    let forwarding = server::validate_forwarding(&file.forwarding)?;
    let listeners = listener::validate_listeners(&file.listeners, base)?;
    let mut upstreams = BTreeMap::new();
    for (name, u) in &file.upstreams {
        upstreams.insert(name.clone(), upstream::validate_upstream(name, u, base)?);
    }
    let plugins = plugin::validate_plugins(&file.plugins, &file.global, &server, base)?;
    let auth = auth::validate_auth(&file.auth, base)?;
    let routes = route::validate_routes(&file.routes, &upstreams, &plugins, &file.global)?;
    auth::check_route_methods(&routes, &auth, &listeners)?;
    let signatures = signatures::validate_signatures(&file.signatures, base)?;
    let rate_limits = limits::validate_rate_limits(&file.rate_limits, &routes)?;
    let blocklist = blocklist::validate_blocklist(&file.blocklist, base)?;
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
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        from_str(text, Path::new("."))
    }

    pub(super) const MINIMAL: &str = r#"
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

    pub(super) fn field_of(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
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
    fn unknown_keys_are_refused_with_their_name() {
        let text = MINIMAL.replace("[upstreams.app]", "[upstreams.app]\nendpoint = \"x\"");
        match parse(&text) {
            Err(ConfigError::Parse(m)) => assert!(m.contains("endpoint"), "{m}"),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn a_value_that_is_none_of_the_choices_names_its_field_and_the_choices() {
        for (from, to, at) in [
            (
                "[upstreams.app]",
                "[upstreams.app]\nbalance = \"random\"",
                "upstreams.app.balance",
            ),
            (
                "[upstreams.app]",
                "[upstreams.app]\nprotocol = \"http3\"",
                "upstreams.app.protocol",
            ),
            (
                "[[routes]]",
                "[[routes]]\nsignatures = \"strict\"",
                "routes[0].signatures",
            ),
            (
                "[[listeners]]",
                "[server]\nlog_format = \"xml\"\n[[listeners]]",
                "server.log_format",
            ),
            (
                "[[listeners]]",
                "[forwarding]\nclient_headers = \"x-real-ip\"\n[[listeners]]",
                "forwarding.client_headers",
            ),
            (
                "[[routes]]",
                "[plugins.p]\npath = \"p.wasm\"\nfailure = \"retry\"\n[[routes]]",
                "plugins.p.failure",
            ),
        ] {
            let bad = to.split('"').rev().nth(1).unwrap();
            match parse(&MINIMAL.replace(from, to)) {
                Err(ConfigError::Field { field, message }) => {
                    assert_eq!(field, at);
                    assert!(message.contains(bad), "{at}: {message}");
                    assert!(message.contains("expected"), "{at}: {message}");
                }
                other => panic!("{at}: expected a field error, got {other:?}"),
            }
        }
        // A value of another type is reported as TOML reports it, with its line.
        let text = MINIMAL.replace("[upstreams.app]", "[upstreams.app]\nbalance = 1");
        match parse(&text) {
            Err(ConfigError::Parse(m)) => {
                assert!(m.contains("balance") && m.contains("line"), "{m}")
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    /// A fresh directory under the system temp dir for one test's files.
    pub(super) fn tempfile_dir() -> PathBuf {
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
