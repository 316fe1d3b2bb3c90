//! The request path: the phases of `docs/architecture.md` in order, for one request.
//!
//! Phases here: ids (request id, trace context), route, endpoint by balancing, forward with
//! timeouts, record when the body ends. Later phases (blocklist, rate limits, auth,
//! signatures, plugins, breakers) slot in between route and endpoint with the same shape: a
//! check that returns `Ok` or a [`ProxyError`] that [`rescue`] turns into a response.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{Relay, RequestBody, ResponseBody};
use crate::config::UpstreamProtocol;
use crate::error::ProxyError;
use crate::headers;
use crate::metrics::MethodLabel;
use crate::record::{AccessLog, Completion};
use crate::runtime::Runtime;
use crate::upstream::Lease;

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub tls: bool,
    /// The client address as a header value, formatted once per connection.
    pub client_ip: HeaderValue,
}

impl ConnInfo {
    pub fn new(client: SocketAddr, tls: bool) -> Self {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .expect("an IP address is a valid header value");
        ConnInfo {
            client,
            tls,
            client_ip,
        }
    }
}

/// Serves one request through the current runtime. Never fails: errors become responses.
pub async fn handle(
    rt: Arc<Runtime>,
    mut req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Response<ResponseBody> {
    let start = Instant::now();
    let method = MethodLabel::of(req.method());

    // The forwarding headers, request id, trace context and `Via` are added below: one
    // growth of the map now instead of several, each rehashing every field.
    req.headers_mut().reserve(8);
    // Hop-by-hop headers belong to the client's connection, not to the request: every
    // phase sees (and the upstream gets) the request without them.
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    headers::strip_hop_by_hop(req.headers_mut(), upgrade);

    // Phase 1: ids. The request id and trace context are set on the forwarded request and
    // echoed on the response, so a client report can be matched with the upstream's logs.
    let (request_id, client_id) = headers::request_id(req.headers(), &rt.forwarding);
    let trace_id = headers::ensure_traceparent(req.headers_mut());

    // Phase 2: route.
    let host = request_host(&req);
    let route = rt
        .routes
        .find(
            host.as_ref().and_then(|h| h.to_str().ok()),
            req.uri().path(),
            req.method(),
        )
        .cloned();
    let log = rt.access_log.then(|| {
        Box::new(AccessLog {
            path: req.uri().path().to_string(),
            request_id: request_id.clone(),
            trace_id,
            client: conn.client,
        })
    });
    let Some(route) = route else {
        let completion = Completion::new(start, rt.unmatched.clone(), method, None, log);
        return rescue(ProxyError::NoRoute, completion, &request_id, &rt);
    };

    let counter = (!req.body().is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
    let mut completion =
        Completion::new(start, route.metrics.clone(), method, counter.clone(), log);

    // Phase 8: endpoint.
    let upstream = &route.upstream;
    let lease = upstream.pick();
    let endpoint = &lease.endpoint().config;

    // Phase 9: forward.
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let client_version = req.version();
    let (mut parts, body) = req.into_parts();

    // The target goes upstream in origin form, byte for byte; the endpoint decides where.
    parts.uri = match parts.uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    };
    parts.version = match upstream.config.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::Http2 => Version::HTTP_2,
    };

    if rt.forwarding.preserve_host {
        if let (false, Some(h)) = (parts.headers.contains_key(header::HOST), host.clone()) {
            parts.headers.insert(header::HOST, h);
        }
    } else if let Ok(h) = HeaderValue::from_str(endpoint.authority.as_str()) {
        parts.headers.insert(header::HOST, h);
    }
    headers::add_client_headers(
        &mut parts.headers,
        &rt.forwarding,
        conn.client.ip(),
        &conn.client_ip,
        conn.tls,
        host.as_ref(),
    );
    if let Some(via) = &rt.via {
        parts
            .headers
            .append(header::VIA, via.for_version(client_version).clone());
    }
    if !client_id {
        parts
            .headers
            .insert(&rt.forwarding.request_id_header, request_id.clone());
    }

    let upstream_req = Request::from_parts(parts, RequestBody::new(body, counter));
    let sent = Instant::now();
    // The deadline comes from the instant already read: one clock read fewer per request.
    let deadline = tokio::time::Instant::from_std(sent) + route.response_timeout;
    let result = tokio::time::timeout_at(deadline, lease.forward(upstream_req, upgrade)).await;
    let mut resp = match result {
        Ok(Ok(exchange)) => exchange,
        Ok(Err(e)) => {
            tracing::debug!(upstream = %upstream.name, endpoint = %lease.endpoint().label, error = %e.detail, "upstream request failed");
            return upstream_failure(e.kind, lease, completion, &request_id, &rt);
        }
        Err(_) => {
            return upstream_failure(
                ProxyError::UpstreamTimeout,
                lease,
                completion,
                &request_id,
                &rt,
            )
        }
    };
    upstream
        .metrics
        .duration
        .observe(sent.elapsed().as_secs_f64());
    completion.set_lease(lease);
    completion.set_status(resp.status().as_u16());

    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((c, u)) => {
                        let _ = tokio::io::copy_bidirectional(
                            &mut TokioIo::new(c),
                            &mut TokioIo::new(u),
                        )
                        .await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
        }
    }

    let (mut parts, body) = resp.into_parts();
    // A pooled HTTP/1.1 response had its hop-by-hop fields dropped as it was parsed.
    if !matches!(body, Relay::Pooled { .. }) {
        let switching = parts.status == http::StatusCode::SWITCHING_PROTOCOLS && upgrade;
        headers::strip_hop_by_hop(&mut parts.headers, switching);
    }
    if let Some(via) = &rt.via {
        parts
            .headers
            .append(header::VIA, via.for_version(parts.version).clone());
    }
    parts
        .headers
        .insert(&rt.forwarding.request_id_header, request_id);
    Response::from_parts(parts, ResponseBody::upstream(body, completion))
}

/// The host a request is for: `Host`, or the URI authority (HTTP/2 `:authority`).
fn request_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    if let Some(h) = req.headers().get(header::HOST) {
        return Some(h.clone());
    }
    req.uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

fn upstream_failure(
    err: ProxyError,
    lease: Lease,
    mut completion: Completion,
    request_id: &HeaderValue,
    rt: &Runtime,
) -> Response<ResponseBody> {
    if let Some(kind) = err.upstream_kind() {
        lease.upstream().metrics.error(kind);
    }
    completion.set_lease(lease);
    rescue(err, completion, request_id, rt)
}

/// The single edge step: every failure becomes a response with its status and fixed body.
pub fn rescue(
    err: ProxyError,
    mut completion: Completion,
    request_id: &HeaderValue,
    rt: &Runtime,
) -> Response<ResponseBody> {
    let status = err.status();
    completion.set_status(status.as_u16());
    completion.set_error(err.code());
    let mut resp = Response::new(ResponseBody::fixed(
        Bytes::from_static(err.body().as_bytes()),
        Some(completion),
    ));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(&rt.forwarding.request_id_header, request_id.clone());
    resp
}
