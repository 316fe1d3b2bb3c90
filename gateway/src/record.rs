//! Phase 11: metrics and the access log, recorded once per request when its response body
//! ends or is dropped. A [`Completion`] is created as soon as a route is known (or as soon as
//! it is known that none matches) and travels inside the response body, which names the
//! endpoint (if one was leased) when it finishes the record.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use crate::headers::TraceId;
use crate::metrics::{MethodLabel, RouteMetrics};
use crate::plugin::finished::{Ending, Observed};

/// What the access log needs beyond the metrics; allocated only when the log is on.
#[derive(Debug)]
pub struct AccessLog {
    pub path: String,
    pub request_id: HeaderValue,
    pub trace_id: TraceId,
    pub client: SocketAddr,
}

/// The record of one request, written by [`Completion::finish`], or when dropped (then
/// without an endpoint: none was reached).
#[derive(Debug)]
pub struct Completion {
    start: Instant,
    metrics: Arc<RouteMetrics>,
    method: MethodLabel,
    status: u16,
    request_bytes: Option<Arc<AtomicU64>>,
    response_bytes: u64,
    error: Option<&'static str>,
    complete: bool,
    log: Option<Box<AccessLog>>,
    /// The record for the route's observing plugins, if it has any.
    observed: Option<Box<Observed>>,
    recorded: bool,
}

impl Completion {
    pub fn new(
        start: Instant,
        metrics: Arc<RouteMetrics>,
        method: MethodLabel,
        request_bytes: Option<Arc<AtomicU64>>,
        log: Option<Box<AccessLog>>,
    ) -> Self {
        metrics.in_flight.inc();
        Completion {
            start,
            metrics,
            method,
            // Until a response exists, the request counts as abandoned by the client (499,
            // as nginx logs it): the client went away before anything was sent.
            status: 499,
            request_bytes,
            response_bytes: 0,
            error: None,
            complete: false,
            log,
            observed: None,
            recorded: false,
        }
    }

    /// Records the request for the route's observing plugins too.
    pub fn observe(&mut self, observed: Observed) {
        self.observed = Some(Box::new(observed));
    }

    /// The observers' record, for the phases that learn more of the request.
    pub fn observed(&mut self) -> Option<&mut Observed> {
        self.observed.as_deref_mut()
    }

    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    pub fn set_error(&mut self, code: &'static str) {
        self.error = Some(code);
    }

    pub fn add_response_bytes(&mut self, n: u64) {
        self.response_bytes += n;
    }

    /// Ends the request; `complete` is false when the body was cut short. `endpoint` is the
    /// label of the endpoint that answered (or failed), if one was leased.
    pub fn finish(mut self, complete: bool, endpoint: Option<&Arc<str>>) {
        self.complete = complete;
        self.record(endpoint);
    }

    fn record(&mut self, endpoint: Option<&Arc<str>>) {
        self.recorded = true;
        let elapsed = self.start.elapsed();
        let request_bytes = self
            .request_bytes
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed));
        self.metrics.record(
            self.method,
            self.status,
            elapsed.as_secs_f64(),
            request_bytes,
            self.response_bytes,
        );
        if let Some(observed) = self.observed.take() {
            observed.finish(Ending {
                status: self.status,
                error: self.error,
                endpoint: endpoint.cloned(),
                request_bytes,
                response_bytes: self.response_bytes,
                completed: self.complete,
                duration: elapsed,
            });
        }
        // In flight until recorded and queued for observers: a gauge at 0 means every
        // finished request is in the counters.
        self.metrics.in_flight.dec();
        if let Some(log) = self.log.take() {
            let endpoint = endpoint.map(|l| &**l);
            tracing::info!(
                target: "fedgate::access",
                route = self.metrics.route(),
                upstream = self.metrics.upstream(),
                endpoint = endpoint.unwrap_or("-"),
                method = self.method.as_str(),
                path = log.path,
                status = self.status,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                bytes_in = request_bytes,
                bytes_out = self.response_bytes,
                complete = self.complete,
                error = self.error.unwrap_or("-"),
                request_id = log.request_id.to_str().unwrap_or("-"),
                trace_id = log.trace_id.as_str(),
                client = %log.client,
            );
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(None);
        }
    }
}
