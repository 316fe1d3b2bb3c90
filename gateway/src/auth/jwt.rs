//! Phase 5, bearer JWTs: `Authorization: Bearer <JWS>` verified with the `jsonwebtoken` crate
//! (on `ring`) against the keys of a JWKS file, then checked for issuer, audience, `exp` and
//! `nbf` (with leeway). The principal is the token's `sub`.
//!
//! Every key is bound to exactly one algorithm when the JWKS is loaded (its `alg`, or the one
//! its `kty`/`crv` implies), and a token is only ever checked with keys of its own `alg`:
//! `alg: none` does not parse, and an RSA public key can never be used as an HMAC secret.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{AuthResult, Failure};

/// The algorithms fedgate verifies, by their JOSE names.
pub const SUPPORTED: [(&str, Algorithm); 4] = [
    ("HS256", Algorithm::HS256),
    ("RS256", Algorithm::RS256),
    ("ES256", Algorithm::ES256),
    ("EdDSA", Algorithm::EdDSA),
];

/// Parses a JOSE algorithm name fedgate supports.
pub fn algorithm(name: &str) -> Option<Algorithm> {
    SUPPORTED.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

fn alg_name(a: Algorithm) -> &'static str {
    SUPPORTED
        .iter()
        .find(|(_, x)| *x == a)
        .map_or("?", |(n, _)| n)
}

/// What the token's claims must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    /// Algorithms accepted; `None` accepts every supported one the JWKS has keys for.
    pub algorithms: Option<Vec<Algorithm>>,
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

/// The keys of one JWKS file and the checks every token must pass.
#[derive(Debug)]
pub struct JwtVerifier {
    keys: Vec<Key>,
    /// One validation per supported algorithm (`SUPPORTED` order), prepared once.
    validations: Vec<(Algorithm, Validation)>,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    /// Reads and checks a JWKS file.
    pub fn load(path: &Path, expect: &Expectations) -> Result<Self, String> {
        let text = crate::config::read_text(path, crate::config::MAX_KEY_FILE)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_jwks(&text, expect).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Builds a verifier from JWKS text. Keys for encryption (`use: enc`) and keys of
    /// algorithms fedgate does not verify (or `expect` does not accept) are skipped; a key of
    /// a supported type that does not parse refuses the whole set, and so does a set left
    /// without keys.
    pub fn from_jwks(text: &str, expect: &Expectations) -> Result<Self, String> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS (JSON): {e}"))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("not a JWKS: no \"keys\" array")?;
        let accepted = |a: Algorithm| expect.algorithms.as_ref().is_none_or(|l| l.contains(&a));
        let mut keys: Vec<Key> = Vec::with_capacity(list.len());
        for (i, jwk) in list.iter().enumerate() {
            let key = parse_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
            let Some(key) = key.filter(|k| accepted(k.alg)) else {
                continue;
            };
            if let Some(kid) = &key.kid {
                if keys.iter().any(|k| k.kid.as_ref() == Some(kid)) {
                    return Err(format!("keys[{i}]: kid {kid:?} is used twice"));
                }
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(format!(
                "no usable key (supported: HS256, RS256, ES256, EdDSA{})",
                if expect.algorithms.is_some() {
                    ", among the accepted algorithms"
                } else {
                    ""
                }
            ));
        }
        let validations = SUPPORTED
            .iter()
            .filter(|(_, a)| accepted(*a))
            .map(|&(_, alg)| {
                let mut v = Validation::new(alg);
                v.leeway = expect.leeway.as_secs();
                v.validate_nbf = true;
                v.set_issuer(&[&expect.issuer]);
                v.set_audience(&[&expect.audience]);
                v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                (alg, v)
            })
            .collect();
        Ok(JwtVerifier { keys, validations })
    }

    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Verifies a compact JWS and returns its subject.
    pub fn verify(&self, token: &str) -> Result<Arc<str>, Failure> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Failure::invalid("the token is malformed or its algorithm unsupported"))?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(Failure::invalid("the token's algorithm is not accepted"));
        };
        let mut candidates = self.keys.iter().filter(|k| {
            k.alg == header.alg
                && match &header.kid {
                    Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
                    None => true,
                }
        });
        let mut tried = false;
        for k in &mut candidates {
            tried = true;
            match jsonwebtoken::decode::<Claims>(token, &k.key, validation) {
                Ok(data) => return Ok(data.claims.sub.into()),
                // Without a kid, the next key of the same algorithm may be the signer.
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => continue,
                Err(e) => return Err(classify(e.kind())),
            }
        }
        Err(Failure::invalid(if tried {
            "the token's signature does not verify"
        } else {
            "no key of the token's kid and algorithm is known"
        }))
    }
}

fn classify(kind: &ErrorKind) -> Failure {
    match kind {
        ErrorKind::ExpiredSignature => Failure {
            result: AuthResult::Expired,
            reason: "the token has expired",
        },
        // Not valid yet is not expired: the token may be fine later, but is not now.
        ErrorKind::ImmatureSignature => Failure::invalid("the token is not valid yet (nbf)"),
        ErrorKind::InvalidIssuer => Failure::invalid("the token's issuer is not accepted"),
        ErrorKind::InvalidAudience => Failure::invalid("the token's audience is not accepted"),
        ErrorKind::MissingRequiredClaim(_) => {
            Failure::invalid("the token lacks a required claim (exp, iss, aud, sub)")
        }
        ErrorKind::InvalidAlgorithm => {
            Failure::invalid("the token's algorithm does not fit the key")
        }
        _ => Failure::invalid("the token is not valid"),
    }
}

/// The token of `Authorization: Bearer <token>`, if the request carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = super::api_key::split_scheme(v)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = std::str::from_utf8(rest).ok()?.trim();
    (!token.is_empty()).then_some(token)
}

fn b64(field: &str, v: Option<&Value>) -> Result<Vec<u8>, String> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| format!("\"{field}\" is missing"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("\"{field}\" is not base64url: {e}"))
}

fn b64_str(field: &str, v: Option<&Value>) -> Result<String, String> {
    b64(field, v).map(|bytes| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// One JWK as a key bound to its algorithm; `None` for a key fedgate has no use for.
fn parse_jwk(jwk: &Value) -> Result<Option<Key>, String> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let kty = s("kty").ok_or("\"kty\" is missing")?;
    let implied = match (kty, s("crv")) {
        ("RSA", _) => Algorithm::RS256,
        ("EC", Some("P-256")) => Algorithm::ES256,
        ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
        ("oct", _) => Algorithm::HS256,
        // Other curves and key types: not ours to verify.
        _ => return Ok(None),
    };
    let alg = match s("alg") {
        None => implied,
        Some(name) => match algorithm(name) {
            Some(a) if a == implied => a,
            Some(_) => {
                return Err(format!(
                    "\"alg\" {name:?} does not fit a key of kty {kty:?} (expected {})",
                    alg_name(implied)
                ))
            }
            // e.g. RS512 on an RSA key: a key for another verifier.
            None => return Ok(None),
        },
    };
    let key = match alg {
        Algorithm::RS256 => {
            let n = b64("n", jwk.get("n"))?;
            let e = b64("e", jwk.get("e"))?;
            let bits = n.iter().skip_while(|&&b| b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!(
                    "an RSA modulus of {bits} bits is too short (2048 at least)"
                ));
            }
            if e.is_empty() {
                return Err("\"e\" is empty".into());
            }
            DecodingKey::from_rsa_raw_components(&n, &e)
        }
        Algorithm::ES256 => {
            let (x, y) = (b64("x", jwk.get("x"))?, b64("y", jwk.get("y"))?);
            if x.len() != 32 || y.len() != 32 {
                return Err("a P-256 key has 32-byte \"x\" and \"y\"".into());
            }
            DecodingKey::from_ec_components(
                &b64_str("x", jwk.get("x"))?,
                &b64_str("y", jwk.get("y"))?,
            )
            .map_err(|e| format!("not a P-256 key: {e}"))?
        }
        Algorithm::EdDSA => {
            if b64("x", jwk.get("x"))?.len() != 32 {
                return Err("an Ed25519 key has a 32-byte \"x\"".into());
            }
            DecodingKey::from_ed_components(&b64_str("x", jwk.get("x"))?)
                .map_err(|e| format!("not an Ed25519 key: {e}"))?
        }
        _ => {
            let k = b64("k", jwk.get("k"))?;
            // RFC 7518 3.2: an HS256 key is at least as long as the hash.
            if k.len() < 32 {
                return Err(format!(
                    "an HS256 secret of {} bytes is too short (32 at least)",
                    k.len()
                ));
            }
            DecodingKey::from_secret(&k)
        }
    };
    Ok(Some(Key {
        kid: s("kid").map(str::to_string),
        alg,
        key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use ring::rand::SystemRandom;
    use ring::signature::{self, KeyPair as _};
    use std::time::{SystemTime, UNIX_EPOCH};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn expect() -> Expectations {
        Expectations {
            issuer: "https://id.example".into(),
            audience: "fedgate".into(),
            leeway: Duration::from_secs(60),
            algorithms: None,
        }
    }

    fn claims(extra: &serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({
            "iss": "https://id.example", "aud": "fedgate", "sub": "alice", "exp": now() + 300,
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    /// Signs with ring directly, so these tests do not trust the crate they test to sign.
    fn token(
        header: &serde_json::Value,
        claims: &serde_json::Value,
        sign: impl Fn(&[u8]) -> Vec<u8>,
    ) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig))
    }

    fn hs(msg: &[u8]) -> Vec<u8> {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
        ring::hmac::sign(&k, msg).as_ref().to_vec()
    }

    fn ed_pair() -> signature::Ed25519KeyPair {
        let doc = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap()
    }

    fn jwks(ed: &signature::Ed25519KeyPair) -> String {
        serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hs", "k": B64.encode(SECRET)},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": B64.encode(ed.public_key().as_ref())},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
        ]})
        .to_string()
    }

    #[test]
    fn valid_tokens_give_their_subject() {
        let ed = ed_pair();
        let v = JwtVerifier::from_jwks(&jwks(&ed), &expect()).unwrap();
        assert_eq!(v.keys(), 2, "the enc key and the P-384 key are skipped");
        let t = token(
            &serde_json::json!({"alg": "HS256", "kid": "hs"}),
            &claims(&serde_json::json!({})),
            hs,
        );
        assert_eq!(v.verify(&t).unwrap().as_ref(), "alice");
        // Without a kid, keys of the token's algorithm are tried.
        let t = token(
            &serde_json::json!({"alg": "EdDSA"}),
            &claims(&serde_json::json!({"sub": "bob"})),
            |m| ed.sign(m).as_ref().to_vec(),
        );
        assert_eq!(v.verify(&t).unwrap().as_ref(), "bob");
    }

    #[test]
    fn claims_and_time_are_checked_with_leeway() {
        let v = JwtVerifier::from_jwks(&jwks(&ed_pair()), &expect()).unwrap();
        let h = serde_json::json!({"alg": "HS256", "kid": "hs"});
        let check = |extra: serde_json::Value| v.verify(&token(&h.clone(), &claims(&extra), hs));
        let result = |extra| check(extra).map(|_| ()).map_err(|f| f.result);
        assert_eq!(
            result(serde_json::json!({"exp": now() - 3600})),
            Err(AuthResult::Expired)
        );
        // Within the leeway of 60s.
        assert_eq!(result(serde_json::json!({"exp": now() - 30})), Ok(()));
        assert_eq!(
            result(serde_json::json!({"nbf": now() + 3600})),
            Err(AuthResult::Invalid)
        );
        assert_eq!(result(serde_json::json!({"nbf": now() + 30})), Ok(()));
        assert_eq!(
            result(serde_json::json!({"aud": "other"})),
            Err(AuthResult::Invalid)
        );
        assert_eq!(
            result(serde_json::json!({"aud": ["other", "fedgate"]})),
            Ok(())
        );
        assert_eq!(
            result(serde_json::json!({"iss": "https://evil.example"})),
            Err(AuthResult::Invalid)
        );
        for claim in ["exp", "iss", "aud", "sub"] {
            assert_eq!(
                result(serde_json::json!({ claim: null })),
                Err(AuthResult::Invalid),
                "{claim}"
            );
        }
        assert_eq!(
            check(serde_json::json!({"aud": "other"}))
                .unwrap_err()
                .reason,
            "the token's audience is not accepted"
        );
    }

    #[test]
    fn none_confusion_unknown_keys_and_garbage_are_invalid() {
        let ed = ed_pair();
        let v = JwtVerifier::from_jwks(&jwks(&ed), &expect()).unwrap();
        let c = claims(&serde_json::json!({}));
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none"}"#),
            B64.encode(c.to_string())
        );
        // HS256 "signed" with the Ed25519 public key as the secret: algorithm confusion.
        let public = ed.public_key().as_ref().to_vec();
        let confused = token(&serde_json::json!({"alg": "HS256", "kid": "ed"}), &c, |m| {
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public);
            ring::hmac::sign(&k, m).as_ref().to_vec()
        });
        let other_secret = token(&serde_json::json!({"alg": "HS256"}), &c, |m| {
            let k =
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"another secret, long enough....!");
            ring::hmac::sign(&k, m).as_ref().to_vec()
        });
        let unknown_kid = token(&serde_json::json!({"alg": "HS256", "kid": "nope"}), &c, hs);
        let tampered = {
            let t = token(&serde_json::json!({"alg": "HS256"}), &c, hs);
            let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
            parts[1] = B64.encode(claims(&serde_json::json!({"sub": "root"})).to_string());
            parts.join(".")
        };
        let rs = token(&serde_json::json!({"alg": "RS256"}), &c, hs);
        for (name, t) in [
            ("none", none.as_str()),
            ("confused", &confused),
            ("other secret", &other_secret),
            ("unknown kid", &unknown_kid),
            ("tampered", &tampered),
            ("no RSA keys", &rs),
            ("garbage", "a.b.c"),
            ("two parts", "a.b"),
        ] {
            assert_eq!(
                v.verify(t).unwrap_err().result,
                AuthResult::Invalid,
                "{name}"
            );
        }
    }

    #[test]
    fn accepted_algorithms_limit_keys_and_tokens() {
        let mut e = expect();
        e.algorithms = Some(vec![Algorithm::EdDSA]);
        let v = JwtVerifier::from_jwks(&jwks(&ed_pair()), &e).unwrap();
        assert_eq!(v.keys(), 1);
        let t = token(
            &serde_json::json!({"alg": "HS256", "kid": "hs"}),
            &claims(&serde_json::json!({})),
            hs,
        );
        assert_eq!(
            v.verify(&t).unwrap_err().reason,
            "the token's algorithm is not accepted"
        );
        e.algorithms = Some(vec![Algorithm::RS256]);
        assert!(JwtVerifier::from_jwks(&jwks(&ed_pair()), &e)
            .unwrap_err()
            .contains("no usable key"));
    }

    #[test]
    fn bad_jwks_files_say_which_key() {
        let cases = [
            ("[]", "no \"keys\""),
            ("{\"keys\": [}", "not a JWKS"),
            (
                r#"{"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}"#,
                "keys[0]: an HS256 secret of 5 bytes",
            ),
            (
                r#"{"keys": [{"kty": "OKP", "crv": "Ed25519"}]}"#,
                "keys[0]: \"x\" is missing",
            ),
            (
                r#"{"keys": [{"kty": "RSA", "alg": "ES256", "n": "AQAB", "e": "AQAB"}]}"#,
                "does not fit",
            ),
            (
                r#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#,
                "too short",
            ),
            (
                r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"}]}"#,
                "32-byte",
            ),
            (
                r#"{"keys": [{"kty": "OKP", "crv": "X25519", "x": "AQAB"}]}"#,
                "no usable key",
            ),
        ];
        for (text, want) in cases {
            let e = JwtVerifier::from_jwks(text, &expect()).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let twice = format!(
            r#"{{"keys": [{{"kty": "oct", "kid": "a", "k": "{0}"}}, {{"kty": "oct", "kid": "a", "k": "{0}"}}]}}"#,
            B64.encode(SECRET)
        );
        assert!(JwtVerifier::from_jwks(&twice, &expect())
            .unwrap_err()
            .contains("keys[1]: kid \"a\" is used twice"));
    }

    #[test]
    fn bearer_tokens_are_taken_from_authorization() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer a.b.c".parse().unwrap());
        assert_eq!(bearer(&h), Some("a.b.c"));
        h.insert(AUTHORIZATION, "bearer  a.b.c ".parse().unwrap());
        assert_eq!(bearer(&h), Some("a.b.c"));
        h.insert(AUTHORIZATION, "Basic YTpi".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
