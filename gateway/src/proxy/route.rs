//! A route as the request path runs it: its configuration with everything it resolves to
//! (upstream, limiters, breaker, retries, auth, signature counters, plugins and metric
//! handles), built by the runtime and matched by `routing`.

use std::sync::Arc;

use crate::config::RouteConfig;
use crate::metrics::RouteMetrics;
use crate::routing::Routed;
use crate::upstream::Upstream;

/// A route with its upstream and metric handles resolved.
#[derive(Debug)]
pub struct Route {
    pub config: RouteConfig,
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<RouteMetrics>,
    /// Deadline for response headers: the route's timeout, else the upstream's.
    pub response_timeout: std::time::Duration,
    /// Phase 4: the route's limiters, by the phase their key is known in.
    pub limits: crate::ratelimit::RouteLimits,
    /// Phase 8: the upstream's circuit breaker, when it has one.
    pub breaker: Option<Arc<crate::breaker::Breaker>>,
    /// Phase 9: the upstream's retry policy and budget, when it retries.
    pub retries: Option<Arc<crate::retry::Retries>>,
    /// Phase 5: the route's accepted methods, allow list and counters, when it has `auth`.
    pub auth: Option<crate::auth::RouteAuth>,
    /// Phase 6: the route's verification counters, when it checks signatures.
    pub signatures: Option<crate::signature::verifier::RouteCounters>,
    /// Phase 7 and 10: the route's plugins, global ones first.
    pub plugins: crate::plugin::Chain,
    /// The route's and its upstream's names, as plugins see them.
    pub name: Arc<str>,
    pub upstream_name: Arc<str>,
}

impl Routed for Route {
    fn route_config(&self) -> &RouteConfig {
        &self.config
    }
}
