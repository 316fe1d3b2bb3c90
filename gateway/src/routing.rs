//! Phase 2: route selection. Routes are tried in configuration order; the first whose host,
//! path prefix and methods all match wins. Host matching ignores case and any port.

use std::sync::Arc;

use http::Method;

use crate::config::{HostMatch, RouteConfig};
use crate::metrics::RouteMetrics;
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

impl Route {
    fn matches(&self, host: Option<&str>, path: &str, method: &Method) -> bool {
        let c = &self.config;
        if !path.starts_with(c.path_prefix.as_str()) {
            return false;
        }
        if !c.methods.is_empty() && !c.methods.contains(method) {
            return false;
        }
        if c.hosts.is_empty() {
            return true;
        }
        let Some(host) = host else { return false };
        c.hosts.iter().any(|h| match h {
            HostMatch::Exact(e) => host.eq_ignore_ascii_case(e),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        })
    }
}

/// The ordered routes of one configuration.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        RouteTable { routes }
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Finds the route for a request; `host` may carry a port, which is ignored.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<&Arc<Route>> {
        let host = host.map(strip_port);
        self.routes.iter().find(|r| r.matches(host, path, method))
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_str;
    use crate::metrics::Metrics;

    fn table(routes: &str) -> RouteTable {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.a]\nendpoints = [\"http://127.0.0.1:1\"]\n{routes}"
        );
        let cfg = from_str(&text, std::path::Path::new(".")).unwrap();
        let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
        let up =
            Arc::new(Upstream::new(cfg.upstreams["a"].clone(), metrics.upstream("a")).unwrap());
        RouteTable::new(
            cfg.routes
                .into_iter()
                .map(|c| {
                    Arc::new(Route {
                        metrics: metrics.route(&c.name, "a"),
                        upstream: up.clone(),
                        response_timeout: std::time::Duration::from_secs(1),
                        signatures: None,
                        limits: Default::default(),
                        breaker: None,
                        retries: None,
                        auth: None,
                        plugins: crate::plugin::Chain::default(),
                        name: c.name.as_str().into(),
                        upstream_name: "a".into(),
                        config: c,
                    })
                })
                .collect(),
        )
    }

    fn name(t: &RouteTable, host: Option<&str>, path: &str, m: &Method) -> Option<String> {
        t.find(host, path, m).map(|r| r.config.name.clone())
    }

    #[tokio::test]
    async fn first_match_in_order_by_host_prefix_and_method() {
        let t = table(
            r#"
[[routes]]
name = "inbox"
hosts = ["social.example"]
path_prefix = "/inbox"
methods = ["POST"]
upstream = "a"
[[routes]]
name = "wild"
hosts = ["*.example.org"]
upstream = "a"
[[routes]]
name = "users"
path_prefix = "/users/"
upstream = "a"
"#,
        );
        assert_eq!(
            name(&t, Some("Social.Example:443"), "/inbox", &Method::POST).as_deref(),
            Some("inbox")
        );
        assert_eq!(
            name(&t, Some("social.example"), "/inbox", &Method::GET),
            None
        );
        assert_eq!(
            name(&t, Some("a.b.example.org"), "/x", &Method::GET).as_deref(),
            Some("wild")
        );
        assert_eq!(name(&t, Some("example.org"), "/x", &Method::GET), None);
        assert_eq!(
            name(&t, None, "/users/alice", &Method::GET).as_deref(),
            Some("users")
        );
        assert_eq!(
            name(&t, Some("[::1]:8080"), "/users/bob", &Method::GET).as_deref(),
            Some("users")
        );
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a.example"), "a.example");
    }
}
