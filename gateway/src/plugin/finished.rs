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

/// One batch being lowered for a plugin: every string goes into one `text`, every
/// registered field into one `fields` list.
#[derive(Debug, Default)]
pub(super) struct BatchBuilder {
    text: String,
    fields: Vec<Option<abi2::Span>>,
    exchanges: Vec<abi2::ExchangeRecord>,
}

impl BatchBuilder {
    pub(super) fn with_capacity(exchanges: usize) -> Self {
        BatchBuilder {
            // About 300 bytes of strings per exchange.
            text: String::with_capacity(exchanges * 320),
            fields: Vec::new(),
            exchanges: Vec::with_capacity(exchanges),
        }
    }

    fn span(&mut self, s: &str) -> abi2::Span {
        let offset = self.text.len() as u32;
        self.text.push_str(s);
        abi2::Span {
            offset,
            len: s.len() as u32,
        }
    }

    /// A header value: as text, with each invalid UTF-8 sequence replaced by U+FFFD.
    fn value(&mut self, v: &HeaderValue) -> abi2::Span {
        match std::str::from_utf8(v.as_bytes()) {
            Ok(s) => self.span(s),
            Err(_) => self.span(&String::from_utf8_lossy(v.as_bytes())),
        }
    }

    fn display(&mut self, v: impl std::fmt::Display) -> abi2::Span {
        use std::fmt::Write as _;
        let offset = self.text.len() as u32;
        let _ = write!(self.text, "{v}");
        abi2::Span {
            offset,
            len: self.text.len() as u32 - offset,
        }
    }

    fn activity(&mut self, a: &crate::activity::Activity<'_>) -> abi2::ObservedActivity {
        let mut opt = |v: Option<&str>| v.map(|s| self.span(s));
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
                .fields
                .iter()
                .position(|f| f == n)
                .and_then(|i| o.values[i].as_ref());
            let span = value.map(|v| self.value(v));
            self.fields.push(span);
        }
        let record = abi2::ExchangeRecord {
            method: self.span(o.method.as_str()),
            scheme: self.span(o.scheme),
            authority: match &o.authority {
                Some(a) => self.value(a),
                None => self.span(""),
            },
            path: self.span(o.uri.path()),
            query: o.uri.query().map(|q| self.span(q)),
            route: self.span(&o.route),
            upstream: self.span(&o.upstream),
            request_id: self.value(&o.request_id),
            client_address: self.display(o.client),
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
            error: e.error.map(|s| self.span(s)),
            endpoint: e.endpoint.as_deref().map(|s| self.span(s)),
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            completed: e.completed,
            upstream_latency: o.upstream_latency.map(|d| d.as_nanos() as u64),
            duration: e.duration.as_nanos() as u64,
            activity: match &f.view {
                View::Lazy(a) => a.get(),
                View::Parsed(a) => a.as_ref(),
            }
            .map(|a| self.activity(a)),
            signer: o.signer.as_ref().map(|s| abi2::ObservedSigner {
                key_id: self.span(&s.key_id),
                instance: self.span(&s.instance),
            }),
            principal: o
                .principal
                .as_ref()
                .map(|(method, name)| abi2::ObservedPrincipal {
                    kind: abi2::principal_kind(*method),
                    name: self.span(name),
                }),
            ended_at_ms: f.ended_at_ms,
        };
        self.exchanges.push(record);
    }

    pub(super) fn finish(self) -> abi2::Batch {
        abi2::Batch {
            text: self.text,
            fields: self.fields,
            exchanges: self.exchanges,
        }
    }
}
