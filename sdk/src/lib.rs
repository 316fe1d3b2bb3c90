//! Write fedgate plugins in Rust.
//!
//! A fedgate plugin is a WebAssembly component built for `wasm32-wasip2` that targets the
//! `fedgate:plugin@0.1.0` world (`wit/0.1.0/plugin.wit`). The gateway calls it at fixed
//! points of the request lifecycle: `on-request` after the route matched and the gateway's
//! own checks passed (it may continue, add headers or deny), `on-response` when the response
//! head is ready, and `health-check` when `/health` is asked. This crate hides the generated
//! bindings behind plain Rust:
//!
//! - implement [`Plugin`] on your type and name it once with [`export_plugin!`];
//! - read the request and response through [`Request`] and [`Response`];
//! - answer with a [`Verdict`] and a [`HealthReport`];
//! - declare [`Counter`]s, [`Gauge`]s and [`Histogram`]s in `init` and update them by handle;
//! - log with [`log::info!`] and friends.
//!
//! Off `wasm32` (for `cargo test` on your machine) the same types run on an in-memory backend:
//! the [`testing`] module builds requests and responses and reads back metric values and log
//! lines, so plugin logic is unit-tested without a gateway.
//!
//! # Example
//!
//! A plugin that counts inbox deliveries by method and refuses requests without a
//! `user-agent`:
//!
//! ```
//! use fedgate_sdk::{export_plugin, log, Config, Counter, Hooks, Plugin, Request, Verdict};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings {
//!     #[serde(default = "default_status")]
//!     status: u16,
//! }
//!
//! fn default_status() -> u16 {
//!     403
//! }
//!
//! struct InboxCounter {
//!     deliveries: Counter,
//!     status: u16,
//! }
//!
//! impl Plugin for InboxCounter {
//!     fn init(config: &Config) -> Result<Self, String> {
//!         let settings: Settings = config.parse()?;
//!         let deliveries = Counter::declare(
//!             "inbox_deliveries_total",
//!             "Requests reaching an inbox, by method.",
//!             &["method"],
//!         )?;
//!         Ok(InboxCounter { deliveries, status: settings.status })
//!     }
//!
//!     fn hooks(&self) -> Hooks {
//!         Hooks::ON_REQUEST
//!     }
//!
//!     fn on_request(&mut self, request: &Request) -> Verdict {
//!         let method = request.method();
//!         self.deliveries.inc(&[&method]);
//!         if request.header("user-agent").is_none() {
//!             log::debug!("refusing {} without user-agent", request.request_id());
//!             return Verdict::deny(self.status, "a user-agent is required");
//!         }
//!         Verdict::Continue
//!     }
//! }
//!
//! export_plugin!(InboxCounter);
//!
//! // Natively, the same code runs against the in-memory backend:
//! use fedgate_sdk::testing::{self, TestRequest};
//!
//! let mut plugin: InboxCounter = testing::init(r#"{"status": 400}"#).unwrap();
//! let verdict = plugin.on_request(&TestRequest::post("/users/alice/inbox").build());
//! assert_eq!(verdict.status(), Some(400));
//! assert_eq!(testing::counter_value("inbox_deliveries_total", &["POST"]), 1.0);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (with `crate-type =
//! ["cdylib"]`); the component is `target/wasm32-wasip2/release/<crate>.wasm`.
//!
//! # Runtime model
//!
//! Each instance is single-threaded and its calls never overlap: the gateway calls `init`
//! once, then the hooks one at a time. An instance may be thrown away and re-created at any
//! time (after a failed call, on reload, or to serve several threads), so `init` must give
//! the same result for the same configuration, and state kept in the plugin value is per
//! instance. A panic is written to the gateway log at error level, then the call traps: the
//! gateway counts it, applies the plugin's failure policy and re-creates the instance.

// The bindings name their runtime through `::fedgate_sdk`, which must also resolve here.
#[cfg(target_arch = "wasm32")]
extern crate self as fedgate_sdk;

mod config;
mod http;
mod inbox;
pub mod log;
mod metrics;
mod verdict;

#[cfg(target_arch = "wasm32")]
mod host;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use config::{Config, ConfigError};
pub use http::{Header, Origin, Request, Response, Signer};
pub use inbox::InboxPaths;
pub use metrics::{Counter, CounterSeries, Gauge, GaugeSeries, Histogram, HistogramSeries};
pub use verdict::{HealthReport, HealthStatus, Hooks, Verdict};

/// The ABI version this SDK builds plugins for: the WIT package `fedgate:plugin@0.1.0`.
pub const ABI_VERSION: &str = "0.1.0";

/// A fedgate plugin.
///
/// Implement it on the type that holds your plugin's state (metric handles, parsed
/// configuration, counters kept across requests) and name that type in [`export_plugin!`].
/// Every hook but [`init`](Plugin::init) has a default, so a plugin implements only what it
/// uses; say which hooks to call in [`hooks`](Plugin::hooks).
pub trait Plugin: Sized + 'static {
    /// Creates the instance's plugin value from its configuration: the plugin's `config`
    /// table of the gateway configuration, as JSON (`{}` when there is none).
    ///
    /// Declare metrics here. An error refuses the plugin and the gateway reports the
    /// message: at start-up the gateway does not start, on reload the running version keeps
    /// serving. Must give the same result for the same configuration.
    fn init(config: &Config) -> Result<Self, String>;

    /// The hooks the gateway calls; hooks not named are never called and cost nothing.
    ///
    /// The default names all three, so a plugin that overrides a hook works without more
    /// ado; name only the hooks you implement to save the calls.
    fn hooks(&self) -> Hooks {
        Hooks::ALL
    }

    /// Called for each request on a route the plugin is attached to, before the upstream is
    /// chosen. The default continues.
    fn on_request(&mut self, request: &Request) -> Verdict {
        let _ = request;
        Verdict::Continue
    }

    /// Called when the response head is ready to go to the client: the upstream's, or the
    /// gateway's when the upstream failed. The default does nothing.
    fn on_response(&mut self, request: &Request, response: &Response) {
        let _ = (request, response);
    }

    /// Called when `/health` is requested. The default reports healthy.
    fn health_check(&mut self) -> HealthReport {
        HealthReport::healthy()
    }
}

/// Exports a [`Plugin`] implementation as the component's `handler`.
///
/// Use it once per plugin crate, at the crate root or in any module:
///
/// ```
/// # use fedgate_sdk::{Config, Plugin};
/// struct Noop;
///
/// impl Plugin for Noop {
///     fn init(_config: &Config) -> Result<Self, String> {
///         Ok(Noop)
///     }
/// }
///
/// fedgate_sdk::export_plugin!(Noop);
/// ```
///
/// On `wasm32` it generates the component's exports; elsewhere it only checks that the type
/// implements [`Plugin`], so the crate also builds natively for its unit tests.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __FedgatePluginAdapter = $crate::__private::Adapter<$plugin>;
            $crate::__private::export_world!(
                __FedgatePluginAdapter with_types_in $crate::__private::bindings
            );
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            const fn __fedgate_assert_plugin<P: $crate::Plugin>() {}
            __fedgate_assert_plugin::<$plugin>();
        };
    };
}

/// What [`export_plugin!`] expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::host::{bindings, bindings::__export_plugin_world as export_world, Adapter};
    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestRequest, TestResponse};

    struct Defaults;

    impl Plugin for Defaults {
        fn init(config: &Config) -> Result<Self, String> {
            if config.raw().contains("refuse") {
                return Err("refused".into());
            }
            Ok(Defaults)
        }
    }

    export_plugin!(Defaults);

    #[test]
    fn hooks_have_defaults() {
        let mut plugin: Defaults = testing::init("{}").unwrap();
        assert_eq!(plugin.hooks(), Hooks::ALL);
        let request = TestRequest::get("/").build();
        assert_eq!(plugin.on_request(&request), Verdict::Continue);
        plugin.on_response(&request, &TestResponse::upstream(200).build());
        assert_eq!(plugin.health_check(), HealthReport::healthy());
        assert_eq!(
            testing::init::<Defaults>(r#"{"refuse": true}"#)
                .err()
                .as_deref(),
            Some("refused")
        );
    }
}
