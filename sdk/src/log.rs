//! Logging into the gateway's structured log.
//!
//! Each line carries the plugin's name (field `plugin`); lines at [`Level::Warn`] and
//! [`Level::Error`] also carry the hook being run. Lines below the gateway's log level are
//! discarded, and the macros ask [`enabled`] before formatting, so a disabled `debug!` costs
//! one host call and no allocation:
//!
//! ```
//! use fedgate_sdk::log;
//!
//! let instance = "example.org";
//! log::info!("first activity from {instance}");
//! log::debug!("body of {} bytes", 1800);
//! log::log!(log::Level::Warn, "instance cap reached");
//! ```
//!
//! Natively the lines are kept in memory; read them with
//! [`testing::logs`](crate::testing::logs).

use std::fmt;

#[cfg(target_arch = "wasm32")]
use crate::host::bindings::fedgate::plugin::log as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::backend as imp;

/// The level of a log line, from least to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation worth noting.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// Writes one line at `level`. Prefer the macros, which skip formatting for disabled levels.
// The conversion is to the generated type on wasm32 and the identity natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
pub fn log(level: Level, message: &str) {
    imp::log(level.into(), message);
}

/// Whether a line at `level` would be written.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
pub fn enabled(level: Level) -> bool {
    imp::enabled(level.into())
}

#[doc(hidden)]
#[macro_export]
macro_rules! __fedgate_log {
    ($level:expr, $($arg:tt)+) => {{
        let level: $crate::log::Level = $level;
        if $crate::log::enabled(level) {
            $crate::log::log(level, &::std::format!($($arg)+));
        }
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __fedgate_trace {
    ($($arg:tt)+) => { $crate::log::log!($crate::log::Level::Trace, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __fedgate_debug {
    ($($arg:tt)+) => { $crate::log::log!($crate::log::Level::Debug, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __fedgate_info {
    ($($arg:tt)+) => { $crate::log::log!($crate::log::Level::Info, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __fedgate_warn {
    ($($arg:tt)+) => { $crate::log::log!($crate::log::Level::Warn, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __fedgate_error {
    ($($arg:tt)+) => { $crate::log::log!($crate::log::Level::Error, $($arg)+) };
}

/// Logs a `format!`-style message at the given [`Level`], formatting it only if the level is
/// enabled: `log!(Level::Warn, "cap of {} reached", cap)`.
#[doc(inline)]
pub use crate::__fedgate_log as log;

/// Logs a `format!`-style message at [`Level::Trace`].
#[doc(inline)]
pub use crate::__fedgate_trace as trace;

/// Logs a `format!`-style message at [`Level::Debug`].
#[doc(inline)]
pub use crate::__fedgate_debug as debug;

/// Logs a `format!`-style message at [`Level::Info`].
#[doc(inline)]
pub use crate::__fedgate_info as info;

/// Logs a `format!`-style message at [`Level::Warn`].
#[doc(inline)]
pub use crate::__fedgate_warn as warn;

/// Logs a `format!`-style message at [`Level::Error`].
#[doc(inline)]
pub use crate::__fedgate_error as error;
