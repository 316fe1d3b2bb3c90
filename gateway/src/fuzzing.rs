//! Entry points for the fuzz targets in `fuzz/`: each takes the raw bytes of one input,
//! builds what the parser under test takes (a request's head and body, a key, a document,
//! a file's text) and runs the parser and what the gateway does with its result. None may
//! panic, loop or allocate without bound whatever the bytes; the invariants checked here
//! (`assert!`) are properties the rest of the gateway relies on.
//!
//! Inputs of the request-shaped targets read like an HTTP/1.1 request head, one field a
//! line, then an empty line and the body:
//!
//! ```text
//! POST /users/alice/inbox local.example https
//! host: local.example
//! signature: keyId="https://remote.example/users/bob#main-key",...
//!
//! {"type": "Follow", ...}
//! ```
//!
//! The first line is the method, the path and query, and optionally the authority
//! (`:authority` of HTTP/2) and the scheme. Targets that take several texts separate them
//! with a line of its own holding `%%`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use crate::activity::{Activity, LazyActivity};
use crate::auth::jwt::{self, Expectations, JwtVerifier};
use crate::blocklist::Blocklist;
use crate::signature::key::{Algorithm, KeyType, PublicKey};
use crate::signature::{self, actor, cavage, digest, rfc9421, Message, Window};

/// Larger inputs are ignored: every target reads at most this much.
pub const MAX_INPUT: usize = 128 * 1024;
/// Most header fields a request is given (hyper's own limit is 100).
const MAX_FIELDS: usize = 100;
/// The clock of the checks that depend on it: 30 s after `Wed, 01 May 2024 12:00:00 GMT`,
/// the time the seed inputs are signed at.
const NOW: u64 = 1_714_564_830;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

/// A request's head and body, as the gateway has them when phase 3 or 6 runs.
#[derive(Debug)]
pub struct Request {
    /// The first word of the first line; `POST` when it is missing or not a method.
    pub method: Method,
    /// The second word of the first line, byte for byte; `/` when missing.
    pub path_and_query: String,
    /// The third word of the first line (`:authority` of HTTP/2), if there is one.
    pub authority: Option<String>,
    /// The fourth word of the first line; `https` when missing.
    pub scheme: String,
    /// The field lines up to the first empty line, at most 100; lines that are not a valid
    /// field are skipped.
    pub headers: HeaderMap,
    /// Everything after the empty line.
    pub body: Vec<u8>,
}

impl Request {
    /// The request as signature verification sees it: the parts a signature can cover.
    pub fn message(&self) -> Message<'_> {
        Message {
            method: &self.method,
            path_and_query: &self.path_and_query,
            authority: self.authority.as_deref(),
            scheme: &self.scheme,
            headers: &self.headers,
        }
    }
}

/// Reads a request-shaped input (see the module comment). Lines that are not a valid field
/// are skipped, as an HTTP parser would refuse them before the gateway saw them.
pub fn request(data: &[u8]) -> Request {
    let line_end = |from: usize| {
        data[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| from + i + 1)
    };
    let mut at = line_end(0);
    let first = String::from_utf8_lossy(trim_line(&data[..at]));
    let mut words = first.split(' ').filter(|w| !w.is_empty());
    let method = words
        .next()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::POST);
    let path_and_query = words.next().unwrap_or("/").to_string();
    let authority = words.next().map(str::to_string);
    let scheme = words.next().unwrap_or("https").to_string();

    let mut headers = HeaderMap::new();
    while at < data.len() {
        let end = line_end(at);
        let line = trim_line(&data[at..end]);
        at = end;
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_FIELDS {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    Request {
        method,
        path_and_query,
        authority,
        scheme,
        headers,
        body: data[at..].to_vec(),
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The parts of an input separated by `%%` lines; at most `n`, the last holding the rest.
pub fn sections(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        let at = rest
            .windows(4)
            .position(|w| w == b"\n%%\n")
            .map(|i| (i, i + 4))
            .or_else(|| rest.starts_with(b"%%\n").then_some((0, 3)));
        let Some((end, next)) = at else { break };
        out.push(&rest[..end]);
        rest = &rest[next..];
    }
    out.push(rest);
    out
}

/// The keys of `gateway/src/signature/testdata`, one of each type.
fn test_keys() -> &'static [PublicKey] {
    static KEYS: OnceLock<Vec<PublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            include_str!("signature/testdata/rsa-2048.pub.pem"),
            include_str!("signature/testdata/ed25519.pub.pem"),
            include_str!("signature/testdata/p256.pub.pem"),
        ]
        .iter()
        .map(|pem| PublicKey::from_pem(pem).expect("a test key"))
        .collect()
    })
}

/// draft-cavage: `cavage::parse`, what the verifier does with its result, and the key id
/// phase 3 reads without verifying.
pub fn cavage(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let req = request(data);
    let claimed = cavage::claimed_key_id(&req.headers);
    let any_claimed = signature::claimed_key_id(&req.headers);
    let _ = signature::scheme_of(&req.headers);
    if let Some(id) = &any_claimed {
        let _ = signature::instance_of(id);
    }
    let Ok(sig) = cavage::parse(&req.message()) else {
        return;
    };
    // Phase 3 decides on the key id it reads here; it must be the one phase 6 verifies.
    assert_eq!(
        claimed.as_deref(),
        Some(sig.key_id()),
        "the claimed key id differs from the parsed one"
    );
    let _ = signature::instance_of(sig.key_id());
    let _ = sig.signing_string().len();
    for kind in [KeyType::Rsa, KeyType::EcdsaP256, KeyType::Ed25519] {
        let _ = sig.algorithm(kind);
    }
    let _ = sig.check_coverage();
    let _ = sig.check_unkeyed(&Window::default(), now());
    for key in test_keys() {
        let _ = sig.verify(key, &Window::default(), now());
    }
}

/// RFC 9421: `rfc9421::parse` (the first signature, and the one labelled by the
/// `x-fuzz-label` field when there is one), and the key id phase 3 reads.
pub fn rfc9421(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let req = request(data);
    let claimed = rfc9421::claimed_key_id(&req.headers);
    let any_claimed = signature::claimed_key_id(&req.headers);
    let _ = signature::scheme_of(&req.headers);
    if let Some(id) = &any_claimed {
        let _ = signature::instance_of(id);
    }
    let label = req
        .headers
        .get("x-fuzz-label")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let labels = [None, label.as_deref()];
    let labels = if label.is_some() {
        &labels[..]
    } else {
        &labels[..1]
    };
    for &label in labels {
        let Ok(sig) = rfc9421::parse(&req.message(), label) else {
            continue;
        };
        if label.is_none() {
            // Phase 3 decides on the key id it reads here; it must be the one phase 6
            // verifies.
            assert_eq!(
                claimed.as_deref(),
                sig.key_id(),
                "the claimed key id differs from the parsed one"
            );
        }
        let _ = (
            sig.label(),
            sig.created(),
            sig.expires(),
            sig.nonce(),
            sig.tag(),
        );
        let _ = sig.base().len();
        let _ = sig.check_coverage();
        let _ = sig.check_unkeyed(&Window::default(), now());
        for key in test_keys() {
            let _ = sig.verify(key, &Window::default(), now());
        }
    }
}

/// `Digest` and `Content-Digest` against the request's body.
pub fn digest(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let req = request(data);
    if let Ok(checked) = digest::check(&req.headers, &req.body) {
        let _ = checked.any();
    }
}

/// Public keys: the same bytes as PEM text, as DER `SubjectPublicKeyInfo` and as a
/// multibase key. A key that parses is used to verify.
pub fn key(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let mut keys = Vec::new();
    if let Ok(text) = std::str::from_utf8(data) {
        keys.extend(PublicKey::from_pem(text).ok());
        keys.extend(PublicKey::from_multibase(text).ok());
    }
    keys.extend(PublicKey::from_spki_der(data).ok());
    for key in keys {
        let _ = format!("{key:?}");
        for algorithm in [
            Algorithm::RsaPkcs1Sha256,
            Algorithm::RsaPssSha512,
            Algorithm::EcdsaP256Sha256Fixed,
            Algorithm::EcdsaP256Sha256Asn1,
            Algorithm::Ed25519,
        ] {
            let signature = [0x30u8; 64];
            let _ = key.verify(algorithm, b"message", &signature);
            let _ = key.verify(algorithm, b"message", &[]);
        }
    }
}

/// Actor and key documents: the first line is the key id, the rest the document.
pub fn actor(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let (first, document) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let key_id = String::from_utf8_lossy(first);
    let key_id = key_id.trim_end_matches('\r');
    let _ = actor::host_of(key_id);
    let _ = signature::instance_of(key_id);
    if let Ok(key) = actor::key_from_document(document, key_id) {
        // A key is only taken from a document for a key id with a host.
        assert!(
            actor::host_of(key_id).is_some(),
            "a key was read for a key id without host"
        );
        let _ = key.kind();
    }
}

/// The secret of [`fixed_verifier`]'s HS256 key.
const HS256_SECRET: &[u8] = b"fedgate fuzzing HS256 secret, 32+ bytes";
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "fedgate";

fn expectations() -> Expectations {
    Expectations {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway: Duration::from_secs(60),
        algorithms: None,
    }
}

/// A verifier whose HS256 key the fuzzer can sign with (see [`jwt`]).
fn fixed_verifier() -> &'static JwtVerifier {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(HS256_SECRET);
        let jwks = format!(r#"{{"keys": [{{"kty": "oct", "kid": "fuzz", "k": "{k}"}}]}}"#);
        JwtVerifier::from_jwks(&jwks, &expectations()).expect("the fixed JWKS")
    })
}

/// JWTs: everything up to the last line is a JWKS, the last line a token. The token is
/// verified against that JWKS as it is, then re-signed with the fixed HS256 key (its header
/// and claims as given) and verified again, so that claims are checked, not only
/// signatures. The token also goes through `Authorization: Bearer`.
pub fn jwt(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let text = String::from_utf8_lossy(data);
    let (jwks, token) = text.rsplit_once('\n').unwrap_or(("", &text));
    let token = token.trim_end_matches('\r');
    if let Ok(verifier) = JwtVerifier::from_jwks(jwks, &expectations()) {
        assert!(
            verifier.keys() > 0,
            "a JWKS without usable keys was accepted"
        );
        let _ = verifier.verify(token);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        let _ = jwt::bearer(&headers);
    }
    let signed = match token.rsplit_once('.') {
        Some((head, _)) => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HS256_SECRET);
            let tag = ring::hmac::sign(&key, head.as_bytes());
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
            format!("{head}.{sig}")
        }
        None => token.to_string(),
    };
    let _ = fixed_verifier().verify(&signed);
}

/// The blocklist: a blocklist file, then after a `%%` line a request (see the module
/// comment) whose signature's key id and JSON activity body are checked against it.
pub fn blocklist(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let parts = sections(data, 2);
    let file = String::from_utf8_lossy(parts[0]);
    let mut list = Blocklist::default();
    if list.add_file(&file).is_err() {
        return;
    }
    let _ = (list.len(), list.is_empty());
    let Some(req) = parts.get(1).map(|r| request(r)) else {
        return;
    };
    for ip in [
        IpAddr::from([192, 0, 2, 1]),
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
    ] {
        let _ = list.check(ip, &req.headers);
    }
    let _ = list.check_activity(&req.headers, &req.body);
    if let Some(host) = &req.authority {
        let _ = list.blocks_host(host);
    }
}

/// Activity bodies: the whole input is one body, read by `activity::parse` and by the
/// lazy view a request holds.
pub fn activity(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let parsed = Activity::parse(data);
    // The view is at least as lenient as a full parse: a body serde_json reads as an object
    // is an activity (else a check could skip a body the upstream accepts).
    if matches!(
        serde_json::from_slice::<serde_json::Value>(data),
        Ok(serde_json::Value::Object(_))
    ) {
        assert!(
            parsed.is_some(),
            "a JSON object was not read as an activity"
        );
    }
    let lazy = LazyActivity::new(bytes::Bytes::copy_from_slice(data), true);
    let Some(a) = parsed else {
        assert!(
            lazy.get().is_none(),
            "the lazy view read what parse refused"
        );
        return;
    };
    assert_eq!(
        a.actor(),
        a.actors.first().map(|s| s.as_ref()),
        "actor() is not the first actor"
    );
    if let Some(host) = a.actor_host() {
        assert!(!host.is_empty(), "an empty actor host");
        assert!(
            !host.bytes().any(|b| b.is_ascii_uppercase()),
            "the actor host {host:?} is not lowercase"
        );
        let actor = a.actor().unwrap_or_default().to_ascii_lowercase();
        assert!(
            actor.contains(host.as_ref()),
            "the actor host {host:?} is not in the actor id"
        );
    }
    let owned = a.clone().into_owned();
    assert_eq!(owned, a, "into_owned changed the activity");
    assert_eq!(lazy.get(), Some(&owned), "the lazy view differs from parse");
}

/// Config keys whose values name files that validation reads.
const FILE_KEYS: [&str; 7] = [
    "file",
    "jwks_file",
    "pem_file",
    "client_ca_file",
    "ca_file",
    "cert",
    "key",
];

/// Whether a parsed config names an absolute path under a key whose file validation reads.
fn names_absolute_file(value: &toml::Value, key: Option<&str>) -> bool {
    match value {
        toml::Value::String(s) => key.is_some_and(|k| FILE_KEYS.contains(&k)) && s.starts_with('/'),
        toml::Value::Array(items) => items.iter().any(|v| names_absolute_file(v, key)),
        toml::Value::Table(t) => t
            .iter()
            .any(|(k, v)| names_absolute_file(v, Some(k.as_str()))),
        _ => false,
    }
}

/// The config: TOML text parsed and validated. Relative file paths resolve against a
/// directory that does not exist, and a config naming an absolute file path is skipped, so
/// no file is read and nothing is bound.
pub fn config(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(table) = text.parse::<toml::Table>() {
        if names_absolute_file(&toml::Value::Table(table), None) {
            return;
        }
    }
    let _ = crate::config::from_str(text, Path::new("/nonexistent/fedgate-fuzzing"));
}

/// An upstream's HTTP/1.1 response, its head and then its body (length delimited,
/// chunked, or up to the end), as an upstream connection reads it. The first byte says
/// whether the request was a HEAD; the rest is the response.
pub fn h1_response(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let Ok((parts, frames)) = crate::h1::parse_response_bytes(input, head_request) else {
        return;
    };
    let body: usize = frames.iter().map(|f| f.len()).sum();
    // The body is decoded out of the input: it cannot be longer.
    assert!(
        body <= input.len(),
        "{body} body bytes out of {} input bytes",
        input.len()
    );
    // RFC 9112 6.3: no body after a HEAD request, nor in a 204 or 304.
    if head_request || matches!(parts.status.as_u16(), 204 | 304) {
        assert_eq!(
            body, 0,
            "a body on a {} response (HEAD: {head_request})",
            parts.status
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_sections_are_read() {
        let r = request(b"GET /a?b h.example http\r\nhost: x\nbad line\nx-y:  z \n\nbody\n");
        assert_eq!(r.method, Method::GET);
        assert_eq!(r.path_and_query, "/a?b");
        assert_eq!(r.authority.as_deref(), Some("h.example"));
        assert_eq!(r.scheme, "http");
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers["x-y"], "z");
        assert_eq!(r.body, b"body\n");
        assert_eq!(
            sections(b"a\n%%\nb\n%%\nc", 2),
            vec![&b"a"[..], b"b\n%%\nc"]
        );
        assert_eq!(sections(b"%%\nb", 3), vec![&b""[..], b"b"]);
    }

    #[test]
    fn absolute_file_paths_are_found() {
        let t = |s: &str| names_absolute_file(&toml::Value::Table(s.parse().unwrap()), None);
        assert!(t("[blocklist]\nfile = \"/dev/zero\""));
        assert!(t("[[listeners]]\ntls = [{ cert = \"/x\" }]"));
        assert!(!t(
            "[blocklist]\nfile = \"list.txt\"\n[[routes]]\npath_prefix = \"/\""
        ));
    }
}
