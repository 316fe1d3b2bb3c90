//! The request path: one request through the phases of `docs/architecture.md`, in order.
//!
//! [`handle`] is the phase chart as code. Each phase is a call that passes the request on or
//! answers in the upstream's place with a [`Rejection`]; [`Rejection::respond`] is the one
//! conversion of every such answer into a response. The phases live by concern:
//!
//! - here: phases 1 and 2 (what the edge refuses outright, ids, route) in [`Ctx::enter`],
//!   and phase 10's response head in `respond`;
//! - [`admission`]: phases 3 to 6, cheap checks first: blocklist, the early limiters, auth
//!   and the principal's limiters, the body (read whole where a route needs it), the
//!   blocklist on the activity, signatures, the blocklist on the signer and the instance
//!   limiters; then the request as the upstream gets it;
//! - [`plugins`]: phase 7 (plugins see the request as the upstream will) and phase 10's
//!   plugin calls;
//! - [`forward`]: phases 8 and 9, the tries of the upstream: each a [`forward`] `Try` that
//!   owns its breaker admission, endpoint, retry-budget slot and deadline;
//! - phase 11, the record, travels in the response body (`record::Completion`) and is
//!   written when that body ends.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use http_body::Body as _;
use hyper_util::rt::TokioIo;

use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::headers;
use crate::metrics::MethodLabel;
use crate::plugin::Exchange;
use crate::record::{AccessLog, Completion};

use crate::runtime::{Route, Runtime};
use crate::upload::ClientBody;
use crate::upstream::{Lease, Relay};

mod admission;
mod forward;
mod plugins;
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

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// Serves one request through the current runtime. Never fails: errors become responses.
pub async fn handle(
    rt: Arc<Runtime>,
    mut req: Request<ClientBody>,
    conn: Arc<ConnInfo>,
) -> Response<ResponseBody> {
    // Phases 1 and 2: what the edge refuses outright, ids, the route.
    let mut cx = match Ctx::enter(rt, &mut req, conn) {
        Ok(entered) => entered,
        Err(refused) => return *refused,
    };
    // A phase passes the request on, or the gateway answers in the upstream's place.
    macro_rules! pass {
        ($phase:expr) => {
            match $phase {
                Ok(passed) => passed,
                Err(rejection) => return cx.reject(rejection),
            }
        };
    }
    pass!(cx.screen_client(&req)); // 3, 4: blocklist, client and route limiters
    let principal = pass!(cx.authenticate(&req)); // 5: auth, principal limiters
    let client_upgrade = pass!(cx.take_upgrade(&mut req));
    let (mut parts, body) = req.into_parts();
    let mut admitted = pass!(cx.read_body(body).await); // the body, where it is read whole
    let activity = pass!(cx.screen_activity(&parts, &admitted)); // 3 again, on the activity
    let signer = pass!(cx.verify(&parts, &admitted).await); // 6: signatures, instance limiters
    cx.to_upstream(&mut parts);
    let facts = admission::Facts {
        principal,
        signer,
        activity,
    };
    pass!(cx.on_request(&mut parts, admitted.buffered.take(), facts)); // 7: plugins
    let answered = pass!(cx.forward(&mut parts, &mut admitted).await); // 8, 9: breaker, endpoint, tries
    cx.respond(answered, client_upgrade) // 10
}

/// What the phases learn about one request and pass on, from the route to the response.
struct Ctx {
    /// When the request's head was read.
    start: Instant,
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    route: Arc<Route>,
    /// Phase 11's record, handed to the response body.
    completion: Completion,
    request_id: HeaderValue,
    /// Whether the client sent the request id itself (then it goes upstream as it came).
    client_id: bool,
    /// The one authority the request is for: what it was routed by, what its signature is
    /// checked against and the `Host` it goes upstream with.
    host: Option<HeaderValue>,
    /// The client's address, after trusted proxies.
    client: IpAddr,
    /// An HTTP/1.1 upgrade the route allows, passed on to the upstream.
    upgrade: bool,
    /// The client's version, for `Via`.
    version: Version,
    /// Request body bytes read so far, when the request has a body.
    counter: Option<Arc<AtomicU64>>,
    /// Phase 10 for plugins that read the response: the exchange phase 7 let through.
    seen: Option<Box<Exchange>>,
    /// The endpoint of a failed last try, for those plugins.
    endpoint: Option<Arc<str>>,
    /// The lease of that endpoint, held by the gateway's answer: its record names the
    /// endpoint, and the endpoint's in-flight count lasts until the answer is sent.
    failed: Option<Lease>,
}

impl Ctx {
    /// Phases 1 and 2. A request the edge refuses (a transfer coding other than `chunked`,
    /// a missing, repeated or invalid `Host`) or no route takes is answered here, recorded
    /// on the unmatched metrics.
    #[inline(always)]
    fn enter(
        rt: Arc<Runtime>,
        req: &mut Request<ClientBody>,
        conn: Arc<ConnInfo>,
    ) -> Result<Ctx, Box<Response<ResponseBody>>> {
        let start = Instant::now();
        let method = MethodLabel::of(req.method());

        // The forwarding headers, request id, trace context and `Via` are added later: one
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

        // Phase 1: ids. The request id and trace context are set on the forwarded request;
        // the request id is also echoed on the response, so a client report can be matched
        // with the upstream's logs. `traceparent` is not echoed: W3C Trace Context defines
        // it for requests only, and the trace id is in the access log.
        let (request_id, client_id) = headers::request_id(req.headers(), &rt.forwarding);
        let trace_id = headers::ensure_traceparent(req.headers_mut());

        // Phase 2: route, by the one authority the request is for.
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
            let error = refusal.unwrap_or(ProxyError::NoRoute);
            return Err(Box::new(Rejection::Error(error).respond(
                completion,
                &request_id,
                &rt,
            )));
        };
        // Only the upgrades the route allows (WebSocket by default) are passed on; any
        // other (`h2c` above all, which would hand the connection to the upstream past
        // every check) is dropped and the request forwarded as a plain one.
        let upgrade =
            upgrade_asked && headers::upgrade_allowed(req.headers(), &route.config.upgrades);
        if upgrade_asked && !upgrade {
            req.headers_mut().remove(header::UPGRADE);
            req.headers_mut().remove(header::CONNECTION);
        }

        let counter = (!req.body().is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
        let mut completion =
            Completion::new(start, route.metrics.clone(), method, counter.clone(), log);
        // Phase 11 for observing plugins starts here: whatever becomes of the request, its
        // record reaches them when its response ends.
        if let Some(observers) = route.plugins.observers() {
            completion.observe(observers.start(
                req,
                conn.scheme(),
                host.as_ref(),
                conn.client.ip(),
                &request_id,
            ));
        }
        let client = headers::client_address(
            conn.client.ip(),
            req.headers(),
            &rt.forwarding.trusted_proxies,
        );
        let version = req.version();
        let cx = Ctx {
            start,
            rt,
            conn,
            route,
            completion,
            request_id,
            client_id,
            host,
            client,
            upgrade,
            version,
            counter,
            seen: None,
            endpoint: None,
            failed: None,
        };
        Ok(cx)
    }

    /// Phase 10 for a response the upstream gave: its head as the client gets it, seen by
    /// the plugins that read responses; the upgraded connection spliced, if it switched
    /// protocols; phase 11's record handed to the body.
    #[inline(always)]
    fn respond(
        mut self,
        answered: forward::Answered,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ResponseBody> {
        let forward::Answered {
            mut resp,
            lease,
            latency,
        } = answered;
        let route = &self.route;
        if let Some(o) = self.completion.observed() {
            o.upstream_latency = Some(latency);
        }
        route
            .upstream
            .metrics
            .duration
            .observe(latency.as_secs_f64());
        let endpoint_label = self.seen.as_ref().map(|_| lease.endpoint().label.clone());
        self.completion.set_status(resp.status().as_u16());

        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                splice(client_upgrade, hyper::upgrade::on(&mut resp));
            }
        }

        let (mut parts, body) = resp.into_parts();
        // A pooled HTTP/1.1 response had its hop-by-hop fields dropped as it was parsed.
        if !matches!(body, Relay::Pooled(_)) {
            let switching = parts.status == http::StatusCode::SWITCHING_PROTOCOLS && self.upgrade;
            headers::strip_hop_by_hop(&mut parts.headers, switching);
        }
        if let Some(via) = &self.rt.via {
            parts
                .headers
                .append(header::VIA, via.for_version(parts.version).clone());
        }
        parts
            .headers
            .insert(&self.rt.forwarding.request_id_header, self.request_id);

        if let Some(exchange) = self.seen.take() {
            plugins::on_response(route, exchange, &mut parts, endpoint_label, latency);
        }
        Response::from_parts(
            parts,
            ResponseBody::upstream(body, lease, self.completion, route.response_timeout),
        )
    }

    /// A phase answered in the upstream's place. Past phase 7, the plugins that read
    /// responses see the gateway's answer as the response.
    fn reject(mut self, rejection: Rejection) -> Response<ResponseBody> {
        let answer = rejection.answer();
        if let Some(exchange) = self.seen.take() {
            plugins::on_failure(&self.route, exchange, &answer, self.endpoint.take());
        }
        let mut resp = answer.respond(self.completion, &self.request_id, &self.rt);
        if let Some(lease) = self.failed.take() {
            resp.body_mut().hold_lease(lease);
        }
        resp
    }
}

/// An upgraded connection (WebSocket): the client's and the upstream's, copied both ways
/// until either ends.
fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        match tokio::try_join!(client, upstream) {
            Ok((c, u)) => {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u)).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, F: std::future::Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request's future is copied whole into its box on its way into hyper's
    /// connection (`server.rs`), and the phases' futures are laid out inside it: a phase
    /// that grows it (an async fn's by-value arguments are held twice, say) costs every
    /// request. About 3 000 bytes in a debug build when this was written.
    #[test]
    fn the_request_future_stays_within_its_budget() {
        let size = future_size(handle);
        assert!(size <= 3_200, "proxy::handle's future is {size} bytes");
    }
}
