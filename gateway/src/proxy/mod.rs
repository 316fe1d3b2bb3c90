//! The request path: the phases of `docs/architecture.md` in order, for one request.
//!
//! Phases here, in order: what the edge refuses outright (a transfer coding other than
//! `chunked`, a missing, repeated or invalid `Host`), ids (request id, trace context),
//! route, blocklist, early rate limits, auth, body (read whole where a route needs it),
//! signatures, plugins, breaker admission and an endpoint by balancing, forward with
//! timeouts and retries, plugins on the response, record when the body ends. A phase that
//! answers in the upstream's place returns a [`Rejection`], which
//! [`Rejection::respond`] turns into the response.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::HeaderMap;
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use hyper_util::rt::TokioIo;

use crate::body::ResponseBody;
use crate::config::{SignatureMode, UpstreamProtocol};
use crate::error::ProxyError;
use crate::headers;
use crate::metrics::MethodLabel;
use crate::outcome::TryOutcome;
use crate::plugin::{Decision, Exchange, ResponseView};
use crate::record::{AccessLog, Completion};
use crate::retry::Outcome as RetryOutcome;
use crate::routing::Route;
use crate::runtime::Runtime;
use crate::signature::{Message, Outcome};
use crate::upload::{BufferError, ClientBody, RequestBody};
use crate::upstream::{Lease, Relay};

mod reject;
pub use reject::Rejection;

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub tls: bool,
    /// The client address as a header value, formatted once per connection.
    pub client_ip: HeaderValue,
    /// Phase 5, mTLS: the principal of the client certificate the TLS handshake verified.
    pub client_principal: Option<Arc<str>>,
    /// TLS: the server name the client asked for (SNI).
    pub server_name: Option<Arc<str>>,
}

impl ConnInfo {
    pub fn new(client: SocketAddr, tls: bool) -> Self {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .expect("an IP address is a valid header value");
        ConnInfo {
            client,
            tls,
            client_ip,
            client_principal: None,
            server_name: None,
        }
    }

    /// The connection's verified client certificate names `principal`.
    pub fn with_client_principal(mut self, principal: Option<Arc<str>>) -> Self {
        self.client_principal = principal;
        self
    }

    /// The server name (SNI) the client asked for in its TLS handshake.
    pub fn with_server_name(mut self, name: Option<&str>) -> Self {
        self.server_name = name.map(Arc::from);
        self
    }
}

/// Serves one request through the current runtime. Never fails: errors become responses.
pub async fn handle(
    rt: Arc<Runtime>,
    mut req: Request<ClientBody>,
    conn: Arc<ConnInfo>,
) -> Response<ResponseBody> {
    let start = Instant::now();
    let method = MethodLabel::of(req.method());

    // The forwarding headers, request id, trace context and `Via` are added below: one
    // growth of the map now instead of several, each rehashing every field.
    req.headers_mut().reserve(8);
    // A body framed by a transfer coding other than `chunked` alone cannot be forwarded
    // as it is (RFC 9112 §6.1): 501. Only a body of unknown length can have one.
    let unsupported_coding = req.body().size_hint().exact().is_none()
        && !req.body().is_end_stream()
        && !headers::transfer_coding_supported(req.headers());
    // Hop-by-hop headers belong to the client's connection, not to the request: every
    // phase sees (and the upstream gets) the request without them. An upgrade keeps its
    // `Upgrade` until the route says whether it allows that protocol.
    let upgrade_asked =
        req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    headers::strip_hop_by_hop(req.headers_mut(), upgrade_asked);

    // Phase 1: ids. The request id and trace context are set on the forwarded request; the
    // request id is also echoed on the response, so a client report can be matched with the
    // upstream's logs. `traceparent` is not echoed: W3C Trace Context defines it for
    // requests only, and the trace id is in the access log.
    let (request_id, client_id) = headers::request_id(req.headers(), &rt.forwarding);
    let trace_id = headers::ensure_traceparent(req.headers_mut());

    // Phase 2: route, by the one authority the request is for (also what its signature
    // is checked against and the `Host` it goes upstream with).
    let authority = headers::request_authority(req.version(), req.uri(), req.headers());
    let host = authority.as_ref().ok().cloned().flatten();
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
    let refusal = match (&authority, &route) {
        (Err(why), _) => Some(ProxyError::BadRequest(why)),
        _ if unsupported_coding => Some(ProxyError::UnsupportedTransferCoding),
        (_, None) => Some(ProxyError::NoRoute),
        _ => None,
    };
    let (Some(route), None) = (route, refusal) else {
        if let Some(ProxyError::BadRequest(why)) = refusal {
            tracing::debug!(client = %conn.client, reason = why, "request refused");
        }
        let completion = Completion::new(start, rt.unmatched.clone(), method, None, log);
        return Rejection::Error(refusal.unwrap_or(ProxyError::NoRoute)).respond(
            completion,
            &request_id,
            &rt,
        );
    };
    // Only the upgrades the route allows (WebSocket by default) are passed on; any other
    // (`h2c` above all, which would hand the connection to the upstream past every check)
    // is dropped and the request forwarded as a plain one.
    let upgrade = upgrade_asked && headers::upgrade_allowed(req.headers(), &route.config.upgrades);
    if upgrade_asked && !upgrade {
        req.headers_mut().remove(header::UPGRADE);
        req.headers_mut().remove(header::CONNECTION);
    }

    let counter = (!req.body().is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
    let mut completion =
        Completion::new(start, route.metrics.clone(), method, counter.clone(), log);
    let upstream = &route.upstream;
    // Phase 11 for observing plugins starts here: whatever becomes of the request, its
    // record reaches them when its response ends.
    if let Some(observers) = route.plugins.observers() {
        completion.observe(observers.start(
            &req,
            if conn.tls { "https" } else { "http" },
            host.as_ref(),
            conn.client.ip(),
            &request_id,
        ));
    }

    // Phase 3: blocklist, then phase 4: the limiters whose key is known before auth and
    // before the body is read (client and route).
    let client = headers::client_address(
        conn.client.ip(),
        req.headers(),
        &rt.forwarding.trusted_proxies,
    );
    let blocklist = &rt.config.blocklist.list;
    if route.config.blocklist && !blocklist.is_empty() {
        if let Some(reason) = blocklist.check(client, req.headers()) {
            return blocked(reason, &route, client, completion, &request_id, &rt);
        }
    }
    if let Err(refusal) = route.limits.check_early(client) {
        return Rejection::RateLimited(refusal).respond(completion, &request_id, &rt);
    }

    // Phase 5: auth. Credentials are in the head (and the connection), so a refused request
    // is answered before its body is read.
    let principal: Option<(crate::auth::AuthMethod, Arc<str>)> = match &route.auth {
        None => None,
        Some(auth) => match auth.check_with_method(req.headers(), conn.client_principal.as_ref()) {
            Ok(p) => Some(p),
            Err(refusal) => {
                return Rejection::Auth(refusal, auth).respond(completion, &request_id, &rt)
            }
        },
    };
    if let (Some(o), Some(p)) = (completion.observed(), &principal) {
        o.principal = Some(p.clone());
    }
    // The principal's own limiters, now that it is known.
    if !route.limits.principal.is_empty() {
        if let Err(refusal) = route
            .limits
            .check_principal(principal.as_ref().map(|p| &p.1))
        {
            return Rejection::RateLimited(refusal).respond(completion, &request_id, &rt);
        }
    }

    // An HTTP/1.1 upgrade (WebSocket) needs an HTTP/1.1 upstream connection to take over:
    // HTTP/2 has no `Upgrade` (RFC 9113 §8.6), so the gateway says so itself instead of
    // sending the upstream a request it must refuse (a 502 that would look like its fault).
    if upgrade && upstream.config.protocol == UpstreamProtocol::Http2 {
        return Rejection::Error(ProxyError::UpgradeUnsupported).respond(
            completion,
            &request_id,
            &rt,
        );
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let client_version = req.version();
    let (mut parts, mut body) = req.into_parts();
    // A try that fails because the client's body did (an error, a reset stream) is the
    // client's failure: 400, and nothing for the upstream's health or breaker. HTTP/1.1
    // upstreams tell it apart themselves; hyper's HTTP/2 client does not.
    let body_failure = (upstream.config.protocol == UpstreamProtocol::Http2
        && !body.is_end_stream())
    .then(|| body.failure_watch());

    // Routes whose plugins read bodies get them whole, up to their limit; so do routes that
    // check signatures, whose digests cover the exact body.
    let verifies = route.signatures.is_some();
    let limit = route
        .config
        .buffer_body
        .or(verifies.then_some(rt.config.signatures.max_body));
    let (body, buffered) = match limit {
        Some(limit) if !upgrade => {
            let read = tokio::time::timeout(
                route.response_timeout,
                crate::upload::read_whole(body, limit, counter.as_deref()),
            )
            .await;
            match read {
                Ok(Ok(bytes)) => (RequestBody::buffered(bytes.clone()), Some(bytes)),
                Ok(Err(BufferError::TooLarge)) => {
                    return Rejection::Error(ProxyError::BodyTooLarge).respond(
                        completion,
                        &request_id,
                        &rt,
                    )
                }
                Ok(Err(BufferError::Client)) | Err(_) => {
                    return Rejection::Error(ProxyError::BadRequest(
                        "the request body could not be read",
                    ))
                    .respond(completion, &request_id, &rt)
                }
            }
        }
        _ => (RequestBody::new(body, counter.clone()), None),
    };

    // The federation view of a buffered body, parsed once, the first time anything asks:
    // the blocklist here, plugins in phase 7.
    let blocks = route.config.blocklist && blocklist.has_domains();
    let readers = blocks
        || route.plugins.wants_request()
        || route.plugins.wants_response()
        || route.plugins.observers().is_some();
    let activity = buffered.as_ref().filter(|_| readers).map(|b| {
        Arc::new(crate::activity::LazyActivity::new(
            b.clone(),
            crate::activity::is_activity_json(&parts.headers),
        ))
    });
    if let Some(o) = completion.observed() {
        o.activity = activity.clone();
    }

    // Phase 3 again, now that the body is at hand: an activity of a blocked actor is
    // refused whoever signed it, before its signature costs anything.
    if let Some(view) = activity.as_deref().filter(|_| blocks) {
        if let Some(reason) = blocklist.check_activity_view(view) {
            return blocked(reason, &route, client, completion, &request_id, &rt);
        }
    }

    // Phase 6: signatures, checked on the request as the client sent it.
    let mut signer = None;
    if let Some(counters) = &route.signatures {
        let message = Message {
            method: &parts.method,
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            authority: host.as_ref().and_then(|h| h.to_str().ok()),
            scheme: if conn.tls { "https" } else { "http" },
            headers: &parts.headers,
        };
        let body = buffered.as_deref().unwrap_or_default();
        // Awaits only when the key must be fetched; a trust-store key is checked in place.
        let checked = rt
            .verifier
            .verify(counters, &message, body, SystemTime::now())
            .await;
        if checked.outcome != Outcome::Valid {
            tracing::debug!(
                route = %route.name,
                scheme = checked.scheme.as_str(),
                result = checked.outcome.as_str(),
                reason = checked.reason.as_deref().unwrap_or_default(),
                "signature check failed"
            );
            if route.config.signatures == SignatureMode::Enforce {
                return Rejection::Signature(&checked).respond(completion, &request_id, &rt);
            }
        }
        signer = checked.signer;
        if let (Some(o), Some(s)) = (completion.observed(), &signer) {
            o.signer = Some(s.clone());
        }
        // The blocklist on the verified signer, whatever key id phase 3 was shown.
        if let Some(s) = signer
            .as_ref()
            .filter(|s| blocks && blocklist.blocks_signer(s))
        {
            tracing::debug!(route = %route.name, instance = %s.instance, "verified signer blocked");
            return blocked(
                crate::blocklist::Reason::Instance,
                &route,
                client,
                completion,
                &request_id,
                &rt,
            );
        }
    }
    if !route.limits.instance.is_empty() {
        let instance = signer
            .as_ref()
            .map(|s| Arc::<str>::from(s.instance.as_str()));
        if let Err(refusal) = route.limits.check_instance(instance.as_ref()) {
            return Rejection::RateLimited(refusal).respond(completion, &request_id, &rt);
        }
    }

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
        // The authority the request was routed and checked by, also when it came in the
        // target (absolute form, `:authority`) rather than in `Host`.
        if let Some(h) = host.clone() {
            parts.headers.insert(header::HOST, h);
        }
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

    // Phase 7: plugins see the request as the upstream will. A chain of health-check-only
    // plugins has nothing to do here.
    let mut seen = None;
    if route.plugins.wants_request() || route.plugins.wants_response() {
        let mut exchange = Box::new(Exchange {
            method: std::mem::take(&mut parts.method),
            uri: std::mem::take(&mut parts.uri),
            headers: std::mem::take(&mut parts.headers),
            scheme: if conn.tls { "https" } else { "http" },
            authority: host.clone(),
            client: Some(conn.client.ip()),
            route: route.name.clone(),
            upstream: route.upstream_name.clone(),
            request_id: Some(request_id.clone()),
            body: buffered,
            signer,
            started: Some(start),
            response: None,
            activity,
            principal: principal.clone(),
            version: parts.version,
            tls: conn.tls.then(|| crate::plugin::TlsFacts {
                server_name: conn.server_name.clone(),
                client_subject: conn.client_principal.clone(),
            }),
        });
        let decision = if route.plugins.wants_request() {
            route.plugins.on_request(&mut exchange)
        } else {
            Decision::Continue
        };
        if route.plugins.wants_response() {
            // on-response needs the request again after it has gone upstream.
            parts.method = exchange.method.clone();
            parts.uri = exchange.uri.clone();
            parts.headers = exchange.headers.clone();
            seen = Some(exchange);
        } else {
            let exchange = *exchange;
            parts.method = exchange.method;
            parts.uri = exchange.uri;
            parts.headers = exchange.headers;
        }
        match decision {
            Decision::Continue => {}
            Decision::Deny(d) => return Rejection::Plugin(d).respond(completion, &request_id, &rt),
            Decision::Failed => {
                return Rejection::Error(ProxyError::PluginFailed).respond(
                    completion,
                    &request_id,
                    &rt,
                )
            }
        }
    }

    // Phase 8: circuit breaker admission, then an eligible endpoint (healthy, not
    // ejected) by balancing, or 503.
    let breaker = route.breaker.as_deref();
    // Reported with the try's outcome; dropped unreported (no endpoint, the client gone),
    // it gives its place back.
    let mut admission = match breaker.map(|b| b.admit()) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(wait)) => {
            failure_seen(&route, seen, ProxyError::CircuitOpen, None);
            return Rejection::CircuitOpen(wait).respond(completion, &request_id, &rt);
        }
    };
    let Some(mut lease) = upstream.pick() else {
        drop(admission);
        failure_seen(&route, seen, ProxyError::NoHealthyEndpoint, None);
        upstream
            .metrics
            .error(crate::metrics::UpstreamErrorKind::NoHealthyEndpoint);
        return Rejection::Error(ProxyError::NoHealthyEndpoint).respond(
            completion,
            &request_id,
            &rt,
        );
    };
    if !rt.forwarding.preserve_host {
        set_endpoint_host(&mut parts.headers, &lease);
    }

    // Phase 9: forward; idempotent requests whose body the gateway holds are tried again,
    // within the upstream's retry budget.
    let retry = route
        .retries
        .as_deref()
        .filter(|r| !upgrade && r.eligible(&parts.method));
    // Every request to the upstream counts toward the budget, retried or not.
    let _active = route.retries.as_deref().map(|r| r.active());
    // A copy of the body to send again, when a retry may be wanted (and the body is held
    // whole). The head is kept as it is: HTTP/1.1 upstreams only read it.
    let template = retry.and_then(|_| body.replica());
    let mut body = Some(body);
    let sent = Instant::now();
    // The deadline comes from the instant already read: one clock read fewer per request.
    let started = tokio::time::Instant::from_std(sent);
    let deadline = started + route.response_timeout;
    let mut retried = 0u32;
    let mut _retry_slot = None;
    let result = loop {
        let (try_deadline, try_timeout) = match retry.and_then(|r| r.config.per_try_timeout) {
            Some(t) if retried == 0 => (deadline.min(started + t), t),
            Some(t) => (deadline.min(tokio::time::Instant::now() + t), t),
            None => (deadline, route.response_timeout),
        };
        let sending = body
            .take()
            .unwrap_or_else(|| RequestBody::buffered(Bytes::new()));
        let result = match crate::deadline::within(
            try_deadline,
            try_timeout,
            counter.clone(),
            lease.send(&mut parts, sending, upgrade, template.is_some()),
        )
        .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                tracing::debug!(upstream = %upstream.name, endpoint = %lease.endpoint().label, error = %e.detail, "upstream request failed");
                Err(e.kind)
            }
            Err(_) => Err(ProxyError::UpstreamTimeout),
        };
        let result = match result {
            Err(_) if body_failure.as_ref().is_some_and(|g| g.failed()) => {
                Err(ProxyError::BadRequest("request body"))
            }
            other => other,
        };
        // Classified once; outlier detection, the breaker and retries each judge it.
        let outcome = TryOutcome::of(&result);
        upstream.report(&lease, !outcome.endpoint_failed());
        if let (Some(b), Some(a)) = (breaker, admission.take()) {
            a.report_at(outcome.breaker_failed(b), started);
        }
        let Some(r) = retry else { break result };
        let again = outcome.retryable(r);
        if retried > 0 {
            r.count(if again {
                RetryOutcome::Failure
            } else {
                RetryOutcome::Success
            });
        }
        let Some(template) = template.as_ref().filter(|_| {
            again && retried < r.config.max_retries && tokio::time::Instant::now() < deadline
        }) else {
            break result;
        };
        // The retry just made (if any) is over: its place in the budget is free again.
        _retry_slot = None;
        let Some(slot) = r.admit() else { break result };
        admission = match breaker.map(|b| b.admit()) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(_)) => {
                r.count(RetryOutcome::NoEndpoint);
                break result;
            }
        };
        // The failed try is the upstream's error all the same.
        if let Err(kind) = &result {
            if let Some(k) = kind.upstream_kind() {
                upstream.metrics.error(k);
            }
        }
        _retry_slot = Some(slot);
        retried += 1;
        // Another eligible endpoint if there is one; else the same one again (a reset on a
        // reused connection is worth a second try there too).
        let Some(other) = upstream
            .pick_other(lease.index())
            .or_else(|| upstream.pick())
        else {
            drop(admission.take());
            r.count(RetryOutcome::NoEndpoint);
            break result;
        };
        lease = other;
        if !rt.forwarding.preserve_host {
            set_endpoint_host(&mut parts.headers, &lease);
        }
        body = template.replica();
        tracing::debug!(upstream = %upstream.name, endpoint = %lease.endpoint().label, retry = retried, "retrying");
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(kind) => {
            failure_seen(&route, seen, kind, Some(&lease));
            return upstream_failure(kind, lease, completion, &request_id, &rt);
        }
    };
    let latency = sent.elapsed();
    if let Some(o) = completion.observed() {
        o.upstream_latency = Some(latency);
    }
    upstream.metrics.duration.observe(latency.as_secs_f64());
    let endpoint_label = seen.as_ref().map(|_| lease.endpoint().label.clone());
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
    if !matches!(body, Relay::Pooled(_)) {
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

    // Phase 10: plugins see the response head as the client will.
    if let Some(mut exchange) = seen {
        exchange.response = Some(ResponseView {
            status: parts.status.as_u16(),
            headers: std::mem::take(&mut parts.headers),
            error: None,
            endpoint: endpoint_label,
            upstream_latency: Some(latency),
        });
        route.plugins.on_response(&mut exchange);
        if let Some(view) = exchange.response {
            parts.headers = view.headers;
        }
    }
    Response::from_parts(
        parts,
        ResponseBody::upstream(body, lease, completion, route.response_timeout),
    )
}

/// Phase 10 for a request the upstream failed: plugins see the gateway's answer.
fn failure_seen(
    route: &Route,
    seen: Option<Box<Exchange>>,
    err: ProxyError,
    lease: Option<&Lease>,
) {
    let Some(mut exchange) = seen else { return };
    exchange.response = Some(ResponseView {
        status: err.status().as_u16(),
        headers: HeaderMap::new(),
        error: Some(err.code()),
        endpoint: lease.map(|l| l.endpoint().label.clone()),
        upstream_latency: None,
    });
    route.plugins.on_response(&mut exchange);
}

/// `Host` for an upstream that gets its endpoint's authority (`preserve_host = false`).
fn set_endpoint_host(headers: &mut HeaderMap, lease: &Lease) {
    if let Ok(h) = HeaderValue::from_str(lease.endpoint().config.authority.as_str()) {
        headers.insert(header::HOST, h);
    }
}

/// 403 for a request phase 3 refused, counted by its reason.
fn blocked(
    reason: crate::blocklist::Reason,
    route: &Route,
    client: std::net::IpAddr,
    completion: Completion,
    request_id: &HeaderValue,
    rt: &Runtime,
) -> Response<ResponseBody> {
    rt.blocked[reason as usize].inc();
    tracing::debug!(route = %route.name, client = %client, reason = reason.as_str(), "request blocked");
    Rejection::Error(ProxyError::Blocked).respond(completion, request_id, rt)
}

fn upstream_failure(
    err: ProxyError,
    lease: Lease,
    completion: Completion,
    request_id: &HeaderValue,
    rt: &Runtime,
) -> Response<ResponseBody> {
    if let Some(kind) = err.upstream_kind() {
        lease.upstream().metrics.error(kind);
    }
    let mut resp = Rejection::Error(err).respond(completion, request_id, rt);
    resp.body_mut().hold_lease(lease);
    resp
}
