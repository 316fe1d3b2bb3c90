//! The federation view of an activity body: parsed natively, once per request.
//!
//! The blocklist (phase 3) and, later, Wasm plugins need a handful of fields of an
//! ActivityPub activity: who sent it, what it is, what it is about, whether it is public.
//! [`Activity::parse`] reads them in one pass of `serde_json`'s deserializer over the body,
//! without building a `serde_json::Value` tree: only the fields below are visited, every
//! other value is skipped unparsed (`IgnoredAny`), and strings are borrowed from the body
//! unless they hold escapes. [`LazyActivity`] holds a request's body and parses it the first
//! time someone asks, so that a request whose checks never look at the body pays nothing and
//! one whose checks all do pays once.
//!
//! What is read, all at the top level of the body (which must be a JSON object):
//!
//! - `type`, `id`, `published`: strings (`type` may be an array: its first string);
//! - `actor`: an id, an object with an `id`, or an array of either; every `actor` key,
//!   should the body repeat it, because a duplicate key must not hide an actor from the
//!   blocklist;
//! - `object`: an id, or an object whose `type`, `id`, `published` and audience are read
//!   (of an array, the first element);
//! - `to`, `cc`, `audience`, `bto`, `bcc` there and in the object: whether any names the
//!   public collection.
//!
//! Of any other repeated key the first usable value wins, and a value of the wrong shape
//! (a number for `id`, say) is taken as absent rather than refusing the body, so that an
//! odd field cannot make the blocklist skip a body whose `actor` it could read.
//!
//! Bounds: the work is linear in the body. `serde_json` refuses values nested deeper than
//! its recursion limit (128) wherever the visitors below descend, and they descend at most
//! three levels themselves before skipping; what they skip, `serde_json` skips without
//! recursing (its `IgnoredAny` keeps one byte per open bracket on the heap), so a deeply
//! nested skipped value costs neither stack nor more memory than the body's length, and
//! needs no depth limit of its own.

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv6Addr;
use std::sync::OnceLock;

use bytes::Bytes;
use http::HeaderMap;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The ids ActivityStreams gives the public collection; the compact forms appear in
/// JSON-LD-compacted documents (`as:Public`) and in older servers' output (`Public`).
const PUBLIC: [&str; 3] = [
    "https://www.w3.org/ns/activitystreams#Public",
    "as:Public",
    "Public",
];

/// The fields of one activity that the gateway reads. Strings borrow from the body unless
/// they had escapes; [`Activity::into_owned`] detaches them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity<'a> {
    /// `type`: of an array of types, the first string.
    pub kind: Option<Cow<'a, str>>,
    /// The activity's own `id`.
    pub id: Option<Cow<'a, str>>,
    /// Every actor id named by the top-level `actor` keys, in document order.
    pub actors: Vec<Cow<'a, str>>,
    /// The `type` of the object, when `object` is (or starts with) an object.
    pub object_type: Option<Cow<'a, str>>,
    /// The object's id: `object` itself when it is a string, else its `id`.
    pub object_id: Option<Cow<'a, str>>,
    /// Whether `to`, `cc`, `audience`, `bto` or `bcc` of the activity or of its object
    /// names the public collection.
    pub public: bool,
    /// `published` as written, of the activity, else of its object.
    pub published: Option<Cow<'a, str>>,
}

impl<'a> Activity<'a> {
    /// Reads an activity body. `None` when it is not one JSON object (invalid JSON, another
    /// type of value, trailing bytes, a string that is not UTF-8).
    pub fn parse(body: &'a [u8]) -> Option<Activity<'a>> {
        // A body that is UTF-8 throughout (every real one) is checked once, here, rather
        // than string by string as it is read; either way the result is the same.
        match std::str::from_utf8(body) {
            Ok(text) => Self::read(&mut serde_json::Deserializer::from_str(text)),
            Err(_) => Self::read(&mut serde_json::Deserializer::from_slice(body)),
        }
    }

    fn read<R: serde_json::de::Read<'a>>(
        de: &mut serde_json::Deserializer<R>,
    ) -> Option<Activity<'a>> {
        let activity = de.deserialize_map(TopLevel).ok()?;
        // A body with bytes after its object is not an activity some server would accept.
        de.end().ok()?;
        Some(activity)
    }

    /// The first actor: the one servers attribute the activity to.
    pub fn actor(&self) -> Option<&str> {
        self.actors.first().map(|a| a.as_ref())
    }

    /// The host of the first actor id, lowercased, with IPv6 addresses in brackets; `None`
    /// when the id is not a `scheme://` URL or its host is empty or not a DNS name, IPv4 or
    /// IPv6 address (percent-encoded or otherwise unusual hosts are refused rather than
    /// reported in a form a comparison could miss).
    pub fn actor_host(&self) -> Option<Cow<'_, str>> {
        host_of(self.actor()?)
    }

    /// The same activity, its strings copied out of the body.
    pub fn into_owned(self) -> Activity<'static> {
        Activity {
            kind: self.kind.map(own),
            id: self.id.map(own),
            actors: self.actors.into_iter().map(own).collect(),
            object_type: self.object_type.map(own),
            object_id: self.object_id.map(own),
            public: self.public,
            published: self.published.map(own),
        }
    }
}

fn own(s: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(s.into_owned())
}

/// Whether `Content-Type` names a JSON activity: `application/activity+json`,
/// `application/ld+json` (with any profile) or `application/json`. Servers differ in which
/// they send and in letter case, and a profile parameter is usual on `ld+json`.
pub fn is_activity_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    [
        "application/activity+json",
        "application/ld+json",
        "application/json",
    ]
    .iter()
    .any(|t| essence.eq_ignore_ascii_case(t))
}

/// One request's activity, parsed on first use and then kept, whatever the result: every
/// check of the request reads the same view, and a body that is not an activity is not
/// parsed again by the next check that asks.
pub struct LazyActivity {
    body: Bytes,
    is_json: bool,
    parsed: OnceLock<Option<Activity<'static>>>,
}

impl LazyActivity {
    /// `body` is the request's whole body; `is_json` whether its `Content-Type` names a JSON
    /// activity ([`is_activity_json`]): other bodies are never parsed.
    pub fn new(body: Bytes, is_json: bool) -> Self {
        LazyActivity {
            body,
            is_json,
            parsed: OnceLock::new(),
        }
    }

    /// The length of the body it was made from.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The activity, parsed by the first call only.
    pub fn get(&self) -> Option<&Activity<'static>> {
        self.parsed
            .get_or_init(|| {
                if !self.is_json {
                    return None;
                }
                #[cfg(test)]
                tests::PARSES.with(|n| n.set(n.get() + 1));
                // Owned, since the view cannot borrow from the `Bytes` it is stored beside;
                // a few short strings are copied, the body is not.
                Activity::parse(&self.body).map(Activity::into_owned)
            })
            .as_ref()
    }
}

// By hand: the body may be large and is the client's, so it is not printed.
impl fmt::Debug for LazyActivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyActivity")
            .field("body_len", &self.body.len())
            .field("is_json", &self.is_json)
            .field("parsed", &self.parsed.get())
            .finish()
    }
}

/// The host of a `scheme://[userinfo@]host[:port]...` URL, lowercased (see
/// [`Activity::actor_host`]).
fn host_of(url: &str) -> Option<Cow<'_, str>> {
    let (scheme, rest) = url.split_once("://")?;
    let mut s = scheme.bytes();
    if !s.next()?.is_ascii_alphabetic()
        || !s.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Userinfo cannot hold an unencoded `@`, so the host follows the last one (as WHATWG
    // URL parsers read it too).
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if host_port.starts_with('[') {
        let end = host_port.find(']')?;
        host_port[1..end].parse::<Ipv6Addr>().ok()?;
        let after = &host_port[end + 1..];
        let port = if after.is_empty() {
            ""
        } else {
            after.strip_prefix(':')?
        };
        (&host_port[..=end], port)
    } else {
        let (host, port) = host_port.split_once(':').unwrap_or((host_port, ""));
        let dns_like = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !dns_like {
            return None;
        }
        (host, port)
    };
    if host.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// Keeps the first usable value of a key the body repeats.
fn first<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Numbers, booleans and null are a field of the wrong shape: absent, not an error (see
/// the module comment).
macro_rules! scalars_are_absent {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

/// A key of the activity or of its object. Matched, never kept, so an escaped key costs
/// no allocation.
enum Key {
    Type,
    Id,
    Actor,
    Object,
    Audience,
    Published,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "type" => Key::Type,
                    "id" => Key::Id,
                    "actor" => Key::Actor,
                    "object" => Key::Object,
                    "to" | "cc" | "audience" | "bto" | "bcc" => Key::Audience,
                    "published" => Key::Published,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// The top-level object.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Activity<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut a = Activity::default();
        let mut object: Option<ObjectView<'de>> = None;
        let mut published = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => first(&mut a.kind, map.next_value_seed(FirstText::TOP)?),
                Key::Id => first(&mut a.id, map.next_value_seed(Text)?),
                Key::Actor => map.next_value_seed(Actors {
                    out: &mut a.actors,
                    nested: false,
                })?,
                Key::Object => {
                    let o = map.next_value_seed(Object { nested: false })?;
                    match &mut object {
                        // A second `object` may still make the activity public.
                        Some(seen) => seen.public |= o.public,
                        None => object = Some(o),
                    }
                }
                Key::Audience => a.public |= map.next_value_seed(Audience { nested: false })?,
                Key::Published => first(&mut published, map.next_value_seed(Text)?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let object = object.unwrap_or_default();
        a.object_type = object.kind;
        a.object_id = object.id;
        a.public |= object.public;
        a.published = published.or(object.published);
        Ok(a)
    }
}

/// A string value; anything else is absent.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map).map(|()| None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq).map(|()| None)
    }

    scalars_are_absent!();
}

/// A string, or the first string of an array (`type` may list several).
struct FirstText {
    /// Inside the array already: an array in it is skipped.
    nested: bool,
}

impl FirstText {
    const TOP: FirstText = FirstText { nested: false };
}

impl<'de> DeserializeSeed<'de> for FirstText {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstText {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Text.visit_borrowed_str(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Text.visit_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Text.visit_string(v)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map).map(|()| None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if self.nested {
            return skip_seq(seq).map(|()| None);
        }
        loop {
            match seq.next_element_seed(FirstText { nested: true })? {
                None => return Ok(None),
                Some(None) => {}
                // The rest is skipped, not unescaped.
                Some(found) => return skip_seq(seq).map(|()| found),
            }
        }
    }

    scalars_are_absent!();
}

/// An `actor` value: an id, an object with an `id`, or an array of either. Ids are appended
/// to `out` so that repeated `actor` keys fill one list.
struct Actors<'v, 'de> {
    out: &'v mut Vec<Cow<'de, str>>,
    /// Inside an array already: arrays of arrays name no actor.
    nested: bool,
}

impl<'de> DeserializeSeed<'de> for Actors<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Actors<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an actor id, an actor object or an array of them")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.out.push(Cow::Borrowed(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.out.push(Cow::Owned(v.to_owned()));
        Ok(())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.out.push(Cow::Owned(v));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                // Every `id`, for the same reason as every `actor`.
                Key::Id => self.out.extend(map.next_value_seed(Text)?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.nested {
            return skip_seq(seq);
        }
        while seq
            .next_element_seed(Actors {
                out: &mut *self.out,
                nested: true,
            })?
            .is_some()
        {}
        Ok(())
    }

    scalars_are_absent!();
}

/// What an `object` value contributes.
#[derive(Default)]
struct ObjectView<'a> {
    kind: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    public: bool,
    published: Option<Cow<'a, str>>,
}

/// An `object` value: an id, an object, or an array whose first element is either.
struct Object {
    /// Inside an array already: an array in it is skipped.
    nested: bool,
}

impl<'de> DeserializeSeed<'de> for Object {
    type Value = ObjectView<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Object {
    type Value = ObjectView<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object id, an object or an array of them")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(ObjectView {
            id: Text.visit_borrowed_str(v)?,
            ..ObjectView::default()
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ObjectView {
            id: Text.visit_str(v)?,
            ..ObjectView::default()
        })
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(ObjectView {
            id: Text.visit_string(v)?,
            ..ObjectView::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut o = ObjectView::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => first(&mut o.kind, map.next_value_seed(FirstText::TOP)?),
                Key::Id => first(&mut o.id, map.next_value_seed(Text)?),
                Key::Audience => o.public |= map.next_value_seed(Audience { nested: false })?,
                Key::Published => first(&mut o.published, map.next_value_seed(Text)?),
                // The object's own `actor` and `object` are not the activity's.
                Key::Actor | Key::Object | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(o)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if self.nested {
            return skip_seq(seq).map(|()| ObjectView::default());
        }
        let o = seq
            .next_element_seed(Object { nested: true })?
            .unwrap_or_default();
        skip_seq(seq)?;
        Ok(o)
    }

    scalars_are_absent!();
}

/// An audience (`to`, `cc`, ...): an id or an array of ids; whether one is public.
struct Audience {
    /// Inside an array already: an array in it is skipped.
    nested: bool,
}

impl<'de> DeserializeSeed<'de> for Audience {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Audience {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an id or an array of ids")
    }

    // Compared where it is, so an escaped id is not copied.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(PUBLIC.contains(&v))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        skip_map(map).map(|()| false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        if self.nested {
            return skip_seq(seq).map(|()| false);
        }
        let mut public = false;
        while let Some(p) = seq.next_element_seed(Audience { nested: true })? {
            public |= p;
        }
        Ok(public)
    }

    scalars_are_absent!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Parses [`LazyActivity::get`] ran on this thread.
        pub(super) static PARSES: Cell<usize> = const { Cell::new(0) };
    }

    fn parse(body: &str) -> Activity<'_> {
        Activity::parse(body.as_bytes()).unwrap_or_else(|| panic!("not parsed: {body}"))
    }

    fn s<'a>(v: &'a Option<Cow<'_, str>>) -> Option<&'a str> {
        v.as_deref()
    }

    const MASTODON_CREATE: &str = r##"{
      "@context": ["https://www.w3.org/ns/activitystreams",
        {"ostatus": "http://ostatus.org#", "atomUri": "ostatus:atomUri", "sensitive": "as:sensitive"}],
      "id": "https://mastodon.example/users/bob/statuses/112345678901234567/activity",
      "type": "Create",
      "actor": "https://mastodon.example/users/bob",
      "published": "2024-05-01T12:00:00Z",
      "to": ["https://www.w3.org/ns/activitystreams#Public"],
      "cc": ["https://mastodon.example/users/bob/followers", "https://local.example/users/alice"],
      "object": {
        "id": "https://mastodon.example/users/bob/statuses/112345678901234567",
        "type": "Note",
        "summary": null,
        "inReplyTo": "https://local.example/users/alice/statuses/1",
        "published": "2024-05-01T11:59:58Z",
        "url": "https://mastodon.example/@bob/112345678901234567",
        "attributedTo": "https://mastodon.example/users/bob",
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "cc": ["https://mastodon.example/users/bob/followers"],
        "sensitive": false,
        "content": "<p>hello \"world\" \u00e9</p>",
        "contentMap": {"en": "<p>hello</p>"},
        "attachment": [],
        "tag": [{"type": "Mention", "href": "https://local.example/users/alice", "name": "@alice@local.example"}],
        "replies": {"id": "https://mastodon.example/users/bob/statuses/112345678901234567/replies",
          "type": "Collection", "first": {"type": "CollectionPage", "next": "x", "partOf": "y", "items": []}}
      },
      "signature": {"type": "RsaSignature2017", "creator": "https://mastodon.example/users/bob#main-key",
        "created": "2024-05-01T12:00:00Z", "signatureValue": "AAAA"}
    }"##;

    // GoToSocial sorts keys, sends single audiences as strings and no top-level `published`.
    const GTS_CREATE: &str = r#"{"@context":["https://gotosocial.org/ns","https://www.w3.org/ns/activitystreams"],"actor":"https://gts.example/users/carol","cc":"https://gts.example/users/carol/followers","id":"https://gts.example/users/carol/statuses/01HXYZ/activity","object":{"attachment":[],"attributedTo":"https://gts.example/users/carol","cc":"https://gts.example/users/carol/followers","content":"<p>hi</p>","id":"https://gts.example/users/carol/statuses/01HXYZ","interactionPolicy":{"canLike":{"always":["https://www.w3.org/ns/activitystreams#Public"]}},"published":"2024-05-01T12:00:00Z","tag":[],"to":"https://www.w3.org/ns/activitystreams#Public","type":"Note","url":"https://gts.example/@carol/statuses/01HXYZ"},"to":"https://gts.example/users/carol/followers","type":"Create"}"#;

    #[test]
    fn bytes_that_are_not_utf8_refuse_only_what_is_read() {
        // Skipped, as in any other body: the view is read (the checked-once path is not
        // taken, and the result is the same as string by string).
        let body =
            b"{\"type\": \"Create\", \"content\": \"caf\xe9\", \"actor\": \"https://a.example/u\"}";
        let a = Activity::parse(body).expect("read past a skipped string that is not UTF-8");
        assert_eq!(
            (s(&a.kind), a.actor()),
            (Some("Create"), Some("https://a.example/u"))
        );
        // Read: no view.
        assert_eq!(
            Activity::parse(b"{\"actor\": \"https://caf\xe9.example/u\"}"),
            None
        );
        assert_eq!(Activity::parse(b"{\"typ\xe9\": \"Create\"}"), None);
        // The same body in UTF-8 reads alike on the checked-once path.
        let utf8 =
            parse(r#"{"type": "Create", "content": "café", "actor": "https://a.example/u"}"#);
        assert_eq!(utf8, a);
    }

    #[test]
    fn mastodon_create_of_a_public_note() {
        let a = parse(MASTODON_CREATE);
        assert_eq!(s(&a.kind), Some("Create"));
        assert_eq!(
            s(&a.id),
            Some("https://mastodon.example/users/bob/statuses/112345678901234567/activity")
        );
        assert_eq!(a.actors, ["https://mastodon.example/users/bob"]);
        assert_eq!(a.actor(), Some("https://mastodon.example/users/bob"));
        assert_eq!(a.actor_host().as_deref(), Some("mastodon.example"));
        assert_eq!(s(&a.object_type), Some("Note"));
        assert_eq!(
            s(&a.object_id),
            Some("https://mastodon.example/users/bob/statuses/112345678901234567")
        );
        assert!(a.public);
        // The activity's, not the object's.
        assert_eq!(s(&a.published), Some("2024-05-01T12:00:00Z"));
        // Nothing had an escape: every string is borrowed from the body.
        assert!(matches!(a.kind, Some(Cow::Borrowed(_))));
        assert!(matches!(a.actors[0], Cow::Borrowed(_)));
    }

    #[test]
    fn gotosocial_create_public_in_the_object_only() {
        let a = parse(GTS_CREATE);
        assert_eq!(s(&a.kind), Some("Create"));
        assert_eq!(
            s(&a.id),
            Some("https://gts.example/users/carol/statuses/01HXYZ/activity")
        );
        assert_eq!(a.actor(), Some("https://gts.example/users/carol"));
        assert_eq!(s(&a.object_type), Some("Note"));
        assert_eq!(
            s(&a.object_id),
            Some("https://gts.example/users/carol/statuses/01HXYZ")
        );
        // The top level is addressed to followers only; the object's `to` is public.
        assert!(a.public);
        // No top-level `published`: the object's.
        assert_eq!(s(&a.published), Some("2024-05-01T12:00:00Z"));
    }

    #[test]
    fn follows_likes_and_announces_name_their_object_by_id() {
        let follow = parse(
            r#"{"@context":"https://www.w3.org/ns/activitystreams","actor":"https://gts.example/users/carol","id":"https://gts.example/users/carol/follow/01HF","object":"https://mastodon.example/users/bob","to":"https://mastodon.example/users/bob","type":"Follow"}"#,
        );
        assert_eq!(s(&follow.kind), Some("Follow"));
        assert_eq!(
            s(&follow.id),
            Some("https://gts.example/users/carol/follow/01HF")
        );
        assert_eq!(
            s(&follow.object_id),
            Some("https://mastodon.example/users/bob")
        );
        assert_eq!(follow.object_type, None);
        assert!(!follow.public);
        assert_eq!(follow.published, None);

        let like = parse(
            r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mastodon.example/users/bob#likes/4242","type":"Like","actor":"https://mastodon.example/users/bob","object":"https://gts.example/users/carol/statuses/01HXYZ"}"#,
        );
        assert_eq!(s(&like.kind), Some("Like"));
        assert_eq!(like.actor(), Some("https://mastodon.example/users/bob"));
        assert_eq!(
            s(&like.object_id),
            Some("https://gts.example/users/carol/statuses/01HXYZ")
        );
        assert!(!like.public);

        let announce = parse(
            r#"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mastodon.example/users/bob/statuses/2/activity","type":"Announce","actor":"https://mastodon.example/users/bob","published":"2024-05-01T12:05:00Z","to":["https://www.w3.org/ns/activitystreams#Public"],"cc":["https://gts.example/users/carol","https://mastodon.example/users/bob/followers"],"object":"https://gts.example/users/carol/statuses/01HXYZ"}"#,
        );
        assert_eq!(s(&announce.kind), Some("Announce"));
        assert_eq!(
            s(&announce.object_id),
            Some("https://gts.example/users/carol/statuses/01HXYZ")
        );
        assert!(announce.public);
        assert_eq!(s(&announce.published), Some("2024-05-01T12:05:00Z"));
    }

    #[test]
    fn delete_of_a_tombstone() {
        let a = parse(
            r##"{"@context":["https://www.w3.org/ns/activitystreams",{"ostatus":"http://ostatus.org#","atomUri":"ostatus:atomUri"}],"id":"https://mastodon.example/users/bob/statuses/1#delete","type":"Delete","actor":"https://mastodon.example/users/bob","to":["https://www.w3.org/ns/activitystreams#Public"],"object":{"id":"https://mastodon.example/users/bob/statuses/1","type":"Tombstone","atomUri":"https://mastodon.example/users/bob/statuses/1"},"signature":{"type":"RsaSignature2017","creator":"https://mastodon.example/users/bob#main-key","created":"2024-05-01T12:00:00Z","signatureValue":"AAAA"}}"##,
        );
        assert_eq!(s(&a.kind), Some("Delete"));
        assert_eq!(s(&a.object_type), Some("Tombstone"));
        assert_eq!(
            s(&a.object_id),
            Some("https://mastodon.example/users/bob/statuses/1")
        );
        assert!(a.public);
    }

    #[test]
    fn undo_of_an_embedded_follow() {
        let a = parse(
            r##"{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mastodon.example/users/bob#follows/77/undo","type":"Undo","actor":"https://mastodon.example/users/bob","object":{"id":"https://mastodon.example/7a1c","type":"Follow","actor":"https://other.example/users/mallory","object":"https://gts.example/users/carol"}}"##,
        );
        assert_eq!(s(&a.kind), Some("Undo"));
        assert_eq!(s(&a.object_type), Some("Follow"));
        assert_eq!(s(&a.object_id), Some("https://mastodon.example/7a1c"));
        // The embedded Follow's actor is not the Undo's.
        assert_eq!(a.actors, ["https://mastodon.example/users/bob"]);
        assert!(!a.public);
    }

    #[test]
    fn escapes_are_unescaped() {
        let a = parse(
            r#"{"type":"Cr\u0065ate","\u0061ctor":"https:\/\/mastodon.example\/users\/b\u00f6b","id":"x\"y","object":{"typ\u0065":"N\u006fte"},"published":"2024-05-01T12:00:00Z"}"#,
        );
        assert_eq!(s(&a.kind), Some("Create"));
        assert!(matches!(a.kind, Some(Cow::Owned(_))));
        assert_eq!(a.actor(), Some("https://mastodon.example/users/böb"));
        assert_eq!(s(&a.id), Some("x\"y"));
        assert_eq!(s(&a.object_type), Some("Note"));
        // Only the strings that had escapes are copied.
        assert!(matches!(a.published, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn actor_shapes() {
        let a = parse(
            r#"{"actor":{"type":"Person","id":"https://A.Example/u","name":"x","endpoints":{"id":"no"}}}"#,
        );
        assert_eq!(a.actors, ["https://A.Example/u"]);
        assert_eq!(a.actor_host().as_deref(), Some("a.example"));

        let a = parse(
            r#"{"actor":["https://one.example/u",{"id":"https://two.example/u"},["https://nested.example/u"],7,null,{"id":3}]}"#,
        );
        assert_eq!(a.actors, ["https://one.example/u", "https://two.example/u"]);

        // A duplicate key must not hide an actor.
        let a = parse(
            r#"{"actor":"https://good.example/u","type":"Create","actor":"https://evil.example/u"}"#,
        );
        assert_eq!(
            a.actors,
            ["https://good.example/u", "https://evil.example/u"]
        );
        assert_eq!(a.actor(), Some("https://good.example/u"));

        for body in [
            r#"{"actor":null}"#,
            r#"{"actor":true}"#,
            r#"{"actor":1.5}"#,
            r#"{"actor":[["https://evil.example/u"]]}"#,
            r#"{"object":{"actor":"https://evil.example/u"}}"#,
        ] {
            let a = parse(body);
            assert!(a.actors.is_empty(), "{body}");
            assert_eq!(a.actor(), None, "{body}");
            assert_eq!(a.actor_host(), None, "{body}");
        }
    }

    #[test]
    fn actor_hosts() {
        let host = |id: &str| {
            let body = serde_json::json!({ "actor": id }).to_string();
            Activity::parse(body.as_bytes())
                .unwrap()
                .actor_host()
                .map(Cow::into_owned)
        };
        assert_eq!(
            host("https://Mastodon.Example/users/bob").as_deref(),
            Some("mastodon.example")
        );
        assert_eq!(
            host("https://u:p@a.example:8443/x?y#z").as_deref(),
            Some("a.example")
        );
        assert_eq!(host("https://a.example?x").as_deref(), Some("a.example"));
        assert_eq!(
            host("http://[2001:DB8::1]:80/u").as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(host("https://192.0.2.1/u").as_deref(), Some("192.0.2.1"));
        for bad in [
            "acct:bob@a.example",
            "a.example/users/bob",
            "https:///users/bob",
            "https://:443/u",
            "https://u@/x",
            "https://[::1/u",
            "https://[not-ipv6]/u",
            "https://[::1]x/u",
            "https://a.example:80x/u",
            "https://evil%2eexample/u",
            "https://a b/u",
            "1https://a.example/u",
            "://a.example/u",
        ] {
            assert_eq!(host(bad), None, "{bad}");
        }
    }

    #[test]
    fn type_arrays_take_the_first_string() {
        let a = parse(
            r#"{"type":[1,["Nested"],"Create","Other"],"object":{"type":["Note","Article"]}}"#,
        );
        assert_eq!(s(&a.kind), Some("Create"));
        assert_eq!(s(&a.object_type), Some("Note"));
        let a = parse(r#"{"type":[],"object":{"type":{"x":"y"}}}"#);
        assert_eq!(a.kind, None);
        assert_eq!(a.object_type, None);
        // Repeated: the first usable one.
        let a = parse(r#"{"type":null,"type":"Like","type":"Create"}"#);
        assert_eq!(s(&a.kind), Some("Like"));
    }

    #[test]
    fn object_arrays_take_the_first_element() {
        let a = parse(
            r#"{"object":[{"type":"Note","id":"https://a.example/1","cc":"as:Public"},{"type":"Article","id":"https://a.example/2"}]}"#,
        );
        assert_eq!(s(&a.object_type), Some("Note"));
        assert_eq!(s(&a.object_id), Some("https://a.example/1"));
        assert!(a.public);
        let a = parse(r#"{"object":["https://a.example/1",{"id":"https://a.example/2"}]}"#);
        assert_eq!(s(&a.object_id), Some("https://a.example/1"));
        let a = parse(r#"{"object":[["https://a.example/1"]],"id":5}"#);
        assert_eq!(a.object_id, None);
        assert_eq!(a.id, None);
    }

    #[test]
    fn public_forms() {
        // `as:Public` in the object's cc, nowhere else.
        let a = parse(
            r#"{"type":"Create","to":["https://a.example/followers"],"object":{"type":"Note","cc":["https://a.example/u","as:Public"]}}"#,
        );
        assert!(a.public);
        for body in [
            r#"{"to":"Public"}"#,
            r#"{"bcc":["x","https://www.w3.org/ns/activitystreams#Public"]}"#,
            r#"{"audience":"https:\/\/www.w3.org\/ns\/activitystreams#Public"}"#,
            r#"{"object":{"bto":"as:Public"}}"#,
            // A second `object` still counts.
            r#"{"object":{"id":"a"},"object":{"to":"as:Public"}}"#,
        ] {
            assert!(parse(body).public, "{body}");
        }
        for body in [
            r#"{"to":["https://a.example/followers"],"cc":[]}"#,
            r#"{"to":[["as:Public"]]}"#,
            r#"{"to":{"id":"as:Public"}}"#,
            r#"{"to":"as:public"}"#,
            r#"{"object":{"object":{"to":"as:Public"}}}"#,
            r#"{"tag":[{"to":"as:Public"}]}"#,
        ] {
            assert!(!parse(body).public, "{body}");
        }
    }

    #[test]
    fn non_objects_are_refused() {
        for body in [
            "",
            " ",
            "[]",
            "\"x\"",
            "1",
            "null",
            "{",
            r#"{"type":"Create""#,
            r#"{"type":"Create"} {}"#,
            r#"{"type":"Create",}"#,
        ] {
            assert_eq!(Activity::parse(body.as_bytes()), None, "{body:?}");
        }
        assert_eq!(Activity::parse(b"{\"type\":\"\xff\"}"), None);
        assert!(Activity::parse(b" {} \n").is_some());
    }

    #[test]
    fn deeply_nested_skipped_values_are_read_past() {
        // Skipped values are skipped without recursion: far past serde_json's limit of 128.
        let depth = 100_000;
        let body = format!(
            r#"{{"x":{}{},"actor":"https://a.example/u","type":[{}{}]}}"#,
            "[".repeat(depth),
            "]".repeat(depth),
            "[".repeat(depth),
            "]".repeat(depth),
        );
        let a = Activity::parse(body.as_bytes()).unwrap();
        assert_eq!(a.actor(), Some("https://a.example/u"));
        assert_eq!(a.kind, None);
        // Unbalanced: refused, no panic.
        let body = format!(r#"{{"x":{}"#, "[{\"a\":".repeat(depth));
        assert_eq!(Activity::parse(body.as_bytes()), None);
    }

    #[test]
    fn into_owned_keeps_every_field() {
        let body = MASTODON_CREATE.as_bytes().to_vec();
        let a = Activity::parse(&body).unwrap();
        let owned = a.clone().into_owned();
        drop(body);
        assert_eq!(owned.kind.as_deref(), Some("Create"));
        assert!(owned.public);
        assert_eq!(owned.object_type.as_deref(), Some("Note"));
        assert!(owned.actors.iter().all(|a| matches!(a, Cow::Owned(_))));
        let again = Activity::parse(MASTODON_CREATE.as_bytes()).unwrap();
        assert_eq!(again.into_owned(), owned);
    }

    #[test]
    fn content_types() {
        let with = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, t.parse().unwrap());
            is_activity_json(&h)
        };
        assert!(with("application/activity+json"));
        assert!(with(
            "application/ld+json; profile=\"https://www.w3.org/ns/activitystreams\""
        ));
        assert!(with("Application/JSON ; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!is_activity_json(&HeaderMap::new()));
    }

    #[test]
    fn lazy_activity_parses_once() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<LazyActivity>();

        let before = PARSES.with(Cell::get);
        let lazy = LazyActivity::new(Bytes::from_static(MASTODON_CREATE.as_bytes()), true);
        assert_eq!(PARSES.with(Cell::get), before, "parsed before it was asked");
        let first = lazy.get().unwrap();
        let second = lazy.get().unwrap();
        assert!(std::ptr::eq(first, second));
        assert_eq!(first.kind.as_deref(), Some("Create"));
        assert_eq!(PARSES.with(Cell::get), before + 1);

        // A body that is no activity is not parsed again either.
        let bad = LazyActivity::new(Bytes::from_static(b"[1,2]"), true);
        assert!(bad.get().is_none());
        assert!(bad.get().is_none());
        assert_eq!(PARSES.with(Cell::get), before + 2);

        // Nor is one whose content type is not JSON at all.
        let text = LazyActivity::new(Bytes::from_static(MASTODON_CREATE.as_bytes()), false);
        assert!(text.get().is_none());
        assert_eq!(PARSES.with(Cell::get), before + 2);
        assert!(format!("{text:?}").contains("body_len"));
    }

    #[test]
    fn lazy_activity_is_shared_across_threads() {
        let lazy = LazyActivity::new(Bytes::from_static(GTS_CREATE.as_bytes()), true);
        let ptrs: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| lazy.get().map_or(0, |a| a as *const _ as usize)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_ne!(ptrs[0], 0);
        assert!(ptrs.iter().all(|&p| p == ptrs[0]), "{ptrs:?}");
    }
}
