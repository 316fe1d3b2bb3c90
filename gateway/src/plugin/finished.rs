//! Phase 11 for observers (ABI 0.2.0): the record of one finished exchange.
//!
//! A route whose chain has observing plugins gets an [`Observed`] when its request is
//! matched; the proxy fills it in as the phases learn things (the principal, the
//! federation view, the signer, the upstream's latency) and it travels inside the
//! request's [`Completion`](crate::record::Completion). When the response body ends (or
//! is dropped) the completion turns it into one [`Finished`], shared by every observing
//! plugin of the route, and pushes it onto each one's queue: one allocation and one
//! lock-free push per plugin on the request path. Everything else (the activity's parse,
//! the lowering into each plugin's `exchange` record, with only the fields it registered)
//! happens on the plugins' observer threads.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

use super::abi2;
use super::Plugin;

/// The observing plugins of one route, and the request fields any of them registered.
#[derive(Debug)]
pub struct Observers {
    plugins: Vec<Arc<Plugin>>,
    /// The union of the plugins' registered request fields, in first-seen order.
    fields: Arc<[HeaderName]>,
}

impl Observers {
    /// The observers among `plugins`, or `None` when none observes.
    pub(super) fn of(plugins: &[Arc<Plugin>]) -> Option<Arc<Observers>> {
        let plugins: Vec<Arc<Plugin>> = plugins
            .iter()
            .filter(|p| p.observe_queue().is_some())
            .cloned()
            .collect();
        if plugins.is_empty() {
            return None;
        }
        let mut fields: Vec<HeaderName> = Vec::new();
        for p in &plugins {
            for f in p.shared.request_headers() {
                if !fields.contains(f) {
                    fields.push(f.clone());
                }
            }
        }
        Some(Arc::new(Observers {
            plugins,
            fields: fields.into(),
        }))
    }

    /// Starts the record of a request: what its head says.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        self: &Arc<Self>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        scheme: &'static str,
        authority: Option<&HeaderValue>,
        client: IpAddr,
        route: &Arc<str>,
        upstream: &Arc<str>,
        request_id: &HeaderValue,
        version: http::Version,
    ) -> Observed {
        Observed {
            observers: Some(self.clone()),
            method: method.clone(),
            uri: uri.clone(),
            scheme,
            authority: authority.cloned(),
            client,
            route: route.clone(),
            upstream: upstream.clone(),
            request_id: request_id.clone(),
            version,
            fields: self.fields.clone(),
            values: self
                .fields
                .iter()
                .map(|f| headers.get(f).cloned())
                .collect(),
            activity: None,
            signer: None,
            principal: None,
            upstream_latency: None,
        }
    }
}

/// What is known of a request for its observers while it is under way.
#[derive(Debug)]
pub struct Observed {
    /// Taken when the record is pushed: a queued record holds no plugin.
    observers: Option<Arc<Observers>>,
    method: Method,
    uri: Uri,
    scheme: &'static str,
    authority: Option<HeaderValue>,
    client: IpAddr,
    route: Arc<str>,
    upstream: Arc<str>,
    request_id: HeaderValue,
    version: http::Version,
    fields: Arc<[HeaderName]>,
    values: Vec<Option<HeaderValue>>,
    pub activity: Option<Arc<crate::activity::LazyActivity>>,
    pub signer: Option<crate::signature::verifier::Signer>,
    pub principal: Option<(crate::auth::AuthMethod, Arc<str>)>,
    pub upstream_latency: Option<Duration>,
}

/// How the response ended, as the completion knows it.
#[derive(Debug)]
pub struct Ending {
    pub status: u16,
    /// Why the gateway answered itself, if it did.
    pub error: Option<&'static str>,
    pub endpoint: Option<Arc<str>>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub completed: bool,
    pub duration: Duration,
}

/// Bodies up to this size stay with a queued record until an observer thread parses
/// them; a larger one is parsed when the record is queued and only its view is kept, so
/// what a full queue holds stays bounded by its length, not by the size of bodies.
const KEEP_BODY: usize = 4 << 10;

/// The federation view of a finished exchange's body.
#[derive(Debug)]
enum View {
    /// Parsed by the first observer thread that lowers the record.
    Lazy(Arc<crate::activity::LazyActivity>),
    /// Parsed when the record was queued (a large body, or one already parsed).
    Parsed(Option<crate::activity::Activity<'static>>),
}

/// One finished exchange, shared by the observers of its route.
#[derive(Debug)]
pub struct Finished {
    observed: Observed,
    view: View,
    ending: Ending,
    ended_at_ms: u64,
}

impl Observed {
    /// Ends the record and queues it for every observer of its route.
    pub fn finish(mut self: Box<Self>, ending: Ending) {
        let Some(observers) = self.observers.take() else {
            return;
        };
        let ended_at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let view = match self.activity.take() {
            None => View::Parsed(None),
            Some(a) if a.body_len() <= KEEP_BODY => View::Lazy(a),
            Some(a) => View::Parsed(a.get().cloned()),
        };
        let finished = Arc::new(Finished {
            observed: *self,
            view,
            ending,
            ended_at_ms,
        });
        for p in &observers.plugins {
            if let Some(q) = p.observe_queue() {
                q.push(finished.clone());
            }
        }
    }
}

impl Finished {
    /// The record a plugin's `observe` receives: `registered` are the fields it asked for.
    pub(super) fn lower(&self, registered: &[HeaderName]) -> abi2::ExchangeRecord {
        let o = &self.observed;
        let e = &self.ending;
        let text = |v: &HeaderValue| super::abi::text(v);
        abi2::ExchangeRecord {
            method: o.method.as_str().to_string(),
            scheme: o.scheme.to_string(),
            authority: o.authority.as_ref().map(text).unwrap_or_default(),
            path: o.uri.path().to_string(),
            query: o.uri.query().map(str::to_string),
            route: o.route.to_string(),
            upstream: o.upstream.to_string(),
            request_id: text(&o.request_id),
            client_address: o.client.to_string(),
            http_version: abi2::http_version(o.version),
            request_headers: registered
                .iter()
                .map(|n| {
                    o.fields
                        .iter()
                        .position(|f| f == n)
                        .and_then(|i| o.values[i].as_ref())
                        .map(text)
                })
                .collect(),
            status: e.status,
            origin: if e.error.is_some() {
                abi2::ResponseOrigin::Gateway
            } else {
                abi2::ResponseOrigin::Upstream
            },
            error: e.error.map(str::to_string),
            endpoint: e.endpoint.as_deref().map(str::to_string),
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            completed: e.completed,
            upstream_latency: o.upstream_latency.map(|d| d.as_nanos() as u64),
            duration: e.duration.as_nanos() as u64,
            activity: match &self.view {
                View::Lazy(a) => a.get(),
                View::Parsed(a) => a.as_ref(),
            }
            .map(abi2::activity),
            signer: o.signer.as_ref().map(|s| abi2::Signer {
                key_id: s.key_id.clone(),
                instance: s.instance.clone(),
            }),
            principal: o.principal.as_ref().map(abi2::principal),
            ended_at_ms: self.ended_at_ms,
        }
    }
}
