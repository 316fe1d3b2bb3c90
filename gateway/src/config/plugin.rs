//! `[plugins.NAME]` (with its `observe` and `outbound` tables) and `[global]`: Wasm plugins,
//! the bounds of every call they make or serve, and the plugins run on every route.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::parse::{byte_size, duration, is_label_safe, resolve};
use super::{file, ConfigError, ServerConfig};

/// What a plugin's failure (trap, timeout, error) does to the request it was called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum FailurePolicy {
    /// Skip the plugin and serve the request.
    #[serde(rename = "fail_open")]
    Open,
    /// Answer 503.
    #[serde(rename = "fail_closed")]
    Closed,
}

/// One Wasm plugin, validated; the component itself is compiled when the runtime is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// `NAME`, the key of the section: what routes and `[global]` list, and the `plugin`
    /// label of its metrics.
    pub name: String,
    /// The component (`.wasm`) file (`path`, required), resolved against the config file's
    /// directory.
    pub path: PathBuf,
    /// What a failed call does to the request (`failure`, default
    /// [`FailurePolicy::Open`]).
    pub failure: FailurePolicy,
    /// Deadline of one call on the request path (`timeout`, default
    /// [`DEFAULT_PLUGIN_TIMEOUT`], at most [`MAX_PLUGIN_TIMEOUT`]).
    pub timeout: Duration,
    /// Deadline of a health-check call (on a blocking thread, not a worker).
    pub health_check_timeout: Duration,
    /// Linear-memory cap of one instance, in bytes (`memory_limit`, default
    /// [`DEFAULT_PLUGIN_MEMORY`], from 64 KiB to 4 GiB and at most `server.plugin_memory`).
    pub memory_limit: usize,
    /// Label sets each metric the plugin declares may hold; more fold into `other`
    /// (`max_series`, default [`DEFAULT_PLUGIN_SERIES`], at most 1 000 000).
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
    /// Longest one outbound call may take, connection, head and body together
    /// (`outbound.timeout`, default 5 s, at most [`MAX_PLUGIN_BACKGROUND_TIMEOUT`]).
    pub timeout: Duration,
    /// Largest response body accepted, in bytes (`outbound.max_response_bytes`, default
    /// 1 MiB, at most 64 MiB); a larger one fails the call.
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

/// Default series cap of one plugin-declared metric.
pub const DEFAULT_PLUGIN_SERIES: usize = 1000;

/// Every `[plugins.NAME]`, within the memory all plugins share, and `[global]`'s plugins.
pub(super) fn validate_plugins(
    sections: &BTreeMap<String, file::PluginSection>,
    global: &file::GlobalSection,
    server: &ServerConfig,
    base: &Path,
) -> Result<BTreeMap<String, PluginConfig>, ConfigError> {
    let mut plugins = BTreeMap::new();
    for (name, p) in sections {
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
    for (j, p) in global.plugins.iter().enumerate() {
        if !plugins.contains_key(p) {
            return Err(ConfigError::field(
                format!("global.plugins[{j}]"),
                format!("no plugin named {p:?} is defined"),
            ));
        }
        if global.plugins[..j].contains(p) {
            return Err(ConfigError::field(
                format!("global.plugins[{j}]"),
                format!("{p:?} is listed twice"),
            ));
        }
    }
    Ok(plugins)
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
    let failure = p.failure.unwrap_or(FailurePolicy::Open);
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
