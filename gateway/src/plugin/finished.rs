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
use http::{Method, Uri};

use super::abi2;
use super::Plugin;

/// The observing plugins of one route, and what every record of the route shares.
#[derive(Debug)]
pub struct Observers {
    plugins: Vec<Arc<Plugin>>,
    route: Arc<RouteFacts>,
}

/// What every record of a route shares: one reference per request instead of one per field.
#[derive(Debug)]
struct RouteFacts {
    route: Arc<str>,
    upstream: Arc<str>,
    /// The union of the plugins' registered request fields, in first-seen order.
    fields: Vec<HeaderName>,
}

impl Observers {
    /// The observers among `plugins` of route `route` (to `upstream`), or `None` when
    /// none observes.
    pub(super) fn of(
        plugins: &[Arc<Plugin>],
        route: &Arc<str>,
        upstream: &Arc<str>,
    ) -> Option<Arc<Observers>> {
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
            route: Arc::new(RouteFacts {
                route: route.clone(),
                upstream: upstream.clone(),
                fields,
            }),
        }))
    }

    /// Starts the record of a request: what its head says.
    pub fn start<B>(
        self: &Arc<Self>,
        req: &http::Request<B>,
        scheme: &'static str,
        authority: Option<&HeaderValue>,
        client: IpAddr,
        request_id: &HeaderValue,
    ) -> Observed {
        Observed {
            observers: Some(self.clone()),
            method: req.method().clone(),
            uri: req.uri().clone(),
            scheme,
            authority: authority.cloned(),
            client,
            route: self.route.clone(),
            request_id: request_id.clone(),
            version: req.version(),
            values: self
                .route
                .fields
                .iter()
                .map(|f| req.headers().get(f).cloned())
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
    route: Arc<RouteFacts>,
    request_id: HeaderValue,
    version: http::Version,
    /// The values of `route.fields`, in that order.
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

/// One batch being lowered for a plugin: every string goes into one `text`, every
/// registered field into one `fields` list.
#[derive(Debug, Default)]
pub(super) struct BatchBuilder {
    text: abi2::Text,
    fields: Vec<Option<abi2::Span>>,
    exchanges: Vec<abi2::ExchangeRecord>,
}

impl BatchBuilder {
    pub(super) fn with_capacity(exchanges: usize) -> Self {
        BatchBuilder {
            // About 300 bytes of strings per exchange.
            text: abi2::Text::with_capacity(exchanges * 320),
            fields: Vec::new(),
            exchanges: Vec::with_capacity(exchanges),
        }
    }

    fn activity(t: &mut abi2::Text, a: &crate::activity::Activity<'_>) -> abi2::ObservedActivity {
        let mut opt = |v: Option<&str>| v.map(|s| t.str(s));
        abi2::ObservedActivity {
            kind: opt(a.kind.as_deref()),
            id: opt(a.id.as_deref()),
            actor: opt(a.actor()),
            actor_host: opt(a.actor_host().as_deref()),
            object_kind: opt(a.object_type.as_deref()),
            object_id: opt(a.object_id.as_deref()),
            public: a.public,
            published: opt(a.published.as_deref()),
        }
    }

    /// Adds `f`, with the fields the plugin `registered`.
    pub(super) fn push(&mut self, f: &Finished, registered: &[HeaderName]) {
        let o = &f.observed;
        let e = &f.ending;
        let first = self.fields.len() as u32;
        for n in registered {
            let value = o
                .route
                .fields
                .iter()
                .position(|f| f == n)
                .and_then(|i| o.values[i].as_ref());
            let span = value.map(|v| self.text.value(v));
            self.fields.push(span);
        }
        let t = &mut self.text;
        let record = abi2::ExchangeRecord {
            method: t.str(o.method.as_str()),
            scheme: t.str(o.scheme),
            authority: match &o.authority {
                Some(a) => t.value(a),
                None => t.str(""),
            },
            path: t.str(o.uri.path()),
            query: o.uri.query().map(|q| t.str(q)),
            route: t.str(&o.route.route),
            upstream: t.str(&o.route.upstream),
            request_id: t.value(&o.request_id),
            client_address: t.display(o.client),
            http_version: abi2::http_version(o.version),
            request_headers: abi2::Span {
                offset: first,
                len: registered.len() as u32,
            },
            status: e.status,
            origin: if e.error.is_some() {
                abi2::ResponseOrigin::Gateway
            } else {
                abi2::ResponseOrigin::Upstream
            },
            error: e.error.map(|s| t.str(s)),
            endpoint: e.endpoint.as_deref().map(|s| t.str(s)),
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            completed: e.completed,
            upstream_latency: o.upstream_latency.map(|d| d.as_nanos() as u64),
            duration: e.duration.as_nanos() as u64,
            activity: match &f.view {
                View::Lazy(a) => a.get(),
                View::Parsed(a) => a.as_ref(),
            }
            .map(|a| Self::activity(t, a)),
            signer: o.signer.as_ref().map(|s| abi2::ObservedSigner {
                key_id: t.str(&s.key_id),
                instance: t.str(&s.instance),
            }),
            principal: o
                .principal
                .as_ref()
                .map(|(method, name)| abi2::ObservedPrincipal {
                    kind: abi2::principal_kind(*method),
                    name: t.str(name),
                }),
            ended_at_ms: f.ended_at_ms,
        };
        self.exchanges.push(record);
    }

    pub(super) fn finish(self) -> abi2::Batch {
        abi2::Batch {
            text: self.text.into_string(),
            fields: self.fields,
            exchanges: self.exchanges,
        }
    }
}
