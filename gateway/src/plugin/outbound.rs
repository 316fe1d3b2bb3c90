//! Outbound HTTP for ABI 0.2.0 plugins: `outbound.send`, from `on-tick` and `observe` only.
//!
//! Those hooks run on the plugin's observer thread, never on a worker that serves traffic,
//! so a call may wait on the network: the thread blocks on a small single-threaded tokio
//! runtime of its own (kept in a thread-local, so it is dropped with the thread and never
//! inside an async context). Inline hooks, `init` and `health-check` get `not-here`.
//!
//! Only the hosts in the plugin's `outbound.allow` are reached; every call is bounded by
//! the plugin's `outbound.timeout` (connection, head and body together) and its response
//! body by `outbound.max_response_bytes`; every call is counted by result. Connections are
//! not pooled: a plugin calls out once per tick or batch, and an idle pooled connection
//! would belong to a runtime that only runs while a call is under way.

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus::IntCounter;

use super::abi2::{Header, OutboundError, OutboundRequest, OutboundResponse};
use crate::config::OutboundConfig;
use crate::metrics::Metrics;

/// How one call ended, as the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Ok,
    NotAllowed,
    NotHere,
    Timeout,
    TooLarge,
    Connect,
    Invalid,
}

impl Sent {
    const ALL: [Sent; 7] = [
        Sent::Ok,
        Sent::NotAllowed,
        Sent::NotHere,
        Sent::Timeout,
        Sent::TooLarge,
        Sent::Connect,
        Sent::Invalid,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Sent::Ok => "ok",
            Sent::NotAllowed => "not_allowed",
            Sent::NotHere => "not_here",
            Sent::Timeout => "timeout",
            Sent::TooLarge => "too_large",
            Sent::Connect => "connect",
            Sent::Invalid => "invalid",
        }
    }

    fn of(r: &Result<OutboundResponse, OutboundError>) -> Sent {
        match r {
            Ok(_) => Sent::Ok,
            Err(OutboundError::NotAllowed(_)) => Sent::NotAllowed,
            Err(OutboundError::NotHere) => Sent::NotHere,
            Err(OutboundError::Timeout) => Sent::Timeout,
            Err(OutboundError::TooLarge) => Sent::TooLarge,
            Err(OutboundError::Connect(_)) => Sent::Connect,
            Err(OutboundError::Invalid(_)) => Sent::Invalid,
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

thread_local! {
    /// The observer thread's runtime and client, made on its first outbound call.
    static CLIENT: RefCell<Option<(tokio::runtime::Runtime, HttpClient)>> =
        const { RefCell::new(None) };
}

/// One plugin's outbound settings and counters.
#[derive(Debug)]
pub(crate) struct Outbound {
    config: OutboundConfig,
    results: Vec<IntCounter>,
}

impl Outbound {
    pub(crate) fn new(metrics: &Metrics, plugin: &str, config: OutboundConfig) -> Self {
        let family = &metrics.plugin_families().outbound;
        Outbound {
            config,
            results: Sent::ALL
                .iter()
                .map(|r| family.with_label_values(&[plugin, r.as_str()]))
                .collect(),
        }
    }

    /// `outbound.send` from `hook`: sent from the hooks that run off the request path,
    /// refused from the others.
    pub(crate) fn send(
        &self,
        hook: &str,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, OutboundError> {
        let result = if matches!(hook, "observe" | "on_tick") {
            self.send_now(request)
        } else {
            Err(OutboundError::NotHere)
        };
        self.results[Sent::of(&result) as usize].inc();
        result
    }

    /// Whether `uri`'s host (and port) is in the allow list: `host` allows any port,
    /// `host:port` that one.
    fn allowed(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let host = host.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let with_port = format!("{host}:{port}");
        self.config
            .allow
            .iter()
            .any(|a| *a == host || *a == with_port)
    }

    fn send_now(&self, r: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let uri: http::Uri = r
            .url
            .parse()
            .map_err(|e| OutboundError::NotAllowed(format!("not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(OutboundError::NotAllowed(
                "only http:// and https:// URLs".into(),
            ));
        }
        if !self.allowed(&uri) {
            return Err(OutboundError::NotAllowed(format!(
                "{} is not in outbound.allow",
                uri.authority().map_or("", |a| a.as_str())
            )));
        }
        let method = http::Method::from_bytes(r.method.as_bytes())
            .map_err(|_| OutboundError::Invalid(format!("method {:?}", r.method)))?;
        let mut builder = http::Request::builder().method(method).uri(uri.clone());
        for Header { name, value } in &r.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| OutboundError::Invalid(format!("field name {name:?}")))?;
            if crate::headers::hop(name.as_str().as_bytes()) != crate::headers::Hop::EndToEnd
                || name == http::header::HOST
                || name == http::header::CONTENT_LENGTH
            {
                return Err(OutboundError::Invalid(format!(
                    "field {name} is set by the gateway"
                )));
            }
            let value = http::HeaderValue::from_str(value)
                .map_err(|_| OutboundError::Invalid(format!("value of {name}")))?;
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(r.body.unwrap_or_default())))
            .map_err(|e| OutboundError::Invalid(e.to_string()))?;
        let timeout = r
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .map_or(self.config.timeout, |t| t.min(self.config.timeout));
        let max = self.config.max_response_bytes;
        CLIENT.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = Some(client()?);
            }
            let (runtime, client) = c.as_ref().expect("made above");
            runtime.block_on(async {
                match tokio::time::timeout(timeout, exchange(client, request, max)).await {
                    Ok(r) => r,
                    Err(_) => Err(OutboundError::Timeout),
                }
            })
        })
    }
}

/// A runtime and a client for the calling thread.
fn client() -> Result<(tokio::runtime::Runtime, HttpClient), OutboundError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OutboundError::Connect(format!("runtime: {e}")))?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::transport::client_tls(None, &[]))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    Ok((runtime, client))
}

async fn exchange(
    client: &HttpClient,
    request: http::Request<Full<Bytes>>,
    max: usize,
) -> Result<OutboundResponse, OutboundError> {
    let response = client
        .request(request)
        .await
        .map_err(|e| OutboundError::Connect(error_chain(&e)))?;
    let (parts, body) = response.into_parts();
    if let Some(n) = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if n > max as u64 {
            return Err(OutboundError::TooLarge);
        }
    }
    let body = Limited::new(body, max).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            OutboundError::TooLarge
        } else {
            OutboundError::Connect(e.to_string())
        }
    })?;
    Ok(OutboundResponse {
        status: parts.status.as_u16(),
        headers: super::abi::fields(&parts.headers, |name, value| Header { name, value }),
        body: body.to_bytes().to_vec(),
    })
}

/// The error and its causes on one line (`connection refused` is a cause of hyper's
/// `client error (Connect)`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(allow: &[&str]) -> Outbound {
        Outbound {
            config: OutboundConfig {
                allow: allow.iter().map(|s| s.to_string()).collect(),
                ..OutboundConfig::default()
            },
            results: Sent::ALL
                .iter()
                .map(|r| IntCounter::new(r.as_str(), "x").unwrap())
                .collect(),
        }
    }

    #[test]
    fn hosts_are_allowed_by_name_or_by_name_and_port() {
        let o = outbound(&["stats.example", "127.0.0.1:8080"]);
        let ok = |u: &str| o.allowed(&u.parse().unwrap());
        assert!(ok("https://stats.example/x"));
        assert!(ok("http://STATS.example:9000/x"));
        assert!(ok("http://127.0.0.1:8080/"));
        assert!(!ok("http://127.0.0.1:8081/"));
        assert!(!ok("http://127.0.0.1/"));
        assert!(!ok("https://evil.example/stats.example"));
        assert!(!ok("https://stats.example.evil/"));
    }

    #[test]
    fn inline_hooks_get_not_here_and_every_result_is_counted() {
        let o = outbound(&["127.0.0.1"]);
        let req = |url: &str| OutboundRequest {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout_ms: None,
        };
        assert!(matches!(
            o.send("on_request", req("http://127.0.0.1/")),
            Err(OutboundError::NotHere)
        ));
        assert!(matches!(
            o.send("on_tick", req("http://elsewhere.example/")),
            Err(OutboundError::NotAllowed(_))
        ));
        assert!(matches!(
            o.send("on_tick", req("ftp://127.0.0.1/")),
            Err(OutboundError::NotAllowed(_))
        ));
        let mut bad = req("http://127.0.0.1/");
        bad.headers.push(Header {
            name: "connection".into(),
            value: "close".into(),
        });
        assert!(matches!(
            o.send("observe", bad),
            Err(OutboundError::Invalid(_))
        ));
        assert_eq!(o.results[Sent::NotHere as usize].get(), 1);
        assert_eq!(o.results[Sent::NotAllowed as usize].get(), 2);
        assert_eq!(o.results[Sent::Invalid as usize].get(), 1);
    }
}
