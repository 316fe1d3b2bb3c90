//! Header rewriting on the way through (phase 1 ids, phase 9 forwarding).
//!
//! What the proxy removes (hop-by-hop headers, RFC 9110 §7.6.1), what it adds (client
//! address headers, `Via`), and the ids it keeps or creates (`X-Request-Id`, W3C
//! `traceparent`). Everything else, `Host`, `Date`, `Digest`, `Signature` and the rest,
//! passes untouched so that federation signatures still verify at the upstream.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use crate::config::ForwardingConfig;

pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The authority a request is for, the one that routes it, is checked by its signature and
/// goes upstream as `Host` (RFC 9112 §3.2, §3.2.2; RFC 9113 §8.3.1):
/// - more than one `Host` field, or one whose value is not a valid `host[:port]`, is refused;
/// - an absolute-form target (HTTP/1.1) or `:authority` (HTTP/2) is the authority; in
///   HTTP/1.1 `Host` is then replaced by it, in HTTP/2 a `Host` that names anything else is
///   refused;
/// - otherwise `Host` is the authority; HTTP/1.1 and HTTP/2 requests without one are
///   refused, HTTP/1.0 ones have none.
pub fn request_authority(
    version: http::Version,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host field");
    }
    if let Some(h) = host {
        if !valid_authority(h.as_bytes()) {
            return Err("invalid Host");
        }
    }
    if let Some(a) = uri.authority() {
        let a = a.as_str();
        if !valid_authority(a.as_bytes()) {
            return Err("invalid authority in the request target");
        }
        if version == http::Version::HTTP_2
            && host.is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(a.as_bytes()))
        {
            return Err("Host differs from :authority");
        }
        return HeaderValue::from_str(a)
            .map(Some)
            .map_err(|_| "invalid authority in the request target");
    }
    match host {
        Some(h) => Ok(Some(h.clone())),
        None if version == http::Version::HTTP_10 || version == http::Version::HTTP_09 => Ok(None),
        None => Err("no Host"),
    }
}

/// `host [ ":" port ]` (RFC 3986 §3.2.2): a registered name, an IPv4 address or a bracketed
/// IPv6 literal, and at most a 5-digit port; no user info, no path, no spaces.
pub fn valid_authority(a: &[u8]) -> bool {
    let (host, port) = if a.first() == Some(&b'[') {
        let Some(end) = a.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &a[1..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &a[end + 1..] {
            [] => (&a[..=end], None),
            [b':', port @ ..] => (&a[..=end], Some(port)),
            _ => return false,
        }
    } else {
        match a.iter().position(|&b| b == b':') {
            Some(i) => (&a[..i], Some(&a[i + 1..])),
            None => (a, None),
        }
    };
    let reg_name = |b: &u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    };
    !host.is_empty()
        && host.len() <= 255
        && (host[0] == b'[' || host.iter().all(reg_name))
        && port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

/// Whether every protocol an `Upgrade` value asks for (`websocket`, `h2c`, ...; the name
/// before any `/version`) is one of `allowed` (lower case).
pub fn upgrade_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let mut any = false;
    for v in headers.get_all(header::UPGRADE) {
        for token in v.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            let name = token.split(|&b| b == b'/').next().unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            if !allowed
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(name))
            {
                return false;
            }
            any = true;
        }
    }
    any
}

/// Whether the `Transfer-Encoding` of a request is one the proxy can forward: `chunked`
/// alone. Any other coding (`gzip, chunked`, ...) would have to be decoded or passed on as
/// it is, and the proxy does neither (RFC 9112 §6.1: 501).
pub fn transfer_coding_supported(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .all(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// `true` for an HTTP/1.1 upgrade request (`Connection: upgrade` plus `Upgrade`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Removes hop-by-hop headers. With `upgrade`, keeps `Upgrade` and sends `Connection: upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names finds what is there; most messages carry at most `Connection`,
    // and a removal (a hash lookup) is only made for a header that is present.
    let mut found = Found::default();
    for name in headers.keys() {
        match hop(name.as_str().as_bytes()) {
            Hop::Connection => found.connection = true,
            Hop::TransferEncoding => found.transfer_encoding = true,
            Hop::Te => found.te = true,
            Hop::Upgrade => found.upgrade = true,
            Hop::Drop => found.drop = true,
            Hop::EndToEnd => {}
        }
    }
    if found.connection {
        // Names listed in Connection are hop-by-hop too; collecting them allocates only
        // when a client lists something beyond the usual keep-alive/close/upgrade.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| connection_listed(v.as_bytes()))
            .collect();
        for n in listed {
            headers.remove(n);
        }
        headers.remove(header::CONNECTION);
    }
    if found.transfer_encoding {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if found.te
        && headers
            .get(header::TE)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if found.upgrade {
        headers.remove(header::UPGRADE);
    }
    if found.drop {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| hop(k.as_str().as_bytes()) == Hop::Drop)
            .cloned()
            .collect();
        for n in names {
            headers.remove(n);
        }
    }
}

/// What a field name is to a proxy (RFC 9110 §7.6.1), judged from its raw bytes in any case:
/// the one list of hop-by-hop fields, used by [`strip_hop_by_hop`] and by [`crate::h1`],
/// which drops them as it reads a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// `Connection`: its options, and the fields it names, are hop-by-hop.
    Connection,
    /// `Transfer-Encoding`: the framing of this connection only.
    TransferEncoding,
    /// `TE`: kept only as `TE: trailers`.
    Te,
    /// `Upgrade`: kept only on an upgrade.
    Upgrade,
    /// `Keep-Alive`, `Trailer`, `Proxy-*`: dropped.
    Drop,
    /// Everything else travels on.
    EndToEnd,
}

pub fn hop(name: &[u8]) -> Hop {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 if is(b"te") => Hop::Te,
        7 if is(b"upgrade") => Hop::Upgrade,
        7 if is(b"trailer") => Hop::Drop,
        // Only meaningful with `Upgrade: h2c`, which is never forwarded (RFC 9113 §3.1).
        14 if is(b"http2-settings") => Hop::Drop,
        10 if is(b"connection") => Hop::Connection,
        10 if is(b"keep-alive") => Hop::Drop,
        17 if is(b"transfer-encoding") => Hop::TransferEncoding,
        n if n >= 6 && name[..6].eq_ignore_ascii_case(b"proxy-") => Hop::Drop,
        _ => Hop::EndToEnd,
    }
}

/// The field names a `Connection` value lists beyond its own options (`keep-alive`,
/// `close`, `upgrade`), leaving out the ones signatures cover.
pub fn connection_listed(value: &[u8]) -> impl Iterator<Item = HeaderName> + '_ {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"upgrade")
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .filter(|n| !is_end_to_end_essential(n))
}

/// Which hop-by-hop headers a message carries.
#[derive(Default)]
struct Found {
    connection: bool,
    transfer_encoding: bool,
    te: bool,
    upgrade: bool,
    /// `Keep-Alive`, `Trailer`, `Proxy-Connection` and the rest of `Proxy-*`.
    drop: bool,
}

/// A hostile `Connection: host, date, digest` must not strip what signatures cover.
fn is_end_to_end_essential(n: &HeaderName) -> bool {
    n == header::HOST || n == header::DATE || n.as_str() == "digest" || n.as_str() == "signature"
}

/// Precomputed `Via` values for each protocol version a client may use.
#[derive(Debug, Clone)]
pub struct Via {
    http10: HeaderValue,
    http11: HeaderValue,
    http2: HeaderValue,
}

impl Via {
    pub fn new(pseudonym: &str) -> Option<Self> {
        let v = |p: &str| HeaderValue::from_str(&format!("{p} {pseudonym}")).ok();
        Some(Via {
            http10: v("1.0")?,
            http11: v("1.1")?,
            http2: v("2")?,
        })
    }

    pub fn for_version(&self, version: http::Version) -> &HeaderValue {
        match version {
            http::Version::HTTP_10 | http::Version::HTTP_09 => &self.http10,
            http::Version::HTTP_2 | http::Version::HTTP_3 => &self.http2,
            _ => &self.http11,
        }
    }
}

/// Adds the client-address headers the configuration asks for.
pub fn add_client_headers(
    headers: &mut HeaderMap,
    cfg: &ForwardingConfig,
    client: IpAddr,
    client_value: &HeaderValue,
    tls: bool,
    host: Option<&HeaderValue>,
) {
    let proto = if tls { "https" } else { "http" };
    if cfg.x_forwarded {
        // One lookup: the usual request has no X-Forwarded-For and gets the value
        // formatted when its connection was accepted.
        match headers.entry(&X_FORWARDED_FOR) {
            Entry::Vacant(e) => {
                e.insert(client_value.clone());
            }
            Entry::Occupied(mut e) => {
                let prev: Vec<&str> = e
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect();
                let chain = if prev.is_empty() {
                    None
                } else {
                    HeaderValue::from_str(&format!("{}, {client}", prev.join(", "))).ok()
                };
                // Replaces every line of the header with the one chain.
                e.insert(chain.unwrap_or_else(|| client_value.clone()));
            }
        }
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        if let Some(h) = host {
            headers.insert(&X_FORWARDED_HOST, h.clone());
        }
    }
    if cfg.forwarded {
        let mut v = String::with_capacity(64);
        match client {
            IpAddr::V4(a) => {
                let _ = write!(v, "for={a}");
            }
            IpAddr::V6(a) => {
                let _ = write!(v, "for=\"[{a}]\"");
            }
        }
        let _ = write!(v, ";proto={proto}");
        if let Some(h) = host.and_then(|h| h.to_str().ok()) {
            let _ = write!(v, ";host=\"{}\"", h.replace(['"', '\\'], ""));
        }
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.append(&FORWARDED, v);
        }
    }
}

/// Returns the request id to use: the client's when trusted and well-formed, else a new
/// one; and whether it is the client's, already in `headers` as it should be forwarded.
pub fn request_id(headers: &HeaderMap, cfg: &ForwardingConfig) -> (HeaderValue, bool) {
    if cfg.trust_request_id {
        let mut values = headers.get_all(&cfg.request_id_header).iter();
        if let (Some(v), None) = (values.next(), values.next()) {
            if is_valid_request_id(v) {
                return (v.clone(), true);
            }
        }
    }
    (new_request_id(), false)
}

/// `true` when the value is a plausible request id to keep: visible ASCII, bounded length.
fn is_valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

/// A random UUID (version 4) as a header value.
pub fn new_request_id() -> HeaderValue {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = [0u8; 36];
    let mut j = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s[j] = b'-';
            j += 1;
        }
        s[j] = HEX[(byte >> 4) as usize];
        s[j + 1] = HEX[(byte & 0xf) as usize];
        j += 2;
    }
    HeaderValue::from_bytes(&s).expect("hex and dashes are valid header bytes")
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Keeps a valid W3C `traceparent` or replaces it with a new one; returns the trace id.
pub fn ensure_traceparent(headers: &mut HeaderMap) -> TraceId {
    let entry = match headers.entry(&TRACEPARENT) {
        Entry::Occupied(e) => {
            let mut values = e.iter();
            if let (Some(v), None) = (values.next(), values.next()) {
                if let Some(id) = parse_traceparent(v.as_bytes()) {
                    return id;
                }
            }
            Entry::Occupied(e)
        }
        vacant => vacant,
    };
    let trace = loop {
        let t = fastrand::u128(..);
        if t != 0 {
            break t;
        }
    };
    let span = fastrand::u64(1..);
    let mut s = [0u8; 55];
    s[..3].copy_from_slice(b"00-");
    hex_into(&mut s[3..35], &trace.to_be_bytes());
    s[35] = b'-';
    hex_into(&mut s[36..52], &span.to_be_bytes());
    s[52..].copy_from_slice(b"-00");
    let mut id = [0u8; 32];
    id.copy_from_slice(&s[3..35]);
    let value = HeaderValue::from_bytes(&s).expect("hex is a valid header value");
    match entry {
        // Replaces every line of an invalid or repeated traceparent.
        Entry::Occupied(mut e) => {
            e.insert(value);
        }
        Entry::Vacant(e) => {
            e.insert(value);
        }
    }
    TraceId(id)
}

/// A trace id as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
}

/// Validates `version-traceid-parentid-flags` as W3C Trace Context level 1 defines it.
fn parse_traceparent(v: &[u8]) -> Option<TraceId> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let lower_hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    if !lower_hex(version)
        || version == b"ff"
        || !lower_hex(trace)
        || !lower_hex(parent)
        || !lower_hex(flags)
    {
        return None;
    }
    // Version 00 has exactly this length; later versions may append fields after a dash.
    if (version == b"00" && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if trace.iter().all(|&c| c == b'0') || parent.iter().all(|&c| c == b'0') {
        return None;
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(trace);
    Some(TraceId(id))
}

/// The client a request is from: the peer address, unless the peer is a trusted proxy, in
/// which case `X-Forwarded-For` is read from the right, skipping trusted proxies, and the
/// first address not trusted is the client (entries further left are the client's to
/// forge). With every entry trusted, the leftmost is the client; a malformed entry stops
/// the walk at the last trusted hop.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &crate::netset::NetSet,
) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for entry in text.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip;
            if !trusted.contains(ip) {
                return client;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_names_are_classified_in_any_case() {
        let cases: [(&[u8], Hop); 13] = [
            (b"Connection", Hop::Connection),
            (b"TRANSFER-ENCODING", Hop::TransferEncoding),
            (b"te", Hop::Te),
            (b"Keep-Alive", Hop::Drop),
            (b"trailer", Hop::Drop),
            (b"Upgrade", Hop::Upgrade),
            (b"Proxy-Connection", Hop::Drop),
            (b"proxy-authenticate", Hop::Drop),
            (b"content-length", Hop::EndToEnd),
            (b"Date", Hop::EndToEnd),
            (b"proxy", Hop::EndToEnd),
            (b"tee", Hop::EndToEnd),
            (b"x-connection", Hop::EndToEnd),
        ];
        for (name, want) in cases {
            assert_eq!(hop(name), want, "{}", String::from_utf8_lossy(name));
        }
        let listed: Vec<_> =
            connection_listed(b"keep-alive, X-Secret, close, Date, upgrade").collect();
        assert_eq!(listed, vec![HeaderName::from_static("x-secret")]);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_what_connection_lists() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, date"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("trailer", "x"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-foo", "y"),
            ("date", "Tue, 07 Jun 2022 20:51:35 GMT"),
            ("digest", "SHA-256=abc"),
            ("host", "example.org"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(h.contains_key("date") && h.contains_key("digest") && h.contains_key("host"));
    }

    #[test]
    fn keeps_te_trailers_and_upgrade_when_upgrading() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
        ]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn traceparent_is_kept_when_valid_and_replaced_when_not() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = map(&[("traceparent", valid)]);
        let id = ensure_traceparent(&mut h);
        assert_eq!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h["traceparent"], valid);

        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let mut h = map(&[("traceparent", bad)]);
            let id = ensure_traceparent(&mut h);
            let new = h["traceparent"].to_str().unwrap().to_string();
            assert_ne!(new, bad);
            assert!(parse_traceparent(new.as_bytes()).is_some(), "{new}");
            assert_eq!(&new[3..35], id.as_str());
        }
    }

    #[test]
    fn repeated_ids_are_replaced_not_trusted() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = map(&[("traceparent", valid), ("traceparent", valid)]);
        let id = ensure_traceparent(&mut h);
        assert_eq!(h.get_all("traceparent").iter().count(), 1);
        assert_ne!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let cfg = crate::config::ForwardingConfig {
            x_forwarded: true,
            forwarded: false,
            via: None,
            preserve_host: true,
            request_id_header: HeaderName::from_static("x-request-id"),
            trust_request_id: true,
            trusted_proxies: Default::default(),
        };
        let one = map(&[("x-request-id", "abc-123")]);
        assert_eq!(
            request_id(&one, &cfg),
            (HeaderValue::from_static("abc-123"), true)
        );
        let two = map(&[("x-request-id", "abc-123"), ("x-request-id", "def")]);
        let (id, kept) = request_id(&two, &cfg);
        assert!(!kept);
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let v = new_request_id();
        let s = v.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_ne!(new_request_id(), v);
    }

    #[test]
    fn client_headers_append_to_an_existing_chain() {
        let cfg = crate::config::ForwardingConfig {
            x_forwarded: true,
            forwarded: true,
            via: None,
            preserve_host: true,
            request_id_header: HeaderName::from_static("x-request-id"),
            trust_request_id: true,
            trusted_proxies: Default::default(),
        };
        let mut h = map(&[("x-forwarded-for", "203.0.113.7")]);
        let host = HeaderValue::from_static("social.example");
        let ip = HeaderValue::from_static("::1");
        add_client_headers(&mut h, &cfg, "::1".parse().unwrap(), &ip, true, Some(&host));
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, ::1");
        // Several lines become one chain, in order.
        let mut lines = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", " 198.51.100.2 "),
        ]);
        add_client_headers(&mut lines, &cfg, "::1".parse().unwrap(), &ip, true, None);
        let chain: Vec<_> = lines.get_all("x-forwarded-for").iter().collect();
        assert_eq!(chain, ["203.0.113.7, 198.51.100.2, ::1"]);
        let mut fresh = HeaderMap::new();
        add_client_headers(&mut fresh, &cfg, "::1".parse().unwrap(), &ip, false, None);
        assert_eq!(fresh["x-forwarded-for"], "::1");
        assert_eq!(fresh["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "social.example");
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=https;host=\"social.example\""
        );
    }

    #[test]
    fn client_address_walks_trusted_proxies_from_the_right() {
        use crate::netset::{parse_net, NetSet};
        let trusted = NetSet::new(["10.0.0.0/8", "192.0.2.1"].map(|n| parse_net(n).unwrap()));
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let xff = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            h
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The client may put anything on the left; the first untrusted hop from the right wins.
        assert_eq!(
            client_address(peer, &xff("6.6.6.6, 203.0.113.5, 192.0.2.1"), &trusted),
            ip("203.0.113.5")
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_address(ip("198.51.100.1"), &xff("203.0.113.5"), &trusted),
            ip("198.51.100.1")
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            client_address(peer, &xff("10.0.0.2, 10.0.0.3"), &trusted),
            ip("10.0.0.2")
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            client_address(peer, &xff("203.0.113.5, garbage"), &trusted),
            peer
        );
        assert_eq!(client_address(peer, &HeaderMap::new(), &trusted), peer);
        assert_eq!(
            client_address(peer, &xff("203.0.113.5"), &NetSet::default()),
            peer
        );
    }
}
