//! Write fedgate plugins in Rust.
//!
//! A fedgate plugin is a WebAssembly component built for `wasm32-wasip2` that targets the
//! `fedgate:plugin@0.2.0` world (`wit/0.2.0/plugin.wit`). The gateway calls it through two
//! kinds of hook:
//!
//! - **inline** hooks decide, on the request path: `on-request` after the route matched and
//!   the gateway's own checks passed (continue, edit the forwarded request, or reply
//!   locally with any status), and `on-response` when the response head is ready (edit the
//!   client's response fields);
//! - **observers** only count and measure: `observe` receives batches of finished
//!   exchanges after their responses ended, on a thread of the plugin's own, and never
//!   delays a response; `on-tick` runs at an interval on the same thread. Metric plugins
//!   are observers.
//!
//! and `health-check` when `/health` is asked. This crate hides the generated bindings
//! behind plain Rust:
//!
//! - implement [`Plugin`] on your type and name it once with [`export_plugin!`];
//! - read the request and response through [`Request`] and [`Response`], finished
//!   exchanges through [`Exchange`], with the gateway's federation view of the body
//!   ([`Activity`]), the verified [`Signer`] and the auth [`Principal`] already worked out;
//! - answer with a [`Verdict`], a [`ResponseEdit`] and a [`HealthReport`];
//! - declare [`Counter`]s, [`Gauge`]s and [`Histogram`]s in `init` and update them by handle;
//! - keep state every instance shares in the [`store`], read the [`clocks`], call out with
//!   [`outbound`] (from observers and ticks), list the [`gateway`]'s upstreams;
//! - log with [`log::info!`] and friends.
//!
//! Off `wasm32` (for `cargo test` on your machine) the same types run on an in-memory backend:
//! the [`testing`] module builds requests, responses and exchanges, runs the store on a test
//! clock, scripts outbound responses, and reads back metric values and log lines, so plugin
//! logic is unit-tested without a gateway.
//!
//! # Example
//!
//! An observer that counts inbox deliveries by activity type, and an inline check that
//! refuses requests without a `user-agent`:
//!
//! ```
//! use fedgate_sdk::{
//!     export_plugin, log, Config, Counter, Exchange, Hooks, Plugin, Request, Verdict,
//! };
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
//!             "Activities delivered to an inbox, by type.",
//!             &["type"],
//!         )?;
//!         Ok(InboxCounter { deliveries, status: settings.status })
//!     }
//!
//!     fn hooks(&self) -> Hooks {
//!         Hooks::ON_REQUEST | Hooks::OBSERVE
//!     }
//!
//!     fn request_headers(&self) -> Vec<String> {
//!         vec!["user-agent".to_owned()]
//!     }
//!
//!     fn on_request(&mut self, request: &Request) -> Verdict {
//!         if request.declared_headers().get(0).is_none() {
//!             log::debug!("refusing {} without user-agent", request.request_id());
//!             return Verdict::deny(self.status, "a user-agent is required");
//!         }
//!         Verdict::Continue
//!     }
//!
//!     fn observe(&mut self, exchanges: &[Exchange<'_>]) {
//!         for exchange in exchanges {
//!             if let Some(kind) = exchange.activity.as_ref().and_then(|a| a.kind()) {
//!                 self.deliveries.inc(&[kind]);
//!             }
//!         }
//!     }
//! }
//!
//! export_plugin!(InboxCounter);
//!
//! // Natively, the same code runs against the in-memory backend:
//! use fedgate_sdk::testing::{self, TestExchange, TestRequest};
//! use fedgate_sdk::Activity;
//!
//! let mut plugin: InboxCounter = testing::init(r#"{"status": 400}"#).unwrap();
//! let verdict = plugin.on_request(&TestRequest::post("/users/alice/inbox").build());
//! assert_eq!(verdict.status(), Some(400));
//!
//! let follow = Activity { kind: Some("Follow".into()), ..Activity::default() };
//! plugin.observe(&[TestExchange::post("/users/alice/inbox").activity(follow).build()]);
//! assert_eq!(testing::counter_value("inbox_deliveries_total", &["Follow"]), 1.0);
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
//! instance. `observe` and `on-tick` run on one instance at a time, but `health-check` runs
//! on any instance: state that every instance must see belongs in the [`store`]. A panic
//! is written to the gateway log at error level, then the call traps: the gateway counts
//! it, applies the plugin's failure policy and re-creates the instance.

// The bindings name their runtime through `::fedgate_sdk`, which must also resolve here.
#[cfg(target_arch = "wasm32")]
extern crate self as fedgate_sdk;

pub mod clocks;
mod config;
mod exchange;
pub mod gateway;
mod http;
mod inbox;
pub mod log;
mod metrics;
pub mod outbound;
pub mod store;
mod verdict;

#[cfg(target_arch = "wasm32")]
mod host;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

use std::time::Duration;

pub use config::{Config, ConfigError};
pub use exchange::Exchange;
pub use http::{
    Activity, DeclaredHeaders, Header, HttpVersion, Origin, Principal, PrincipalKind, Request,
    Response, Signer, TlsInfo,
};
pub use inbox::InboxPaths;
pub use metrics::{Counter, CounterSeries, Gauge, GaugeSeries, Histogram, HistogramSeries};
pub use verdict::{
    HealthReport, HealthStatus, Hooks, LocalReply, RequestEdit, ResponseEdit, Verdict,
};

/// The ABI version this SDK builds plugins for: the WIT package `fedgate:plugin@0.2.0`.
pub const ABI_VERSION: &str = "0.2.0";

/// At most this many request fields may be registered with [`Plugin::request_headers`].
pub const MAX_REQUEST_HEADERS: usize = 32;

/// The shortest [`Plugin::tick_interval`] the gateway accepts.
pub const MIN_TICK_INTERVAL: Duration = Duration::from_millis(100);

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
    /// The default is [`Hooks::ALL`]: the inline hooks and the health check, so a plugin
    /// that overrides one of those works without more ado. The background hooks,
    /// [`Hooks::OBSERVE`] and [`Hooks::ON_TICK`], each cost the plugin a thread in the
    /// gateway and are called only when named here. Name only the hooks you implement to
    /// save the calls.
    fn hooks(&self) -> Hooks {
        Hooks::ALL
    }

    /// The request fields the plugin reads (at most [`MAX_REQUEST_HEADERS`], names matched
    /// case-insensitively): [`Request::declared_headers`] returns them in one call, and
    /// every [`Exchange::request_headers`] carries them, in this order. Observers see no
    /// other request field. The default registers none.
    fn request_headers(&self) -> Vec<String> {
        Vec::new()
    }

    /// With [`Hooks::ON_TICK`]: the interval between two ticks, at least
    /// [`MIN_TICK_INTERVAL`] (whole milliseconds). `init` fails when `ON_TICK` is named
    /// without an interval. The default is none.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Inline: called for each request on a route the plugin is attached to, before the
    /// upstream is chosen. The default continues.
    fn on_request(&mut self, request: &Request) -> Verdict {
        let _ = request;
        Verdict::Continue
    }

    /// Inline: called when the response head is ready to go to the client: the upstream's,
    /// or the gateway's when the upstream failed. May edit the client's response fields;
    /// the default changes nothing.
    fn on_response(&mut self, request: &Request, response: &Response) -> ResponseEdit {
        let _ = (request, response);
        ResponseEdit::default()
    }

    /// Observer: finished exchanges of the routes the plugin is attached to, in the order
    /// their responses ended, in batches, on one instance at a time, off the request path.
    /// Exchanges the gateway refused itself and local replies are included (see
    /// [`Exchange::admitted`]). The default does nothing.
    fn observe(&mut self, exchanges: &[Exchange<'_>]) {
        let _ = exchanges;
    }

    /// Every [`tick_interval`](Self::tick_interval), on one instance of the plugin, off
    /// the request path. The default does nothing.
    fn on_tick(&mut self) {}

    /// Called when `/health` is requested, on any instance: the worst report of the
    /// plugin's instances counts. The default reports healthy.
    fn health_check(&mut self) -> HealthReport {
        HealthReport::healthy()
    }
}

/// What the gateway prepares for a plugin: its hooks, the request fields it reads, its
/// tick interval; checked as the gateway checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Registration {
    pub(crate) hooks: Hooks,
    pub(crate) request_headers: Vec<String>,
    pub(crate) tick_interval_ms: Option<u32>,
}

impl Registration {
    pub(crate) fn of<P: Plugin>(plugin: &P) -> Result<Registration, String> {
        let hooks = plugin.hooks();
        let request_headers = plugin.request_headers();
        if request_headers.len() > MAX_REQUEST_HEADERS {
            return Err(format!(
                "{} request headers registered, at most {MAX_REQUEST_HEADERS} are allowed",
                request_headers.len()
            ));
        }
        let tick_interval_ms = match (hooks.contains(Hooks::ON_TICK), plugin.tick_interval()) {
            (false, _) => None,
            (true, None) => {
                return Err("the on-tick hook is named without a tick_interval".to_owned())
            }
            (true, Some(interval)) if interval < MIN_TICK_INTERVAL => {
                return Err(format!(
                    "tick_interval {interval:?} is shorter than {MIN_TICK_INTERVAL:?}"
                ))
            }
            (true, Some(interval)) => Some(u32::try_from(interval.as_millis()).unwrap_or(u32::MAX)),
        };
        Ok(Registration {
            hooks,
            request_headers,
            tick_interval_ms,
        })
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
    use crate::testing::{TestExchange, TestRequest, TestResponse};

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
        assert!(plugin.request_headers().is_empty());
        assert_eq!(plugin.tick_interval(), None);
        let request = TestRequest::get("/").build();
        assert_eq!(plugin.on_request(&request), Verdict::Continue);
        assert_eq!(
            plugin.on_response(&request, &TestResponse::upstream(200).build()),
            ResponseEdit::default()
        );
        plugin.observe(&[TestExchange::get("/").build()]);
        plugin.on_tick();
        assert_eq!(plugin.health_check(), HealthReport::healthy());
        assert_eq!(
            testing::init::<Defaults>(r#"{"refuse": true}"#)
                .err()
                .as_deref(),
            Some("refused")
        );
    }

    struct Ticker {
        every: Option<Duration>,
        fields: usize,
    }

    impl Plugin for Ticker {
        fn init(config: &Config) -> Result<Self, String> {
            let (every, fields): (Option<u64>, usize) = config.parse()?;
            Ok(Ticker {
                every: every.map(Duration::from_millis),
                fields,
            })
        }

        fn hooks(&self) -> Hooks {
            Hooks::ON_TICK
        }

        fn tick_interval(&self) -> Option<Duration> {
            self.every
        }

        fn request_headers(&self) -> Vec<String> {
            (0..self.fields).map(|n| format!("x-{n}")).collect()
        }
    }

    #[test]
    fn registrations_are_checked_as_the_gateway_does() {
        let ticker: Ticker = testing::init("[250, 32]").unwrap();
        let registration = Registration::of(&ticker).unwrap();
        assert_eq!(registration.tick_interval_ms, Some(250));
        assert_eq!(registration.request_headers.len(), 32);
        let error = testing::init::<Ticker>("[null, 0]").err().unwrap();
        assert!(error.contains("without a tick_interval"), "{error}");
        let error = testing::init::<Ticker>("[99, 0]").err().unwrap();
        assert!(error.contains("shorter than"), "{error}");
        let error = testing::init::<Ticker>("[100, 33]").err().unwrap();
        assert!(error.contains("at most 32"), "{error}");
    }
}
