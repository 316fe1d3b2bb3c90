//! Rejections and failures of the request path, and the one edge step ("rescue") that turns
//! each into a response. Nothing reaches hyper as an `Err`: every failure knows its status and
//! carries a short fixed body that never echoes upstream internals.

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

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UpstreamConnect
            | ProxyError::UpstreamReset
            | ProxyError::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoHealthyEndpoint | ProxyError::UpstreamBusy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::PluginFailed => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Blocked => StatusCode::FORBIDDEN,
            ProxyError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpgradeUnsupported | ProxyError::UnsupportedTransferCoding => {
                StatusCode::NOT_IMPLEMENTED
            }
        }
    }

    /// The fixed body sent to the client.
    pub fn body(self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route\n",
            ProxyError::UpstreamConnect
            | ProxyError::UpstreamReset
            | ProxyError::UpstreamProtocol => "bad gateway\n",
            ProxyError::UpstreamTimeout => "gateway timeout\n",
            ProxyError::NoHealthyEndpoint => "no healthy upstream\n",
            ProxyError::UpstreamBusy => "upstream busy\n",
            ProxyError::BadRequest(_) => "bad request\n",
            ProxyError::BodyTooLarge => "request body too large\n",
            ProxyError::PluginFailed => "service unavailable\n",
            ProxyError::Blocked => "forbidden\n",
            ProxyError::RateLimited => "too many requests\n",
            ProxyError::CircuitOpen => "upstream unavailable\n",
            ProxyError::UpgradeUnsupported => "upgrade not supported on this route\n",
            ProxyError::UnsupportedTransferCoding => "transfer coding not supported\n",
        }
    }

    /// The `kind` label of `fedgate_upstream_errors_total`, for upstream failures.
    pub fn upstream_kind(self) -> Option<UpstreamErrorKind> {
        match self {
            ProxyError::UpstreamConnect => Some(UpstreamErrorKind::Connect),
            ProxyError::UpstreamTimeout => Some(UpstreamErrorKind::Timeout),
            ProxyError::UpstreamReset => Some(UpstreamErrorKind::Reset),
            ProxyError::UpstreamProtocol => Some(UpstreamErrorKind::Protocol),
            ProxyError::NoHealthyEndpoint => Some(UpstreamErrorKind::NoHealthyEndpoint),
            ProxyError::UpstreamBusy => Some(UpstreamErrorKind::ConnectionLimit),
            ProxyError::NoRoute
            | ProxyError::BadRequest(_)
            | ProxyError::BodyTooLarge
            | ProxyError::PluginFailed
            | ProxyError::Blocked
            | ProxyError::RateLimited
            | ProxyError::CircuitOpen
            | ProxyError::UpgradeUnsupported
            | ProxyError::UnsupportedTransferCoding => None,
        }
    }

    /// Short machine-readable name for logs.
    pub fn code(self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::PluginFailed => "plugin_failed",
            ProxyError::Blocked => "blocked",
            ProxyError::RateLimited => "rate_limited",
            ProxyError::CircuitOpen => "circuit_open",
            ProxyError::UpgradeUnsupported => "upgrade_unsupported",
            ProxyError::UnsupportedTransferCoding => "unsupported_transfer_coding",
            other => other.upstream_kind().map_or("error", |k| k.as_str()),
        }
    }

    /// Classifies a failure of the HTTP/2 upstream client.
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
