//! fedgate: an edge reverse proxy for federation services that measures what operators need.
//!
//! The public surface is what a program embedding the gateway uses: [`config`] (file →
//! validated [`Config`]), [`Gateway`] (start, reload, drain), [`Metrics`] and
//! [`PluginHost`] (for checking plugins outside a gateway), [`logging`], [`memory`],
//! [`demo`], [`plugin_limits`] and [`fuzzing`] (the fuzz targets' entry points). Every other
//! module is crate-private, public only with the `internals` feature for the benches.
//!
//! Module map, in request order (`docs/architecture.md` has the phase chart and follows one
//! request through these):
//! - `server`: phase 1, accept, TLS, HTTP/1.1 and HTTP/2 connections; `headers`: request
//!   ids, trace context, hop-by-hop and forwarding headers
//! - `proxy`: the request path as its phase chart, `handle`: phases 1 and 2 in `proxy`,
//!   3 to 6 in `proxy::admission`, the plugin phases 7 and 10 in `proxy::plugins`, 8 and 9
//!   in `proxy::forward` (a `Try` owns its breaker admission, endpoint lease and retry
//!   slot); `Rejection` is every
//!   answer the gateway gives in the upstream's place, with the one conversion into a
//!   response
//! - `routing`: phase 2, a pure matcher over route configs
//! - `blocklist` (phase 3, with `netset`: CIDR sets), `ratelimit` (phase 4), `auth`
//!   (phase 5), `signature` (phase 6), `activity` (the federation view of a body, parsed
//!   once), `plugin` (phases 7, 10 and 11's observers)
//! - `breaker` (phase 8 admission), `outcome` (what a try came to, classified once),
//!   `backoff` (failures in a row and the backoff they earn), `retry` (phase 9 budget)
//! - `upstream`: balancing, the endpoint lease, the transport per protocol and `Relay`, the
//!   response body as the upstream sends it; `health`: which endpoints are eligible;
//!   `pool`, `h1`: the HTTP/1.1 pool and the client side of one connection (over any IO);
//!   `transport`: below all of these, the connector, its connection counts and the
//!   upstream-facing TLS client settings; `deadline`: a try's deadline, moved by progress
//! - `upload`: the client's request body on its way upstream; `body`, `record`: the
//!   response body, which ends phase 11 (metrics, access log) and gives the lease back
//! - `metrics`: the request path's families and the helpers each concern registers its own
//!   with; `admin`: `/metrics`, `/health`, `/ready`, `/live`
//! - `config`, `runtime`, `gateway`: config file → validated config → runtime (with
//!   `runtime::Route`, a route with everything it resolves to); reload reads one
//!   `config::ConfigDiff`; drain
//! - `register`: the helpers every concern registers its metric families with
//! - `tls`, `demo`, `logging`, `memory` (the allocator's trim hook, loader threads)

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
    metrics, netset, outcome, plugin, pool, proxy, ratelimit, record, register, retry, routing,
    runtime, server, signature, tls, transport, upload, upstream,
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
