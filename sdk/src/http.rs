//! Typed views of the request and response an inline hook is lent, and the records they
//! share with observed exchanges: the federation view of an activity, the signer, the
//! principal, the HTTP version and TLS facts.
//!
//! On `wasm32` [`Request`] and [`Response`] wrap the gateway's `request` and `response`
//! resources: each accessor is one host call that copies only the part it returns, so read
//! what you need once and keep it in a local (and read the fields you registered with
//! [`Plugin::request_headers`](crate::Plugin::request_headers) in one call, with
//! [`Request::declared_headers`]). Natively they wrap the values built by
//! [`testing`](crate::testing).

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
/// forwarding fields and the request id already added, and the edits earlier plugins made
/// with [`Verdict::Edit`](crate::Verdict::Edit) already applied.
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

    /// The fields the plugin registered with
    /// [`Plugin::request_headers`](crate::Plugin::request_headers), in that order, each its
    /// first value: one host call for every field a hook reads.
    ///
    /// ```
    /// use fedgate_sdk::testing::TestRequest;
    ///
    /// let request = TestRequest::get("/")
    ///     .header("user-agent", "Mastodon/4.3")
    ///     .request_headers(&["user-agent", "date"])
    ///     .build();
    /// assert_eq!(request.declared_headers(), vec![Some("Mastodon/4.3".to_owned()), None]);
    /// ```
    pub fn declared_headers(&self) -> Vec<Option<String>> {
        #[cfg(target_arch = "wasm32")]
        return crate::host::declared(self.0.declared_headers());
        #[cfg(not(target_arch = "wasm32"))]
        return self.0.declared_headers();
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
        self.0.signer().map(Signer::from)
    }

    /// The federation view of the body (see [`Activity`]): on routes that buffer bodies,
    /// for JSON bodies (`application/activity+json`, `application/ld+json`,
    /// `application/json`) that are one JSON object. Parsed by the gateway once per
    /// request, whoever asks first.
    pub fn activity(&self) -> Option<Activity> {
        self.0.activity().map(Activity::from)
    }

    /// Who auth says sent the request, on routes with `auth`, once it succeeded.
    pub fn principal(&self) -> Option<Principal> {
        self.0.principal().map(Principal::from)
    }

    /// The HTTP version the client spoke.
    pub fn http_version(&self) -> HttpVersion {
        self.0.http_version().into()
    }

    /// TLS facts of the client connection; `None` on plain listeners.
    pub fn tls(&self) -> Option<TlsInfo> {
        self.0.tls().map(TlsInfo::from)
    }
}

/// The federation view of a JSON activity body, parsed once per request by the gateway and
/// shared by the blocklist and every plugin: plugins never parse the body again.
///
/// What is read is at the top level of the body: `type` (the first one of an array), `id`,
/// `actor` (the first actor: an id, an object with an `id`, or an array of either),
/// `object` (an id, or an object whose `type` and `id` are read; of an array, the first
/// element), the audience fields and `published`. Names are kept as written: a compact
/// `as:Like` stays `as:Like`.
///
/// ```
/// use fedgate_sdk::Activity;
///
/// let follow = Activity {
///     kind: Some("Follow".into()),
///     actor: Some("https://remote.example/users/bob".into()),
///     actor_host: Some("remote.example".into()),
///     ..Activity::default()
/// };
/// assert_eq!(follow.kind(), Some("Follow"));
/// assert!(!follow.public);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Activity {
    /// `type` (`Create`, `Follow`, ...); the first one when it is an array.
    pub kind: Option<String>,
    /// `id` of the activity.
    pub id: Option<String>,
    /// The first actor id of `actor`.
    pub actor: Option<String>,
    /// The lowercased host of `actor`, without its port: the instance it comes from.
    pub actor_host: Option<String>,
    /// The object's `type`, when `object` is an object.
    pub object_kind: Option<String>,
    /// The object's `id`, or `object` itself when it is a string.
    pub object_id: Option<String>,
    /// Whether `to`, `cc`, `audience`, `bto` or `bcc` of the activity or its object names
    /// the public collection.
    pub public: bool,
    /// `published`, as written (of the activity, else of its object).
    pub published: Option<String>,
}

impl Activity {
    /// [`kind`](Self::kind) as a `&str`.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }
}

/// How auth authenticated a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// An API key.
    ApiKey,
    /// A bearer JWT.
    Jwt,
    /// A verified client certificate.
    Mtls,
}

impl PrincipalKind {
    /// `api-key`, `jwt` or `mtls`, as the WIT names them.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::ApiKey => "api-key",
            PrincipalKind::Jwt => "jwt",
            PrincipalKind::Mtls => "mtls",
        }
    }
}

/// Who auth says sent a request, on routes with `auth`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// How the request was authenticated.
    pub kind: PrincipalKind,
    /// The API key's name, the JWT's `sub`, or the client certificate's subject.
    pub name: String,
}

/// The HTTP version the client spoke.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    #[default]
    Http11,
    /// HTTP/2.
    Http2,
}

impl HttpVersion {
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
            HttpVersion::Http2 => "HTTP/2",
        }
    }
}

/// TLS facts of a client connection, on TLS listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsInfo {
    /// The server name the client asked for (SNI), if it sent one.
    pub server_name: Option<String>,
    /// The verified client certificate's subject, on mTLS listeners.
    pub client_subject: Option<String>,
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
