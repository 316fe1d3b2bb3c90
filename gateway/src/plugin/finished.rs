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

/// One batch being lowered for a plugin, column by column: every string goes into one
/// `text`, every value into its column.
#[derive(Debug)]
pub(super) struct BatchBuilder {
    text: abi2::Text,
    batch: abi2::Batch,
}

impl BatchBuilder {
    pub(super) fn with_capacity(exchanges: usize) -> Self {
        fn column<T>(exchanges: usize) -> Vec<T> {
            Vec::with_capacity(exchanges)
        }
        BatchBuilder {
            // About 300 bytes of strings per exchange.
            text: abi2::Text::with_capacity(exchanges * 320),
            batch: abi2::Batch {
                len: 0,
                text: String::new(),
                method: column(exchanges),
                scheme: column(exchanges),
                authority: column(exchanges),
                path: column(exchanges),
                query: column(exchanges),
                route: column(exchanges),
                upstream: column(exchanges),
                request_id: column(exchanges),
                client_address: column(exchanges),
                http_version: column(exchanges),
                fields: Vec::new(),
                status: column(exchanges),
                error: column(exchanges),
                endpoint: column(exchanges),
                request_bytes: column(exchanges),
                response_bytes: column(exchanges),
                bits: column(exchanges),
                upstream_latency: column(exchanges),
                duration: column(exchanges),
                ended_at_ms: column(exchanges),
                activity_kind: column(exchanges),
                activity_id: column(exchanges),
                activity_actor: column(exchanges),
                activity_actor_host: column(exchanges),
                activity_object_kind: column(exchanges),
                activity_object_id: column(exchanges),
                activity_published: column(exchanges),
                signer_key_id: column(exchanges),
                signer_instance: column(exchanges),
                principal_kind: column(exchanges),
                principal_name: column(exchanges),
            },
        }
    }

    /// Adds `f`, with the fields the plugin `registered`.
    pub(super) fn push(&mut self, f: &Finished, registered: &[HeaderName]) {
        /// `bits` (see the WIT's `batch`).
        const COMPLETED: u8 = 1;
        const VIEW: u8 = 2;
        const PUBLIC: u8 = 4;
        let o = &f.observed;
        let e = &f.ending;
        let (t, b) = (&mut self.text, &mut self.batch);
        for n in registered {
            let value = o
                .route
                .fields
                .iter()
                .position(|f| f == n)
                .and_then(|i| o.values[i].as_ref());
            b.fields.push(value.map_or(abi2::ABSENT, |v| t.value(v)));
        }
        b.method.push(t.str(o.method.as_str()));
        b.scheme.push(t.str(o.scheme));
        b.authority.push(match &o.authority {
            Some(a) => t.value(a),
            None => t.str(""),
        });
        b.path.push(t.str(o.uri.path()));
        b.query.push(t.opt(o.uri.query()));
        b.route.push(t.str(&o.route.route));
        b.upstream.push(t.str(&o.route.upstream));
        b.request_id.push(t.value(&o.request_id));
        b.client_address.push(t.display(o.client));
        b.error.push(t.opt(e.error));
        b.endpoint.push(t.opt(e.endpoint.as_deref()));
        let view = match &f.view {
            View::Lazy(a) => a.get(),
            View::Parsed(a) => a.as_ref(),
        };
        b.activity_kind
            .push(t.opt(view.and_then(|a| a.kind.as_deref())));
        b.activity_id
            .push(t.opt(view.and_then(|a| a.id.as_deref())));
        b.activity_actor.push(t.opt(view.and_then(|a| a.actor())));
        b.activity_actor_host
            .push(t.opt(view.and_then(|a| a.actor_host()).as_deref()));
        b.activity_object_kind
            .push(t.opt(view.and_then(|a| a.object_type.as_deref())));
        b.activity_object_id
            .push(t.opt(view.and_then(|a| a.object_id.as_deref())));
        b.activity_published
            .push(t.opt(view.and_then(|a| a.published.as_deref())));
        b.signer_key_id
            .push(t.opt(o.signer.as_ref().map(|s| &*s.key_id)));
        b.signer_instance
            .push(t.opt(o.signer.as_ref().map(|s| &*s.instance)));
        b.principal_name
            .push(t.opt(o.principal.as_ref().map(|(_, name)| &**name)));
        // Enum columns hold the WIT case number (the generated enums are `repr(u8)`).
        b.http_version.push(abi2::http_version(o.version) as u8);
        b.principal_kind.push(
            o.principal
                .as_ref()
                .map_or(0, |(method, _)| abi2::principal_kind(*method) as u8 + 1),
        );
        let mut bits = if e.completed { COMPLETED } else { 0 };
        if let Some(a) = view {
            bits |= VIEW | if a.public { PUBLIC } else { 0 };
        }
        b.status.push(e.status);
        b.request_bytes.push(e.request_bytes);
        b.response_bytes.push(e.response_bytes);
        b.bits.push(bits);
        b.upstream_latency.push(
            o.upstream_latency
                .map_or(abi2::ABSENT, |d| d.as_nanos() as u64),
        );
        b.duration.push(e.duration.as_nanos() as u64);
        b.ended_at_ms.push(f.ended_at_ms);
        b.len += 1;
    }

    pub(super) fn finish(mut self) -> abi2::Batch {
        self.batch.text = self.text.into_string();
        self.batch
    }
}
