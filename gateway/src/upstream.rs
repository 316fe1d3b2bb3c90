//! Upstreams (phase 8 balancing, phase 9 forwarding): named services with one or more
//! endpoints, a keep-alive connection pool (HTTP/1.1 in [`crate::pool`], or HTTP/2
//! multiplexed; plain or TLS), a balancer over the endpoints [`crate::health`] deems
//! eligible, and metric handles resolved once. An [`Upstream`] is rebuilt only when its own config
//! changes, so a reload that leaves it alone keeps its pool and counters.
//!
//! A request leases an endpoint ([`Lease`]) and gets back the response head and a [`Relay`],
//! the body as the upstream sends it, which [`crate::body`] relays to the client (holding
//! the lease until the body ends). Connections come from [`crate::transport`].

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use http::uri::Authority;
use http::{header, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Balance, EndpointConfig, UpstreamConfig, UpstreamProtocol};
use crate::error::ProxyError;
use crate::health::EndpointState;
use crate::metrics::UpstreamMetrics;
use crate::pool::{Pool, PooledBody, SendError};
use crate::transport::{
    https_connector, BoxError, ConnTag, CountingConnector, DialSettings, Stream,
};
use crate::upload::RequestBody;

/// How requests reach an upstream's endpoints.
#[derive(Debug)]
enum Transport {
    /// HTTP/1.1: one request per connection at a time, connections driven by the request.
    Http1(Pool),
    /// HTTP/2: a client per endpoint (indexed like the endpoints), each keeping multiplexed
    /// connections on tasks of their own. A client dials only its endpoint, whatever
    /// authority a request carries, so `:authority` can be the client's `Host`.
    Http2(Box<[Client<CountingConnector, RequestBody>]>),
}

/// A response body as the upstream sends it.
#[derive(Debug)]
pub enum Relay {
    /// From hyper's client: HTTP/2 upstreams and upgrades.
    Incoming(Incoming),
    /// From a pooled HTTP/1.1 connection, which reads it and is released at its end.
    Pooled(PooledBody),
}

impl Relay {
    /// The next frame.
    #[inline]
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Relay::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Relay::Pooled(b) => b.poll_frame(cx).map_err(Into::into),
        }
    }

    /// Whether the frame just read was the last one. Only a pooled body knows as it reads
    /// it; hyper's says so by ending.
    #[inline]
    pub fn is_done(&self) -> bool {
        match self {
            Relay::Incoming(_) => false,
            Relay::Pooled(b) => b.is_end(),
        }
    }

    pub fn is_end_stream(&self) -> bool {
        match self {
            Relay::Incoming(b) => b.is_end_stream(),
            Relay::Pooled(b) => b.is_end(),
        }
    }

    pub fn size_hint(&self) -> SizeHint {
        match self {
            Relay::Incoming(b) => b.size_hint(),
            Relay::Pooled(b) => b.size_hint(),
        }
    }

    /// The whole body, if it is already read (a pooled body that arrived with its head),
    /// its connection released.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        match self {
            Relay::Incoming(_) => None,
            Relay::Pooled(b) => b.take_whole(),
        }
    }

    /// Releases a pooled connection whose body was read to its end.
    pub fn release(&mut self) {
        if let Relay::Pooled(b) = self {
            b.release();
        }
    }

    /// Gives the body up: a pooled connection is closed.
    pub fn close(&mut self) {
        if let Relay::Pooled(b) = self {
            b.close();
        }
    }
}

/// A failed upstream exchange.
#[derive(Debug)]
pub struct ForwardError {
    pub kind: ProxyError,
    pub detail: String,
}

/// One endpoint of an upstream.
#[derive(Debug)]
pub struct Endpoint {
    pub config: EndpointConfig,
    /// `scheme://authority`, the `endpoint` label and log field.
    pub label: Arc<str>,
    in_flight: AtomicUsize,
}

impl Endpoint {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A named upstream service.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub config: UpstreamConfig,
    pub endpoints: Vec<Endpoint>,
    transport: Transport,
    pub metrics: UpstreamMetrics,
    next: AtomicUsize,
    /// Active checks and outlier detection; `None` when neither is configured, and every
    /// endpoint is always eligible.
    health: Option<crate::health::Health>,
}

/// An endpoint chosen for one request; releases its in-flight count when dropped.
#[derive(Debug)]
pub struct Lease {
    upstream: Arc<Upstream>,
    index: usize,
    /// HTTP/2: the stream this request holds on its connection, from the response head
    /// until the lease is dropped (when the response body ends).
    stream: std::sync::Mutex<Option<Stream>>,
}

impl Lease {
    /// The leased endpoint's position in [`Upstream::endpoints`].
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.upstream.endpoints[self.index]
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Sends a request to the leased endpoint and waits for the response head. `parts`
    /// carries the origin-form target. A pooled HTTP/1.1 exchange only reads the head, so
    /// the caller keeps it (for a retry) at no cost; the other transports need it owned:
    /// with `keep` they get a copy, else it is taken and `parts` is left empty.
    pub async fn send(
        &self,
        parts: &mut http::request::Parts,
        body: RequestBody,
        upgrade: bool,
        keep: bool,
    ) -> Result<Response<Relay>, ForwardError> {
        if let (Transport::Http1(pool), false) = (&self.upstream.transport, upgrade) {
            let (head, body) = pool
                .send(self.index, parts, body)
                .await
                .map_err(|e| ForwardError::from_send(&e))?;
            return Ok(Response::from_parts(head, Relay::Pooled(body)));
        }
        let head = if keep {
            copy_parts(parts)
        } else {
            std::mem::replace(parts, Request::new(()).into_parts().0)
        };
        self.forward(Request::from_parts(head, body), upgrade).await
    }

    /// Sends `req` to the leased endpoint and waits for the response head. `req` carries
    /// the origin-form target; HTTP/2 gets the endpoint's scheme and authority added. A
    /// pooled HTTP/1.1 response body reads from its connection and then releases it.
    pub async fn forward(
        &self,
        mut req: Request<RequestBody>,
        upgrade: bool,
    ) -> Result<Response<Relay>, ForwardError> {
        match &self.upstream.transport {
            Transport::Http1(pool) if upgrade => Box::pin(pool.send_upgrade(self.index, req))
                .await
                .map(|r| r.map(Relay::Incoming))
                .map_err(|e| ForwardError::from_send(&e)),
            Transport::Http1(pool) => {
                let (parts, body) = req.into_parts();
                let (head, body) = pool
                    .send(self.index, &parts, body)
                    .await
                    .map_err(|e| ForwardError::from_send(&e))?;
                Ok(Response::from_parts(head, Relay::Pooled(body)))
            }
            Transport::Http2(clients) => {
                let endpoint = &self.endpoint().config;
                // HTTP/2 carries the authority as `:authority`, which takes the place of
                // `Host` (RFC 9113 §8.3.1): the `Host` the proxy chose (the client's, or the
                // endpoint's without preserve_host) moves there instead of travelling
                // beside a different `:authority`. The client dials its endpoint anyway.
                let authority = req
                    .headers_mut()
                    .remove(header::HOST)
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                    .unwrap_or_else(|| endpoint.authority.clone());
                let mut uri = std::mem::take(req.uri_mut()).into_parts();
                uri.scheme = Some(endpoint.scheme.clone());
                uri.authority = Some(authority);
                *req.uri_mut() = Uri::from_parts(uri).map_err(|e| ForwardError {
                    kind: ProxyError::BadRequest("target"),
                    detail: e.to_string(),
                })?;
                let resp = clients[self.index]
                    .request(req)
                    .await
                    .map_err(|e| ForwardError {
                        kind: ProxyError::from_client(&e),
                        detail: e.to_string(),
                    })?;
                // The connector tagged the connection that carried the request: its
                // stream count makes the connection active or idle.
                if let Some(tag) = resp.extensions().get::<ConnTag>() {
                    let stream = Stream::open(tag);
                    *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
                }
                Ok(resp.map(Relay::Incoming))
            }
        }
    }
}

/// How the endpoints of the upstream `config` describes are dialled: the trust roots of
/// `tls.ca_file` (read here), `tls.server_name`, the protocol.
fn dial_settings(config: &UpstreamConfig) -> Result<DialSettings, String> {
    let roots = match &config.tls_ca_file {
        Some(path) => Some(crate::tls::load_roots(path)?),
        None => None,
    };
    let server_name = match &config.tls_server_name {
        Some(sn) => Some(
            rustls::pki_types::ServerName::try_from(sn.clone())
                .map_err(|e| format!("tls.server_name: {e}"))?,
        ),
        None => None,
    };
    Ok(DialSettings {
        connect_timeout: config.connect_timeout,
        roots,
        server_name,
        http2: config.protocol == UpstreamProtocol::Http2,
    })
}

/// A request head without its extensions (which the proxy never sets).
fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

impl ForwardError {
    fn from_send(e: &SendError) -> Self {
        let kind = match &e {
            SendError::Connect(_) => ProxyError::UpstreamConnect,
            SendError::Busy => ProxyError::UpstreamBusy,
            SendError::Exchange(e) => e.kind(),
            SendError::Upgrade(h) => ProxyError::classify(h),
        };
        ForwardError {
            kind,
            detail: e.to_string(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.upstream.endpoints[self.index]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Builds the upstream and its (empty) connection pool.
    pub fn new(config: UpstreamConfig, metrics: UpstreamMetrics) -> Result<Self, String> {
        let dial = dial_settings(&config)?;
        let connector = CountingConnector::new(https_connector(&dial), metrics.conns.clone());
        let mut uris = Vec::with_capacity(config.endpoints.len());
        for e in &config.endpoints {
            let uri = Uri::builder()
                .scheme(e.scheme.clone())
                .authority(e.authority.clone())
                .path_and_query("/")
                .build()
                .map_err(|err| format!("endpoint {e}: {err}"))?;
            uris.push(uri);
        }
        let transport = match config.protocol {
            UpstreamProtocol::Http1 => Transport::Http1(Pool::new(
                uris,
                connector,
                config.connect_timeout,
                config.idle_timeout,
                config.max_idle_per_endpoint,
                config.max_connections,
            )),
            UpstreamProtocol::Http2 => {
                let mut builder = Client::builder(TokioExecutor::new());
                builder
                    .pool_idle_timeout(config.idle_timeout)
                    .pool_max_idle_per_host(config.max_idle_per_endpoint)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    // The authority is set by the proxy: the client's own, or the endpoint's.
                    .set_host(false)
                    .http2_only(true);
                let clients = uris
                    .into_iter()
                    .map(|uri| builder.build(connector.multiplexed(uri)))
                    .collect();
                Transport::Http2(clients)
            }
        };
        let endpoints: Vec<Endpoint> = config
            .endpoints
            .iter()
            .map(|e| Endpoint {
                label: e.to_string().into(),
                config: e.clone(),
                in_flight: AtomicUsize::new(0),
            })
            .collect();
        let name: Arc<str> = config.name.as_str().into();
        let gauges = endpoints
            .iter()
            .map(|e| {
                let g = metrics.health.endpoint(&name, &e.label);
                g.set(1);
                g
            })
            .collect();
        let labels = endpoints.iter().map(|e| e.label.clone()).collect();
        let health =
            crate::health::Health::new(&config, labels, gauges, metrics.health.clone(), &dial);
        Ok(Upstream {
            name,
            config,
            endpoints,
            transport,
            metrics,
            next: AtomicUsize::new(0),
            health,
        })
    }

    /// Starts the health monitor (active checks, ejections), once, when the runtime this
    /// upstream belongs to starts serving; nothing to do without health config.
    pub fn start_health(&self) {
        if let Some(h) = &self.health {
            h.start();
        }
    }

    /// Stops the health monitor of an upstream a reload replaced.
    pub fn stop_health(&self) {
        if let Some(h) = &self.health {
            h.stop();
        }
    }

    /// Chooses an eligible endpoint by the configured balancing and leases it for one
    /// request. `None` when no endpoint is eligible, unless `no_healthy = "panic"`: then
    /// every endpoint is.
    pub fn pick(self: &Arc<Self>) -> Option<Lease> {
        let start = self.start();
        let index = match &self.health {
            None => self.choose(start, usize::MAX, |_| true),
            Some(h) => {
                let h = &h.shared;
                self.choose(start, usize::MAX, |i| h.eligible(i))
                    .or_else(|| {
                        if h.panic() {
                            self.choose(start, usize::MAX, |_| true)
                        } else {
                            None
                        }
                    })
            }
        }?;
        Some(self.lease(index))
    }

    /// Another eligible endpoint than `avoid` (for a retry); `None` if there is none. In
    /// panic mode with no eligible endpoint, any other endpoint.
    pub fn pick_other(self: &Arc<Self>, avoid: usize) -> Option<Lease> {
        let start = self.start();
        let index = match &self.health {
            None => self.choose(start, avoid, |_| true),
            Some(h) => {
                let h = &h.shared;
                self.choose(start, avoid, |i| h.eligible(i)).or_else(|| {
                    let none = !(0..self.endpoints.len()).any(|i| h.eligible(i));
                    if h.panic() && none {
                        self.choose(start, avoid, |_| true)
                    } else {
                        None
                    }
                })
            }
        }?;
        Some(self.lease(index))
    }

    /// Reports a forward's outcome on `lease` to outlier detection (see
    /// `TryOutcome::endpoint_failed` for what counts as a failure).
    #[inline]
    pub fn report(&self, lease: &Lease, ok: bool) {
        if let Some(h) = &self.health {
            h.shared.report(lease.index, ok);
        }
    }

    /// Endpoints eligible for traffic right now.
    pub fn healthy_endpoints(&self) -> usize {
        (0..self.endpoints.len())
            .filter(|&i| self.endpoint_state(i).eligible())
            .count()
    }

    /// What health checks and outlier detection say of endpoint `i`.
    pub fn endpoint_state(&self, i: usize) -> EndpointState {
        match &self.health {
            None => EndpointState::ALWAYS,
            Some(h) => EndpointState {
                healthy: h.shared.healthy(i),
                ejected: h.shared.ejected(i),
            },
        }
    }

    /// The round-robin position of one pick.
    #[inline]
    fn start(&self) -> usize {
        let n = self.endpoints.len();
        if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        }
    }

    /// By the configured balancing from `start`, an endpoint other than `avoid` that `ok`
    /// accepts.
    #[inline]
    fn choose(&self, start: usize, avoid: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.endpoints.len();
        let mut candidates = (0..n)
            .map(|i| (start + i) % n)
            .filter(|&i| i != avoid && ok(i));
        match self.config.balance {
            Balance::RoundRobin => candidates.next(),
            // Scan from the round-robin position so ties spread instead of piling on the first.
            Balance::LeastInFlight => candidates.min_by_key(|&i| self.endpoints[i].in_flight()),
        }
    }

    fn lease(self: &Arc<Self>, index: usize) -> Lease {
        self.endpoints[index]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        Lease {
            upstream: self.clone(),
            index,
            stream: std::sync::Mutex::new(None),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Balancing over the endpoints health checks and outlier detection leave eligible.

    use super::*;
    use crate::metrics::Metrics;
    use std::time::Duration;

    fn upstream(extra: &str) -> Arc<Upstream> {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\", \"http://127.0.0.1:3\"]\n{extra}\n[upstreams.app.outlier_detection]\nconsecutive_failures = 1\nmax_ejection_percent = 100\nbase_ejection_time = \"30s\"\n[[routes]]\nupstream = \"app\"\n"
        );
        let config = crate::config::from_str(&text, std::path::Path::new(".")).unwrap();
        let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
        let up = Upstream::new(config.upstreams["app"].clone(), metrics.upstream("app")).unwrap();
        let up = Arc::new(up);
        up.start_health();
        up
    }

    /// Ejects endpoint `i` through the request path's report, as the proxy does.
    async fn eject_via_report(up: &Arc<Upstream>, i: usize) {
        let lease = loop {
            let l = up.pick().expect("an eligible endpoint");
            if l.index() == i {
                break l;
            }
        };
        up.report(&lease, false);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!up.endpoint_state(i).eligible() && up.endpoint_state(i).ejected);
    }

    fn picks(up: &Arc<Upstream>, n: usize) -> Vec<Option<usize>> {
        (0..n).map(|_| up.pick().map(|l| l.index())).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn balancing_uses_eligible_endpoints_only() {
        let up = upstream("");
        let mut all = picks(&up, 3);
        all.sort();
        assert_eq!(all, vec![Some(0), Some(1), Some(2)]);
        eject_via_report(&up, 1).await;
        assert_eq!(up.healthy_endpoints(), 2);
        assert!(picks(&up, 6).iter().all(|i| matches!(i, Some(0) | Some(2))));
        for _ in 0..4 {
            assert_eq!(up.pick_other(0).map(|l| l.index()), Some(2));
        }
        eject_via_report(&up, 2).await;
        assert!(up.pick_other(0).is_none(), "no other eligible endpoint");
        assert_eq!(picks(&up, 3), vec![Some(0); 3]);
        eject_via_report(&up, 0).await;
        assert_eq!(picks(&up, 3), vec![None; 3]);
        assert!(up.pick_other(1).is_none());
        assert_eq!(up.healthy_endpoints(), 0);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(up.healthy_endpoints(), 3);
        // A success resets nothing it need not: the endpoint stays eligible.
        let lease = up.pick().unwrap();
        up.report(&lease, true);
        assert_eq!(up.healthy_endpoints(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn panic_mode_uses_every_endpoint_when_none_is_eligible() {
        let up = upstream("no_healthy = \"panic\"");
        eject_via_report(&up, 0).await;
        assert!(picks(&up, 4).iter().all(|i| matches!(i, Some(1) | Some(2))));
        eject_via_report(&up, 1).await;
        eject_via_report(&up, 2).await;
        let mut got = picks(&up, 3);
        got.sort();
        assert_eq!(got, vec![Some(0), Some(1), Some(2)]);
        for _ in 0..4 {
            let other = up.pick_other(1).map(|l| l.index());
            assert!(matches!(other, Some(0) | Some(2)), "{other:?}");
        }
    }

    #[test]
    fn without_health_config_every_endpoint_is_eligible() {
        let text = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\n[[routes]]\nupstream = \"app\"\n";
        let config = crate::config::from_str(text, std::path::Path::new(".")).unwrap();
        let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
        let up = Arc::new(
            Upstream::new(config.upstreams["app"].clone(), metrics.upstream("app")).unwrap(),
        );
        let lease = up.pick().unwrap();
        for _ in 0..10 {
            up.report(&lease, false);
        }
        assert_eq!(up.healthy_endpoints(), 2);
        assert_eq!(
            up.pick_other(lease.index()).map(|l| l.index()),
            Some(1 - lease.index())
        );
        let gauge = metrics
            .upstream("app")
            .health
            .endpoint("app", "http://127.0.0.1:2");
        assert_eq!(gauge.get(), 1);
    }
}
