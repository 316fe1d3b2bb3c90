//! Phase 6, RFC 9421 HTTP Message Signatures: the verifier side. A signer lists what it
//! covers in `Signature-Input` and sends the signature bytes in `Signature`, both structured
//! dictionaries keyed by a label:
//!
//! ```text
//! Signature-Input: sig1=("@method" "@target-uri" "content-digest" "content-type");
//!                  created=1714564800;keyid="https://remote.example/users/bob#main-key"
//! Signature: sig1=:<base64>:
//! ```
//!
//! [`parse`] reads one signature and rebuilds its signature base (RFC 9421 §2.5) from the
//! request; [`Signature::verify`] applies Mastodon-like coverage rules, the clock window and
//! the key. Supported components: the request-derived ones (`@method`, `@target-uri`,
//! `@authority`, `@scheme`, `@request-target`, `@path`, `@query`, `@query-param`) and plain
//! header fields; component parameters (`sf`, `key`, `bs`, `req`, `tr`) are refused.

use std::collections::HashSet;
use std::time::SystemTime;

use http::Method;
use sfv::{BareItem, Dictionary, InnerList, Item, ItemSerializer, ListEntry, ListSerializer};
use sfv::{Parameters, Parser, Version};

use super::key::{Algorithm, KeyType, PublicKey};
use super::{Message, Outcome, Rejection, Window};

/// One signature of a request, with the signature base it claims to sign.
#[derive(Debug, Clone)]
pub struct Signature {
    label: String,
    /// The covered components' names, in order (`@method`, `content-digest`, ...).
    components: Vec<String>,
    created: Option<i64>,
    expires: Option<i64>,
    key_id: Option<String>,
    /// The `alg` parameter; `None` lets the key's type decide.
    algorithm: Option<Algorithm>,
    nonce: Option<String>,
    tag: Option<String>,
    base: String,
    signature: Vec<u8>,
    method: Method,
    /// The `Date` field, when the signature covers it.
    date: Option<String>,
}

/// Parses the signature labelled `label` (or, if `None`, the first one in `Signature-Input`)
/// and builds its signature base from `message`. A request without `Signature-Input` or
/// `Signature` is `missing`; a signature that cannot be read, or whose base cannot be built,
/// is `malformed`; an `alg` this gateway does not verify is `unsupported_algorithm`.
pub fn parse(message: &Message<'_>, label: Option<&str>) -> Result<Signature, Rejection> {
    let inputs = dictionary(message.headers, "signature-input", "Signature-Input")?;
    let signatures = dictionary(message.headers, "signature", "Signature")?;
    let (label, input) = match label {
        Some(label) => inputs.get_key_value(label).ok_or_else(|| {
            Rejection::malformed(format!("Signature-Input has no signature labelled {label}"))
        })?,
        None => inputs
            .first()
            .ok_or_else(|| Rejection::malformed("Signature-Input is empty"))?,
    };
    let label = label.as_str();
    let ListEntry::InnerList(input) = input else {
        return Err(Rejection::malformed(format!(
            "Signature-Input {label} is not an inner list"
        )));
    };
    let signature = match signatures.get(label) {
        Some(ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(bytes),
            ..
        })) => bytes.clone(),
        Some(_) => {
            return Err(Rejection::malformed(format!(
                "Signature {label} is not a byte sequence"
            )))
        }
        None => {
            return Err(Rejection::malformed(format!(
                "Signature has no signature labelled {label}"
            )))
        }
    };

    // Real signers cover a dozen components; each costs a pass over the request (a
    // `@query-param` one decodes the whole query), so the count is bounded.
    if input.items.len() > super::MAX_COVERED {
        return Err(Rejection::malformed(format!(
            "the signature covers more than {} components",
            super::MAX_COVERED
        )));
    }
    let mut sig = Signature {
        label: label.to_string(),
        components: Vec::with_capacity(input.items.len()),
        created: None,
        expires: None,
        key_id: None,
        algorithm: None,
        nonce: None,
        tag: None,
        base: String::new(),
        signature,
        method: message.method.clone(),
        date: None,
    };
    for (name, value) in &input.params {
        match name.as_str() {
            "created" => sig.created = Some(integer(name.as_str(), value)?),
            "expires" => sig.expires = Some(integer(name.as_str(), value)?),
            "keyid" => sig.key_id = Some(string(name.as_str(), value)?),
            "alg" => sig.algorithm = Some(algorithm(&string(name.as_str(), value)?)?),
            "nonce" => sig.nonce = Some(string(name.as_str(), value)?),
            "tag" => sig.tag = Some(string(name.as_str(), value)?),
            // Other parameters are signed as received (they are in the base) and not used.
            _ => {}
        }
    }

    // RFC 9421 §2.5: one line per covered component, then the signature parameters.
    let mut identifiers = HashSet::with_capacity(input.items.len());
    for item in &input.items {
        let BareItem::String(name) = &item.bare_item else {
            return Err(Rejection::malformed(
                "a covered component is not a quoted string",
            ));
        };
        let name = name.as_str();
        let identifier = ItemSerializer::new()
            .bare_item(&item.bare_item)
            .parameters(&item.params)
            .finish();
        if !identifiers.insert(identifier.clone()) {
            return Err(Rejection::malformed(format!(
                "the signature covers {identifier} twice"
            )));
        }
        let value = component_value(message, name, &item.params)?;
        sig.base.push_str(&identifier);
        sig.base.push_str(": ");
        sig.base.push_str(&value);
        sig.base.push('\n');
        if name == "date" {
            sig.date = Some(value);
        }
        sig.components.push(name.to_string());
    }
    sig.base.push_str("\"@signature-params\": ");
    sig.base.push_str(&signature_params(input));
    Ok(sig)
}

/// The `keyid` of the signature [`parse`] verifies when given no label (the first one in
/// `Signature-Input`), read from the same structured dictionary, without building its
/// signature base. `None` when there is none or `Signature-Input` cannot be read.
pub fn claimed_key_id(headers: &http::HeaderMap) -> Option<String> {
    let inputs = dictionary(headers, "signature-input", "Signature-Input").ok()?;
    let (_, ListEntry::InnerList(input)) = inputs.first()? else {
        return None;
    };
    // The last `keyid` wins, as in `parse`.
    let mut key_id = None;
    for (name, value) in &input.params {
        if name.as_str() == "keyid" {
            key_id = Some(string(name.as_str(), value).ok()?);
        }
    }
    key_id
}

/// Reads header `name` as a structured dictionary (RFC 8941, as RFC 9421 uses it).
fn dictionary(headers: &http::HeaderMap, name: &str, title: &str) -> Result<Dictionary, Rejection> {
    let text = super::field_line(headers, name)
        .ok_or_else(|| Rejection::new(Outcome::Missing, format!("no {title} header")))?;
    Parser::new(&text)
        .with_version(Version::Rfc8941)
        .parse::<Dictionary>()
        .map_err(|e| Rejection::malformed(format!("{title} is not a structured dictionary: {e}")))
}

/// The serialized inner list, with its parameters: the `@signature-params` value.
fn signature_params(input: &InnerList) -> String {
    let mut out = String::new();
    {
        let mut list = ListSerializer::with_buffer(&mut out);
        let mut inner = list.inner_list();
        inner.items(&input.items);
        let _params = inner.finish().parameters(&input.params);
    }
    out
}

fn integer(name: &str, value: &BareItem) -> Result<i64, Rejection> {
    value
        .as_integer()
        .map(i64::from)
        .ok_or_else(|| Rejection::malformed(format!("the {name} parameter is not an integer")))
}

fn string(name: &str, value: &BareItem) -> Result<String, Rejection> {
    value
        .as_string()
        .map(|s| s.as_str().to_string())
        .ok_or_else(|| Rejection::malformed(format!("the {name} parameter is not a string")))
}

/// The algorithm an `alg` parameter names (RFC 9421 §6.2.2); HMAC, P-384 and the like
/// are not verified here.
fn algorithm(name: &str) -> Result<Algorithm, Rejection> {
    match name {
        "rsa-v1_5-sha256" => Ok(Algorithm::RsaPkcs1Sha256),
        "rsa-pss-sha512" => Ok(Algorithm::RsaPssSha512),
        "ecdsa-p256-sha256" => Ok(Algorithm::EcdsaP256Sha256Fixed),
        "ed25519" => Ok(Algorithm::Ed25519),
        other => Err(Rejection::new(
            Outcome::UnsupportedAlgorithm,
            format!("algorithm {other} is not supported"),
        )),
    }
}

/// The value of one covered component (RFC 9421 §2.1 and §2.2).
fn component_value(
    message: &Message<'_>,
    name: &str,
    params: &Parameters,
) -> Result<String, Rejection> {
    if name == "@query-param" {
        return query_param(message, params);
    }
    if let Some((param, _)) = params.first() {
        return Err(Rejection::malformed(format!(
            "unsupported component parameter {param} on {name}"
        )));
    }
    let value = match name {
        "@method" => message.method.as_str().to_string(),
        "@target-uri" => format!(
            "{}://{}{}",
            message.scheme.to_ascii_lowercase(),
            authority(message)?,
            message.path_and_query
        ),
        "@authority" => authority(message)?,
        "@scheme" => message.scheme.to_ascii_lowercase(),
        "@request-target" => message.path_and_query.to_string(),
        "@path" => match message.path() {
            "" => "/".to_string(),
            path => path.to_string(),
        },
        "@query" => format!("?{}", message.query().unwrap_or_default()),
        "@signature-params" => {
            return Err(Rejection::malformed(
                "@signature-params cannot be a covered component",
            ))
        }
        "@status" => {
            return Err(Rejection::malformed(
                "@status is a response component; this is a request",
            ))
        }
        derived if derived.starts_with('@') => {
            return Err(Rejection::malformed(format!(
                "unknown derived component {derived}"
            )))
        }
        field => {
            // Fields are named in lowercase (RFC 9421 §2.1).
            let valid =
                http::HeaderName::from_bytes(field.as_bytes()).is_ok_and(|h| h.as_str() == field);
            if !valid {
                return Err(Rejection::malformed(format!(
                    "{field:?} is not a lowercase field name"
                )));
            }
            message.field(field).ok_or_else(|| {
                Rejection::malformed(format!(
                    "the signature covers {field}, which the request lacks"
                ))
            })?
        }
    };
    Ok(value)
}

/// The authority, normalised as HTTP does (RFC 9110 §4.2.3): lowercase, no default port.
fn authority(message: &Message<'_>) -> Result<String, Rejection> {
    let authority = message
        .authority
        .ok_or_else(|| Rejection::malformed("the request has no authority to sign"))?
        .to_ascii_lowercase();
    let default_port = match message.scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return Ok(authority),
    };
    Ok(match authority.strip_suffix(default_port) {
        Some(host) if !host.is_empty() => host.to_string(),
        _ => authority,
    })
}

/// `@query-param;name="..."` (RFC 9421 §2.2.8): the one query parameter whose
/// form-decoded, re-encoded name is `name`, its value form-decoded and re-encoded. A name
/// that is absent, or that occurs more than once, cannot be signed.
fn query_param(message: &Message<'_>, params: &Parameters) -> Result<String, Rejection> {
    let mut wanted = None;
    for (param, value) in params {
        match (param.as_str(), value) {
            ("name", BareItem::String(name)) => wanted = Some(name.as_str()),
            _ => {
                return Err(Rejection::malformed(format!(
                    "unsupported component parameter {param} on @query-param"
                )))
            }
        }
    }
    let wanted =
        wanted.ok_or_else(|| Rejection::malformed("@query-param has no name parameter"))?;
    let mut found = None;
    let query = message.query().unwrap_or_default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_encode(&form_decode(name)) != wanted {
            continue;
        }
        if found.is_some() {
            return Err(Rejection::malformed(format!(
                "query parameter {wanted} occurs more than once"
            )));
        }
        found = Some(form_encode(&form_decode(value)));
    }
    found.ok_or_else(|| {
        Rejection::malformed(format!(
            "the signature covers query parameter {wanted}, which the request lacks"
        ))
    })
}

/// `application/x-www-form-urlencoded` decoding of one name or value: `+` is a space,
/// `%XX` a byte; bytes that are not UTF-8 become U+FFFD.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|c| (*c as char).to_digit(16));
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    // Two hex digits make a byte.
                    out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes every byte outside the `application/x-www-form-urlencoded` safe set
/// (ASCII letters and digits, `*`, `-`, `.`, `_`); spaces become `%20`, as RFC 9421 shows.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Signature {
    /// The label the signature has in `Signature-Input` and `Signature`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The `keyid` parameter.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The `created` parameter, in seconds since the Unix epoch.
    pub fn created(&self) -> Option<i64> {
        self.created
    }

    /// The `expires` parameter, in seconds since the Unix epoch.
    pub fn expires(&self) -> Option<i64> {
        self.expires
    }

    /// The `nonce` parameter.
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Whether the signature covers `component` (`@method`, `content-digest`, ...).
    pub fn covers(&self, component: &str) -> bool {
        self.components.iter().any(|c| c == component)
    }

    /// The signature base the signature claims to sign.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// What the signature must cover, as Mastodon requires of RFC 9421 signatures: the
    /// method; the target (`@target-uri`, or `@path` or `@request-target` with `@authority`
    /// or `host`); `content-digest` (or `digest`) on POST, PUT and PATCH; and a time (the
    /// `created` parameter or the `date` field).
    pub fn check_coverage(&self) -> Result<(), Rejection> {
        if !self.covers("@method") {
            return Err(Rejection::malformed("the signature must cover @method"));
        }
        let target = self.covers("@target-uri")
            || ((self.covers("@path") || self.covers("@request-target"))
                && (self.covers("@authority") || self.covers("host")));
        if !target {
            return Err(Rejection::malformed(
                "the signature must cover @target-uri, or @path with @authority",
            ));
        }
        let has_body = matches!(self.method, Method::POST | Method::PUT | Method::PATCH);
        if has_body && !self.covers("content-digest") && !self.covers("digest") {
            return Err(Rejection::malformed(format!(
                "a {} signature must cover content-digest",
                self.method
            )));
        }
        if self.created.is_none() && !self.covers("date") {
            return Err(Rejection::malformed(
                "the signature must have created or cover date",
            ));
        }
        Ok(())
    }

    /// What can be checked without the key: coverage and the clock window. A key that
    /// must be fetched is fetched only for a signature that passes these.
    pub fn check_unkeyed(&self, window: &Window, now: SystemTime) -> Result<(), Rejection> {
        self.check_coverage()?;
        window.check_signed_at(self.created, self.expires, self.date.as_deref(), now)
    }

    /// Checks the required coverage, the time window (`created`, else the covered `Date`
    /// field, and `expires`), then the signature with `key`.
    pub fn verify(
        &self,
        key: &PublicKey,
        window: &Window,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        self.check_unkeyed(window, now)?;

        let base = self.base.as_bytes();
        match (self.algorithm, key.kind()) {
            (Some(algorithm), _) => key.verify(algorithm, base, &self.signature),
            (None, KeyType::Ed25519) => key.verify(Algorithm::Ed25519, base, &self.signature),
            (None, KeyType::EcdsaP256) => {
                key.verify(Algorithm::EcdsaP256Sha256Fixed, base, &self.signature)
            }
            // RFC 9421 signers use RSASSA-PSS; fediverse servers sign RSASSA-PKCS1-v1_5.
            (None, KeyType::Rsa) => key
                .verify(Algorithm::RsaPssSha512, base, &self.signature)
                .or_else(|_| key.verify(Algorithm::RsaPkcs1Sha256, base, &self.signature)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::key::tests::{ed_pair, rsa_pair, ED_PUB, RSA_PUB};
    use super::*;
    use base64::Engine;
    use http::{HeaderMap, HeaderValue};
    use ring::rand::SystemRandom;
    use ring::signature::{RsaEncoding, RSA_PKCS1_SHA256, RSA_PSS_SHA512};
    use std::time::{Duration, UNIX_EPOCH};

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn unb64(text: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    }

    fn at(seconds: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap())
    }

    fn message<'a>(
        method: &'a Method,
        target: &'a str,
        authority: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> Message<'a> {
        Message {
            method,
            path_and_query: target,
            authority,
            scheme: "https",
            headers,
        }
    }

    fn outcome<T: std::fmt::Debug>(result: Result<T, Rejection>) -> Outcome {
        result.unwrap_err().outcome
    }

    // ---- RFC 9421 Appendix B, copied from the RFC text (rfc-editor.org/rfc/rfc9421,
    // ---- B.1.2, B.1.4, B.2, B.2.1, B.2.2, B.2.3, B.2.6; RFC 8792 line wraps joined).

    /// B.1.2, `test-key-rsa-pss` (public half).
    const RFC_RSA_PSS_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAr4tmm3r20Wd/PbqvP1s2
+QEtvpuRaV8Yq40gjUR8y2Rjxa6dpG2GXHbPfvMs8ct+Lh1GH45x28Rw3Ry53mm+
oAXjyQ86OnDkZ5N8lYbggD4O3w6M6pAvLkhk95AndTrifbIFPNU8PPMO7OyrFAHq
gDsznjPFmTOtCEcN2Z1FpWgchwuYLPL+Wokqltd11nqqzi+bJ9cvSKADYdUAAN5W
Utzdpiy6LbTgSxP7ociU4Tn0g5I6aDZJ7A8Lzo0KSyZYoA485mqcO0GVAdVw9lq4
aOT9v6d+nb4bnNkQVklLQ3fVAvJm+xdDOp9LCNCN48V2pnDOkFV6+U9nV5oyc6XI
2wIDAQAB
-----END PUBLIC KEY-----
";

    /// B.1.4, `test-key-ed25519` (public half).
    const RFC_ED_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----
";

    const RFC_CREATED: i64 = 1_618_884_473;
    const RFC_DIGEST: &str = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";

    const B21_INPUT: &str =
        r#"sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#;
    const B21_SIGNATURE: &str = concat!(
        "sig-b21=:d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopem",
        "LJcWDy/lkbbHAve4cRAtx31Iq786U7it++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG",
        "52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdCbzR72rgFWhzx",
        "2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6",
        "UnCh8jYzuVG5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3",
        "+7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98Xw9Q==:",
    );
    const B21_BASE: &str = r#""@signature-params": ();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#;

    const B22_INPUT: &str = concat!(
        r#"sig-b22=("@authority" "content-digest" "@query-param";name="Pet")"#,
        r#";created=1618884473;keyid="test-key-rsa-pss";tag="header-example""#,
    );
    const B22_SIGNATURE: &str = concat!(
        "sig-b22=:LjbtqUbfmvjj5C5kr1Ugj4PmLYvx9wVjZvD9GsTT4F7GrcQ",
        "EdJzgI9qHxICagShLRiLMlAJjtq6N4CDfKtjvuJyE5qH7KT8UCMkSowOB4+ECxCmT",
        "8rtAmj/0PIXxi0A0nxKyB09RNrCQibbUjsLS/2YyFYXEu4TRJQzRw1rLEuEfY17SA",
        "RYhpTlaqwZVtR8NV7+4UKkjqpcAoFqWFQh62s7Cl+H2fjBSpqfZUJcsIk4N6wiKYd",
        "4je2U/lankenQ99PZfB4jY3I5rSV2DSBVkSFsURIjYErOs0tFTQosMTAoxk//0RoK",
        "UqiYY8Bh0aaUEb0rQl3/XaVe4bXTugEjHSw==:",
    );
    const B22_BASE: &str = concat!(
        "\"@authority\": example.com\n",
        "\"content-digest\": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX",
        "+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:\n",
        "\"@query-param\";name=\"Pet\": dog\n",
        "\"@signature-params\": (\"@authority\" \"content-digest\" ",
        "\"@query-param\";name=\"Pet\");created=1618884473;keyid=\"test-key-rsa-pss\"",
        ";tag=\"header-example\"",
    );

    const B23_INPUT: &str = concat!(
        r#"sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "#,
        r#""content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss""#,
    );
    const B23_SIGNATURE: &str = concat!(
        "sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yB",
        "iMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+qRpRRU5p2voTp768ZrCUb38K0fU",
        "xN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1",
        "pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9",
        "bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5Z",
        "JzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==:",
    );
    const B23_BASE: &str = concat!(
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
        "\"@method\": POST\n",
        "\"@path\": /foo\n",
        "\"@query\": ?param=Value&Pet=dog\n",
        "\"@authority\": example.com\n",
        "\"content-type\": application/json\n",
        "\"content-digest\": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX",
        "+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:\n",
        "\"content-length\": 18\n",
        "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@query\" ",
        "\"@authority\" \"content-type\" \"content-digest\" \"content-length\")",
        ";created=1618884473;keyid=\"test-key-rsa-pss\"",
    );

    const B26_INPUT: &str = concat!(
        r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")"#,
        r#";created=1618884473;keyid="test-key-ed25519""#,
    );
    const B26_SIGNATURE: &str = concat!(
        "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1",
        "u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
    );
    const B26_BASE: &str = concat!(
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
        "\"@method\": POST\n",
        "\"@path\": /foo\n",
        "\"@authority\": example.com\n",
        "\"content-type\": application/json\n",
        "\"content-length\": 18\n",
        "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" ",
        "\"content-type\" \"content-length\");created=1618884473",
        ";keyid=\"test-key-ed25519\"",
    );

    /// B.2's `test-request` (`POST /foo?param=Value&Pet=dog`), with the given signatures.
    fn rfc_request(signed: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.com"));
        h.insert(
            "date",
            HeaderValue::from_static("Tue, 20 Apr 2021 02:07:55 GMT"),
        );
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("content-digest", HeaderValue::from_static(RFC_DIGEST));
        h.insert("content-length", HeaderValue::from_static("18"));
        for (input, signature) in signed {
            h.append("signature-input", input.parse().unwrap());
            h.append("signature", signature.parse().unwrap());
        }
        h
    }

    const RFC_TARGET: &str = "/foo?param=Value&Pet=dog";

    fn raw_signature(field: &str) -> Vec<u8> {
        let (_, value) = field.split_once("=:").unwrap();
        unb64(value.trim_end_matches(':'))
    }

    #[test]
    fn rfc_b26_ed25519_base_and_signature_match_the_published_vector() {
        let headers = rfc_request(&[(B26_INPUT, B26_SIGNATURE)]);
        let m = message(&Method::POST, RFC_TARGET, Some("example.com"), &headers);
        let sig = parse(&m, Some("sig-b26")).unwrap();
        assert_eq!(sig.label(), "sig-b26");
        assert_eq!(sig.key_id(), Some("test-key-ed25519"));
        assert_eq!(sig.created(), Some(RFC_CREATED));
        assert_eq!(sig.expires(), None);
        assert_eq!(sig.base(), B26_BASE);

        let key = PublicKey::from_pem(RFC_ED_PUB).unwrap();
        let published = raw_signature(B26_SIGNATURE);
        assert!(key
            .verify(Algorithm::Ed25519, sig.base().as_bytes(), &published)
            .is_ok());
        assert_eq!(sig.signature, published);

        // It verifies in every respect but one: a POST must cover content-digest.
        let refused = sig
            .verify(&key, &Window::default(), at(RFC_CREATED + 30))
            .unwrap_err();
        assert_eq!(refused.outcome, Outcome::Malformed);
        assert!(refused.reason.contains("content-digest"), "{refused:?}");
    }

    #[test]
    fn rfc_b23_rsa_pss_full_coverage_passes_every_check() {
        let headers = rfc_request(&[(B23_INPUT, B23_SIGNATURE)]);
        let m = message(&Method::POST, RFC_TARGET, Some("example.com"), &headers);
        let sig = parse(&m, None).unwrap();
        assert_eq!(sig.label(), "sig-b23");
        assert_eq!(sig.base(), B23_BASE);
        assert!(sig.covers("content-digest") && sig.covers("@query"));
        let key = PublicKey::from_pem(RFC_RSA_PSS_PUB).unwrap();
        // No `alg`: an RSA key tries RSASSA-PSS first.
        assert_eq!(
            sig.verify(&key, &Window::default(), at(RFC_CREATED + 30)),
            Ok(())
        );
        // Past five minutes and the hour of skew, the same signature is too old.
        assert_eq!(
            outcome(sig.verify(&key, &Window::default(), at(RFC_CREATED + 14 * 3600))),
            Outcome::Expired
        );
        // And it does not verify with another key.
        let other = PublicKey::from_pem(RSA_PUB).unwrap();
        assert_eq!(
            outcome(sig.verify(&other, &Window::default(), at(RFC_CREATED + 30))),
            Outcome::Invalid
        );
    }

    #[test]
    fn rfc_b21_and_b22_bases_match_and_verify() {
        let headers = rfc_request(&[(B21_INPUT, B21_SIGNATURE), (B22_INPUT, B22_SIGNATURE)]);
        let m = message(&Method::POST, RFC_TARGET, Some("example.com"), &headers);
        let key = PublicKey::from_pem(RFC_RSA_PSS_PUB).unwrap();

        let b21 = parse(&m, Some("sig-b21")).unwrap();
        assert_eq!(b21.base(), B21_BASE);
        assert_eq!(b21.nonce(), Some("b3k2pp5k7z-50gnwp.yemd"));
        assert!(key
            .verify(
                Algorithm::RsaPssSha512,
                b21.base().as_bytes(),
                &raw_signature(B21_SIGNATURE)
            )
            .is_ok());
        // It covers nothing, so the gateway refuses it.
        let refused = b21
            .verify(&key, &Window::default(), at(RFC_CREATED))
            .unwrap_err();
        assert_eq!(refused.outcome, Outcome::Malformed);
        assert!(refused.reason.contains("@method"), "{refused:?}");

        let b22 = parse(&m, Some("sig-b22")).unwrap();
        assert_eq!(b22.base(), B22_BASE);
        assert_eq!(b22.tag(), Some("header-example"));
        assert!(b22.covers("@query-param"));
        assert!(key
            .verify(
                Algorithm::RsaPssSha512,
                b22.base().as_bytes(),
                &raw_signature(B22_SIGNATURE)
            )
            .is_ok());
    }

    #[test]
    fn a_label_picks_one_of_several_signatures() {
        let headers = rfc_request(&[
            (B26_INPUT, B26_SIGNATURE),
            (B23_INPUT, B23_SIGNATURE),
            (B21_INPUT, B21_SIGNATURE),
        ]);
        let m = message(&Method::POST, RFC_TARGET, Some("example.com"), &headers);
        assert_eq!(parse(&m, None).unwrap().label(), "sig-b26");
        let b23 = parse(&m, Some("sig-b23")).unwrap();
        assert_eq!(b23.base(), B23_BASE);
        let b21 = parse(&m, Some("sig-b21")).unwrap();
        assert_eq!(b21.base(), B21_BASE);
        assert_eq!(outcome(parse(&m, Some("sig-b22"))), Outcome::Malformed);
    }

    #[test]
    fn query_params_are_decoded_and_reencoded_as_the_rfc_shows() {
        // RFC 9421 §2.2.8's examples.
        let mut headers = HeaderMap::new();
        headers.insert(
            "signature-input",
            concat!(
                r#"s=("@query-param";name="var" "@query-param";name="bar" "#,
                r#""@query-param";name="fa%C3%A7ade%22%3A%20" "@query-param";name="qux")"#,
                r#";created=1"#
            )
            .parse()
            .unwrap(),
        );
        headers.insert("signature", "s=:AA==:".parse().unwrap());
        let target = concat!(
            "/parameters?var=this%20is%20a%20big%0Amultiline%20value",
            "&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something&qux="
        );
        let m = message(&Method::GET, target, Some("www.example.com"), &headers);
        let sig = parse(&m, None).unwrap();
        let lines: Vec<&str> = sig.base().lines().take(4).collect();
        assert_eq!(
            lines,
            [
                r#""@query-param";name="var": this%20is%20a%20big%0Amultiline%20value"#,
                r#""@query-param";name="bar": with%20plus%20whitespace"#,
                r#""@query-param";name="fa%C3%A7ade%22%3A%20": something"#,
                r#""@query-param";name="qux": "#,
            ]
        );

        // Absent or repeated names cannot be signed.
        for (target, name) in [("/p?a=1&a=2", "a"), ("/p?a=1", "b"), ("/p", "a")] {
            headers.insert(
                "signature-input",
                format!(r#"s=("@query-param";name="{name}");created=1"#)
                    .parse()
                    .unwrap(),
            );
            let m = message(&Method::GET, target, Some("a.example"), &headers);
            assert_eq!(outcome(parse(&m, None)), Outcome::Malformed, "{target}");
        }
    }

    #[test]
    fn derived_components_take_their_values_from_the_request() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "signature-input",
            concat!(
                r#"s=("@method" "@target-uri" "@authority" "@scheme" "@request-target" "#,
                r#""@path" "@query" "accept");created=1;expires=2;other=?1"#
            )
            .parse()
            .unwrap(),
        );
        headers.insert("signature", "s=:AA==:".parse().unwrap());
        headers.append("accept", " application/activity+json ".parse().unwrap());
        headers.append("accept", "application/ld+json".parse().unwrap());
        let m = message(
            &Method::GET,
            "/users/alice/outbox?page=2",
            Some("Remote.Example:443"),
            &headers,
        );
        let sig = parse(&m, None).unwrap();
        assert_eq!(
            sig.base(),
            concat!(
                "\"@method\": GET\n",
                "\"@target-uri\": https://remote.example/users/alice/outbox?page=2\n",
                "\"@authority\": remote.example\n",
                "\"@scheme\": https\n",
                "\"@request-target\": /users/alice/outbox?page=2\n",
                "\"@path\": /users/alice/outbox\n",
                "\"@query\": ?page=2\n",
                "\"accept\": application/activity+json, application/ld+json\n",
                "\"@signature-params\": (\"@method\" \"@target-uri\" \"@authority\" ",
                "\"@scheme\" \"@request-target\" \"@path\" \"@query\" \"accept\")",
                ";created=1;expires=2;other",
            )
        );
        assert_eq!((sig.created(), sig.expires()), (Some(1), Some(2)));

        // No query: `@query` is a lone `?`. A non-default port stays.
        headers.insert(
            "signature-input",
            r#"s=("@query" "@authority");created=1"#.parse().unwrap(),
        );
        let m = message(&Method::GET, "/x", Some("a.example:8443"), &headers);
        assert_eq!(
            parse(&m, None)
                .unwrap()
                .base()
                .lines()
                .take(2)
                .collect::<Vec<_>>(),
            ["\"@query\": ?", "\"@authority\": a.example:8443"]
        );
    }

    #[test]
    fn components_that_cannot_be_built_are_malformed() {
        let cases = [
            (r#"s=("@method" "@method");created=1"#, "twice"),
            (r#"s=("@fragment");created=1"#, "unknown derived component"),
            (r#"s=("@status");created=1"#, "@status"),
            (r#"s=("@signature-params");created=1"#, "@signature-params"),
            (
                r#"s=("host";sf);created=1"#,
                "unsupported component parameter",
            ),
            (
                r#"s=("host";bs);created=1"#,
                "unsupported component parameter",
            ),
            (
                r#"s=("@method";req);created=1"#,
                "unsupported component parameter",
            ),
            (r#"s=("Host");created=1"#, "lowercase"),
            (r#"s=(host);created=1"#, "quoted string"),
            (r#"s=("x-missing");created=1"#, "x-missing"),
            (r#"s=("host");created="1""#, "created"),
            (r#"s=("host");created=1.5"#, "created"),
            (r#"s=("host");keyid=key"#, "keyid"),
            (r#"s="host""#, "inner list"),
            (r#"s=("host""#, "structured"),
        ];
        for (input, reason) in cases {
            let mut headers = HeaderMap::new();
            headers.insert("host", HeaderValue::from_static("a.example"));
            headers.insert("signature-input", input.parse().unwrap());
            headers.insert("signature", "s=:AA==:".parse().unwrap());
            let m = message(&Method::GET, "/", Some("a.example"), &headers);
            let refused = parse(&m, None).unwrap_err();
            assert_eq!(refused.outcome, Outcome::Malformed, "{input}");
            assert!(refused.reason.contains(reason), "{input}: {refused:?}");
        }

        // More components than any signer covers: one `@query-param` each over a long
        // query would cost components × parameters.
        let many: Vec<String> = (0..=crate::signature::MAX_COVERED)
            .map(|i| format!("\"@query-param\";name=\"p{i}\""))
            .collect();
        let query: Vec<String> = (0..=crate::signature::MAX_COVERED)
            .map(|i| format!("p{i}=v"))
            .collect();
        let mut headers = HeaderMap::new();
        let input = format!("s=({});created=1", many.join(" "));
        headers.insert("signature-input", input.parse().unwrap());
        headers.insert("signature", "s=:AA==:".parse().unwrap());
        let target = format!("/?{}", query.join("&"));
        let m = message(&Method::GET, &target, Some("a.example"), &headers);
        let refused = parse(&m, None).unwrap_err();
        assert!(refused.reason.contains("more than 64"), "{refused:?}");

        let mut headers = HeaderMap::new();
        headers.insert("signature-input", r#"s=();created=1"#.parse().unwrap());
        headers.insert("signature", "s=\"AA==\"".parse().unwrap());
        let m = message(&Method::GET, "/", Some("a.example"), &headers);
        assert_eq!(outcome(parse(&m, None)), Outcome::Malformed);
    }

    // ---- Round trips signed here with the keys in `testdata/`.

    const KEY_ID: &str = "https://remote.example/users/bob#main-key";
    /// Wed, 01 May 2024 12:00:00 GMT.
    const CREATED: i64 = 1_714_564_800;
    const DATE: &str = "Wed, 01 May 2024 12:00:00 GMT";
    const DIGEST: &str = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
    const COVERED: &str = r#"("@method" "@target-uri" "content-digest" "content-type")"#;
    /// The base lines `COVERED` makes of `inbox()`, written out.
    const LINES: &str = concat!(
        "\"@method\": POST\n",
        "\"@target-uri\": https://local.example/users/alice/inbox\n",
        "\"content-digest\": sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:\n",
        "\"content-type\": application/activity+json\n",
    );

    fn now() -> SystemTime {
        at(CREATED + 30)
    }

    fn inbox() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("local.example"));
        h.insert("date", HeaderValue::from_static(DATE));
        h.insert(
            "content-type",
            HeaderValue::from_static("application/activity+json"),
        );
        h.insert("content-digest", HeaderValue::from_static(DIGEST));
        h
    }

    fn inbox_message(headers: &HeaderMap) -> Message<'_> {
        message(
            &Method::POST,
            "/users/alice/inbox",
            Some("local.example"),
            headers,
        )
    }

    fn params(alg: Option<&str>) -> String {
        let mut p = format!(r#";created={CREATED};keyid="{KEY_ID}""#);
        if let Some(alg) = alg {
            p.push_str(&format!(r#";alg="{alg}""#));
        }
        p
    }

    /// Signs `base` with `sign` and sets `Signature-Input: sig1=<input>` and `Signature`.
    fn sign(headers: &mut HeaderMap, input: &str, base: &str, sign: impl Fn(&[u8]) -> Vec<u8>) {
        headers.insert("signature-input", format!("sig1={input}").parse().unwrap());
        let signature = b64(&sign(base.as_bytes()));
        headers.insert("signature", format!("sig1=:{signature}:").parse().unwrap());
    }

    /// Signs the inbox request over `COVERED` with `params`.
    fn signed_inbox(params: &str, signer: impl Fn(&[u8]) -> Vec<u8>) -> HeaderMap {
        let mut headers = inbox();
        let base = format!("{LINES}\"@signature-params\": {COVERED}{params}");
        sign(&mut headers, &format!("{COVERED}{params}"), &base, signer);
        headers
    }

    fn ed(data: &[u8]) -> Vec<u8> {
        ed_pair().sign(data).as_ref().to_vec()
    }

    fn rsa(padding: &'static dyn RsaEncoding) -> impl Fn(&[u8]) -> Vec<u8> {
        move |data| {
            let pair = rsa_pair();
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(padding, &SystemRandom::new(), data, &mut sig)
                .unwrap();
            sig
        }
    }

    fn check(headers: &HeaderMap, key: &str) -> Result<(), Rejection> {
        let key = PublicKey::from_pem(key).unwrap();
        parse(&inbox_message(headers), None)?.verify(&key, &Window::default(), now())
    }

    #[test]
    fn an_ed25519_signature_over_the_written_out_base_verifies() {
        let headers = signed_inbox(&params(Some("ed25519")), ed);
        let sig = parse(&inbox_message(&headers), Some("sig1")).unwrap();
        assert_eq!(
            sig.base(),
            concat!(
                "\"@method\": POST\n",
                "\"@target-uri\": https://local.example/users/alice/inbox\n",
                "\"content-digest\": sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:\n",
                "\"content-type\": application/activity+json\n",
                "\"@signature-params\": (\"@method\" \"@target-uri\" \"content-digest\" ",
                "\"content-type\");created=1714564800",
                ";keyid=\"https://remote.example/users/bob#main-key\";alg=\"ed25519\"",
            )
        );
        assert_eq!(sig.key_id(), Some(KEY_ID));
        assert!(sig.covers("@target-uri") && !sig.covers("date"));
        assert_eq!(check(&headers, ED_PUB), Ok(()));
        // No `alg`: the Ed25519 key decides.
        assert_eq!(check(&signed_inbox(&params(None), ed), ED_PUB), Ok(()));
    }

    #[test]
    fn rsa_signatures_verify_named_and_unnamed() {
        for (alg, padding) in [
            (
                Some("rsa-v1_5-sha256"),
                &RSA_PKCS1_SHA256 as &'static dyn RsaEncoding,
            ),
            (Some("rsa-pss-sha512"), &RSA_PSS_SHA512),
            (None, &RSA_PKCS1_SHA256),
            (None, &RSA_PSS_SHA512),
        ] {
            let headers = signed_inbox(&params(alg), rsa(padding));
            assert_eq!(check(&headers, RSA_PUB), Ok(()), "{alg:?}");
        }
        // A named algorithm is the only one tried.
        let headers = signed_inbox(&params(Some("rsa-pss-sha512")), rsa(&RSA_PKCS1_SHA256));
        assert_eq!(outcome(check(&headers, RSA_PUB)), Outcome::Invalid);
    }

    #[test]
    fn a_tampered_field_or_another_key_is_invalid() {
        let mut headers = signed_inbox(&params(Some("ed25519")), ed);
        assert_eq!(check(&headers, ED_PUB), Ok(()));
        headers.insert("content-type", HeaderValue::from_static("text/html"));
        assert_eq!(outcome(check(&headers, ED_PUB)), Outcome::Invalid);

        let headers = signed_inbox(&params(Some("ed25519")), ed);
        assert_eq!(outcome(check(&headers, RFC_ED_PUB)), Outcome::Invalid);
        // An RSA key cannot have made an ed25519 signature.
        assert_eq!(outcome(check(&headers, RSA_PUB)), Outcome::Invalid);
    }

    #[test]
    fn signatures_outside_the_window_are_expired() {
        let day = 24 * 3600;
        let old = format!(r#";created={};keyid="{KEY_ID}""#, CREATED - 2 * day);
        let future = format!(r#";created={};keyid="{KEY_ID}""#, CREATED + day);
        let lapsed = format!(
            r#";created={};expires={};keyid="{KEY_ID}""#,
            CREATED - 3 * 3600,
            CREATED - 2 * 3600
        );
        let fresh = format!(
            r#";created={CREATED};expires={};keyid="{KEY_ID}""#,
            CREATED + 300
        );
        for p in [&old, &future, &lapsed] {
            let headers = signed_inbox(p, ed);
            assert_eq!(outcome(check(&headers, ED_PUB)), Outcome::Expired, "{p}");
        }
        assert_eq!(check(&signed_inbox(&fresh, ed), ED_PUB), Ok(()));
    }

    #[test]
    fn created_and_expires_follow_mastodons_window() {
        let key = PublicKey::from_pem(ED_PUB).unwrap();
        let at_time = |params: &str, when: i64| {
            let headers = signed_inbox(params, ed);
            parse(&inbox_message(&headers), None)?.verify(&key, &Window::default(), at(when))
        };
        let created = format!(r#";created={CREATED};keyid="{KEY_ID}""#);
        // Without expires: five minutes, and the hour of skew either way.
        assert_eq!(at_time(&created, CREATED + 65 * 60), Ok(()));
        assert_eq!(
            outcome(at_time(&created, CREATED + 65 * 60 + 1)),
            Outcome::Expired
        );
        assert_eq!(at_time(&created, CREATED - 3600), Ok(()));
        assert_eq!(outcome(at_time(&created, CREATED - 3601)), Outcome::Expired);
        // An expires instead of the five minutes, at most twelve hours after created.
        let expires = |e: i64| format!(r#";created={CREATED};expires={e};keyid="{KEY_ID}""#);
        let hours = expires(CREATED + 3 * 3600);
        assert_eq!(at_time(&hours, CREATED + 4 * 3600), Ok(()));
        assert_eq!(
            outcome(at_time(&hours, CREATED + 4 * 3600 + 1)),
            Outcome::Expired
        );
        let week = expires(CREATED + 7 * 24 * 3600);
        assert_eq!(at_time(&week, CREATED + 13 * 3600), Ok(()));
        assert_eq!(
            outcome(at_time(&week, CREATED + 13 * 3600 + 1)),
            Outcome::Expired
        );
    }

    #[test]
    fn a_covered_date_dates_a_signature_without_created() {
        let covered = r#"("@method" "@target-uri" "content-digest" "date")"#;
        let p = format!(r#";keyid="{KEY_ID}""#);
        let base = format!(
            "\"@method\": POST\n\
             \"@target-uri\": https://local.example/users/alice/inbox\n\
             \"content-digest\": {DIGEST}\n\
             \"date\": {DATE}\n\
             \"@signature-params\": {covered}{p}"
        );
        let mut headers = inbox();
        sign(&mut headers, &format!("{covered}{p}"), &base, ed);
        assert_eq!(check(&headers, ED_PUB), Ok(()));

        let key = PublicKey::from_pem(ED_PUB).unwrap();
        let sig = parse(&inbox_message(&headers), None).unwrap();
        assert_eq!(sig.created(), None);
        let late = at(CREATED + 2 * 24 * 3600);
        assert_eq!(
            outcome(sig.verify(&key, &Window::default(), late)),
            Outcome::Expired
        );

        // Without created and without date, there is no time to check.
        let covered = r#"("@method" "@target-uri" "content-digest")"#;
        let base = format!(
            "\"@method\": POST\n\
             \"@target-uri\": https://local.example/users/alice/inbox\n\
             \"content-digest\": {DIGEST}\n\
             \"@signature-params\": {covered}{p}"
        );
        let mut headers = inbox();
        sign(&mut headers, &format!("{covered}{p}"), &base, ed);
        let refused = check(&headers, ED_PUB).unwrap_err();
        assert_eq!(refused.outcome, Outcome::Malformed);
        assert!(refused.reason.contains("created"), "{refused:?}");
    }

    #[test]
    fn missing_headers_are_missing_and_mismatched_labels_malformed() {
        let mut headers = signed_inbox(&params(Some("ed25519")), ed);
        headers.remove("signature");
        assert_eq!(outcome(check(&headers, ED_PUB)), Outcome::Missing);

        let mut headers = signed_inbox(&params(Some("ed25519")), ed);
        headers.remove("signature-input");
        assert_eq!(outcome(check(&headers, ED_PUB)), Outcome::Missing);

        let mut headers = signed_inbox(&params(Some("ed25519")), ed);
        let value = headers["signature"]
            .to_str()
            .unwrap()
            .replacen("sig1", "sig2", 1);
        headers.insert("signature", value.parse().unwrap());
        let refused = check(&headers, ED_PUB).unwrap_err();
        assert_eq!(refused.outcome, Outcome::Malformed);
        assert!(refused.reason.contains("sig1"), "{refused:?}");

        let headers = signed_inbox(&params(Some("ed25519")), ed);
        assert_eq!(
            outcome(parse(&inbox_message(&headers), Some("sig2"))),
            Outcome::Malformed
        );
    }

    #[test]
    fn required_coverage_is_enforced() {
        // A POST that does not cover content-digest.
        let covered = r#"("@method" "@target-uri" "content-type")"#;
        let p = params(Some("ed25519"));
        let base = format!(
            "\"@method\": POST\n\
             \"@target-uri\": https://local.example/users/alice/inbox\n\
             \"content-type\": application/activity+json\n\
             \"@signature-params\": {covered}{p}"
        );
        let mut headers = inbox();
        sign(&mut headers, &format!("{covered}{p}"), &base, ed);
        let refused = check(&headers, ED_PUB).unwrap_err();
        assert_eq!(refused.outcome, Outcome::Malformed);
        assert!(refused.reason.contains("content-digest"), "{refused:?}");

        // A GET needs no digest, but its target needs an authority as well as a path.
        let key = PublicKey::from_pem(ED_PUB).unwrap();
        for (covered, ok) in [
            (r#"("@method" "@path" "host")"#, true),
            (r#"("@method" "@request-target" "@authority")"#, true),
            (r#"("@method" "@path")"#, false),
            (r#"("@path" "@authority")"#, false),
        ] {
            let input = format!("{covered}{p}");
            let mut headers = inbox();
            headers.insert("signature-input", format!("sig1={input}").parse().unwrap());
            headers.insert("signature", "sig1=:AA==:".parse().unwrap());
            let m = message(
                &Method::GET,
                "/users/alice",
                Some("local.example"),
                &headers,
            );
            let sig = parse(&m, None).unwrap();
            let signature = ed(sig.base().as_bytes());
            headers.insert(
                "signature",
                format!("sig1=:{}:", b64(&signature)).parse().unwrap(),
            );
            let m = message(
                &Method::GET,
                "/users/alice",
                Some("local.example"),
                &headers,
            );
            let result = parse(&m, None)
                .unwrap()
                .verify(&key, &Window::default(), now());
            if ok {
                assert_eq!(result, Ok(()), "{covered}");
            } else {
                assert_eq!(outcome(result), Outcome::Malformed, "{covered}");
            }
        }
    }

    #[test]
    fn an_unsupported_alg_is_unsupported() {
        for alg in ["hmac-sha256", "ecdsa-p384-sha384", "rsa-sha256"] {
            let headers = signed_inbox(&params(Some(alg)), ed);
            let refused = check(&headers, ED_PUB).unwrap_err();
            assert_eq!(refused.outcome, Outcome::UnsupportedAlgorithm, "{alg}");
            assert!(refused.reason.contains(alg));
        }
    }

    #[test]
    fn a_covered_field_the_request_lacks_is_malformed() {
        let covered = r#"("@method" "@target-uri" "content-digest" "x-forwarded-for")"#;
        let mut headers = inbox();
        let p = params(Some("ed25519"));
        sign(&mut headers, &format!("{covered}{p}"), "unused", ed);
        let refused = check(&headers, ED_PUB).unwrap_err();
        assert_eq!(refused.outcome, Outcome::Malformed);
        assert!(refused.reason.contains("x-forwarded-for"), "{refused:?}");
    }
}
