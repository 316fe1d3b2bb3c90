//! The component side of the ABI: the bindings generated from `wit/0.1.0`, and the adapter
//! that [`export_plugin!`](crate::export_plugin) exports as the `handler` interface, which
//! keeps the instance's plugin value and converts between the generated types and the
//! SDK's.

// The generated bindings lift and lower values across the component boundary with raw
// pointers, and lending a borrowed host resource to a hook as an SDK `Request` is a
// pointer cast; both need `unsafe`, which the workspace otherwise denies.
#![allow(unsafe_code)]

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::{
    log, Config, Header, HealthReport, HealthStatus, Hooks, Origin, Plugin, Request, Response,
    Verdict,
};

/// Generated from the WIT; reached by plugin crates only through `export_plugin!`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/0.1.0",
        world: "plugin",
        // Plugin crates export through `fedgate_sdk::export_plugin!`, which expands to this
        // macro; they depend on this crate only, so every generated path goes through it.
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "::fedgate_sdk::__private::bindings",
        runtime_path: "::fedgate_sdk::__private::wit_bindgen::rt",
        // Imports take `&str` and `&[&str]`, so updating a metric allocates nothing.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

use bindings::exports::fedgate::plugin::handler;
use bindings::fedgate::plugin::{log as wit_log, types};

thread_local! {
    /// The instance's plugin value, set by `init`. An instance runs one call at a time on a
    /// single thread and calls never nest, so the `RefCell` is never contended.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Implements the generated `handler` interface for a [`Plugin`].
pub struct Adapter<P>(PhantomData<P>);

impl<P> std::fmt::Debug for Adapter<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Adapter")
    }
}

fn with_plugin<P: Plugin, R>(call: impl FnOnce(&mut P) -> R) -> R {
    INSTANCE.with(|instance| {
        let mut instance = instance.borrow_mut();
        let plugin = instance
            .as_mut()
            .and_then(|plugin| plugin.downcast_mut::<P>())
            .expect("a hook was called before init succeeded");
        call(plugin)
    })
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        // The call aborts (and traps) right after this, so the log line is all the operator
        // gets: keep it on one line.
        let message = info.payload_as_str().unwrap_or("(no message)");
        let line = match info.location() {
            Some(at) => format!("plugin panicked at {at}: {message}"),
            None => format!("plugin panicked: {message}"),
        };
        log::log(log::Level::Error, &line.replace('\n', " "));
    }));
}

fn lend_request(request: &types::Request) -> &Request {
    // SAFETY: `Request` is a `#[repr(transparent)]` wrapper around `types::Request`, so the
    // two references have the same layout, and the returned one lives no longer than the
    // borrow the host lent for this call.
    unsafe { &*(request as *const types::Request as *const Request) }
}

fn lend_response(response: &types::Response) -> &Response {
    // SAFETY: as in `lend_request`: `Response` is a `#[repr(transparent)]` wrapper.
    unsafe { &*(response as *const types::Response as *const Response) }
}

impl<P: Plugin> handler::Guest for Adapter<P> {
    fn init(config: String) -> Result<types::Hooks, String> {
        install_panic_hook();
        let plugin = P::init(&Config::new(config))?;
        let hooks = plugin.hooks();
        INSTANCE.with(|instance| *instance.borrow_mut() = Some(Box::new(plugin)));
        Ok(hooks.into())
    }

    fn on_request(request: &types::Request) -> types::Verdict {
        with_plugin(|plugin: &mut P| plugin.on_request(lend_request(request))).into()
    }

    fn on_response(request: &types::Request, response: &types::Response) {
        with_plugin(|plugin: &mut P| {
            plugin.on_response(lend_request(request), lend_response(response))
        });
    }

    fn health_check() -> types::HealthReport {
        with_plugin(|plugin: &mut P| plugin.health_check()).into()
    }
}

impl From<Hooks> for types::Hooks {
    fn from(hooks: Hooks) -> Self {
        let mut out = types::Hooks::empty();
        out.set(types::Hooks::ON_REQUEST, hooks.contains(Hooks::ON_REQUEST));
        out.set(
            types::Hooks::ON_RESPONSE,
            hooks.contains(Hooks::ON_RESPONSE),
        );
        out.set(
            types::Hooks::HEALTH_CHECK,
            hooks.contains(Hooks::HEALTH_CHECK),
        );
        out
    }
}

impl From<Header> for types::Header {
    fn from(header: Header) -> Self {
        types::Header {
            name: header.name,
            value: header.value,
        }
    }
}

impl From<types::Header> for Header {
    fn from(header: types::Header) -> Self {
        Header {
            name: header.name,
            value: header.value,
        }
    }
}

fn wit_headers(headers: Vec<Header>) -> Vec<types::Header> {
    headers.into_iter().map(types::Header::from).collect()
}

impl From<Verdict> for types::Verdict {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Continue => types::Verdict::Continue,
            Verdict::ContinueWith(headers) => types::Verdict::ContinueWith(wit_headers(headers)),
            Verdict::Deny {
                status,
                headers,
                body,
            } => types::Verdict::Deny(types::Denial {
                status,
                headers: wit_headers(headers),
                body,
            }),
        }
    }
}

impl From<HealthReport> for types::HealthReport {
    fn from(report: HealthReport) -> Self {
        types::HealthReport {
            status: match report.status {
                HealthStatus::Healthy => types::HealthStatus::Healthy,
                HealthStatus::Degraded => types::HealthStatus::Degraded,
                HealthStatus::Unhealthy => types::HealthStatus::Unhealthy,
            },
            message: report.message,
        }
    }
}

impl From<types::ResponseOrigin> for Origin {
    fn from(origin: types::ResponseOrigin) -> Self {
        match origin {
            types::ResponseOrigin::Upstream => Origin::Upstream,
            types::ResponseOrigin::Gateway => Origin::Gateway,
        }
    }
}

impl From<log::Level> for wit_log::Level {
    fn from(level: log::Level) -> Self {
        match level {
            log::Level::Trace => wit_log::Level::Trace,
            log::Level::Debug => wit_log::Level::Debug,
            log::Level::Info => wit_log::Level::Info,
            log::Level::Warn => wit_log::Level::Warn,
            log::Level::Error => wit_log::Level::Error,
        }
    }
}
