//! `[upstreams.NAME]`: endpoints, balancing, timeouts, upstream TLS, and the resilience
//! sections that hang off an upstream: active health checks, outlier detection, the circuit
//! breaker and retries.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, Uri};
use serde::Deserialize;

use super::parse::{duration, duration_or_zero, is_label_safe, resolve};
use super::{file, ConfigError};

/// `upstreams.NAME.balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// `"round_robin"` (the default): eligible endpoints in turn.
    RoundRobin,
    /// `"least_in_flight"`: the eligible endpoint with the fewest requests in flight; ties
    /// go in round-robin order.
    LeastInFlight,
}

/// `upstreams.NAME.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// `"http1"` (the default): HTTP/1.1, on pooled connections.
    Http1,
    /// `"http2"`: HTTP/2, by prior knowledge on `http://` endpoints and through ALPN on
    /// `https://` ones. It has no `Upgrade`, so upgrade requests to it are answered 501.
    Http2,
}

/// One entry of `upstreams.NAME.endpoints`: where requests are sent (a URI with no path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// `host:port` to connect to, as written in the URI.
    pub authority: http::uri::Authority,
}

impl fmt::Display for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// One `[upstreams.NAME]` section: a group of endpoints routes send requests to.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// `NAME`, the key of the section: what routes name, and the `upstream` label of its
    /// metrics.
    pub name: String,
    /// The endpoints (`endpoints`, required): at least one, none twice.
    pub endpoints: Vec<EndpointConfig>,
    /// How an endpoint is chosen for a request (`balance`, default round robin).
    pub balance: Balance,
    /// The protocol spoken to the endpoints (`protocol`, default HTTP/1.1).
    pub protocol: UpstreamProtocol,
    /// Longest a TCP (and TLS) connect to an endpoint may take; past it the request is
    /// answered 502 (`connect_timeout`, default 5 s).
    pub connect_timeout: Duration,
    /// Longest wait without progress for the response head, past which the request is
    /// answered 504, and between two reads of the response body, past which the body is
    /// cut off (`response_timeout`, default 60 s). A route's `timeout` may shorten it.
    pub response_timeout: Duration,
    /// Time after which an idle pooled connection is closed (`idle_timeout`, default 90 s).
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint (`max_idle_per_endpoint`, default 256).
    pub max_idle_per_endpoint: usize,
    /// Most HTTP/1.1 connections open to the upstream at once (idle and in use, all
    /// endpoints together; upgraded tunnels not counted).
    pub max_connections: usize,
    /// PEM bundle of the roots `https://` endpoints are verified against (`tls.ca_file`,
    /// resolved against the config file's directory); `None`: the Mozilla roots of
    /// `webpki-roots`.
    pub tls_ca_file: Option<PathBuf>,
    /// Name verified in endpoint certificates and sent as SNI (`tls.server_name`); `None`:
    /// each endpoint's host.
    pub tls_server_name: Option<String>,
    /// An unhealthy critical upstream makes `/health` unhealthy (503); others degrade it.
    pub critical: bool,
    /// The circuit breaker (`[upstreams.NAME.circuit_breaker]`); `None`: no breaker.
    pub breaker: Option<crate::breaker::BreakerConfig>,
    /// Retries of idempotent requests (`[upstreams.NAME.retries]`); `None`: no retries.
    pub retries: Option<crate::retry::RetryConfig>,
    /// Active checks of every endpoint; `None`: none run.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive ejection of endpoints whose requests keep failing; `None`: off.
    pub outlier_detection: Option<OutlierConfig>,
    /// What balancing does when no endpoint is eligible.
    pub no_healthy: NoHealthy,
}

/// What an upstream does when none of its endpoints is eligible for traffic
/// (`upstreams.NAME.no_healthy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoHealthy {
    /// 503 `no healthy upstream`.
    Fail,
    /// Spread traffic over every endpoint, as Envoy's panic threshold does.
    Panic,
}

/// `upstreams.NAME.health_check.type`: what kind of check, before its settings are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckType {
    /// `"http"` (the default): a `GET` whose answer is checked.
    Http,
    /// `"tcp"`: a TCP connect, nothing sent.
    Tcp,
}

/// How an active check probes an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A GET of `path`: passes when the status is in `expected` (inclusive ranges) and the
    /// body contains `body_contains`, if set.
    Http {
        /// Path and query requested (`path`, default `/`).
        path: http::uri::PathAndQuery,
        /// Statuses that pass, as inclusive ranges (`expected_statuses`, default
        /// 200-399).
        expected: Vec<(u16, u16)>,
        /// Text the body must contain (`body_contains`); `None`: the body is not checked.
        body_contains: Option<String>,
    },
    /// A TCP connect to the endpoint (no TLS handshake, no request).
    Tcp,
}

/// The random extra wait added to each check interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Up to this percentage of the interval.
    Percent(u32),
    /// Up to this duration.
    Fixed(Duration),
}

impl Jitter {
    /// The largest extra wait for `interval`.
    pub fn max(self, interval: Duration) -> Duration {
        match self {
            Jitter::Percent(p) => interval * p / 100,
            Jitter::Fixed(d) => d,
        }
    }
}

/// `[upstreams.NAME.health_check]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// How an endpoint is probed (`type` and its settings, default an HTTP `GET /`).
    pub kind: CheckKind,
    /// Time from the start of one check of an endpoint to the start of the next
    /// (`interval`, default 10 s).
    pub interval: Duration,
    /// Random extra wait added to each interval and before the first check (`jitter`,
    /// default 10 % of the interval).
    pub jitter: Jitter,
    /// Longest one check may take before it counts as failed (`timeout`, default 2 s).
    pub timeout: Duration,
    /// Consecutive passing checks that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failing checks that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// `[upstreams.NAME.outlier_detection]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failed forwards in a row on one endpoint that eject it (`consecutive_failures`,
    /// default 5, at least 1).
    pub consecutive_failures: u32,
    /// Length of an endpoint's first ejection; the n-th lasts n times this
    /// (`base_ejection_time`, default 30 s).
    pub base_ejection_time: Duration,
    /// Longest an ejection lasts (`max_ejection_time`, default 300 s, or
    /// `base_ejection_time` if that is longer).
    pub max_ejection_time: Duration,
    /// At most this share (0-100) of the endpoints are ejected at once.
    pub max_ejection_percent: u32,
}

/// Default of `upstreams.NAME.max_connections`.
pub const DEFAULT_UPSTREAM_CONNECTIONS: usize = 1024;

pub(super) fn validate_upstream(
    name: &str,
    u: &file::UpstreamSection,
    base: &Path,
) -> Result<UpstreamConfig, ConfigError> {
    let field = |k: &str| format!("upstreams.{name}.{k}");
    if !is_label_safe(name) {
        return Err(ConfigError::field(
            format!("upstreams.{name}"),
            "upstream names use letters, digits, '_', '-' or '.'",
        ));
    }
    if u.endpoints.is_empty() {
        return Err(ConfigError::field(
            field("endpoints"),
            "at least one endpoint is required",
        ));
    }
    let mut endpoints = Vec::with_capacity(u.endpoints.len());
    for (i, e) in u.endpoints.iter().enumerate() {
        let ep = parse_endpoint(e)
            .map_err(|m| ConfigError::field(format!("upstreams.{name}.endpoints[{i}]"), m))?;
        if endpoints.contains(&ep) {
            return Err(ConfigError::field(
                format!("upstreams.{name}.endpoints[{i}]"),
                format!("{e} is listed twice"),
            ));
        }
        endpoints.push(ep);
    }
    let balance = u.balance.unwrap_or(Balance::RoundRobin);
    let protocol = u.protocol.unwrap_or(UpstreamProtocol::Http1);
    let (tls_ca_file, tls_server_name) = match &u.tls {
        None => (None, None),
        Some(t) => {
            let ca = t.ca_file.as_deref().map(|p| resolve(base, p));
            if let Some(ca) = &ca {
                crate::tls::load_roots(ca)
                    .map_err(|e| ConfigError::field(field("tls.ca_file"), e))?;
            }
            if let Some(sn) = &t.server_name {
                if rustls::pki_types::ServerName::try_from(sn.as_str()).is_err() {
                    return Err(ConfigError::field(
                        field("tls.server_name"),
                        format!("{sn:?} is not a valid server name"),
                    ));
                }
            }
            (ca, t.server_name.clone())
        }
    };
    let max_idle_per_endpoint = u.max_idle_per_endpoint.unwrap_or(256);
    let max_connections = u.max_connections.unwrap_or(DEFAULT_UPSTREAM_CONNECTIONS);
    if !(1..=1_000_000).contains(&max_connections) {
        return Err(ConfigError::field(
            field("max_connections"),
            "must be between 1 and 1000000",
        ));
    }
    let health_check = u
        .health_check
        .as_ref()
        .map(|h| validate_health_check(&field("health_check"), h))
        .transpose()?;
    let outlier_detection = u
        .outlier_detection
        .as_ref()
        .map(|o| validate_outlier(&field("outlier_detection"), o))
        .transpose()?;
    let no_healthy = u.no_healthy.unwrap_or(NoHealthy::Fail);
    Ok(UpstreamConfig {
        health_check,
        outlier_detection,
        no_healthy,
        name: name.to_string(),
        endpoints,
        balance,
        protocol,
        connect_timeout: duration(
            &field("connect_timeout"),
            u.connect_timeout.as_deref(),
            Duration::from_secs(5),
        )?,
        response_timeout: duration(
            &field("response_timeout"),
            u.response_timeout.as_deref(),
            Duration::from_secs(60),
        )?,
        idle_timeout: duration(
            &field("idle_timeout"),
            u.idle_timeout.as_deref(),
            Duration::from_secs(90),
        )?,
        max_idle_per_endpoint,
        max_connections,
        tls_ca_file,
        tls_server_name,
        critical: u.critical.unwrap_or(true),
        breaker: u
            .circuit_breaker
            .as_ref()
            .map(|b| validate_breaker(name, b))
            .transpose()?,
        retries: u
            .retries
            .as_ref()
            .map(|r| validate_retries(name, r))
            .transpose()?,
    })
}

fn statuses(field: &str, list: &[u16]) -> Result<Vec<u16>, ConfigError> {
    if let Some(bad) = list.iter().find(|s| !(500..=599).contains(*s)) {
        return Err(ConfigError::field(
            field,
            format!(
                "{bad} is not a 5xx status (a 4xx is the client's failure, not the upstream's)"
            ),
        ));
    }
    Ok(list.to_vec())
}

fn share(field: &str, v: f64, zero_ok: bool) -> Result<f64, ConfigError> {
    if v.is_finite() && v <= 1.0 && (v > 0.0 || (zero_ok && v == 0.0)) {
        Ok(v)
    } else {
        Err(ConfigError::field(
            field,
            format!("{v} is not a share between 0 and 1"),
        ))
    }
}

fn validate_breaker(
    name: &str,
    b: &file::CircuitBreakerSection,
) -> Result<crate::breaker::BreakerConfig, ConfigError> {
    let d = crate::breaker::BreakerConfig::default();
    let field = |k: &str| format!("upstreams.{name}.circuit_breaker.{k}");
    let failure_rate = b
        .failure_rate
        .map(|r| share(&field("failure_rate"), r, false))
        .transpose()?;
    let consecutive_failures = b.consecutive_failures.unwrap_or(d.consecutive_failures);
    if consecutive_failures == 0 && failure_rate.is_none() {
        return Err(ConfigError::field(
            field("consecutive_failures"),
            "0 turns the consecutive trigger off, and no failure_rate is set: the breaker could never open",
        ));
    }
    let open_duration = duration(
        &field("open_duration"),
        b.open_duration.as_deref(),
        d.open_duration,
    )?;
    let max_open_duration = duration(
        &field("max_open_duration"),
        b.max_open_duration.as_deref(),
        d.max_open_duration.max(open_duration),
    )?;
    if max_open_duration < open_duration {
        return Err(ConfigError::field(
            field("max_open_duration"),
            "must not be shorter than open_duration",
        ));
    }
    let half_open_probes = b.half_open_probes.unwrap_or(d.half_open_probes);
    if half_open_probes == 0 {
        return Err(ConfigError::field(
            field("half_open_probes"),
            "must be at least 1",
        ));
    }
    Ok(crate::breaker::BreakerConfig {
        consecutive_failures,
        failure_rate,
        window: duration(&field("window"), b.window.as_deref(), d.window)?,
        min_requests: b.min_requests.unwrap_or(d.min_requests),
        open_duration,
        max_open_duration,
        jitter: b
            .jitter
            .map(|j| share(&field("jitter"), j, true))
            .transpose()?
            .unwrap_or(d.jitter),
        half_open_probes,
        failure_statuses: match &b.failure_statuses {
            Some(list) => statuses(&field("failure_statuses"), list)?,
            None => d.failure_statuses,
        },
    })
}

fn validate_retries(
    name: &str,
    r: &file::RetriesSection,
) -> Result<crate::retry::RetryConfig, ConfigError> {
    let d = crate::retry::RetryConfig::default();
    let field = |k: &str| format!("upstreams.{name}.retries.{k}");
    let max_retries = r.max_retries.unwrap_or(d.max_retries);
    if max_retries > 10 {
        return Err(ConfigError::field(field("max_retries"), "at most 10"));
    }
    let methods = match &r.methods {
        None => d.methods,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (j, m) in list.iter().enumerate() {
                let method =
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                        ConfigError::field(
                            format!("{}[{j}]", field("methods")),
                            format!("{m:?} is not a method"),
                        )
                    })?;
                // A retry sends the request again: only methods whose repetition has the
                // effect of one request (RFC 9110 §9.2.2) may be retried. A POST (an inbox
                // delivery) or a PATCH repeated could deliver or apply twice.
                if !matches!(
                    method,
                    Method::GET
                        | Method::HEAD
                        | Method::OPTIONS
                        | Method::TRACE
                        | Method::PUT
                        | Method::DELETE
                ) {
                    return Err(ConfigError::field(
                        format!("{}[{j}]", field("methods")),
                        format!(
                            "{method} is not idempotent (RFC 9110 §9.2.2): only GET, HEAD, OPTIONS, TRACE, PUT and DELETE may be retried"
                        ),
                    ));
                }
                out.push(method);
            }
            out
        }
    };
    let budget_percent = r.budget_percent.unwrap_or(d.budget_percent);
    if !(budget_percent.is_finite() && (0.0..=100.0).contains(&budget_percent)) {
        return Err(ConfigError::field(
            field("budget_percent"),
            "must be between 0 and 100",
        ));
    }
    Ok(crate::retry::RetryConfig {
        max_retries,
        methods,
        statuses: match &r.statuses {
            Some(list) => statuses(&field("statuses"), list)?,
            None => d.statuses,
        },
        per_try_timeout: r
            .per_try_timeout
            .as_deref()
            .map(|t| duration(&field("per_try_timeout"), Some(t), Duration::ZERO))
            .transpose()?,
        budget_percent,
        min_concurrency: r.min_concurrency.unwrap_or(d.min_concurrency),
    })
}

fn validate_health_check(
    at: &str,
    h: &file::HealthCheckSection,
) -> Result<HealthCheckConfig, ConfigError> {
    let field = |k: &str| format!("{at}.{k}");
    let kind = match h.kind.unwrap_or(CheckType::Http) {
        CheckType::Http => {
            let path = h.path.as_deref().unwrap_or("/");
            let path = match path.parse::<http::uri::PathAndQuery>() {
                Ok(p) if path.starts_with('/') => p,
                _ => {
                    return Err(ConfigError::field(
                        field("path"),
                        format!("{path:?} is not a path starting with '/'"),
                    ))
                }
            };
            let mut expected = Vec::with_capacity(h.expected_statuses.len());
            for (i, v) in h.expected_statuses.iter().enumerate() {
                let range = status_range(v).ok_or_else(|| {
                    ConfigError::field(
                        format!("{at}.expected_statuses[{i}]"),
                        format!("{v} is not a status (100-599) or a range such as \"200-399\""),
                    )
                })?;
                expected.push(range);
            }
            if expected.is_empty() {
                expected.push((200, 399));
            }
            if h.body_contains.as_deref() == Some("") {
                return Err(ConfigError::field(
                    field("body_contains"),
                    "must not be empty",
                ));
            }
            CheckKind::Http {
                path,
                expected,
                body_contains: h.body_contains.clone(),
            }
        }
        CheckType::Tcp => {
            for (set, k) in [
                (h.path.is_some(), "path"),
                (!h.expected_statuses.is_empty(), "expected_statuses"),
                (h.body_contains.is_some(), "body_contains"),
            ] {
                if set {
                    return Err(ConfigError::field(field(k), "only HTTP checks have it"));
                }
            }
            CheckKind::Tcp
        }
    };
    let interval = duration(
        &field("interval"),
        h.interval.as_deref(),
        Duration::from_secs(10),
    )?;
    let jitter = match h.jitter.as_deref().map(str::trim) {
        None => Jitter::Percent(10),
        Some(j) => match j.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u32>() {
                Ok(p) if p <= 100 => Jitter::Percent(p),
                _ => {
                    return Err(ConfigError::field(
                        field("jitter"),
                        format!("{j:?} is not a percentage between 0% and 100%"),
                    ))
                }
            },
            None => Jitter::Fixed(duration_or_zero(&field("jitter"), Some(j), Duration::ZERO)?),
        },
    };
    let timeout = duration(
        &field("timeout"),
        h.timeout.as_deref(),
        Duration::from_secs(2),
    )?;
    let threshold = |k: &str, v: Option<u32>, default: u32| match v.unwrap_or(default) {
        0 => Err(ConfigError::field(field(k), "must be at least 1")),
        n => Ok(n),
    };
    Ok(HealthCheckConfig {
        kind,
        interval,
        jitter,
        timeout,
        healthy_threshold: threshold("healthy_threshold", h.healthy_threshold, 2)?,
        unhealthy_threshold: threshold("unhealthy_threshold", h.unhealthy_threshold, 3)?,
    })
}

/// A status code or an inclusive range `"A-B"`, within 100-599.
fn status_range(v: &toml::Value) -> Option<(u16, u16)> {
    let (lo, hi) = match v {
        toml::Value::Integer(i) => (u16::try_from(*i).ok()?, u16::try_from(*i).ok()?),
        toml::Value::String(s) => match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let n = s.trim().parse().ok()?;
                (n, n)
            }
        },
        _ => return None,
    };
    ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi).then_some((lo, hi))
}

fn validate_outlier(
    at: &str,
    o: &file::OutlierDetectionSection,
) -> Result<OutlierConfig, ConfigError> {
    let field = |k: &str| format!("{at}.{k}");
    let consecutive_failures = match o.consecutive_failures.unwrap_or(5) {
        0 => {
            return Err(ConfigError::field(
                field("consecutive_failures"),
                "must be at least 1",
            ))
        }
        n => n,
    };
    let base_ejection_time = duration(
        &field("base_ejection_time"),
        o.base_ejection_time.as_deref(),
        Duration::from_secs(30),
    )?;
    let max_ejection_time = duration(
        &field("max_ejection_time"),
        o.max_ejection_time.as_deref(),
        Duration::from_secs(300).max(base_ejection_time),
    )?;
    if max_ejection_time < base_ejection_time {
        return Err(ConfigError::field(
            field("max_ejection_time"),
            "must not be shorter than base_ejection_time",
        ));
    }
    let max_ejection_percent = o.max_ejection_percent.unwrap_or(50);
    if max_ejection_percent > 100 {
        return Err(ConfigError::field(
            field("max_ejection_percent"),
            "must be between 0 and 100",
        ));
    }
    Ok(OutlierConfig {
        consecutive_failures,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent,
    })
}

fn parse_endpoint(s: &str) -> Result<EndpointConfig, String> {
    let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URI: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("{s:?} needs a scheme (http:// or https://)"))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(format!("{s:?}: the scheme must be http or https"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{s:?} needs a host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{s:?}: credentials in endpoint URIs are not supported"
        ));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!(
            "{s:?}: endpoints are scheme://host:port, without a path"
        ));
    }
    Ok(EndpointConfig { scheme, authority })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{field_of, parse, MINIMAL};
    use super::*;
    use http::Method;

    #[test]
    fn health_sections_get_defaults_and_name_bad_fields() {
        let c = parse(MINIMAL).unwrap();
        let u = &c.upstreams["app"];
        assert_eq!(u.health_check, None);
        assert_eq!(u.outlier_detection, None);
        assert_eq!(u.no_healthy, NoHealthy::Fail);
        let with = |section: &str| MINIMAL.replace("[[routes]]", &format!("{section}\n[[routes]]"));
        let c = parse(&with(
            "[upstreams.app.health_check]\n[upstreams.app.outlier_detection]",
        ))
        .unwrap();
        let u = &c.upstreams["app"];
        let h = u.health_check.as_ref().unwrap();
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/".parse().unwrap(),
                expected: vec![(200, 399)],
                body_contains: None
            }
        );
        assert_eq!(h.interval, Duration::from_secs(10));
        assert_eq!(h.jitter, Jitter::Percent(10));
        assert_eq!(h.timeout, Duration::from_secs(2));
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (2, 3));
        let o = u.outlier_detection.as_ref().unwrap();
        assert_eq!(o.consecutive_failures, 5);
        assert_eq!(o.base_ejection_time, Duration::from_secs(30));
        assert_eq!(o.max_ejection_time, Duration::from_secs(300));
        assert_eq!(o.max_ejection_percent, 50);

        let c = parse(&with(
            "[upstreams.app.health_check]\npath = \"/healthz?full=1\"\nexpected_statuses = [204, \"200-299\"]\nbody_contains = \"ok\"\njitter = \"250ms\"",
        ))
        .unwrap();
        let h = c.upstreams["app"].health_check.clone().unwrap();
        assert_eq!(h.jitter, Jitter::Fixed(Duration::from_millis(250)));
        match h.kind {
            CheckKind::Http {
                path,
                expected,
                body_contains,
            } => {
                assert_eq!(path.as_str(), "/healthz?full=1");
                assert_eq!(expected, vec![(204, 204), (200, 299)]);
                assert_eq!(body_contains.as_deref(), Some("ok"));
            }
            CheckKind::Tcp => panic!("an HTTP check was configured"),
        }

        let hc = "upstreams.app.health_check";
        for (section, at) in [
            ("[upstreams.app.health_check]\ntype = \"udp\"", format!("{hc}.type")),
            ("[upstreams.app.health_check]\ninterval = \"0s\"", format!("{hc}.interval")),
            ("[upstreams.app.health_check]\ninterval = \"often\"", format!("{hc}.interval")),
            ("[upstreams.app.health_check]\ntimeout = \"0s\"", format!("{hc}.timeout")),
            ("[upstreams.app.health_check]\njitter = \"150%\"", format!("{hc}.jitter")),
            ("[upstreams.app.health_check]\npath = \"healthz\"", format!("{hc}.path")),
            ("[upstreams.app.health_check]\nexpected_statuses = [200, \"399-200\"]", format!("{hc}.expected_statuses[1]")),
            ("[upstreams.app.health_check]\nexpected_statuses = [99]", format!("{hc}.expected_statuses[0]")),
            ("[upstreams.app.health_check]\nhealthy_threshold = 0", format!("{hc}.healthy_threshold")),
            ("[upstreams.app.health_check]\nunhealthy_threshold = 0", format!("{hc}.unhealthy_threshold")),
            ("[upstreams.app.health_check]\ntype = \"tcp\"\npath = \"/\"", format!("{hc}.path")),
            ("[upstreams.app.outlier_detection]\nconsecutive_failures = 0", "upstreams.app.outlier_detection.consecutive_failures".into()),
            ("[upstreams.app.outlier_detection]\nmax_ejection_percent = 101", "upstreams.app.outlier_detection.max_ejection_percent".into()),
            ("[upstreams.app.outlier_detection]\nbase_ejection_time = \"1m\"\nmax_ejection_time = \"30s\"", "upstreams.app.outlier_detection.max_ejection_time".into()),
        ] {
            assert_eq!(field_of(&with(section)), at, "{section}");
        }
        let panic = MINIMAL.replace("[upstreams.app]", "[upstreams.app]\nno_healthy = \"panic\"");
        assert_eq!(
            parse(&panic).unwrap().upstreams["app"].no_healthy,
            NoHealthy::Panic
        );
        let bad = MINIMAL.replace(
            "[upstreams.app]",
            "[upstreams.app]\nno_healthy = \"ignore\"",
        );
        assert_eq!(field_of(&bad), "upstreams.app.no_healthy");
    }

    #[test]
    fn retries_only_take_idempotent_methods() {
        let with = |section: &str| MINIMAL.replace("[[routes]]", &format!("{section}\n[[routes]]"));
        let c = parse(&with(
            "[upstreams.app.retries]\nmethods = [\"get\", \"HEAD\", \"OPTIONS\", \"TRACE\", \"PUT\", \"DELETE\"]",
        ))
        .unwrap();
        let r = c.upstreams["app"].retries.clone().unwrap();
        assert_eq!(r.methods.len(), 6);
        assert_eq!(r.methods[0], Method::GET);
        for (methods, index) in [
            ("[\"POST\"]", 0),
            ("[\"GET\", \"patch\"]", 1),
            ("[\"GET\", \"PUT\", \"CONNECT\"]", 2),
            ("[\"PROPFIND\"]", 0),
        ] {
            let text = with(&format!("[upstreams.app.retries]\nmethods = {methods}"));
            match parse(&text) {
                Err(ConfigError::Field { field, message }) => {
                    assert_eq!(field, format!("upstreams.app.retries.methods[{index}]"));
                    assert!(message.contains("not idempotent"), "{message}");
                }
                other => panic!("{methods}: expected a field error, got {other:?}"),
            }
        }
    }

    #[test]
    fn breaker_and_retry_sections_name_bad_fields() {
        let with = |section: &str| MINIMAL.replace("[[routes]]", &format!("{section}\n[[routes]]"));
        let cb = "upstreams.app.circuit_breaker";
        let rt = "upstreams.app.retries";
        for (section, at, says) in [
            (
                "[upstreams.app.circuit_breaker]\nfailure_statuses = [502, 429]",
                format!("{cb}.failure_statuses"),
                "429 is not a 5xx",
            ),
            (
                "[upstreams.app.retries]\nstatuses = [404, 503]",
                format!("{rt}.statuses"),
                "404 is not a 5xx",
            ),
            (
                "[upstreams.app.circuit_breaker]\nconsecutive_failures = 0",
                format!("{cb}.consecutive_failures"),
                "could never open",
            ),
            (
                "[upstreams.app.circuit_breaker]\nhalf_open_probes = 0",
                format!("{cb}.half_open_probes"),
                "at least 1",
            ),
        ] {
            match parse(&with(section)) {
                Err(ConfigError::Field { field, message }) => {
                    assert_eq!(field, at, "{section}");
                    assert!(message.contains(says), "{section}: {message}");
                }
                other => panic!("{section}: expected a field error, got {other:?}"),
            }
        }
        // With a failure rate, the consecutive trigger may be off.
        let rate_only =
            with("[upstreams.app.circuit_breaker]\nconsecutive_failures = 0\nfailure_rate = 0.5");
        let b = parse(&rate_only).unwrap().upstreams["app"]
            .breaker
            .clone()
            .unwrap();
        assert_eq!((b.consecutive_failures, b.failure_rate), (0, Some(0.5)));
    }
}
