//! draft-cavage-http-signatures-12 as the fediverse sends it: Mastodon, GoToSocial, Misskey,
//! Lemmy and PeerTube sign deliveries and fetches with a `Signature` header (or
//! `Authorization: Signature ...`) such as
//!
//! ```text
//! Signature: keyId="https://remote.example/users/bob#main-key",algorithm="rsa-sha256",
//!            headers="(request-target) host date digest content-type",signature="..."
//! ```
//!
//! [`parse`] reads the parameters and builds the signing string from the request;
//! [`Signature::verify`] applies Mastodon's coverage rules, the clock window and the key.

use std::collections::HashMap;
use std::time::SystemTime;

use base64::Engine;
use http::Method;

use super::key::{Algorithm, KeyType, PublicKey};
use super::{Message, Outcome, Rejection, Window};

/// A parsed signature with the signing string it claims to sign.
#[derive(Debug, Clone)]
pub struct Signature {
    key_id: String,
    algorithm: Option<String>,
    headers: Vec<String>,
    created: Option<i64>,
    expires: Option<i64>,
    signature: Vec<u8>,
    signing_string: String,
    method: Method,
    date: Option<String>,
}

/// Reads the request's `Signature` header (or an `Authorization: Signature` one) and builds
/// its signing string. No signature is `missing`; one that cannot be read, or that covers a
/// field the request lacks, is `malformed`.
pub fn parse(message: &Message<'_>) -> Result<Signature, Rejection> {
    let mut params = parameters(signature_text(message.headers)?)?;
    let key_id = params
        .remove("keyid")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Rejection::malformed("the signature has no keyId"))?;
    let signature = params
        .remove("signature")
        .ok_or_else(|| Rejection::malformed("the signature has no signature value"))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| Rejection::malformed("the signature value is not base64"))?;
    let number = |name: &str, value: Option<String>| -> Result<Option<i64>, Rejection> {
        value
            .map(|v| {
                // Some signers send a fraction of a second; the whole seconds count.
                let whole = v.split('.').next().unwrap_or_default();
                whole
                    .parse()
                    .map_err(|_| Rejection::malformed(format!("({name}) is not a number")))
            })
            .transpose()
    };
    let created = number("created", params.remove("created"))?;
    let expires = number("expires", params.remove("expires"))?;
    // Mastodon's default when `headers` is absent: the date alone.
    let headers: Vec<String> = params
        .remove("headers")
        .unwrap_or_else(|| "date".to_string())
        .split_ascii_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    if headers.is_empty() {
        return Err(Rejection::malformed("the signature covers nothing"));
    }
    // Each name adds a line holding the field's value: a name listed twice (or a list
    // longer than any signer sends) would let a small head build a huge signing string.
    if headers.len() > super::MAX_COVERED {
        return Err(Rejection::malformed(format!(
            "the signature covers more than {} fields",
            super::MAX_COVERED
        )));
    }
    for (i, name) in headers.iter().enumerate() {
        if headers[..i].contains(name) {
            return Err(Rejection::malformed(format!(
                "the signature covers {name} twice"
            )));
        }
    }
    let mut lines = Vec::with_capacity(headers.len());
    for name in &headers {
        let value = match name.as_str() {
            "(request-target)" => format!(
                "{} {}",
                message.method.as_str().to_ascii_lowercase(),
                message.path_and_query
            ),
            "(created)" => created
                .ok_or_else(|| Rejection::malformed("(created) is covered but not given"))?
                .to_string(),
            "(expires)" => expires
                .ok_or_else(|| Rejection::malformed("(expires) is covered but not given"))?
                .to_string(),
            field => message.field(field).ok_or_else(|| {
                Rejection::malformed(format!(
                    "the signature covers {field}, which the request lacks"
                ))
            })?,
        };
        lines.push(format!("{name}: {value}"));
    }
    Ok(Signature {
        key_id,
        algorithm: params.remove("algorithm").map(|a| a.to_ascii_lowercase()),
        headers,
        created,
        expires,
        signature,
        signing_string: lines.join("\n"),
        method: message.method.clone(),
        date: message.field("date"),
    })
}

/// The signature's parameters as they stand in `Signature`, else in
/// `Authorization: Signature`.
fn signature_text(headers: &http::HeaderMap) -> Result<&str, Rejection> {
    // One signature, the one the upstream will see: with two `Signature` fields (or two
    // `Authorization` fields, or both kinds) the gateway could verify one while the
    // upstream reads another.
    let mut signatures = headers.get_all("signature").iter();
    let first = signatures.next();
    let second = signatures.next().is_some();
    let authorizations = headers.get_all(http::header::AUTHORIZATION).iter().count();
    if second || authorizations > 1 || (first.is_some() && authorization(headers).is_some()) {
        return Err(Rejection::malformed(
            "the request carries more than one signature field",
        ));
    }
    match first {
        Some(v) => v
            .to_str()
            .map_err(|_| Rejection::malformed("Signature is not text")),
        None => authorization(headers)
            .ok_or_else(|| Rejection::new(Outcome::Missing, "no Signature header")),
    }
}

/// The `keyId` of the request's signature as [`parse`] reads it (same field, same
/// parameter rules), without building its signing string. `None` when there is none or the
/// signature cannot be read.
pub fn claimed_key_id(headers: &http::HeaderMap) -> Option<String> {
    parameters(signature_text(headers).ok()?)
        .ok()?
        .remove("keyid")
        .filter(|k| !k.is_empty())
}

/// Whether the request carries a draft-cavage signature, in either header.
pub fn present(headers: &http::HeaderMap) -> bool {
    headers.contains_key("signature") || authorization(headers).is_some()
}

/// The parameters of an `Authorization: Signature ...` header.
fn authorization(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("signature").then_some(rest)
}

/// The `name="value"` (or `name=value`) parameters of a signature, by lowercase name.
fn parameters(text: &str) -> Result<HashMap<String, String>, Rejection> {
    let mut params = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| Rejection::malformed("a signature parameter has no value"))?;
        let name = name.trim().to_ascii_lowercase();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, c)) => value.push(c),
                            None => return Err(Rejection::malformed("unterminated quote")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(Rejection::malformed("unterminated quote")),
                    }
                };
                (value, &quoted[end + 1..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        if params.insert(name.clone(), value).is_some() {
            return Err(Rejection::malformed(format!(
                "parameter {name} is given twice"
            )));
        }
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => {}
            None => return Err(Rejection::malformed("parameters are not comma-separated")),
        }
    }
    Ok(params)
}

impl Signature {
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Whether the signature covers `name` (a lowercase field name or pseudo-header).
    pub fn covers(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h == name)
    }

    pub fn signing_string(&self) -> &str {
        &self.signing_string
    }

    /// The algorithm to verify with: the named one (`rsa-sha256`, `ed25519` or Misskey's
    /// `ed25519-sha512`, `ecdsa-sha256`), or (for `hs2019` and no name at all) the one the
    /// key's type implies.
    pub fn algorithm(&self, key: KeyType) -> Result<Algorithm, Rejection> {
        match self.algorithm.as_deref() {
            None | Some("hs2019") => Ok(Algorithm::hs2019(key)),
            Some("rsa-sha256") => Ok(Algorithm::RsaPkcs1Sha256),
            // Misskey names Ed25519 after its internal hash.
            Some("ed25519") | Some("ed25519-sha512") => Ok(Algorithm::Ed25519),
            Some("ecdsa-sha256") => Ok(Algorithm::EcdsaP256Sha256Asn1),
            Some(other) => Err(Rejection::new(
                Outcome::UnsupportedAlgorithm,
                format!("algorithm {other} is not supported"),
            )),
        }
    }

    /// Mastodon's rules for what a signature must cover: a time (`date` or `(created)`),
    /// the target (`(request-target)` or `digest`), `host` on a GET, and `digest` on a
    /// request that carries a body.
    pub fn check_coverage(&self) -> Result<(), Rejection> {
        if !self.covers("date") && !self.covers("(created)") {
            return Err(Rejection::malformed(
                "the signature must cover date or (created)",
            ));
        }
        if !self.covers("(request-target)") && !self.covers("digest") {
            return Err(Rejection::malformed(
                "the signature must cover (request-target) or digest",
            ));
        }
        if self.method == Method::GET && !self.covers("host") {
            return Err(Rejection::malformed("a GET signature must cover host"));
        }
        let has_body = matches!(self.method, Method::POST | Method::PUT | Method::PATCH);
        if has_body && !self.covers("digest") {
            return Err(Rejection::malformed(format!(
                "a {} signature must cover digest",
                self.method
            )));
        }
        Ok(())
    }

    /// What can be checked without the key: coverage and the clock window. A key that
    /// must be fetched is fetched only for a signature that passes these.
    pub fn check_unkeyed(&self, window: &Window, now: SystemTime) -> Result<(), Rejection> {
        self.check_coverage()?;
        window.check_signed_at(self.created, self.expires, self.date.as_deref(), now)
    }

    /// Checks coverage, the clock window (`(created)` or the `Date` field, and
    /// `(expires)`), then the signature itself with `key`.
    pub fn verify(
        &self,
        key: &PublicKey,
        window: &Window,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        self.check_unkeyed(window, now)?;
        let algorithm = self.algorithm(key.kind())?;
        key.verify(algorithm, self.signing_string.as_bytes(), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::super::key::tests::{ed_pair, rsa_pair, ED_PUB, RSA_PUB};
    use super::*;
    use http::HeaderMap;
    use ring::rand::SystemRandom;
    use std::time::Duration;

    const DATE: &str = "Wed, 01 May 2024 12:00:00 GMT";
    const KEY_ID: &str = "https://remote.example/users/bob#main-key";
    const DIGEST: &str = "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=";

    fn now() -> SystemTime {
        httpdate::parse_http_date(DATE).unwrap() + Duration::from_secs(30)
    }

    fn inbox_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", "local.example".parse().unwrap());
        h.insert("date", DATE.parse().unwrap());
        h.insert("digest", DIGEST.parse().unwrap());
        h.insert("content-type", "application/activity+json".parse().unwrap());
        h
    }

    fn message<'a>(method: &'a Method, headers: &'a HeaderMap) -> Message<'a> {
        Message {
            method,
            path_and_query: "/users/alice/inbox",
            authority: Some("local.example"),
            scheme: "https",
            headers,
        }
    }

    fn rsa_sign(text: &str) -> String {
        let pair = rsa_pair();
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            text.as_bytes(),
            &mut sig,
        )
        .unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig)
    }

    const MASTODON_STRING: &str = "(request-target): post /users/alice/inbox\n\
        host: local.example\n\
        date: Wed, 01 May 2024 12:00:00 GMT\n\
        digest: SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=\n\
        content-type: application/activity+json";

    fn mastodon_signature(algorithm: &str, signature: &str) -> String {
        format!(
            "keyId=\"{KEY_ID}\",algorithm=\"{algorithm}\",\
             headers=\"(request-target) host date digest content-type\",signature=\"{signature}\""
        )
    }

    #[test]
    fn a_mastodon_delivery_verifies_with_rsa_sha256_and_hs2019() {
        let key = PublicKey::from_pem(RSA_PUB).unwrap();
        let sig = rsa_sign(MASTODON_STRING);
        for algorithm in ["rsa-sha256", "hs2019"] {
            let mut h = inbox_headers();
            h.insert(
                "signature",
                mastodon_signature(algorithm, &sig).parse().unwrap(),
            );
            let parsed = parse(&message(&Method::POST, &h)).unwrap();
            assert_eq!(parsed.key_id(), KEY_ID);
            assert_eq!(parsed.signing_string(), MASTODON_STRING);
            parsed.verify(&key, &Window::default(), now()).unwrap();
        }
        // The same in an Authorization header.
        let mut h = inbox_headers();
        let value = format!("Signature {}", mastodon_signature("rsa-sha256", &sig));
        h.insert("authorization", value.parse().unwrap());
        let parsed = parse(&message(&Method::POST, &h)).unwrap();
        assert!(parsed.verify(&key, &Window::default(), now()).is_ok());
    }

    #[test]
    fn a_field_covered_twice_or_too_many_fields_are_malformed() {
        // Each listed name adds a line with the field's value: repeating a long field
        // would build a signing string far larger than the request.
        let sig = |headers: &str| {
            format!("keyId=\"{KEY_ID}\",algorithm=\"rsa-sha256\",headers=\"{headers}\",signature=\"AA==\"")
        };
        let mut h = inbox_headers();
        h.insert("signature", sig("date host date").parse().unwrap());
        let refused = parse(&message(&Method::POST, &h)).unwrap_err();
        assert_eq!(refused.outcome, Outcome::Malformed);
        assert!(refused.reason.contains("date twice"), "{refused:?}");
        let mut h = inbox_headers();
        let names: Vec<String> = (0..=crate::signature::MAX_COVERED)
            .map(|i| format!("x-f{i}"))
            .collect();
        for n in &names {
            h.insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                "v".parse().unwrap(),
            );
        }
        h.insert("signature", sig(&names.join(" ")).parse().unwrap());
        let refused = parse(&message(&Method::POST, &h)).unwrap_err();
        assert!(refused.reason.contains("more than 64"), "{refused:?}");
    }

    #[test]
    fn ed25519_with_created_and_expires() {
        let created = 1_714_564_800; // the DATE above
        let text = format!(
            "(request-target): get /users/alice/inbox\nhost: local.example\n(created): {created}\n(expires): {}",
            created + 300
        );
        let sig = base64::engine::general_purpose::STANDARD.encode(ed_pair().sign(text.as_bytes()));
        let mut h = HeaderMap::new();
        h.insert("host", "local.example".parse().unwrap());
        let value = format!(
            "keyId=\"{KEY_ID}\",algorithm=\"hs2019\",created={created},expires={},\
             headers=\"(request-target) host (created) (expires)\",signature=\"{sig}\"",
            created + 300
        );
        h.insert("signature", value.parse().unwrap());
        let parsed = parse(&message(&Method::GET, &h)).unwrap();
        assert_eq!(parsed.signing_string(), text);
        let key = PublicKey::from_pem(ED_PUB).unwrap();
        assert!(parsed.verify(&key, &Window::default(), now()).is_ok());
        // Past its expiry (plus the skew), it is refused.
        let late = now() + Duration::from_secs(2 * 3600);
        assert_eq!(
            parsed
                .verify(&key, &Window::default(), late)
                .unwrap_err()
                .outcome,
            Outcome::Expired
        );
    }

    fn outcome(h: &HeaderMap, method: &Method, key: &PublicKey, at: SystemTime) -> Outcome {
        match parse(&message(method, h)) {
            Err(r) => r.outcome,
            Ok(s) => s
                .verify(key, &Window::default(), at)
                .err()
                .map_or(Outcome::Valid, |r| r.outcome),
        }
    }

    #[test]
    fn failures_carry_the_right_outcome() {
        let key = PublicKey::from_pem(RSA_PUB).unwrap();
        let sig = rsa_sign(MASTODON_STRING);
        let signed = || {
            let mut h = inbox_headers();
            h.insert(
                "signature",
                mastodon_signature("rsa-sha256", &sig).parse().unwrap(),
            );
            h
        };
        assert_eq!(
            outcome(&signed(), &Method::POST, &key, now()),
            Outcome::Valid
        );
        assert_eq!(
            outcome(&inbox_headers(), &Method::POST, &key, now()),
            Outcome::Missing
        );
        // A covered header changed on the way.
        let mut h = signed();
        h.insert("content-type", "text/html".parse().unwrap());
        assert_eq!(outcome(&h, &Method::POST, &key, now()), Outcome::Invalid);
        // The signed method is part of (request-target).
        assert_eq!(
            outcome(&signed(), &Method::PUT, &key, now()),
            Outcome::Invalid
        );
        // Another key.
        let ed = PublicKey::from_pem(ED_PUB).unwrap();
        assert_eq!(
            outcome(&signed(), &Method::POST, &ed, now()),
            Outcome::Invalid
        );
        // Out of the window, either way.
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(
            outcome(&signed(), &Method::POST, &key, now() + day),
            Outcome::Expired
        );
        assert_eq!(
            outcome(&signed(), &Method::POST, &key, now() - day),
            Outcome::Expired
        );
        // A covered header stripped.
        let mut h = signed();
        h.remove("digest");
        assert_eq!(outcome(&h, &Method::POST, &key, now()), Outcome::Malformed);
        // A POST whose signature leaves the digest out.
        let mut h = inbox_headers();
        let text = "(request-target): post /users/alice/inbox\nhost: local.example\ndate: Wed, 01 May 2024 12:00:00 GMT";
        let value = format!(
            "keyId=\"{KEY_ID}\",algorithm=\"rsa-sha256\",headers=\"(request-target) host date\",signature=\"{}\"",
            rsa_sign(text)
        );
        h.insert("signature", value.parse().unwrap());
        assert_eq!(outcome(&h, &Method::POST, &key, now()), Outcome::Malformed);
        // Unsupported and unreadable signatures.
        let mut h = signed();
        h.insert(
            "signature",
            mastodon_signature("hmac-sha256", &sig).parse().unwrap(),
        );
        assert_eq!(
            outcome(&h, &Method::POST, &key, now()),
            Outcome::UnsupportedAlgorithm
        );
        for bad in [
            "keyId=\"x\",signature=\"%%%\"",
            "signature=\"AAAA\"",
            "keyId=\"x\" signature=\"AAAA\"",
            "keyId=\"x\",keyId=\"y\",signature=\"AAAA\"",
            "keyId=\"x,signature=\"AAAA\"",
        ] {
            let mut h = inbox_headers();
            h.insert("signature", bad.parse().unwrap());
            assert_eq!(
                outcome(&h, &Method::POST, &key, now()),
                Outcome::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_date_is_valid_for_five_minutes_and_the_skew() {
        let key = PublicKey::from_pem(RSA_PUB).unwrap();
        let mut h = inbox_headers();
        let value = mastodon_signature("rsa-sha256", &rsa_sign(MASTODON_STRING));
        h.insert("signature", value.parse().unwrap());
        let date = httpdate::parse_http_date(DATE).unwrap();
        let s = Duration::from_secs;
        assert_eq!(
            outcome(&h, &Method::POST, &key, date + s(65 * 60)),
            Outcome::Valid
        );
        assert_eq!(
            outcome(&h, &Method::POST, &key, date + s(65 * 60 + 1)),
            Outcome::Expired
        );
        assert_eq!(
            outcome(&h, &Method::POST, &key, date - s(3600)),
            Outcome::Valid
        );
        assert_eq!(
            outcome(&h, &Method::POST, &key, date - s(3601)),
            Outcome::Expired
        );
    }

    #[test]
    fn coverage_rules_follow_mastodon() {
        let parsed = |headers: &str, method: Method| {
            let mut h = inbox_headers();
            let value = format!("keyId=\"k\",headers=\"{headers}\",signature=\"AAAA\"");
            h.insert("signature", value.parse().unwrap());
            parse(&message(&method, &h)).unwrap().check_coverage()
        };
        assert!(parsed("(request-target) host date digest", Method::POST).is_ok());
        assert!(parsed("(request-target) host date", Method::GET).is_ok());
        assert!(parsed("(request-target) date", Method::GET).is_err());
        assert!(parsed("(request-target) host", Method::GET).is_err());
        assert!(parsed("host date", Method::GET).is_err());
        assert!(parsed("host date digest", Method::POST).is_ok());
    }
}
