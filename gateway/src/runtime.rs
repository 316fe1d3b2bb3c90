//! The swappable part of a running gateway: routes, upstreams and forwarding settings built
//! from one validated [`Config`]. A reload builds a new [`Runtime`] next to the running one,
//! reusing what the reload's [`ConfigDiff`] says is unchanged, then swaps it in with one atomic
//! store.
//! Requests already in flight keep the `Arc<Runtime>` they started with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::breaker::Breaker;
use crate::config::{Config, ConfigDiff, ForwardingConfig, RouteConfig};
use crate::headers::Via;
use crate::metrics::{Metrics, RouteMetrics, UpstreamMetrics};
use crate::plugin::{Chain, Plugin, PluginHost};
use crate::ratelimit::{Limiter, RouteLimits};
use crate::retry::Retries;
use crate::routing::{RouteTable, Routed};
use crate::signature::verifier::Verifier;
use crate::upstream::Upstream;
use prometheus::IntCounter;

/// Route label used for requests that match no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// Upstream label used where no upstream was involved.
pub const NO_UPSTREAM: &str = "none";

/// A route as the request path runs it: its configuration with everything it resolves to
/// (upstream, limiters, breaker, retries, auth, signature counters, plugins and metric
/// handles), matched by `routing`.
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

#[derive(Debug)]
pub struct Runtime {
    pub routes: RouteTable<Route>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub forwarding: ForwardingConfig,
    pub via: Option<Via>,
    pub access_log: bool,
    pub unmatched: Arc<RouteMetrics>,
    /// Loaded plugins by name; a reload keeps those whose file and config did not change.
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    /// Phase 4: the limiters by name; a reload keeps those whose config did not change,
    /// with their state.
    pub limiters: BTreeMap<String, Arc<Limiter>>,
    /// Phase 8 and 9: breakers and retry budgets by upstream name, kept with their upstream.
    pub breakers: BTreeMap<String, Arc<Breaker>>,
    pub retries: BTreeMap<String, Arc<Retries>>,
    /// Phase 3: `fedgate_blocked_requests_total` by `Reason as usize`.
    pub blocked: [IntCounter; 3],
    blocklist_size: prometheus::IntGauge,
    /// Phase 6: the trust store and clock window of signature checks.
    pub verifier: Arc<Verifier>,
    pub config: Arc<Config>,
}

/// Upstream metric handles that outlive rebuilds of the upstream, keyed by name, so a changed
/// upstream keeps counting into the same series and connection gauges.
#[derive(Debug, Default)]
pub struct HandleCache {
    upstreams: HashMap<String, UpstreamMetrics>,
}

/// The runtime a reload replaces, and what the new configuration changes against its
/// configuration: what [`Runtime::build`] and [`load_plugins`] carry over.
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    pub runtime: &'a Runtime,
    pub diff: &'a ConfigDiff,
}

impl Runtime {
    /// Builds a runtime; what `previous.diff` says is unchanged is carried over from
    /// `previous.runtime` as it is. `plugins` are the config's plugins, loaded by
    /// [`load_plugins`].
    pub fn build(
        config: Config,
        metrics: &Metrics,
        previous: Option<Previous<'_>>,
        cache: &mut HandleCache,
        plugins: BTreeMap<String, Arc<Plugin>>,
    ) -> Result<Runtime, String> {
        let mut upstreams = BTreeMap::new();
        let mut breakers = BTreeMap::new();
        let mut retries = BTreeMap::new();
        for (name, uc) in &config.upstreams {
            // An unchanged upstream keeps its breaker state and retry budget.
            let kept = previous
                .filter(|p| p.diff.upstreams.keeps(name))
                .map(|p| p.runtime);
            if let Some(bc) = &uc.breaker {
                let b = kept
                    .and_then(|p| p.breakers.get(name).cloned())
                    .unwrap_or_else(|| {
                        Arc::new(Breaker::new(name, bc.clone(), metrics.breaker(name)))
                    });
                breakers.insert(name.clone(), b);
            }
            if let Some(rc) = &uc.retries {
                let r = kept
                    .and_then(|p| p.retries.get(name).cloned())
                    .unwrap_or_else(|| Arc::new(Retries::new(rc.clone(), metrics.retries(name))));
                retries.insert(name.clone(), r);
            }
            let upstream = match kept.and_then(|p| p.upstreams.get(name)) {
                Some(u) => u.clone(),
                None => {
                    let handles = cache
                        .upstreams
                        .entry(name.clone())
                        .or_insert_with(|| metrics.upstream(name))
                        .clone();
                    Arc::new(
                        Upstream::new(uc.clone(), handles)
                            .map_err(|e| format!("upstreams.{name}: {e}"))?,
                    )
                }
            };
            upstreams.insert(name.clone(), upstream);
        }
        let verifier = Arc::new(Verifier::new(
            &config.signatures,
            metrics.signature_families(),
            previous
                .filter(|p| !p.diff.fetch_changed)
                .map(|p| &*p.runtime.verifier),
        ));
        let mut limiters = BTreeMap::new();
        for (name, lc) in &config.rate_limits {
            let kept = previous
                .filter(|p| p.diff.rate_limits.keeps(name))
                .and_then(|p| p.runtime.limiters.get(name))
                .cloned();
            let limiter =
                kept.unwrap_or_else(|| Arc::new(Limiter::new(lc.clone(), metrics.limiter(name))));
            limiters.insert(name.clone(), limiter);
        }
        let families = metrics.blocklist_families();
        let blocklist_size = families.size.clone();
        let blocked = crate::blocklist::Reason::ALL
            .map(|r| families.blocked.with_label_values(&[r.as_str()]));
        let auth = Arc::new(config.auth.clone());
        let mut routes = Vec::with_capacity(config.routes.len());
        for rc in &config.routes {
            let upstream = upstreams.get(&rc.upstream).cloned().ok_or_else(|| {
                format!("route {} names unknown upstream {}", rc.name, rc.upstream)
            })?;
            let response_timeout = match rc.timeout {
                Some(t) => t.min(upstream.config.response_timeout),
                None => upstream.config.response_timeout,
            };
            let chain = rc
                .plugins
                .iter()
                .map(|p| {
                    plugins
                        .get(p)
                        .cloned()
                        .ok_or_else(|| format!("route {} names unknown plugin {p}", rc.name))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let signatures = (rc.signatures != crate::config::SignatureMode::Off)
                .then(|| verifier.route_counters(&rc.name));
            let limits = RouteLimits::new(
                &rc.name,
                &rc.rate_limits
                    .iter()
                    .map(|l| {
                        limiters
                            .get(l)
                            .cloned()
                            .ok_or_else(|| format!("route {} names unknown limiter {l}", rc.name))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            );
            let route_auth = rc.auth.as_ref().map(|ra| {
                crate::auth::RouteAuth::new(&rc.name, ra, auth.clone(), metrics.auth_attempts())
            });
            let (name, upstream_name): (Arc<str>, Arc<str>) =
                (rc.name.as_str().into(), rc.upstream.as_str().into());
            routes.push(Arc::new(Route {
                breaker: breakers.get(&rc.upstream).cloned(),
                retries: retries.get(&rc.upstream).cloned(),
                limits,
                auth: route_auth,
                signatures,
                plugins: Chain::new(chain, &name, &upstream_name),
                name,
                upstream_name,
                metrics: metrics.route(&rc.name, &rc.upstream),
                config: rc.clone(),
                upstream,
                response_timeout,
            }));
        }
        let via = config.forwarding.via.as_deref().and_then(Via::new);
        Ok(Runtime {
            breakers,
            retries,
            limiters,
            blocked,
            blocklist_size,
            verifier,
            routes: RouteTable::new(routes),
            upstreams,
            forwarding: config.forwarding.clone(),
            via,
            access_log: config.server.access_log,
            unmatched: metrics.route(UNMATCHED_ROUTE, NO_UPSTREAM),
            plugins,
            config: Arc::new(config),
        })
    }

    /// Drops the metric series of upstreams and limiters that `next` no longer has, and stops
    /// the health monitors of upstreams it rebuilt; `diff` is the reload's, from this
    /// runtime's configuration to `next`'s.
    pub fn retire_removed(
        &self,
        next: &Runtime,
        diff: &ConfigDiff,
        metrics: &Metrics,
        cache: &mut HandleCache,
    ) {
        for name in &diff.rate_limits.removed {
            metrics.forget_limiter(name);
        }
        for name in self
            .upstreams
            .keys()
            .filter(|n| next.upstreams.contains_key(*n))
        {
            let breaker = self.breakers.contains_key(name) && !next.breakers.contains_key(name);
            let retries = self.retries.contains_key(name) && !next.retries.contains_key(name);
            metrics.forget_resilience(name, breaker, retries);
        }
        for (name, old) in &self.upstreams {
            if diff.upstreams.keeps(name) {
                continue;
            }
            let kept = next.upstreams.get(name);
            // Replaced or removed: its monitor stops, and the health gauges of endpoints
            // the upstream no longer has go.
            old.stop_health();
            for e in &old.endpoints {
                if !kept.is_some_and(|u| u.endpoints.iter().any(|k| k.label == e.label)) {
                    metrics.forget_endpoint(name, &e.label);
                }
            }
            if diff.upstreams.removed.contains(name) {
                cache.upstreams.remove(name);
                metrics.forget_upstream(name);
            }
        }
    }

    /// Publishes the gauges that describe this runtime's config, and starts the health
    /// monitors of new upstreams, as it starts serving.
    pub fn publish(&self) {
        for u in self.upstreams.values() {
            u.start_health();
        }
        self.verifier.publish();
        self.blocklist_size
            .set(self.config.blocklist.list.len() as i64);
    }

    /// Publishes gauges that are computed rather than counted (before each scrape).
    pub fn refresh_gauges(&self) {
        for u in self.upstreams.values() {
            u.metrics.refresh_connections();
        }
    }
}

/// Loads the plugins `config` names: a plugin whose section `previous.diff` finds unchanged,
/// and whose file is unchanged too, is kept as it is (instances, state and all); the others
/// are compiled (or read from `server.plugin_cache`) on the loader threads, side by side,
/// and started. Any failure names the plugin and leaves `previous` serving.
pub async fn load_plugins(
    host: &Arc<PluginHost>,
    config: &Config,
    previous: Option<Previous<'_>>,
    metrics: &Metrics,
) -> Result<BTreeMap<String, Arc<Plugin>>, String> {
    host.set_upstreams(config);
    let cache = match &config.server.plugin_cache {
        Some(dir) if !config.plugins.is_empty() => {
            let (h, dir) = (host.clone(), dir.clone());
            Some(Arc::new(
                crate::memory::on_loader(move || h.cache(&dir)).await??,
            ))
        }
        _ => None,
    };
    let loads = config.plugins.iter().map(|(name, pc)| {
        let cache = cache.clone();
        async move {
            let path = pc.path.clone();
            let bytes = crate::memory::on_loader(move || {
                crate::config::read_file(&path, crate::config::MAX_PLUGIN_FILE)
            })
            .await
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| format!("plugins.{name}.path: {}: {e}", pc.path.display()))?;
            let digest = crate::plugin::digest(&bytes);
            let kept = previous
                .filter(|p| p.diff.plugins.keeps(name))
                .and_then(|p| p.runtime.plugins.get(name))
                .filter(|p| p.digest == digest);
            if let Some(p) = kept {
                return Ok((name.clone(), p.clone()));
            }
            let (h, pc2) = (host.clone(), pc.clone());
            let started = std::time::Instant::now();
            let result = crate::memory::on_loader(move || h.load(&pc2, &bytes, cache.as_deref()))
                .await
                .map_err(|e| format!("plugins.{name}: {e}"))?;
            if previous.is_some() {
                metrics.plugin_reload(name, result.is_ok());
            }
            let plugin = result.map_err(|e| format!("plugins.{name}: {e}"))?;
            tracing::info!(
                plugin = %name,
                path = %pc.path.display(),
                load_ms = started.elapsed().as_millis() as u64,
                on_request = plugin.wants_request(),
                on_response = plugin.wants_response(),
                health_check = plugin.has_health_check(),
                observe = plugin.observes(),
                on_tick = plugin.ticks(),
                "plugin loaded"
            );
            Ok::<_, String>((name.clone(), Arc::new(plugin)))
        }
    });
    // Every load runs to its end, so each plugin's reload is counted; the first error (in
    // the config's order) is the one reported.
    futures_util::future::join_all(loads)
        .await
        .into_iter()
        .collect()
}
