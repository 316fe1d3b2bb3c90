//! Phases 7 and 10 as the request path runs them: plugins see the request as the upstream
//! will, and the response head (or the gateway's answer in its place) as the client will.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::HeaderMap;

use super::admission::Facts;
use super::reject::Answer;
use crate::runtime::Route;
use super::{Ctx, Rejection};
use crate::error::ProxyError;
use crate::plugin::{Decision, Exchange, ResponseView, TlsFacts};

impl Ctx {
    /// Phase 7. A chain of health-check-only plugins has nothing to do here. The request
    /// goes on as the plugins left it; a chain that reads responses keeps the exchange for
    /// phase 10.
    #[inline(always)]
    pub(super) fn on_request(
        &mut self,
        parts: &mut Parts,
        body: Option<Bytes>,
        facts: Facts,
    ) -> Result<(), Rejection> {
        let plugins = &self.route.plugins;
        if !plugins.wants_request() && !plugins.wants_response() {
            return Ok(());
        }
        let conn = &self.conn;
        let mut exchange = Box::new(Exchange {
            method: std::mem::take(&mut parts.method),
            uri: std::mem::take(&mut parts.uri),
            headers: std::mem::take(&mut parts.headers),
            scheme: conn.scheme(),
            authority: self.host.clone(),
            client: Some(conn.client.ip()),
            route: self.route.name.clone(),
            upstream: self.route.upstream_name.clone(),
            request_id: Some(self.request_id.clone()),
            body,
            signer: facts.signer,
            started: Some(self.start),
            response: None,
            activity: facts.activity,
            principal: facts.principal,
            version: parts.version,
            tls: conn.tls.then(|| TlsFacts {
                server_name: conn.server_name.clone(),
                client_subject: conn.client_principal.clone(),
            }),
        });
        let decision = if plugins.wants_request() {
            plugins.on_request(&mut exchange)
        } else {
            Decision::Continue
        };
        let keep = plugins.wants_response() && matches!(decision, Decision::Continue);
        if keep {
            // on-response needs the request again after it has gone upstream.
            parts.method = exchange.method.clone();
            parts.uri = exchange.uri.clone();
            parts.headers = exchange.headers.clone();
            self.seen = Some(exchange);
        } else {
            let exchange = *exchange;
            parts.method = exchange.method;
            parts.uri = exchange.uri;
            parts.headers = exchange.headers;
        }
        match decision {
            Decision::Continue => Ok(()),
            Decision::Deny(d) => Err(Rejection::Plugin(Box::new(d))),
            Decision::Failed => Err(Rejection::Error(ProxyError::PluginFailed)),
        }
    }
}

/// Phase 10: plugins see the response head as the client will, and may change its fields.
pub(super) fn on_response(
    route: &Route,
    mut exchange: Box<Exchange>,
    parts: &mut http::response::Parts,
    endpoint: Option<Arc<str>>,
    latency: Duration,
) {
    exchange.response = Some(ResponseView {
        status: parts.status.as_u16(),
        headers: std::mem::take(&mut parts.headers),
        error: None,
        endpoint,
        upstream_latency: Some(latency),
    });
    route.plugins.on_response(&mut exchange);
    if let Some(view) = exchange.response {
        parts.headers = view.headers;
    }
}

/// Phase 10 for a request the gateway answered after phase 7 (breaker open, no endpoint,
/// the upstream failed): plugins see the gateway's answer.
pub(super) fn on_failure(
    route: &Route,
    mut exchange: Box<Exchange>,
    answer: &Answer,
    endpoint: Option<Arc<str>>,
) {
    exchange.response = Some(ResponseView {
        status: answer.status.as_u16(),
        headers: HeaderMap::new(),
        error: Some(answer.cause),
        endpoint,
        upstream_latency: None,
    });
    route.plugins.on_response(&mut exchange);
}
