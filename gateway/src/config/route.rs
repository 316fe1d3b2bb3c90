//! `[[routes]]`: what a request is matched on (hosts, path prefix, methods) and what a
//! matched request goes through: its upstream, plugin chain, body buffering, signature mode,
//! limiters, blocklist, authentication and allowed upgrades.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use http::Method;
use serde::Deserialize;

use super::auth;
use super::parse::{byte_size, duration, is_label_safe};
use super::{file, ConfigError, PluginConfig, UpstreamConfig};

/// One entry of a route's `hosts`, lower-cased; compared with the request's host without
/// its port, ignoring case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// A host name: matches that name only.
    Exact(String),
    /// `*.example.org`, stored as `.example.org`: matches any subdomain, not the apex.
    Suffix(String),
}

/// One `[[routes]]` entry: what requests it matches and what they go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Unique name, the `route` label of its metrics and access-log lines (`name`, default
    /// `route<N>`, N the entry's index from 0).
    pub name: String,
    /// Hosts the route matches (`hosts`); empty matches any host.
    pub hosts: Vec<HostMatch>,
    /// A plain string prefix the request path must start with (`path_prefix`, default
    /// `/`).
    pub path_prefix: String,
    /// Methods the route matches (`methods`, upper-cased); empty matches any method.
    pub methods: Vec<Method>,
    /// Name of the upstream matched requests go to (`upstream`, required); validation
    /// checks that it is defined.
    pub upstream: String,
    /// Response-header deadline on this route (`timeout`); the smaller of it and the
    /// upstream's `response_timeout` applies. `None`: the upstream's alone.
    pub timeout: Option<Duration>,
    /// Plugins of this route, global ones first, in the order they run.
    pub plugins: Vec<String>,
    /// Request bodies are read whole up to this many bytes before the plugins run.
    pub buffer_body: Option<usize>,
    /// Whether HTTP signatures are checked, and what a failed check does (`signatures`,
    /// default [`SignatureMode::Off`]).
    pub signatures: SignatureMode,
    /// Names of the limiters this route applies, in order.
    pub rate_limits: Vec<String>,
    /// Whether the blocklist applies to this route.
    pub blocklist: bool,
    /// Phase 5: accepted methods and allowed principals; `None` for an open route.
    pub auth: Option<crate::auth::RouteAuthConfig>,
    /// Protocols an `Upgrade` may switch to on this route (lower case; `websocket` by
    /// default). Upgrades to anything else are dropped and the request goes as a plain one.
    pub upgrades: Vec<String>,
}

/// What a route does with HTTP signatures (phase 6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureMode {
    /// No signature checks (the default).
    #[default]
    Off,
    /// Verify and count; forward whatever the result.
    Observe,
    /// Verify; anything but a valid signature is answered 401.
    Enforce,
}

/// Every `[[routes]]` entry, in file order; names unique.
pub(super) fn validate_routes(
    list: &[file::RouteSection],
    upstreams: &BTreeMap<String, UpstreamConfig>,
    plugins: &BTreeMap<String, PluginConfig>,
    global: &file::GlobalSection,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut routes = Vec::with_capacity(list.len());
    let mut names = HashSet::new();
    for (i, r) in list.iter().enumerate() {
        let route = validate_route(i, r, upstreams, plugins, &global.plugins)?;
        if !names.insert(route.name.clone()) {
            return Err(ConfigError::field(
                format!("routes[{i}].name"),
                format!("duplicate route name {:?}", route.name),
            ));
        }
        routes.push(route);
    }
    Ok(routes)
}

fn validate_route(
    i: usize,
    r: &file::RouteSection,
    upstreams: &BTreeMap<String, UpstreamConfig>,
    plugins: &BTreeMap<String, PluginConfig>,
    global_plugins: &[String],
) -> Result<RouteConfig, ConfigError> {
    let field = |k: &str| format!("routes[{i}].{k}");
    let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
    if !is_label_safe(&name) {
        return Err(ConfigError::field(
            field("name"),
            "use letters, digits, '_', '-' or '.'",
        ));
    }
    let mut hosts = Vec::with_capacity(r.hosts.len());
    for (j, h) in r.hosts.iter().enumerate() {
        let h = h.trim().to_ascii_lowercase();
        let bad = |m: &str| ConfigError::field(format!("routes[{i}].hosts[{j}]"), m.to_string());
        if let Some(rest) = h.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') {
                return Err(bad("a wildcard is written *.domain"));
            }
            hosts.push(HostMatch::Suffix(format!(".{rest}")));
        } else if h.is_empty() || h.contains(['*', '/', ' ']) {
            return Err(bad("expected a host name or *.domain"));
        } else {
            hosts.push(HostMatch::Exact(h));
        }
    }
    let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_string());
    if !path_prefix.starts_with('/') {
        return Err(ConfigError::field(
            field("path_prefix"),
            "must start with '/'",
        ));
    }
    let mut methods = Vec::with_capacity(r.methods.len());
    for (j, m) in r.methods.iter().enumerate() {
        let m = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
            ConfigError::field(
                format!("routes[{i}].methods[{j}]"),
                format!("{m:?} is not a method"),
            )
        })?;
        methods.push(m);
    }
    let upstream = r
        .upstream
        .clone()
        .ok_or_else(|| ConfigError::field(field("upstream"), "missing"))?;
    if !upstreams.contains_key(&upstream) {
        return Err(ConfigError::field(
            field("upstream"),
            format!("no upstream named {upstream:?} is defined"),
        ));
    }
    let timeout = match &r.timeout {
        None => None,
        Some(t) => Some(duration(&field("timeout"), Some(t), Duration::ZERO)?),
    };
    let mut chain = global_plugins.to_vec();
    for (j, p) in r.plugins.iter().enumerate() {
        let field = format!("routes[{i}].plugins[{j}]");
        if !plugins.contains_key(p) {
            return Err(ConfigError::field(
                field,
                format!("no plugin named {p:?} is defined"),
            ));
        }
        if chain.contains(p) {
            return Err(ConfigError::field(
                field,
                format!("{p:?} is already in this route's chain (listed twice, or global)"),
            ));
        }
        chain.push(p.clone());
    }
    let buffer_body = match &r.buffer_body {
        None => None,
        Some(v) => Some(byte_size(&field("buffer_body"), v, 1 << 30)?),
    };
    let signatures = r.signatures.unwrap_or_default();
    let auth = auth::validate_route_auth(i, r)?;
    let upgrades = match &r.upgrades {
        None => vec!["websocket".to_string()],
        Some(list) => {
            let mut upgrades = Vec::with_capacity(list.len());
            for (j, u) in list.iter().enumerate() {
                let u = u.trim().to_ascii_lowercase();
                let bad = |m: &str| ConfigError::field(format!("routes[{i}].upgrades[{j}]"), m);
                if u.is_empty()
                    || !u
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                {
                    return Err(bad("not a protocol name (a token such as \"websocket\")"));
                }
                if u == "h2c" {
                    return Err(bad(
                        "h2c cannot be allowed: the upgraded connection would reach the upstream \
                         past routing, auth, signatures, limits and plugins",
                    ));
                }
                upgrades.push(u);
            }
            upgrades
        }
    };
    Ok(RouteConfig {
        name,
        hosts,
        path_prefix,
        methods,
        upstream,
        timeout,
        plugins: chain,
        buffer_body,
        signatures,
        rate_limits: r.rate_limits.clone(),
        blocklist: r.blocklist.unwrap_or(true),
        auth,
        upgrades,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, MINIMAL};
    use super::*;

    #[test]
    fn wildcard_hosts_and_methods() {
        let text = format!(
            "{MINIMAL}hosts = [\"Example.org\", \"*.social.example\"]\nmethods = [\"post\"]\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.routes[0].hosts,
            vec![
                HostMatch::Exact("example.org".into()),
                HostMatch::Suffix(".social.example".into())
            ]
        );
        assert_eq!(c.routes[0].methods, vec![Method::POST]);
    }
}
