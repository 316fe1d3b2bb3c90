//! What a plugin may know of the gateway it runs in.
//!
//! ```
//! use fedgate_sdk::gateway;
//!
//! // The worst status this plugin may report for each upstream.
//! let worst: Vec<(String, &str)> = gateway::upstreams()
//!     .into_iter()
//!     .map(|u| (u.name, if u.critical { "unhealthy" } else { "degraded" }))
//!     .collect();
//! # assert!(worst.is_empty());
//! ```

#[cfg(target_arch = "wasm32")]
use crate::host::bindings::fedgate::plugin::gateway as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::backend::gateway as imp;

/// An upstream of the running configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamInfo {
    /// Its name, as routes and exchanges name it.
    pub name: String,
    /// Whether its trouble makes `/health` unhealthy (`critical` in its config). A plugin
    /// judging upstreams should report at most
    /// [`Degraded`](crate::HealthStatus::Degraded) for one that is not.
    pub critical: bool,
}

/// The upstreams of the running configuration, by name. Natively:
/// [`testing::set_upstreams`](crate::testing::set_upstreams) (none unless set).
pub fn upstreams() -> Vec<UpstreamInfo> {
    imp::upstreams()
        .into_iter()
        .map(|upstream| UpstreamInfo {
            name: upstream.name,
            critical: upstream.critical,
        })
        .collect()
}
