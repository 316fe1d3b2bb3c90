//! Structured logs through `tracing`: JSON lines by default, text for humans. Access-log
//! lines use the `fedgate::access` target so they can be filtered or routed separately.
//!
//! The level (`server.log_level`) changes on reload; the format is fixed at start.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::LogFormat;

/// The filter of the installed subscriber, when this process installed it and `RUST_LOG`
/// does not decide the level.
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber; `RUST_LOG`, when set, overrides `level` (then and on
/// every reload).
pub fn init(format: LogFormat, level: &str) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_decides = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let (json, text) = match format {
        LogFormat::Json => (
            Some(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Text => (None, Some(fmt::layer().with_writer(std::io::stderr))),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .try_init()
        .is_ok();
    // A second init (tests, embedding) keeps the first subscriber.
    if installed && !env_decides {
        let _ = LEVEL.set(handle);
    }
}

/// Applies a reloaded `server.log_level`. Validation has parsed it already.
pub fn set_level(level: &str) {
    let Some(handle) = LEVEL.get() else { return };
    match EnvFilter::try_new(level) {
        Ok(filter) => {
            if handle.reload(filter).is_ok() {
                tracing::info!(level, "log level changed");
            }
        }
        Err(e) => tracing::warn!(level, error = %e, "log level not applied"),
    }
}
