//! Phase 2: route selection, a pure matcher over the configured routes. Routes are tried in
//! configuration order; the first whose host, path prefix and methods all match wins. Host
//! matching ignores case and any port. What a route resolves to (upstream, limiters,
//! plugins, metric handles) is the table's business, not the matcher's: see `runtime::Route`.

use std::sync::Arc;

use http::Method;

use crate::config::{HostMatch, RouteConfig};

/// What the matcher reads of a routed value: its route's configuration.
pub trait Routed {
    fn route_config(&self) -> &RouteConfig;
}

impl Routed for RouteConfig {
    fn route_config(&self) -> &RouteConfig {
        self
    }
}

/// The ordered routes of one configuration.
#[derive(Debug)]
pub struct RouteTable<T> {
    routes: Vec<Arc<T>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable { routes: Vec::new() }
    }
}

impl<T: Routed> RouteTable<T> {
    pub fn new(routes: Vec<Arc<T>>) -> Self {
        RouteTable { routes }
    }

    pub fn routes(&self) -> &[Arc<T>] {
        &self.routes
    }

    /// Finds the route for a request; `host` may carry a port, which is ignored.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<&Arc<T>> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| matches(r.route_config(), host, path, method))
    }
}

/// Whether a request for `host` (without its port), `path` and `method` takes route `c`.
fn matches(c: &RouteConfig, host: Option<&str>, path: &str, method: &Method) -> bool {
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

    fn table(routes: &str) -> RouteTable<RouteConfig> {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.a]\nendpoints = [\"http://127.0.0.1:1\"]\n{routes}"
        );
        let cfg = from_str(&text, std::path::Path::new(".")).unwrap();
        RouteTable::new(cfg.routes.into_iter().map(Arc::new).collect())
    }

    fn name(
        t: &RouteTable<RouteConfig>,
        host: Option<&str>,
        path: &str,
        m: &Method,
    ) -> Option<String> {
        t.find(host, path, m).map(|r| r.name.clone())
    }

    #[test]
    fn first_match_in_order_by_host_prefix_and_method() {
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
