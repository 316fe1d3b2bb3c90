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

use std::borrow::Cow;
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
    /// let fields = request.declared_headers();
    /// assert_eq!(fields.get(0), Some("Mastodon/4.3"));
    /// assert_eq!(fields.get(1), None);
    /// assert_eq!(fields.to_vec(), vec![Some("Mastodon/4.3".to_owned()), None]);
    /// ```
    pub fn declared_headers(&self) -> DeclaredHeaders {
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
    pub fn signer(&self) -> Option<Signer<'static>> {
        self.0.signer().map(Signer::from)
    }

    /// The federation view of the body (see [`Activity`]): on routes that buffer bodies,
    /// for JSON bodies (`application/activity+json`, `application/ld+json`,
    /// `application/json`) that are one JSON object. Parsed by the gateway once per
    /// request, whoever asks first.
    pub fn activity(&self) -> Option<Activity<'static>> {
        self.0.activity().map(Activity::from)
    }

    /// Who auth says sent the request, on routes with `auth`, once it succeeded.
    pub fn principal(&self) -> Option<Principal<'static>> {
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

/// The string a `text-ref` of the ABI names in `stored` (its offset in the high 32 bits,
/// its length in the low 32): `None` when absent (all bits set), or out of bounds, which a
/// gateway never sends.
pub(crate) fn text_at(stored: &str, at: u64) -> Option<&str> {
    if at == u64::MAX {
        return None;
    }
    let start = (at >> 32) as usize;
    stored.get(start..start + (at & 0xffff_ffff) as usize)
}

/// The first values of the fields a plugin registered, as
/// [`Request::declared_headers`] returns them: every value side by side in one text, as
/// the gateway sent them, read in place (`get` copies nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeclaredHeaders {
    text: String,
    /// Per registered field, in order: where its value is in `text` (offset in the high 32
    /// bits, length in the low 32), all bits set when the request had no such field.
    values: Vec<u64>,
}

impl DeclaredHeaders {
    /// From the values themselves (natively, and for tests).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn from_values(values: Vec<Option<String>>) -> DeclaredHeaders {
        let mut text = String::new();
        let values = values
            .into_iter()
            .map(|value| {
                value.map_or(u64::MAX, |value| {
                    let at = ((text.len() as u64) << 32) | value.len() as u64;
                    text.push_str(&value);
                    at
                })
            })
            .collect();
        DeclaredHeaders { text, values }
    }

    /// From the gateway's text and where each value is in it.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_refs(text: String, values: Vec<u64>) -> DeclaredHeaders {
        DeclaredHeaders { text, values }
    }

    /// The value of the registered field at `index` (the order of
    /// [`Plugin::request_headers`](crate::Plugin::request_headers)); `None` when the
    /// request had no such field or `index` is past the registered ones.
    pub fn get(&self, index: usize) -> Option<&str> {
        text_at(&self.text, *self.values.get(index)?)
    }

    /// How many fields were registered.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no field was registered.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Each registered field's value, in order.
    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        (0..self.len()).map(|index| self.get(index))
    }

    /// The values, copied.
    pub fn to_vec(&self) -> Vec<Option<String>> {
        self.iter().map(|value| value.map(str::to_owned)).collect()
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
/// In an [`Exchange`](crate::Exchange) the strings borrow from the batch the observer
/// received (no copy per exchange); [`into_owned`](Self::into_owned) detaches them, to keep
/// the view past the call.
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
pub struct Activity<'a> {
    /// `type` (`Create`, `Follow`, ...); the first one when it is an array.
    pub kind: Option<Cow<'a, str>>,
    /// `id` of the activity.
    pub id: Option<Cow<'a, str>>,
    /// The first actor id of `actor`.
    pub actor: Option<Cow<'a, str>>,
    /// The lowercased host of `actor`, without its port: the instance it comes from.
    pub actor_host: Option<Cow<'a, str>>,
    /// The object's `type`, when `object` is an object.
    pub object_kind: Option<Cow<'a, str>>,
    /// The object's `id`, or `object` itself when it is a string.
    pub object_id: Option<Cow<'a, str>>,
    /// Whether `to`, `cc`, `audience`, `bto` or `bcc` of the activity or its object names
    /// the public collection.
    pub public: bool,
    /// `published`, as written (of the activity, else of its object).
    pub published: Option<Cow<'a, str>>,
}

impl Activity<'_> {
    /// [`kind`](Self::kind) as a `&str`.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// The same view, its strings copied.
    pub fn into_owned(self) -> Activity<'static> {
        Activity {
            kind: self.kind.map(owned),
            id: self.id.map(owned),
            actor: self.actor.map(owned),
            actor_host: self.actor_host.map(owned),
            object_kind: self.object_kind.map(owned),
            object_id: self.object_id.map(owned),
            public: self.public,
            published: self.published.map(owned),
        }
    }
}

/// A string detached from what it borrowed from.
pub(crate) fn owned(text: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(text.into_owned())
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
pub struct Principal<'a> {
    /// How the request was authenticated.
    pub kind: PrincipalKind,
    /// The API key's name, the JWT's `sub`, or the client certificate's subject.
    pub name: Cow<'a, str>,
}

impl Principal<'_> {
    /// The same principal, its name copied.
    pub fn into_owned(self) -> Principal<'static> {
        Principal {
            kind: self.kind,
            name: owned(self.name),
        }
    }
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
pub struct Signer<'a> {
    /// The key id the signature named (`https://remote.example/users/bob#main-key`).
    pub key_id: Cow<'a, str>,
    /// The host of the key id, lowercased (`remote.example`): the sending instance.
    pub instance: Cow<'a, str>,
}

impl Signer<'_> {
    /// The same signer, its strings copied.
    pub fn into_owned(self) -> Signer<'static> {
        Signer {
            key_id: owned(self.key_id),
            instance: owned(self.instance),
        }
    }
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
