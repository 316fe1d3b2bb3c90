//! ABI `fedgate:plugin@0.1.0` (`wit/0.1.0/plugin.wit`): the generated bindings and the host
//! side of the plugin's imports.
//!
//! The request and response a hook sees are not copied into the store: the proxy lends its
//! [`Exchange`] to the store for the length of the call, and each accessor copies out only
//! what the plugin asks for. Both resources are therefore borrows with a fixed rep (0) that
//! stands for "the exchange of the current call".

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use wasmtime::component::Resource;

use super::declared::{Declaration, Handle, Kind, Series, Update};
use super::{Exchange, PluginShared};

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit/0.1.0",
    // A series number the instance was not given, or one used for the wrong kind of
    // update, is a bug in the plugin: the call traps and the failure policy applies.
    imports: {
        "fedgate:plugin/metrics.series-add": trappable,
        "fedgate:plugin/metrics.series-set": trappable,
        "fedgate:plugin/metrics.series-observe": trappable,
    },
});

pub use fedgate::plugin::log::Level;
pub use fedgate::plugin::metrics::{Counter, Gauge, Histogram};
pub use fedgate::plugin::types::{
    Header, HealthReport, HealthStatus, Hooks, Request, Response, ResponseOrigin, Signer,
    Verdict,
};

/// The WIT package version these bindings are for.
pub const VERSION: &str = "0.1.0";
/// The interface a component must export, with its version.
pub const HANDLER_EXPORT: &str = "fedgate:plugin/handler@0.1.0";

/// Most metrics one instance may declare.
const MAX_DECLARED: usize = 256;
/// Most label sets one instance may resolve into series numbers; past it, `series` hands
/// out the metric's `other` series (so a plugin resolving every label set it meets cannot
/// grow the host's memory).
const MAX_RESOLVED: usize = 4096;
/// Longest log message kept, in bytes.
pub(super) const MAX_LOG: usize = 4096;

/// What a store carries: the plugin's shared parts, the call's exchange, its metric handles.
#[derive(Debug)]
pub struct HostState {
    pub(super) plugin: Arc<PluginShared>,
    pub(super) limiter: super::MemoryLimiter,
    pub(super) exchange: Box<Exchange>,
    pub(super) hook: &'static str,
    metrics: Vec<Handle>,
    /// Resolved series by number: the metric (index into `metrics`) and the series.
    series: Vec<(u32, Series)>,
    /// Series numbers by metric and label values, so resolving twice gives one number.
    resolved: HashMap<(u32, Vec<String>), u32>,
    /// Past `MAX_RESOLVED`: each metric's `other` series number (`true`), and its number
    /// for labels that do not fit (`false`), once handed out.
    overflow: HashMap<(u32, bool), u32>,
}

impl HostState {
    pub(super) fn new(plugin: Arc<PluginShared>, limiter: super::MemoryLimiter) -> Self {
        HostState {
            plugin,
            limiter,
            exchange: Box::default(),
            hook: "init",
            metrics: Vec::new(),
            series: Vec::new(),
            resolved: HashMap::new(),
            overflow: HashMap::new(),
        }
    }

    pub(super) fn declare(
        &mut self,
        kind: Kind,
        name: String,
        help: String,
        labels: Vec<String>,
        buckets: Vec<f64>,
    ) -> Result<u32, String> {
        if self.metrics.len() >= MAX_DECLARED {
            return Err(format!("at most {MAX_DECLARED} metrics per plugin"));
        }
        let p = &self.plugin;
        let declaration = Declaration {
            kind,
            name,
            help,
            labels,
            buckets,
        };
        let handle = p.declared.declare(&p.name, declaration, p.max_series)?;
        self.metrics.push(handle);
        Ok((self.metrics.len() - 1) as u32)
    }

    pub(super) fn handle(&self, rep: u32, kind: Kind) -> Option<&Handle> {
        self.metrics.get(rep as usize).filter(|h| h.kind() == kind)
    }

    /// The series number of `labels` of metric `rep`.
    pub(super) fn resolve(&mut self, rep: u32, labels: Vec<String>) -> u32 {
        let key = (rep, labels);
        if let Some(&n) = self.resolved.get(&key) {
            return n;
        }
        let handle = &self.metrics[rep as usize];
        if self.resolved.len() >= MAX_RESOLVED {
            // At most two more numbers per metric, so the table stops growing.
            let series = handle.overflow_for(&key.1);
            let slot = (rep, !matches!(series, Series::Invalid));
            if let Some(&n) = self.overflow.get(&slot) {
                return n;
            }
            let n = self.series.len() as u32;
            self.series.push((rep, series));
            self.overflow.insert(slot, n);
            return n;
        }
        let n = self.series.len() as u32;
        self.series.push((rep, handle.resolve(key.1.clone())));
        self.resolved.insert(key, n);
        n
    }

    /// Applies `update` to series number `n`; a number the instance was not given, or an
    /// update that does not fit the metric's type, traps.
    pub(super) fn update_series(&self, n: u32, update: Update) -> wasmtime::Result<()> {
        let Some((rep, series)) = self.series.get(n as usize) else {
            return Err(Misuse(format!(
                "metric series {n} was never resolved by this instance"
            ))
            .into());
        };
        let handle = &self.metrics[*rep as usize];
        if !handle.apply(series, update) {
            let what = match update {
                Update::Add(_) => "series-add",
                Update::Set(_) => "series-set",
                Update::Observe(_) => "series-observe",
            };
            return Err(Misuse(format!(
                "{what} on metric series {n}, which belongs to {} (a {})",
                handle.name(),
                handle.kind().as_str()
            ))
            .into());
        }
        Ok(())
    }
}

/// A call of an import that breaks the ABI's rules: the call traps, like a trap in the
/// plugin's own code.
#[derive(Debug)]
pub struct Misuse(pub String);

impl std::fmt::Display for Misuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Misuse {}

pub(super) fn text(v: &http::HeaderValue) -> String {
    text_of(v).into_owned()
}

/// A field value as text, each invalid UTF-8 sequence replaced by U+FFFD: borrowed unless
/// the value is not UTF-8. Nearly every value is ASCII, which `from_utf8` checks fastest;
/// the lossy conversion is only for the rare one that is not UTF-8.
pub(super) fn text_of(v: &http::HeaderValue) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(v.as_bytes()) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v.as_bytes()),
    }
}

pub(super) fn first(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(text)
}

/// Every field as `make(name, value)`: each ABI version builds its own `header` record.
pub(super) fn fields<H>(headers: &HeaderMap, make: impl Fn(String, String) -> H) -> Vec<H> {
    headers
        .iter()
        .map(|(n, v)| make(n.as_str().to_string(), text(v)))
        .collect()
}

fn all(headers: &HeaderMap) -> Vec<Header> {
    fields(headers, |name, value| Header { name, value })
}

impl fedgate::plugin::types::Host for HostState {}

/// The request accessors every ABI version shares; expanded inside each version's
/// `HostRequest` impl, where `Request`, `Header` and `Signer` are that version's types.
macro_rules! request_accessors {
    () => {
        fn method(&mut self, _: Resource<Request>) -> String {
            self.exchange.method.as_str().to_string()
        }

        fn scheme(&mut self, _: Resource<Request>) -> String {
            self.exchange.scheme.to_string()
        }

        fn authority(&mut self, _: Resource<Request>) -> String {
            self.exchange
                .authority
                .as_ref()
                .map(text)
                .unwrap_or_default()
        }

        fn path(&mut self, _: Resource<Request>) -> String {
            self.exchange.uri.path().to_string()
        }

        fn query(&mut self, _: Resource<Request>) -> Option<String> {
            self.exchange.uri.query().map(str::to_string)
        }

        fn header(&mut self, _: Resource<Request>, name: String) -> Option<String> {
            first(&self.exchange.headers, &name)
        }

        fn header_values(&mut self, _: Resource<Request>, name: String) -> Vec<String> {
            self.exchange
                .headers
                .get_all(name.as_str())
                .iter()
                .map(text)
                .collect()
        }

        fn headers(&mut self, _: Resource<Request>) -> Vec<Header> {
            all(&self.exchange.headers)
        }

        fn client_address(&mut self, _: Resource<Request>) -> String {
            self.exchange
                .client
                .map(|ip| ip.to_string())
                .unwrap_or_default()
        }

        fn route(&mut self, _: Resource<Request>) -> String {
            self.exchange.route.to_string()
        }

        fn upstream(&mut self, _: Resource<Request>) -> String {
            self.exchange.upstream.to_string()
        }

        fn request_id(&mut self, _: Resource<Request>) -> String {
            self.exchange
                .request_id
                .as_ref()
                .map(text)
                .unwrap_or_default()
        }

        fn body(&mut self, _: Resource<Request>) -> Option<Vec<u8>> {
            self.exchange.body.as_ref().map(|b| b.to_vec())
        }

        fn signer(&mut self, _: Resource<Request>) -> Option<Signer> {
            self.exchange.signer.as_ref().map(|s| Signer {
                key_id: s.key_id.clone(),
                instance: s.instance.clone(),
            })
        }
    };
}
pub(super) use request_accessors;

impl fedgate::plugin::types::HostRequest for HostState {
    request_accessors!();

    fn drop(&mut self, _: Resource<Request>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// The response accessors every ABI version shares (see `request_accessors`).
macro_rules! response_accessors {
    () => {
        fn status(&mut self, _: Resource<Response>) -> u16 {
            self.exchange.response.as_ref().map_or(0, |r| r.status)
        }

        fn origin(&mut self, _: Resource<Response>) -> ResponseOrigin {
            match self.exchange.response.as_ref().and_then(|r| r.error) {
                Some(_) => ResponseOrigin::Gateway,
                None => ResponseOrigin::Upstream,
            }
        }

        fn error(&mut self, _: Resource<Response>) -> Option<String> {
            self.exchange
                .response
                .as_ref()
                .and_then(|r| r.error)
                .map(str::to_string)
        }

        fn header(&mut self, _: Resource<Response>, name: String) -> Option<String> {
            self.exchange
                .response
                .as_ref()
                .and_then(|r| first(&r.headers, &name))
        }

        fn headers(&mut self, _: Resource<Response>) -> Vec<Header> {
            self.exchange
                .response
                .as_ref()
                .map(|r| all(&r.headers))
                .unwrap_or_default()
        }

        fn endpoint(&mut self, _: Resource<Response>) -> Option<String> {
            self.exchange
                .response
                .as_ref()
                .and_then(|r| r.endpoint.as_ref())
                .map(|e| e.to_string())
        }

        fn upstream_latency(&mut self, _: Resource<Response>) -> Option<u64> {
            self.exchange
                .response
                .as_ref()
                .and_then(|r| r.upstream_latency)
                .map(|d| d.as_nanos() as u64)
        }

        fn elapsed(&mut self, _: Resource<Response>) -> u64 {
            self.exchange
                .started
                .map_or(0, |s| s.elapsed().as_nanos() as u64)
        }
    };
}
pub(super) use response_accessors;

impl fedgate::plugin::types::HostResponse for HostState {
    response_accessors!();

    fn drop(&mut self, _: Resource<Response>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// The metrics and log imports, alike in every ABI version: `$v` is the version's
/// generated `fedgate::plugin` module.
macro_rules! metrics_and_log {
    ($($v:ident)::+) => {
impl $($v)::+::metrics::Host for HostState {
    fn declare_counter(
        &mut self,
        name: String,
        help: String,
        labels: Vec<String>,
    ) -> Result<Resource<Counter>, String> {
        self.declare(Kind::Counter, name, help, labels, Vec::new())
            .map(Resource::new_own)
    }

    fn declare_gauge(
        &mut self,
        name: String,
        help: String,
        labels: Vec<String>,
    ) -> Result<Resource<Gauge>, String> {
        self.declare(Kind::Gauge, name, help, labels, Vec::new())
            .map(Resource::new_own)
    }

    fn declare_histogram(
        &mut self,
        name: String,
        help: String,
        labels: Vec<String>,
        buckets: Vec<f64>,
    ) -> Result<Resource<Histogram>, String> {
        self.declare(Kind::Histogram, name, help, labels, buckets)
            .map(Resource::new_own)
    }

    fn series_add(&mut self, series: u32, value: f64) -> wasmtime::Result<()> {
        self.update_series(series, Update::Add(value))
    }

    fn series_set(&mut self, series: u32, value: f64) -> wasmtime::Result<()> {
        self.update_series(series, Update::Set(value))
    }

    fn series_observe(&mut self, series: u32, value: f64) -> wasmtime::Result<()> {
        self.update_series(series, Update::Observe(value))
    }
}

impl $($v)::+::metrics::HostCounter for HostState {
    fn add(&mut self, c: Resource<Counter>, labels: Vec<String>, value: f64) {
        if let Some(h) = self.handle(c.rep(), Kind::Counter) {
            h.update(labels, Update::Add(value));
        }
    }

    fn series(&mut self, c: Resource<Counter>, labels: Vec<String>) -> u32 {
        self.resolve(c.rep(), labels)
    }

    fn drop(&mut self, _: Resource<Counter>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl $($v)::+::metrics::HostGauge for HostState {
    fn set(&mut self, g: Resource<Gauge>, labels: Vec<String>, value: f64) {
        if let Some(h) = self.handle(g.rep(), Kind::Gauge) {
            h.update(labels, Update::Set(value));
        }
    }

    fn add(&mut self, g: Resource<Gauge>, labels: Vec<String>, delta: f64) {
        if let Some(h) = self.handle(g.rep(), Kind::Gauge) {
            h.update(labels, Update::Add(delta));
        }
    }

    fn series(&mut self, g: Resource<Gauge>, labels: Vec<String>) -> u32 {
        self.resolve(g.rep(), labels)
    }

    fn drop(&mut self, _: Resource<Gauge>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl $($v)::+::metrics::HostHistogram for HostState {
    fn observe(&mut self, h: Resource<Histogram>, labels: Vec<String>, value: f64) {
        if let Some(h) = self.handle(h.rep(), Kind::Histogram) {
            h.update(labels, Update::Observe(value));
        }
    }

    fn series(&mut self, h: Resource<Histogram>, labels: Vec<String>) -> u32 {
        self.resolve(h.rep(), labels)
    }

    fn drop(&mut self, _: Resource<Histogram>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl $($v)::+::log::Host for HostState {
    fn log(&mut self, level: Level, mut message: String) {
        if message.len() > MAX_LOG {
            let mut end = MAX_LOG;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let plugin = &*self.plugin.name;
        let hook = self.hook;
        match level {
            Level::Error => {
                tracing::error!(target: "fedgate::plugin", plugin, hook, "{message}")
            }
            Level::Warn => tracing::warn!(target: "fedgate::plugin", plugin, hook, "{message}"),
            Level::Info => tracing::info!(target: "fedgate::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "fedgate::plugin", plugin, "{message}"),
            Level::Trace => tracing::trace!(target: "fedgate::plugin", plugin, "{message}"),
        }
    }

    fn enabled(&mut self, level: Level) -> bool {
        match level {
            Level::Error => tracing::enabled!(target: "fedgate::plugin", tracing::Level::ERROR),
            Level::Warn => tracing::enabled!(target: "fedgate::plugin", tracing::Level::WARN),
            Level::Info => tracing::enabled!(target: "fedgate::plugin", tracing::Level::INFO),
            Level::Debug => tracing::enabled!(target: "fedgate::plugin", tracing::Level::DEBUG),
            Level::Trace => tracing::enabled!(target: "fedgate::plugin", tracing::Level::TRACE),
        }
    }
}

    };
}
pub(super) use metrics_and_log;

metrics_and_log!(fedgate::plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_reach_plugins_as_text_with_invalid_bytes_replaced() {
        let ascii = http::HeaderValue::from_static("application/activity+json");
        assert_eq!(text(&ascii), "application/activity+json");
        let latin1 = http::HeaderValue::from_bytes(b"caf\xe9 au lait").unwrap();
        assert_eq!(text(&latin1), "caf\u{FFFD} au lait");
    }
}
