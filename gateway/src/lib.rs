//! fedgate: an edge reverse proxy for federation services that measures what operators need.
//!
//! Module map, in request order (see `docs/architecture.md` for the phase chart):
//! - [`server`]: phase 1, accept, TLS, HTTP/1.1 and HTTP/2 connections
//! - [`headers`]: request ids, trace context, hop-by-hop and forwarding headers
//! - [`routing`]: phase 2, route selection
//! - [`blocklist`]: phase 3, blocked networks and instances ([`netset`]: CIDR sets)
//! - [`ratelimit`]: phase 4, named keyed limiters (governor) with bounded state
//! - [`breaker`]: phase 8 admission, a circuit breaker per upstream
//! - [`upstream`]: phases 8 and 9, balancing, the endpoint lease, the transport per protocol
//!   and [`upstream::Relay`], the response body as the upstream sends it; [`health`]: which
//!   endpoints are eligible
//! - [`pool`], [`h1`]: the HTTP/1.1 pool and the client side of one connection (over any IO)
//! - [`transport`]: below all of these, depending on no other module: the connector and its
//!   connection counts, the upstream-facing TLS client settings, `BoxError`
//! - [`retry`]: phase 9 retries of idempotent requests within a budget
//! - [`proxy`]: the request path itself, and `Rejection`, every answer the gateway gives
//!   in the upstream's place and the one conversion into a response
//! - [`upload`]: the client's request body on its way upstream
//! - [`body`], [`record`]: the response body, which ends phase 11 (metrics and access log)
//!   and then gives the endpoint lease back
//! - [`metrics`]: the metric families and their pre-resolved handles
//! - [`auth`]: phase 5, API keys, bearer JWTs (JWKS) and mTLS client certificates
//! - [`signature`]: phase 6, HTTP signatures (draft-cavage, RFC 9421) and body digests
//! - [`activity`]: the federation view of an activity body, parsed once per request
//! - [`plugin`]: phases 7 and 10, Wasm plugins (wasmtime host, ABIs 0.1.0 and 0.2.0,
//!   declared metrics, the compiled-plugin cache, observers, the per-plugin store)
//! - [`admin`]: `/metrics`, `/health`, `/ready`, `/live`
//! - [`config`], [`runtime`], [`gateway`]: config file → validated config → runtime, reload,
//!   drain
//! - [`tls`], [`demo`], [`logging`], [`memory`] (the allocator's trim hook, loader threads)

// `internals` exposes internal modules for the benches; the documented surface is the default one.
#![cfg_attr(feature = "internals", allow(missing_docs))]

/// Declares modules the gateway uses internally: crate-private, and public only with the
/// `internals` feature, which the benches in `benches/` turn on to reach them
/// (`cargo bench -p fedgate --features internals`). Their items are `pub` for that feature.
macro_rules! internal {
    ($($(#[$attr:meta])* $module:ident),* $(,)?) => {$(
        $(#[$attr])*
        #[cfg(feature = "internals")]
        pub mod $module;
        $(#[$attr])*
        #[cfg(not(feature = "internals"))]
        #[allow(unreachable_pub)]
        pub(crate) mod $module;
    )*};
}
pub(crate) use internal;

// What a program embedding the gateway uses: its config, the gateway itself, logging and
// memory set-up, the demo, and the fuzz targets' entry points.
pub mod config;
pub mod demo;
pub mod fuzzing;
pub mod gateway;
pub mod logging;
pub mod memory;

internal!(
    activity, admin, auth, backoff, blocklist, body, breaker, deadline, error, h1, headers, health,
    metrics, netset, outcome, plugin, pool, proxy, ratelimit, record, retry, routing, runtime,
    server, signature, tls, transport, upload, upstream,
);

/// The bounds the gateway holds plugins to. The SDK's test backend imitates them, and a
/// test checks its copies against these.
pub mod plugin_limits {
    pub use crate::config::DEFAULT_PLUGIN_SERIES;
    pub use crate::plugin::{StoreLimits, MAX_LABEL_VALUE, MAX_REQUEST_HEADERS, MIN_TICK};
}

pub use config::Config;
pub use gateway::Gateway;
pub use metrics::Metrics;
pub use plugin::PluginHost;
