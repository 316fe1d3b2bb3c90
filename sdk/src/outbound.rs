//! Outbound HTTP, from [`on_tick`](crate::Plugin::on_tick) and
//! [`observe`](crate::Plugin::observe) only (an inline hook or `init` gets
//! [`OutboundError::NotHere`]: the request path never waits on the network), to the hosts
//! the operator lists in the plugin's `outbound.allow`, with a timeout and a response size
//! cap. Every call is counted by result.
//!
//! ```
//! use std::time::Duration;
//! use fedgate_sdk::outbound::{self, OutboundError, OutboundRequest};
//!
//! let request = OutboundRequest::post("https://hooks.example/alert", "upstream app down")
//!     .header("content-type", "text/plain")
//!     .timeout(Duration::from_secs(2));
//! match outbound::send(request) {
//!     Ok(response) => assert!(response.status < 600),
//!     // Natively, unscripted URLs are not allowed (see `testing::outbound_reply`).
//!     Err(OutboundError::NotAllowed(_)) => {}
//!     Err(other) => panic!("{other}"),
//! }
//! ```

use std::fmt;
use std::time::Duration;

#[cfg(target_arch = "wasm32")]
use crate::host::outbound as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::backend::outbound as imp;
use crate::Header;

/// A request to send, built with [`get`](Self::get), [`post`](Self::post) or
/// [`new`](Self::new).
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "pass it to outbound::send"]
pub struct OutboundRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// An `http://` or `https://` URL whose host the operator allowed.
    pub url: String,
    /// Request fields.
    pub headers: Vec<Header>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// At most the plugin's `outbound.timeout`; `None`: that timeout.
    pub timeout: Option<Duration>,
}

impl OutboundRequest {
    /// A request with this method to `url`, without fields or body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        OutboundRequest {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout: None,
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        OutboundRequest::new("GET", url)
    }

    /// A `POST` of `body` to `url`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        OutboundRequest::new("POST", url).body(body)
    }

    /// Appends a field.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets the timeout (at most the plugin's `outbound.timeout`; whole milliseconds).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The response to an [`OutboundRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundResponse {
    /// The status code.
    pub status: u16,
    /// The response fields.
    pub headers: Vec<Header>,
    /// The body, whole (within the plugin's `outbound.max_response_bytes`).
    pub body: Vec<u8>,
}

impl OutboundResponse {
    /// A response with `status` and `body`, no fields: what tests script with
    /// [`testing::outbound_reply`](crate::testing::outbound_reply).
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        OutboundResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The first value of a response field; `name` is matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value.as_str())
    }
}

/// Why no response came back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OutboundError {
    /// The URL's host is not in `outbound.allow`, or the URL is not http(s).
    NotAllowed(String),
    /// Called from an inline hook or `init`.
    NotHere,
    /// No response within the timeout.
    Timeout,
    /// The response body passed `outbound.max_response_bytes`.
    TooLarge,
    /// The connection failed: refused, reset, TLS.
    Connect(String),
    /// The request could not be built (bad method, field).
    Invalid(String),
}

impl fmt::Display for OutboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboundError::NotAllowed(why) => write!(f, "not allowed: {why}"),
            OutboundError::NotHere => f.write_str("outbound HTTP is not allowed in this hook"),
            OutboundError::Timeout => f.write_str("timed out"),
            OutboundError::TooLarge => f.write_str("response too large"),
            OutboundError::Connect(why) => write!(f, "connection failed: {why}"),
            OutboundError::Invalid(why) => write!(f, "invalid request: {why}"),
        }
    }
}

impl std::error::Error for OutboundError {}

/// Sends `request` and waits for the whole response (within its timeout).
pub fn send(request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
    imp::send(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn scripted_replies_and_refusals() {
        testing::outbound_reply(
            "https://hooks.example/alert",
            Ok(OutboundResponse::new(204, "")),
        );
        testing::outbound_reply("https://slow.example/", Err(OutboundError::Timeout));
        let response = send(
            OutboundRequest::post("https://hooks.example/alert", "down")
                .header("content-type", "text/plain")
                .timeout(Duration::from_millis(500)),
        )
        .unwrap();
        assert_eq!(response.status, 204);
        assert_eq!(
            send(OutboundRequest::get("https://slow.example/")),
            Err(OutboundError::Timeout)
        );
        assert!(matches!(
            send(OutboundRequest::get("https://elsewhere.example/")),
            Err(OutboundError::NotAllowed(_))
        ));
        let sent = testing::outbound_requests();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].method, "POST");
        assert_eq!(sent[0].body.as_deref(), Some(&b"down"[..]));
        assert_eq!(sent[0].timeout, Some(Duration::from_millis(500)));
    }

    #[test]
    fn inline_hooks_may_not_send() {
        testing::outbound_reply("https://hooks.example/", Ok(OutboundResponse::new(200, "")));
        let result =
            testing::as_inline_hook(|| send(OutboundRequest::get("https://hooks.example/")));
        assert_eq!(result, Err(OutboundError::NotHere));
    }

    #[test]
    fn response_fields_are_found_without_case() {
        let mut response = OutboundResponse::new(200, "{}");
        response
            .headers
            .push(Header::new("content-type", "application/json"));
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        assert_eq!(response.header("etag"), None);
    }
}
