//! Phases 3 to 6, cheap checks first: the blocklist on the client, the limiters whose key
//! is known before auth, auth and the principal's limiters, the body (read whole where a
//! route needs it), the blocklist on the activity, signatures, the blocklist on the
//! verified signer and the instance limiters. Then the request as the upstream gets it.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header;
use http::request::Parts;
use http::{Request, Uri, Version};
use http_body::Body as _;

use super::{Ctx, Rejection};
use crate::activity::LazyActivity;
use crate::auth::AuthMethod;
use crate::blocklist::Reason;
use crate::config::{SignatureMode, UpstreamProtocol};
use crate::error::ProxyError;
use crate::headers;
use crate::signature::verifier::Signer;
use crate::signature::{Message, Outcome};
use crate::upload::{BufferError, ClientBody, EndGate, RequestBody};

/// What admission learned about the request, for the plugins of phase 7.
pub(super) struct Facts {
    pub principal: Option<(AuthMethod, Arc<str>)>,
    pub signer: Option<Signer>,
    pub activity: Option<Arc<LazyActivity>>,
}

/// The request's body, as it goes upstream.
pub(super) struct Admitted {
    pub body: RequestBody,
    /// The whole body, where the route reads it whole (plugins, signatures).
    pub buffered: Option<Bytes>,
    /// Whether the client's body failed: a try that fails because of it is the client's
    /// failure (400), nothing for the upstream's health or breaker. HTTP/1.1 upstreams
    /// tell it apart themselves; hyper's HTTP/2 client does not.
    pub body_failure: Option<Arc<EndGate>>,
}

impl Ctx {
    /// Phase 3, the blocklist on the client, then phase 4: the limiters whose key is known
    /// before auth and before the body is read (client and route).
    #[inline(always)]
    pub(super) fn screen_client(&self, req: &Request<ClientBody>) -> Result<(), Rejection> {
        let blocklist = &self.rt.config.blocklist.list;
        if self.route.config.blocklist && !blocklist.is_empty() {
            if let Some(reason) = blocklist.check(self.client, req.headers()) {
                return Err(self.blocked(reason));
            }
        }
        self.route
            .limits
            .check_early(self.client)
            .map_err(Rejection::RateLimited)
    }

    /// Phase 5: auth, then the principal's own limiters. Credentials are in the head (and
    /// the connection), so a refused request is answered before its body is read.
    #[inline(always)]
    pub(super) fn authenticate(
        &mut self,
        req: &Request<ClientBody>,
    ) -> Result<Option<(AuthMethod, Arc<str>)>, Rejection> {
        let route = &self.route;
        let principal = match &route.auth {
            None => None,
            Some(auth) => Some(
                auth.check_with_method(req.headers(), self.conn.client_principal.as_ref())
                    .map_err(|refusal| Rejection::Auth(refusal, auth.challenge().clone()))?,
            ),
        };
        if let (Some(o), Some(p)) = (self.completion.observed(), &principal) {
            o.principal = Some(p.clone());
        }
        if !route.limits.principal.is_empty() {
            route
                .limits
                .check_principal(principal.as_ref().map(|p| &p.1))
                .map_err(Rejection::RateLimited)?;
        }
        Ok(principal)
    }

    /// The client's side of an upgrade the route passes on. An HTTP/1.1 upgrade (WebSocket)
    /// needs an HTTP/1.1 upstream connection to take over: HTTP/2 has no `Upgrade` (RFC 9113
    /// §8.6), so the gateway says so itself instead of sending the upstream a request it
    /// must refuse (a 502 that would look like its fault).
    #[inline(always)]
    pub(super) fn take_upgrade(
        &self,
        req: &mut Request<ClientBody>,
    ) -> Result<Option<hyper::upgrade::OnUpgrade>, Rejection> {
        if !self.upgrade {
            return Ok(None);
        }
        if self.route.upstream.config.protocol == UpstreamProtocol::Http2 {
            return Err(Rejection::Error(ProxyError::UpgradeUnsupported));
        }
        Ok(Some(hyper::upgrade::on(req)))
    }

    /// The body: read whole, up to their limit, on routes whose plugins read bodies and on
    /// routes that check signatures (whose digests cover the exact body); else streamed.
    #[inline(always)]
    pub(super) async fn read_body(&self, mut body: ClientBody) -> Result<Admitted, Rejection> {
        let route = &self.route;
        let body_failure = (route.upstream.config.protocol == UpstreamProtocol::Http2
            && !body.is_end_stream())
        .then(|| body.failure_watch());
        let limit = route.config.buffer_body.or(route
            .signatures
            .is_some()
            .then_some(self.rt.config.signatures.max_body));
        let Some(limit) = limit.filter(|_| !self.upgrade) else {
            return Ok(Admitted {
                body: RequestBody::new(body, self.counter.clone()),
                buffered: None,
                body_failure,
            });
        };
        let read = tokio::time::timeout(
            route.response_timeout,
            crate::upload::read_whole(body, limit, self.counter.as_deref()),
        )
        .await;
        match read {
            Ok(Ok(bytes)) => Ok(Admitted {
                body: RequestBody::buffered(bytes.clone()),
                buffered: Some(bytes),
                body_failure,
            }),
            Ok(Err(BufferError::TooLarge)) => Err(Rejection::Error(ProxyError::BodyTooLarge)),
            Ok(Err(BufferError::Client)) | Err(_) => Err(Rejection::Error(ProxyError::BadRequest(
                "the request body could not be read",
            ))),
        }
    }

    /// The federation view of a buffered body, parsed once, the first time anything asks
    /// (the blocklist here, plugins in phase 7); then phase 3 again, now that the body is
    /// at hand: an activity of a blocked actor is refused whoever signed it, before its
    /// signature costs anything.
    #[inline(always)]
    pub(super) fn screen_activity(
        &mut self,
        parts: &Parts,
        admitted: &Admitted,
    ) -> Result<Option<Arc<LazyActivity>>, Rejection> {
        let route = &self.route;
        let blocks = self.blocks();
        let readers = blocks
            || route.plugins.wants_request()
            || route.plugins.wants_response()
            || route.plugins.observers().is_some();
        let activity = admitted.buffered.as_ref().filter(|_| readers).map(|b| {
            Arc::new(LazyActivity::new(
                b.clone(),
                crate::activity::is_activity_json(&parts.headers),
            ))
        });
        if let Some(o) = self.completion.observed() {
            o.activity = activity.clone();
        }
        if let Some(view) = activity.as_deref().filter(|_| blocks) {
            if let Some(reason) = self.rt.config.blocklist.list.check_activity_view(view) {
                return Err(self.blocked(reason));
            }
        }
        Ok(activity)
    }

    /// Phase 6: signatures, checked on the request as the client sent it; then the
    /// blocklist on the verified signer and the limiters keyed by its instance.
    #[inline(always)]
    pub(super) async fn verify(
        &mut self,
        parts: &Parts,
        admitted: &Admitted,
    ) -> Result<Option<Signer>, Rejection> {
        let mut signer = None;
        if let Some(counters) = &self.route.signatures {
            let message = Message {
                method: &parts.method,
                path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
                authority: self.host.as_ref().and_then(|h| h.to_str().ok()),
                scheme: self.conn.scheme(),
                headers: &parts.headers,
            };
            let body = admitted.buffered.as_deref().unwrap_or_default();
            // Awaits only when the key must be fetched; a trust-store key is checked in place.
            let mut checked = self
                .rt
                .verifier
                .verify(counters, &message, body, SystemTime::now())
                .await;
            if checked.outcome != Outcome::Valid {
                tracing::debug!(
                    route = %self.route.name,
                    scheme = checked.scheme.as_str(),
                    result = checked.outcome.as_str(),
                    reason = checked.reason.as_deref().unwrap_or_default(),
                    "signature check failed"
                );
                if self.route.config.signatures == SignatureMode::Enforce {
                    return Err(Rejection::Signature(Box::new(checked)));
                }
            }
            signer = checked.signer.take();
            if let (Some(o), Some(s)) = (self.completion.observed(), &signer) {
                o.signer = Some(s.clone());
            }
            // The blocklist on the verified signer, whatever key id phase 3 was shown.
            if let Some(s) = signer
                .as_ref()
                .filter(|s| self.blocks() && self.rt.config.blocklist.list.blocks_signer(s))
            {
                tracing::debug!(route = %self.route.name, instance = %s.instance, "verified signer blocked");
                return Err(self.blocked(Reason::Instance));
            }
        }
        if !self.route.limits.instance.is_empty() {
            let instance = signer
                .as_ref()
                .map(|s| Arc::<str>::from(s.instance.as_str()));
            self.route
                .limits
                .check_instance(instance.as_ref())
                .map_err(Rejection::RateLimited)?;
        }
        Ok(signer)
    }

    /// The request as the upstream gets it: the target in origin form, byte for byte (the
    /// endpoint decides where), the upstream's version, `Host`, the forwarding headers,
    /// `Via` and the request id.
    #[inline(always)]
    pub(super) fn to_upstream(&self, parts: &mut Parts) {
        let rt = &self.rt;
        parts.uri = match parts.uri.path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        };
        parts.version = match self.route.upstream.config.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
        };
        if rt.forwarding.preserve_host {
            // The authority the request was routed and checked by, also when it came in the
            // target (absolute form, `:authority`) rather than in `Host`.
            if let Some(h) = self.host.clone() {
                parts.headers.insert(header::HOST, h);
            }
        }
        headers::add_client_headers(
            &mut parts.headers,
            &rt.forwarding,
            self.conn.client.ip(),
            &self.conn.client_ip,
            self.conn.tls,
            self.host.as_ref(),
        );
        if let Some(via) = &rt.via {
            parts
                .headers
                .append(header::VIA, via.for_version(self.version).clone());
        }
        if !self.client_id {
            parts
                .headers
                .insert(&rt.forwarding.request_id_header, self.request_id.clone());
        }
    }

    /// Whether the blocklist reads the body and the signer on this route.
    fn blocks(&self) -> bool {
        self.route.config.blocklist && self.rt.config.blocklist.list.has_domains()
    }

    /// 403 for a request phase 3 refused, counted by its reason.
    fn blocked(&self, reason: Reason) -> Rejection {
        self.rt.blocked[reason as usize].inc();
        tracing::debug!(route = %self.route.name, client = %self.client, reason = reason.as_str(), "request blocked");
        Rejection::Error(ProxyError::Blocked)
    }
}
