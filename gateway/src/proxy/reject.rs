//! Every answer the gateway gives in the upstream's place, declared once. A [`Rejection`]
//! names what happened; [`Rejection::respond`] is the one conversion into a response: its
//! status, fields and body, the cause the access log, the metrics and observers record,
//! and the request id every response carries.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::auth::Refusal;
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::plugin::Denial;
use crate::record::Completion;
use crate::runtime::Runtime;
use crate::signature::verifier::Verification;

/// Why the gateway answers a request itself.
#[derive(Debug)]
pub enum Rejection {
    /// A failure, with its status and fixed plain-text body (see [`ProxyError`]).
    Error(ProxyError),
    /// 503 from an open circuit breaker, to be tried again after the wait.
    CircuitOpen(Duration),
    /// 429 from a rate limit: `Retry-After`, and the limiter's policy and state as
    /// draft-ietf-httpapi-ratelimit-headers describes them.
    RateLimited(crate::ratelimit::Refusal),
    /// 401 for a signature an enforcing route refused, with a JSON reason as Mastodon
    /// gives one.
    Signature(Box<Verification>),
    /// 401 (with the route's challenges, the `WWW-Authenticate` value) or 403 from auth,
    /// with a JSON reason; the credential is never echoed.
    Auth(Refusal, HeaderValue),
    /// A plugin's local reply, as the plugin wrote it.
    Plugin(Box<Denial>),
}

/// What a rejection answers.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: StatusCode,
    /// The cause recorded (`error` of the access log and of observed exchanges).
    pub(super) cause: &'static str,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    /// The response, with the request id, recorded on `completion` as the gateway's own.
    pub(super) fn respond(
        self,
        mut completion: Completion,
        request_id: &HeaderValue,
        rt: &Runtime,
    ) -> Response<ResponseBody> {
        let Answer {
            status,
            cause,
            mut headers,
            body,
        } = self;
        completion.set_status(status.as_u16());
        completion.set_error(cause);
        headers.insert(&rt.forwarding.request_id_header, request_id.clone());
        let mut resp = Response::new(ResponseBody::fixed(body, Some(completion)));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }
}

impl Rejection {
    /// The response, with the request id, recorded on `completion` as the gateway's own.
    pub fn respond(
        self,
        completion: Completion,
        request_id: &HeaderValue,
        rt: &Runtime,
    ) -> Response<ResponseBody> {
        self.answer().respond(completion, request_id, rt)
    }

    /// Its status, fields, body and recorded cause.
    pub(super) fn answer(self) -> Answer {
        match self {
            Rejection::Error(err) => fixed(err, HeaderMap::with_capacity(2)),
            Rejection::CircuitOpen(wait) => try_later(
                ProxyError::CircuitOpen,
                retry_after_secs(wait),
                HeaderMap::with_capacity(3),
            ),
            Rejection::RateLimited((limiter, wait)) => {
                let secs = retry_after_secs(wait);
                tracing::debug!(limiter = %limiter.config.name, retry_after = secs, "rate limited");
                let mut headers = HeaderMap::with_capacity(5);
                headers.insert("ratelimit-policy", limiter.policy.clone());
                if let Ok(v) =
                    HeaderValue::from_str(&format!("\"{}\";r=0;t={secs}", limiter.config.name))
                {
                    headers.insert("ratelimit", v);
                }
                try_later(ProxyError::RateLimited, secs, headers)
            }
            Rejection::Signature(checked) => {
                let mut answer = json(
                    StatusCode::UNAUTHORIZED,
                    "signature",
                    checked
                        .reason
                        .as_deref()
                        .unwrap_or("signature verification failed"),
                    checked.outcome.as_str(),
                );
                answer.headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Signature realm=\"fedgate\""),
                );
                answer
            }
            Rejection::Auth(refusal, challenge) => {
                tracing::debug!(
                    method = refusal.method.as_str(),
                    result = refusal.result.as_str(),
                    reason = refusal.reason,
                    "authentication refused"
                );
                let status = refusal.status();
                let mut answer = json(status, "auth", refusal.reason, refusal.result.as_str());
                if status == StatusCode::UNAUTHORIZED {
                    answer.headers.insert(header::WWW_AUTHENTICATE, challenge);
                }
                answer
            }
            Rejection::Plugin(d) => {
                let d = *d;
                tracing::debug!(plugin = %d.plugin, status = d.status.as_u16(), "request denied by plugin");
                Answer {
                    status: d.status,
                    cause: "plugin_denied",
                    headers: d.headers,
                    body: d.body,
                }
            }
        }
    }
}

/// The error's status and fixed plain-text body, with `headers` besides.
fn fixed(err: ProxyError, mut headers: HeaderMap) -> Answer {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Answer {
        status: err.status(),
        cause: err.code(),
        headers,
        body: Bytes::from_static(err.body().as_bytes()),
    }
}

/// A refusal the client may try again after `secs`: the error's fixed answer with
/// `Retry-After`.
fn try_later(err: ProxyError, secs: u64, mut headers: HeaderMap) -> Answer {
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    fixed(err, headers)
}

/// A refusal with a JSON reason: `{"error": reason, "result": result}`.
fn json(status: StatusCode, cause: &'static str, reason: &str, result: &str) -> Answer {
    let body = serde_json::json!({ "error": reason, "result": result }).to_string();
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Answer {
        status,
        cause,
        headers,
        body: Bytes::from(body),
    }
}

/// `Retry-After` in whole seconds: rounded up, at least one.
fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_answer_their_status_and_fixed_plain_text() {
        let a = Rejection::Error(ProxyError::BodyTooLarge).answer();
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(a.cause, "body_too_large");
        assert_eq!(&a.body[..], b"request body too large\n");
        assert_eq!(a.headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(a.headers.len(), 1);
        let upstream = Rejection::Error(ProxyError::UpstreamBusy).answer();
        assert_eq!(
            (upstream.status, upstream.cause),
            (StatusCode::SERVICE_UNAVAILABLE, "connection_limit")
        );
    }

    #[test]
    fn an_open_breaker_says_when_to_try_again_in_whole_seconds() {
        let a = Rejection::CircuitOpen(Duration::from_millis(1_200)).answer();
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.cause, "circuit_open");
        assert_eq!(a.headers[header::RETRY_AFTER], "2");
        assert_eq!(&a.body[..], b"upstream unavailable\n");
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::from_nanos(3_000_000_001)), 4);
    }

    #[test]
    fn plugin_replies_are_sent_as_written() {
        let mut headers = HeaderMap::new();
        headers.insert("x-spam", HeaderValue::from_static("dropped"));
        let a = Rejection::Plugin(Box::new(Denial {
            plugin: "spam".into(),
            status: StatusCode::ACCEPTED,
            headers,
            body: Bytes::from_static(b"accepted"),
        }))
        .answer();
        assert_eq!((a.status, a.cause), (StatusCode::ACCEPTED, "plugin_denied"));
        assert_eq!(a.headers["x-spam"], "dropped");
        assert_eq!(a.headers.get(header::CONTENT_TYPE), None);
        assert_eq!(&a.body[..], b"accepted");
    }
}
