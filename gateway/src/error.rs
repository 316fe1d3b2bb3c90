//! Failures of the request path, each declared once (`ProxyError::answer`): its status, a
//! short fixed body that never echoes upstream internals, and what it is recorded as.
//! `proxy::Rejection` turns them, and the refusals that carry more, into responses.

use http::StatusCode;

use crate::metrics::UpstreamErrorKind;

/// Why the gateway answered a request itself instead of relaying an upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("connecting to the upstream failed")]
    UpstreamConnect,
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("the upstream closed or reset the connection")]
    UpstreamReset,
    #[error("the upstream spoke invalid HTTP")]
    UpstreamProtocol,
    #[error("the upstream has no healthy endpoint")]
    NoHealthyEndpoint,
    #[error("all of the upstream's connections were in use")]
    UpstreamBusy,
    #[error("the request could not be forwarded: {0}")]
    BadRequest(&'static str),
    #[error("the request body is larger than the route buffers")]
    BodyTooLarge,
    #[error("a fail_closed plugin failed")]
    PluginFailed,
    #[error("the client or its instance is on the blocklist")]
    Blocked,
    #[error("a rate limit refused the request")]
    RateLimited,
    #[error("the upstream's circuit breaker is open")]
    CircuitOpen,
    #[error("the request asks for a protocol upgrade the route's HTTP/2 upstream cannot carry")]
    UpgradeUnsupported,
    #[error("the request body has a transfer coding other than chunked")]
    UnsupportedTransferCoding,
}

/// What a failure is recorded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The upstream's trouble, counted by kind in `fedgate_upstream_errors_total`.
    Upstream(UpstreamErrorKind),
    /// The gateway's own refusal.
    Gateway(&'static str),
}

impl ProxyError {
    /// How the gateway answers it, declared once: the status, the fixed plain-text body
    /// (never the upstream's words), and what it is recorded as.
    fn answer(self) -> (StatusCode, &'static str, Cause) {
        use Cause::{Gateway, Upstream};
        use ProxyError::*;
        use StatusCode as S;
        use UpstreamErrorKind as K;
        match self {
            NoRoute => (
                S::NOT_FOUND,
                "no route\n",
                Gateway("no_route"),
            ),
            UpstreamConnect => (
                S::BAD_GATEWAY,
                "bad gateway\n",
                Upstream(K::Connect),
            ),
            UpstreamReset => (
                S::BAD_GATEWAY,
                "bad gateway\n",
                Upstream(K::Reset),
            ),
            UpstreamProtocol => (
                S::BAD_GATEWAY,
                "bad gateway\n",
                Upstream(K::Protocol),
            ),
            UpstreamTimeout => (
                S::GATEWAY_TIMEOUT,
                "gateway timeout\n",
                Upstream(K::Timeout),
            ),
            NoHealthyEndpoint => (
                S::SERVICE_UNAVAILABLE,
                "no healthy upstream\n",
                Upstream(K::NoHealthyEndpoint),
            ),
            UpstreamBusy => (
                S::SERVICE_UNAVAILABLE,
                "upstream busy\n",
                Upstream(K::ConnectionLimit),
            ),
            BadRequest(_) => (
                S::BAD_REQUEST,
                "bad request\n",
                Gateway("bad_request"),
            ),
            BodyTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "request body too large\n",
                Gateway("body_too_large"),
            ),
            PluginFailed => (
                S::SERVICE_UNAVAILABLE,
                "service unavailable\n",
                Gateway("plugin_failed"),
            ),
            Blocked => (
                S::FORBIDDEN,
                "forbidden\n",
                Gateway("blocked"),
            ),
            RateLimited => (
                S::TOO_MANY_REQUESTS,
                "too many requests\n",
                Gateway("rate_limited"),
            ),
            CircuitOpen => (
                S::SERVICE_UNAVAILABLE,
                "upstream unavailable\n",
                Gateway("circuit_open"),
            ),
            UpgradeUnsupported => (
                S::NOT_IMPLEMENTED,
                "upgrade not supported on this route\n",
                Gateway("upgrade_unsupported"),
            ),
            UnsupportedTransferCoding => (
                S::NOT_IMPLEMENTED,
                "transfer coding not supported\n",
                Gateway("unsupported_transfer_coding"),
            ),
        }
    }

    pub fn status(self) -> StatusCode {
        self.answer().0
    }

    /// The fixed plain-text body.
    pub fn body(self) -> &'static str {
        self.answer().1
    }

    /// The upstream's trouble, when it is one (counted per upstream by kind).
    pub fn upstream_kind(self) -> Option<UpstreamErrorKind> {
        match self.answer().2 {
            Cause::Upstream(kind) => Some(kind),
            Cause::Gateway(_) => None,
        }
    }

    /// What it is recorded as: `error` in the access log, of observed exchanges and of
    /// `on-response`.
    pub fn code(self) -> &'static str {
        match self.answer().2 {
            Cause::Upstream(kind) => kind.as_str(),
            Cause::Gateway(code) => code,
        }
    }

    pub fn from_client(err: &hyper_util::client::legacy::Error) -> Self {
        if err.is_connect() {
            return ProxyError::UpstreamConnect;
        }
        std::error::Error::source(err).map_or(ProxyError::UpstreamReset, Self::classify_chain)
    }

    /// Classifies a failed exchange on an open upstream connection.
    pub fn classify(err: &hyper::Error) -> Self {
        Self::classify_chain(err)
    }

    /// The first hyper or IO error in the chain decides.
    fn classify_chain(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut source = Some(err);
        while let Some(e) = source {
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                if h.is_timeout() {
                    return ProxyError::UpstreamTimeout;
                }
                if h.is_parse() || h.is_parse_status() || h.is_user() {
                    return ProxyError::UpstreamProtocol;
                }
                if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                    return ProxyError::UpstreamReset;
                }
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                return match io.kind() {
                    TimedOut => ProxyError::UpstreamTimeout,
                    ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                        ProxyError::UpstreamReset
                    }
                    _ => ProxyError::UpstreamProtocol,
                };
            }
            source = e.source();
        }
        ProxyError::UpstreamReset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_maps_to_its_status() {
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::Blocked.status(), 403);
        assert_eq!(ProxyError::RateLimited.status(), 429);
        assert_eq!(ProxyError::CircuitOpen.status(), 503);
        assert_eq!(ProxyError::UpstreamConnect.status(), 502);
        assert_eq!(ProxyError::UpstreamReset.status(), 502);
        assert_eq!(ProxyError::UpstreamTimeout.status(), 504);
        assert_eq!(ProxyError::NoHealthyEndpoint.status(), 503);
        assert_eq!(ProxyError::UpgradeUnsupported.status(), 501);
        assert_eq!(ProxyError::UpgradeUnsupported.upstream_kind(), None);
        assert_eq!(
            ProxyError::UpstreamTimeout.upstream_kind(),
            Some(UpstreamErrorKind::Timeout)
        );
        assert_eq!(ProxyError::NoRoute.upstream_kind(), None);
    }
}
