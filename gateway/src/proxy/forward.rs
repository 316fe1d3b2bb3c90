//! Phases 8 and 9: breaker admission and an eligible endpoint (healthy, not ejected) by
//! balancing, then the tries of the upstream within the route's deadline. Idempotent
//! requests whose body the gateway holds are tried again, within the upstream's retry
//! budget, on another endpoint if there is one.
//!
//! A [`Try`] owns what one try holds: the breaker's admission (reported with the try's
//! outcome; dropped unreported, it gives its place back), the endpoint's lease and, for a
//! retry, its place in the budget. [`Tries`] decides whether there is another.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Response};
use tokio::time::Instant;

use super::admission::Admitted;
use crate::runtime::Route;
use super::{Ctx, Rejection};
use crate::breaker::{Admission, Breaker};
use crate::error::ProxyError;
use crate::metrics::UpstreamErrorKind;
use crate::outcome::TryOutcome;
use crate::retry::{self, Outcome as RetryOutcome, Retries};
use crate::upload::RequestBody;
use crate::upstream::{Lease, Relay};

/// The upstream's answer, from the last try.
pub(super) struct Answered {
    pub resp: Response<Relay>,
    pub lease: Lease,
    /// From the first try's send to the response head.
    pub latency: Duration,
}

impl Ctx {
    /// Phases 8 and 9 for a request that passed admission and plugins. The request comes
    /// by reference: an async fn's arguments are held twice in its future, and this one is
    /// part of every request's.
    #[inline(always)]
    pub(super) async fn forward(
        &mut self,
        parts: &mut Parts,
        admitted: &mut Admitted,
    ) -> Result<Answered, Rejection> {
        let route = Arc::clone(&self.route);
        let upstream = &route.upstream;
        let mut attempt = Try::first(&route)?;
        let endpoint_host = !self.rt.forwarding.preserve_host;
        if endpoint_host {
            set_endpoint_host(&mut parts.headers, &attempt.lease);
        }
        let retry = route
            .retries
            .as_deref()
            .filter(|r| !self.upgrade && r.eligible(&parts.method));
        // Every request to the upstream counts toward the budget, retried or not.
        let _active = route.retries.as_deref().map(Retries::active);
        // A copy of the body to send again, when a retry may be wanted (and the body is held
        // whole). The head is kept as it is: HTTP/1.1 upstreams only read it.
        let template = retry.and_then(|_| admitted.body.replica());
        let keep = template.is_some();
        let body_failure = admitted.body_failure.take();
        let mut body = Some(std::mem::replace(
            &mut admitted.body,
            RequestBody::buffered(Bytes::new()),
        ));
        let sent = std::time::Instant::now();
        // The deadline comes from the instant already read: one clock read fewer per request.
        let started = Instant::from_std(sent);
        let mut tries = Tries {
            route: &route,
            retry,
            template,
            started,
            deadline: started + route.response_timeout,
            retried: 0,
        };
        let (result, lease) = loop {
            let (deadline, timeout) = tries.window();
            let sending = body
                .take()
                .unwrap_or_else(|| RequestBody::buffered(Bytes::new()));
            let result = match crate::deadline::within(
                deadline,
                timeout,
                self.counter.clone(),
                attempt.lease.send(parts, sending, self.upgrade, keep),
            )
            .await
            {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %upstream.name, endpoint = %attempt.lease.endpoint().label, error = %e.detail, "upstream request failed");
                    Err(e.kind)
                }
                Err(_) => Err(ProxyError::UpstreamTimeout),
            };
            let result = match result {
                Err(_) if body_failure.as_ref().is_some_and(|g| g.failed()) => {
                    Err(ProxyError::BadRequest("request body"))
                }
                other => other,
            };
            // Classified once; outlier detection, the breaker and retries each judge it.
            let outcome = TryOutcome::of(&result);
            attempt.report(&route, outcome, started);
            match tries.again(attempt, outcome) {
                Ok(next) => {
                    attempt = next;
                    if endpoint_host {
                        set_endpoint_host(&mut parts.headers, &attempt.lease);
                    }
                    body = tries.template.as_ref().and_then(RequestBody::replica);
                }
                Err(last) => break (result, last),
            }
        };
        match result {
            Ok(resp) => Ok(Answered {
                resp,
                lease,
                latency: sent.elapsed(),
            }),
            Err(kind) => {
                if self.seen.is_some() {
                    self.endpoint = Some(lease.endpoint().label.clone());
                }
                if let Some(k) = kind.upstream_kind() {
                    upstream.metrics.error(k);
                }
                self.failed = Some(lease);
                Err(Rejection::Error(kind))
            }
        }
    }
}

/// One try of the upstream and what it holds while it runs.
struct Try<'r> {
    lease: Lease,
    /// The breaker's admission, until the try's outcome is reported.
    admission: Option<Admission<'r>>,
    /// A retry's place in the budget, free again when the try is over.
    _slot: Option<retry::Active<'r>>,
}

impl<'r> Try<'r> {
    /// Phase 8: the breaker's admission, then an endpoint, or the gateway answers 503.
    #[inline(always)]
    fn first(route: &'r Route) -> Result<Self, Rejection> {
        let admission = admit(route).map_err(Rejection::CircuitOpen)?;
        let Some(lease) = route.upstream.pick() else {
            drop(admission);
            route
                .upstream
                .metrics
                .error(UpstreamErrorKind::NoHealthyEndpoint);
            return Err(Rejection::Error(ProxyError::NoHealthyEndpoint));
        };
        Ok(Try {
            lease,
            admission,
            _slot: None,
        })
    }

    /// Outlier detection and the breaker judge the try's outcome.
    #[inline(always)]
    fn report(&mut self, route: &Route, outcome: TryOutcome, sent: Instant) {
        route
            .upstream
            .report(&self.lease, !outcome.endpoint_failed());
        if let (Some(b), Some(a)) = (route.breaker.as_deref(), self.admission.take()) {
            a.report_at(outcome.breaker_failed(b), sent);
        }
    }
}

/// The breaker's admission, if the upstream has a breaker; how long it stays open if not.
fn admit(route: &Route) -> Result<Option<Admission<'_>>, Duration> {
    route.breaker.as_deref().map(Breaker::admit).transpose()
}

/// A request's tries: the route's deadline, the retry policy and the body to send again.
struct Tries<'r> {
    route: &'r Route,
    retry: Option<&'r Retries>,
    template: Option<RequestBody>,
    started: Instant,
    deadline: Instant,
    retried: u32,
}

impl<'r> Tries<'r> {
    /// The next try's deadline and the timeout it reports: the request's, or the per-try
    /// timeout within it.
    #[inline(always)]
    fn window(&self) -> (Instant, Duration) {
        match self.retry.and_then(|r| r.config.per_try_timeout) {
            Some(t) if self.retried == 0 => (self.deadline.min(self.started + t), t),
            Some(t) => (self.deadline.min(Instant::now() + t), t),
            None => (self.deadline, self.route.response_timeout),
        }
    }

    /// Another try after `done`, whose outcome was `outcome`, or the last try's lease: the
    /// policy must want one, the budget and the breaker admit it, and an endpoint take it
    /// (another eligible one if there is one; else the same one again, since a reset on a
    /// reused connection is worth a second try there too).
    #[inline(always)]
    fn again(&mut self, done: Try<'r>, outcome: TryOutcome) -> Result<Try<'r>, Lease> {
        let Some(r) = self.retry else {
            return Err(done.lease);
        };
        let wanted = outcome.retryable(r);
        if self.retried > 0 {
            r.count(if wanted {
                RetryOutcome::Failure
            } else {
                RetryOutcome::Success
            });
        }
        if !(wanted
            && self.template.is_some()
            && self.retried < r.config.max_retries
            && Instant::now() < self.deadline)
        {
            return Err(done.lease);
        }
        // The retry just made (if any) is over: its place in the budget is free again
        // (now, before the next one asks for a place).
        let Try {
            lease,
            admission: reported,
            _slot: slot,
        } = done;
        drop((reported, slot));
        let Some(slot) = r.admit() else {
            return Err(lease);
        };
        let Ok(admission) = admit(self.route) else {
            r.count(RetryOutcome::NoEndpoint);
            return Err(lease);
        };
        // The failed try is the upstream's error all the same.
        if let TryOutcome::Failed(kind) = outcome {
            if let Some(k) = kind.upstream_kind() {
                self.route.upstream.metrics.error(k);
            }
        }
        self.retried += 1;
        let upstream = &self.route.upstream;
        let Some(next) = upstream
            .pick_other(lease.index())
            .or_else(|| upstream.pick())
        else {
            drop(admission);
            r.count(RetryOutcome::NoEndpoint);
            return Err(lease);
        };
        tracing::debug!(upstream = %upstream.name, endpoint = %next.endpoint().label, retry = self.retried, "retrying");
        Ok(Try {
            lease: next,
            admission,
            _slot: Some(slot),
        })
    }
}

/// `Host` for an upstream that gets its endpoint's authority (`preserve_host = false`).
fn set_endpoint_host(headers: &mut HeaderMap, lease: &Lease) {
    if let Ok(h) = HeaderValue::from_str(lease.endpoint().config.authority.as_str()) {
        headers.insert(header::HOST, h);
    }
}
