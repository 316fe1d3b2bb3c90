//! The component side of the ABI: the bindings generated from `wit/0.2.0`, and the adapter
//! that [`export_plugin!`](crate::export_plugin) exports as the `handler` interface, which
//! keeps the instance's plugin value and converts between the generated types and the
//! SDK's.

// The generated bindings lift and lower values across the component boundary with raw
// pointers, and lending a borrowed host resource to a hook as an SDK `Request` is a
// pointer cast; both need `unsafe`, which the workspace otherwise denies.
#![allow(unsafe_code)]

use std::any::Any;
use std::borrow::Cow;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::http::text_at;
use crate::outbound::{OutboundError, OutboundRequest, OutboundResponse};
use crate::{
    log, store, Activity, Config, Exchange, Header, HealthReport, HealthStatus, Hooks, HttpVersion,
    Origin, Plugin, Principal, PrincipalKind, Registration, Request, Response, ResponseEdit,
    Signer, TlsInfo, Verdict,
};

/// Generated from the WIT; reached by plugin crates only through `export_plugin!`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/0.2.0",
        world: "plugin",
        // Plugin crates export through `fedgate_sdk::export_plugin!`, which expands to this
        // macro; they depend on this crate only, so every generated path goes through it.
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "::fedgate_sdk::__private::bindings",
        runtime_path: "::fedgate_sdk::__private::wit_bindgen::rt",
        // Imports take `&str` and `&[&str]`, so updating a metric allocates nothing.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

use bindings::exports::fedgate::plugin::handler;
use bindings::fedgate::plugin::{
    log as wit_log, outbound as wit_outbound, store as wit_store, types,
};

thread_local! {
    /// The instance's plugin value, set by `init`. An instance runs one call at a time on a
    /// single thread and calls never nest, so the `RefCell` is never contended.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Implements the generated `handler` interface for a [`Plugin`].
pub struct Adapter<P>(PhantomData<P>);

impl<P> std::fmt::Debug for Adapter<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Adapter")
    }
}

fn with_plugin<P: Plugin, R>(call: impl FnOnce(&mut P) -> R) -> R {
    INSTANCE.with(|instance| {
        let mut instance = instance.borrow_mut();
        let plugin = instance
            .as_mut()
            .and_then(|plugin| plugin.downcast_mut::<P>())
            .expect("a hook was called before init succeeded");
        call(plugin)
    })
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        // The call aborts (and traps) right after this, so the log line is all the operator
        // gets: keep it on one line.
        let message = info.payload_as_str().unwrap_or("(no message)");
        let line = match info.location() {
            Some(at) => format!("plugin panicked at {at}: {message}"),
            None => format!("plugin panicked: {message}"),
        };
        log::log(log::Level::Error, &line.replace('\n', " "));
    }));
}

fn lend_request(request: &types::Request) -> &Request {
    // SAFETY: `Request` is a `#[repr(transparent)]` wrapper around `types::Request`, so the
    // two references have the same layout, and the returned one lives no longer than the
    // borrow the host lent for this call.
    unsafe { &*(request as *const types::Request as *const Request) }
}

fn lend_response(response: &types::Response) -> &Response {
    // SAFETY: as in `lend_request`: `Response` is a `#[repr(transparent)]` wrapper.
    unsafe { &*(response as *const types::Response as *const Response) }
}

impl<P: Plugin> handler::Guest for Adapter<P> {
    fn init(config: String) -> Result<types::Registration, String> {
        install_panic_hook();
        let plugin = P::init(&Config::new(config))?;
        let registration = Registration::of(&plugin)?;
        INSTANCE.with(|instance| *instance.borrow_mut() = Some(Box::new(plugin)));
        Ok(types::Registration {
            hooks: registration.hooks.into(),
            request_headers: registration.request_headers,
            tick_interval_ms: registration.tick_interval_ms,
        })
    }

    fn on_request(request: &types::Request) -> types::Verdict {
        with_plugin(|plugin: &mut P| plugin.on_request(lend_request(request))).into()
    }

    fn on_response(request: &types::Request, response: &types::Response) -> types::ResponseEdit {
        with_plugin(|plugin: &mut P| {
            plugin.on_response(lend_request(request), lend_response(response))
        })
        .into()
    }

    fn observe(batch: types::Batch) {
        let exchanges: Vec<Exchange<'_>> = (0..batch.len as usize)
            .map(|i| observed(&batch, i))
            .collect();
        with_plugin(|plugin: &mut P| plugin.observe(&exchanges));
    }

    fn on_tick() {
        with_plugin(|plugin: &mut P| plugin.on_tick());
    }

    fn health_check() -> types::HealthReport {
        with_plugin(|plugin: &mut P| plugin.health_check()).into()
    }
}

impl From<Hooks> for types::Hooks {
    fn from(hooks: Hooks) -> Self {
        let mut out = types::Hooks::empty();
        for (ours, theirs) in [
            (Hooks::ON_REQUEST, types::Hooks::ON_REQUEST),
            (Hooks::ON_RESPONSE, types::Hooks::ON_RESPONSE),
            (Hooks::HEALTH_CHECK, types::Hooks::HEALTH_CHECK),
            (Hooks::OBSERVE, types::Hooks::OBSERVE),
            (Hooks::ON_TICK, types::Hooks::ON_TICK),
        ] {
            out.set(theirs, hooks.contains(ours));
        }
        out
    }
}

impl From<Header> for types::HeaderResult {
    fn from(header: Header) -> Self {
        types::HeaderResult {
            name: header.name,
            value: header.value,
        }
    }
}

impl From<types::HeaderResult> for Header {
    fn from(header: types::HeaderResult) -> Self {
        Header {
            name: header.name,
            value: header.value,
        }
    }
}

fn wit_headers(headers: Vec<Header>) -> Vec<types::HeaderResult> {
    headers.into_iter().map(types::HeaderResult::from).collect()
}

impl From<Verdict> for types::Verdict {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Continue => types::Verdict::Continue,
            Verdict::Edit(edit) => types::Verdict::Edit(types::RequestEdit {
                add: wit_headers(edit.add),
                set: wit_headers(edit.set),
                remove: edit.remove,
            }),
            Verdict::Reply(reply) => types::Verdict::Reply(types::LocalReply {
                status: reply.status,
                headers: wit_headers(reply.headers),
                body: reply.body,
            }),
        }
    }
}

impl From<ResponseEdit> for types::ResponseEdit {
    fn from(edit: ResponseEdit) -> Self {
        types::ResponseEdit {
            add: wit_headers(edit.add),
            remove: edit.remove,
        }
    }
}

impl From<HealthReport> for types::HealthReport {
    fn from(report: HealthReport) -> Self {
        types::HealthReport {
            status: match report.status {
                HealthStatus::Healthy => types::HealthStatus::Healthy,
                HealthStatus::Degraded => types::HealthStatus::Degraded,
                HealthStatus::Unhealthy => types::HealthStatus::Unhealthy,
            },
            message: report.message,
        }
    }
}

impl From<types::ResponseOrigin> for Origin {
    fn from(origin: types::ResponseOrigin) -> Self {
        match origin {
            types::ResponseOrigin::Upstream => Origin::Upstream,
            types::ResponseOrigin::Gateway => Origin::Gateway,
        }
    }
}

impl From<types::Signer> for Signer<'static> {
    fn from(signer: types::Signer) -> Self {
        Signer {
            key_id: signer.key_id.into(),
            instance: signer.instance.into(),
        }
    }
}

impl From<types::Activity> for Activity<'static> {
    fn from(activity: types::Activity) -> Self {
        Activity {
            kind: activity.kind.map(Cow::Owned),
            id: activity.id.map(Cow::Owned),
            actor: activity.actor.map(Cow::Owned),
            actor_host: activity.actor_host.map(Cow::Owned),
            object_kind: activity.object_kind.map(Cow::Owned),
            object_id: activity.object_id.map(Cow::Owned),
            public: activity.public,
            published: activity.published.map(Cow::Owned),
        }
    }
}

impl From<types::Principal> for Principal<'static> {
    fn from(principal: types::Principal) -> Self {
        Principal {
            kind: principal_kind(principal.kind),
            name: principal.name.into(),
        }
    }
}

impl From<types::HttpVersion> for HttpVersion {
    fn from(version: types::HttpVersion) -> Self {
        match version {
            types::HttpVersion::Http10 => HttpVersion::Http10,
            types::HttpVersion::Http11 => HttpVersion::Http11,
            types::HttpVersion::Http2 => HttpVersion::Http2,
        }
    }
}

impl From<types::TlsInfo> for TlsInfo {
    fn from(tls: types::TlsInfo) -> Self {
        TlsInfo {
            server_name: tls.server_name,
            client_subject: tls.client_subject,
        }
    }
}

/// The registered fields' values, read in place in the text the gateway stored them in.
pub(crate) fn declared(fields: types::DeclaredFields) -> crate::DeclaredHeaders {
    crate::DeclaredHeaders::from_refs(fields.text, fields.values)
}

/// Exchange `i` of a batch, its strings borrowed from the batch's text.
fn observed(b: &types::Batch, i: usize) -> Exchange<'_> {
    /// `bits` (see the WIT's `batch`).
    const COMPLETED: u8 = 1;
    const VIEW: u8 = 2;
    const PUBLIC: u8 = 4;
    let opt = |column: &[u64]| {
        column
            .get(i)
            .and_then(|at| text_at(&b.text, *at))
            .map(Cow::Borrowed)
    };
    let s = |column: &[u64]| opt(column).unwrap_or_default();
    let n = if b.len == 0 {
        0
    } else {
        b.fields.len() / b.len as usize
    };
    let request_headers = b
        .fields
        .get(i * n..i * n + n)
        .unwrap_or_default()
        .iter()
        .map(|at| text_at(&b.text, *at).map(Cow::Borrowed))
        .collect();
    let bits = b.bits.get(i).copied().unwrap_or_default();
    let number = |column: &[u64]| column.get(i).copied().unwrap_or_default();
    let error = opt(&b.error);
    Exchange {
        method: s(&b.method),
        scheme: s(&b.scheme),
        authority: s(&b.authority),
        path: s(&b.path),
        query: opt(&b.query),
        route: s(&b.route),
        upstream: s(&b.upstream),
        request_id: s(&b.request_id),
        client_address: s(&b.client_address),
        http_version: match b.http_version.get(i) {
            Some(0) => HttpVersion::Http10,
            Some(2) => HttpVersion::Http2,
            _ => HttpVersion::Http11,
        },
        request_headers,
        status: b.status.get(i).copied().unwrap_or_default(),
        origin: if error.is_some() {
            Origin::Gateway
        } else {
            Origin::Upstream
        },
        error,
        endpoint: opt(&b.endpoint),
        request_bytes: number(&b.request_bytes),
        response_bytes: number(&b.response_bytes),
        completed: bits & COMPLETED != 0,
        upstream_latency: match number(&b.upstream_latency) {
            u64::MAX => None,
            ns => Some(std::time::Duration::from_nanos(ns)),
        },
        duration: std::time::Duration::from_nanos(number(&b.duration)),
        activity: (bits & VIEW != 0).then(|| Activity {
            kind: opt(&b.activity_kind),
            id: opt(&b.activity_id),
            actor: opt(&b.activity_actor),
            actor_host: opt(&b.activity_actor_host),
            object_kind: opt(&b.activity_object_kind),
            object_id: opt(&b.activity_object_id),
            public: bits & PUBLIC != 0,
            published: opt(&b.activity_published),
        }),
        signer: opt(&b.signer_key_id).map(|key_id| Signer {
            key_id,
            instance: s(&b.signer_instance),
        }),
        principal: match b.principal_kind.get(i) {
            Some(1) => Some(PrincipalKind::ApiKey),
            Some(2) => Some(PrincipalKind::Jwt),
            Some(3) => Some(PrincipalKind::Mtls),
            _ => None,
        }
        .map(|kind| Principal {
            kind,
            name: s(&b.principal_name),
        }),
        ended_at_ms: number(&b.ended_at_ms),
    }
}

fn principal_kind(kind: types::PrincipalKind) -> PrincipalKind {
    match kind {
        types::PrincipalKind::ApiKey => PrincipalKind::ApiKey,
        types::PrincipalKind::Jwt => PrincipalKind::Jwt,
        types::PrincipalKind::Mtls => PrincipalKind::Mtls,
    }
}

impl From<log::Level> for wit_log::Level {
    fn from(level: log::Level) -> Self {
        match level {
            log::Level::Trace => wit_log::Level::Trace,
            log::Level::Debug => wit_log::Level::Debug,
            log::Level::Info => wit_log::Level::Info,
            log::Level::Warn => wit_log::Level::Warn,
            log::Level::Error => wit_log::Level::Error,
        }
    }
}

impl From<wit_store::StoreError> for store::StoreError {
    fn from(error: wit_store::StoreError) -> Self {
        match error {
            wit_store::StoreError::Full => store::StoreError::Full,
            wit_store::StoreError::TooLarge => store::StoreError::TooLarge,
            wit_store::StoreError::NotANumber => store::StoreError::NotANumber,
        }
    }
}

/// `outbound::send` over the generated import, converting both ways.
pub(crate) mod outbound {
    use super::*;

    pub(crate) fn send(request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let headers: Vec<types::HeaderParam<'_>> = request
            .headers
            .iter()
            .map(|header| types::HeaderParam {
                name: &header.name,
                value: &header.value,
            })
            .collect();
        let wit_request = wit_outbound::OutboundRequest {
            method: &request.method,
            url: &request.url,
            headers: &headers,
            body: request.body.as_deref(),
            timeout_ms: request
                .timeout
                .map(|timeout| u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)),
        };
        match wit_outbound::send(wit_request) {
            Ok(response) => Ok(OutboundResponse {
                status: response.status,
                headers: response.headers.into_iter().map(Header::from).collect(),
                body: response.body,
            }),
            Err(error) => Err(match error {
                wit_outbound::OutboundError::NotAllowed(why) => OutboundError::NotAllowed(why),
                wit_outbound::OutboundError::NotHere => OutboundError::NotHere,
                wit_outbound::OutboundError::Timeout => OutboundError::Timeout,
                wit_outbound::OutboundError::TooLarge => OutboundError::TooLarge,
                wit_outbound::OutboundError::Connect(why) => OutboundError::Connect(why),
                wit_outbound::OutboundError::Invalid(why) => OutboundError::Invalid(why),
            }),
        }
    }
}
