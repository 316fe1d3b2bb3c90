//! What one try of the upstream came to, classified once. Outlier detection, the circuit
//! breaker and retries each judge this one value by their own policy, so "did this try
//! fail?" is answered in one place; the transport's own errors are sorted into
//! [`ProxyError`] kinds where they happen (`h1::Error::kind`, `ProxyError::classify`).

use http::Response;

use crate::breaker::Breaker;
use crate::error::ProxyError;
use crate::retry::Retries;

/// One try's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// The upstream answered, with this status.
    Answered(u16),
    /// The try failed before an answer: the upstream's trouble (connect, timeout, reset,
    /// protocol, ...) or the request's own (its body could not be read).
    Failed(ProxyError),
}

impl TryOutcome {
    pub fn of<B>(result: &Result<Response<B>, ProxyError>) -> Self {
        match result {
            Ok(resp) => TryOutcome::Answered(resp.status().as_u16()),
            Err(kind) => TryOutcome::Failed(*kind),
        }
    }

    /// The upstream's failure, not the request's: a connect error, timeout, reset,
    /// protocol error, no endpoint or a full connection pool.
    fn upstream_failed(self) -> bool {
        matches!(self, TryOutcome::Failed(kind) if kind.upstream_kind().is_some())
    }

    /// What outlier detection counts against the endpoint: a 502, 503 or 504 from it, or
    /// the upstream's failure. Other statuses are the application's answers.
    pub fn endpoint_failed(self) -> bool {
        matches!(self, TryOutcome::Answered(502..=504)) || self.upstream_failed()
    }

    /// What the breaker counts as a failure: one of its failure statuses, or the
    /// upstream's failure.
    pub fn breaker_failed(self, breaker: &Breaker) -> bool {
        match self {
            TryOutcome::Answered(status) => breaker.is_failure_status(status),
            TryOutcome::Failed(_) => self.upstream_failed(),
        }
    }

    /// Whether another try may be worth it: one of the policy's statuses, or a failure
    /// that left the request unprocessed or unanswered (connect error, timeout, reset).
    /// A protocol error is not tried again: the upstream may have acted on the request.
    pub fn retryable(self, retries: &Retries) -> bool {
        match self {
            TryOutcome::Answered(status) => retries.retries_status(status),
            TryOutcome::Failed(kind) => matches!(
                kind,
                ProxyError::UpstreamConnect
                    | ProxyError::UpstreamTimeout
                    | ProxyError::UpstreamReset
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> TryOutcome {
        TryOutcome::of(&Ok::<_, ProxyError>(
            Response::builder().status(status).body(()).unwrap(),
        ))
    }

    fn failed(kind: ProxyError) -> TryOutcome {
        TryOutcome::of(&Err::<Response<()>, _>(kind))
    }

    #[test]
    fn only_endpoint_failures_count_against_the_endpoint() {
        for s in [200, 404, 429, 500, 501] {
            assert!(!answered(s).endpoint_failed(), "{s}");
        }
        for s in [502, 503, 504] {
            assert!(answered(s).endpoint_failed(), "{s}");
        }
        for kind in [
            ProxyError::UpstreamConnect,
            ProxyError::UpstreamReset,
            ProxyError::UpstreamTimeout,
            ProxyError::UpstreamProtocol,
        ] {
            assert!(failed(kind).endpoint_failed(), "{kind:?}");
        }
        assert!(!failed(ProxyError::BadRequest("request body")).endpoint_failed());
    }

    #[tokio::test]
    async fn the_breaker_counts_its_statuses_and_the_upstreams_failures() {
        let metrics = crate::metrics::Metrics::new(prometheus::Registry::new()).unwrap();
        let breaker = Breaker::new(
            "app",
            crate::breaker::BreakerConfig {
                failure_statuses: vec![500, 503],
                ..Default::default()
            },
            metrics.breaker("app"),
        );
        assert!(answered(500).breaker_failed(&breaker));
        assert!(!answered(502).breaker_failed(&breaker));
        assert!(failed(ProxyError::UpstreamTimeout).breaker_failed(&breaker));
        assert!(!failed(ProxyError::BadRequest("request body")).breaker_failed(&breaker));
    }
}
