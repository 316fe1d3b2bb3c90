//! Typed views of the request and response a hook is lent.
//!
//! On `wasm32` they wrap the gateway's `request` and `response` resources: each accessor is
//! one host call that copies only the part it returns, so read what you need once and keep
//! it in a local. Natively they wrap the values built by [`testing`](crate::testing).

use std::time::Duration;

#[cfg(target_arch = "wasm32")]
use crate::host::bindings::fedgate::plugin::types as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::backend as imp;

/// One header field. Names the gateway hands out are lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The field name.
    pub name: String,
    /// The field value.
    pub value: String,
}

impl Header {
    /// A field named `name` with `value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Where a response came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The upstream answered.
    Upstream,
    /// The gateway answered for it: the upstream could not be reached, reset the connection,
    /// timed out or sent something that is not HTTP.
    Gateway,
}

/// The request being proxied, lent to a hook for the length of one call.
///
/// It is the request the upstream receives: hop-by-hop fields are already removed, the
/// forwarding fields and the request id already added, and so are the fields that earlier
/// plugins added with [`Verdict::ContinueWith`](crate::Verdict::ContinueWith).
#[derive(Debug)]
#[repr(transparent)]
pub struct Request(pub(crate) imp::Request);

// The conversions are from the generated types on wasm32 and the identity natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
impl Request {
    /// The method, as sent (`GET`, `POST`, ...).
    pub fn method(&self) -> String {
        self.0.method()
    }

    /// `http` or `https`, as the client connected.
    pub fn scheme(&self) -> String {
        self.0.scheme()
    }

    /// The host the client asked for, with its port if it had one; empty if none.
    pub fn authority(&self) -> String {
        self.0.authority()
    }

    /// The path, exactly as sent (percent-encoding kept), without the query.
    pub fn path(&self) -> String {
        self.0.path()
    }

    /// The query without its `?`, exactly as sent; `None` when the target had no `?`.
    pub fn query(&self) -> Option<String> {
        self.0.query()
    }

    /// The first value of a field; `name` is matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }

    /// Every value of a field, in the order received.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.0.header_values(name)
    }

    /// Every field, in the order received.
    pub fn headers(&self) -> Vec<Header> {
        self.0.headers().into_iter().map(Header::from).collect()
    }

    /// The client's IP address (`192.0.2.1`, `2001:db8::1`): the peer of the connection.
    pub fn client_address(&self) -> String {
        self.0.client_address()
    }

    /// The name of the route the request matched.
    pub fn route(&self) -> String {
        self.0.route()
    }

    /// The name of the upstream that route forwards to.
    pub fn upstream(&self) -> String {
        self.0.upstream()
    }

    /// The request id the gateway forwards.
    pub fn request_id(&self) -> String {
        self.0.request_id()
    }

    /// The body, when the route buffers bodies (`buffer_body` in its configuration) and this
    /// one fitted; `None` otherwise, and for requests without a body.
    pub fn body(&self) -> Option<Vec<u8>> {
        self.0.body()
    }

    /// Who signed the request, when the route checks HTTP signatures (`signatures` in its
    /// configuration) and the signature verified; `None` otherwise.
    pub fn signer(&self) -> Option<Signer> {
        self.0.signer().map(|s| Signer {
            key_id: s.key_id,
            instance: s.instance,
        })
    }
}

/// The verified signer of a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signer {
    /// The key id the signature named (`https://remote.example/users/bob#main-key`).
    pub key_id: String,
    /// The host of the key id, lowercased (`remote.example`): the sending instance.
    pub instance: String,
}

/// A response about to be sent to the client, lent to `on-response` for one call.
#[derive(Debug)]
#[repr(transparent)]
pub struct Response(pub(crate) imp::Response);

// The conversions are from the generated types on wasm32 and the identity natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(clippy::useless_conversion))]
impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.0.status()
    }

    /// [`Origin::Upstream`], or [`Origin::Gateway`] when the gateway answered in the
    /// upstream's place.
    pub fn origin(&self) -> Origin {
        self.0.origin().into()
    }

    /// For gateway answers, why: `connect`, `timeout`, `reset` or `protocol`.
    pub fn error(&self) -> Option<String> {
        self.0.error()
    }

    /// The first value of a response field; `name` is matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }

    /// Every response field, in the order received.
    pub fn headers(&self) -> Vec<Header> {
        self.0.headers().into_iter().map(Header::from).collect()
    }

    /// The endpoint that answered or failed (`10.0.0.5:3000`); `None` if none was tried.
    pub fn endpoint(&self) -> Option<String> {
        self.0.endpoint()
    }

    /// From sending the request upstream to receiving the response head; `None` for gateway
    /// answers.
    pub fn upstream_latency(&self) -> Option<Duration> {
        self.0.upstream_latency().map(Duration::from_nanos)
    }

    /// From the request's arrival at the gateway until now.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.0.elapsed())
    }
}
