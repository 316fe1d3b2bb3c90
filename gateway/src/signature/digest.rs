//! Body digests, checked against the exact body bytes the gateway buffered: `Digest`
//! (RFC 3230, `SHA-256=<base64>`, what draft-cavage signers send) and `Content-Digest`
//! (RFC 9530, a structured dictionary `sha-256=:<base64>:`, what RFC 9421 signers send).
//!
//! A signature covers the digest field, and the digest covers the body: both checks are
//! needed before a signed POST can be trusted.

use base64::Engine;
use http::HeaderMap;
use ring::digest::{digest, SHA256, SHA512};

use super::{Outcome, Rejection};

/// Which digest fields a request carried, each checked against the body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// `Digest` was present and every supported algorithm in it matched.
    pub digest: bool,
    /// `Content-Digest` was present and every supported algorithm in it matched.
    pub content_digest: bool,
}

impl Checked {
    pub fn any(self) -> bool {
        self.digest || self.content_digest
    }
}

/// Checks every digest field of `headers` against `body`. A field with no algorithm this
/// gateway computes (SHA-256, SHA-512) is `unsupported_algorithm`; a wrong value is
/// `digest_mismatch`; an unreadable field is `malformed`. No digest field at all is fine
/// here: whether one is required is the signature's coverage rule.
pub fn check(headers: &HeaderMap, body: &[u8]) -> Result<Checked, Rejection> {
    let mut checked = Checked::default();
    let digest_lines: Vec<_> = headers.get_all("digest").iter().collect();
    if !digest_lines.is_empty() {
        let mut pairs = Vec::new();
        for line in digest_lines {
            let text = line
                .to_str()
                .map_err(|_| Rejection::malformed("Digest is not text"))?;
            for member in text.split(',') {
                let (alg, value) = member
                    .trim()
                    .split_once('=')
                    .ok_or_else(|| Rejection::malformed("Digest is not algorithm=value"))?;
                pairs.push((alg.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        verify_pairs(
            "Digest",
            pairs.iter().map(|(a, v)| (a.as_str(), Encoded::Base64(v))),
            body,
        )?;
        checked.digest = true;
    }
    let content_lines: Vec<_> = headers.get_all("content-digest").iter().collect();
    if !content_lines.is_empty() {
        let joined = content_lines
            .iter()
            .map(|v| v.as_bytes())
            .collect::<Vec<_>>()
            .join(&b", "[..]);
        let dict: sfv::Dictionary = sfv::Parser::new(&joined)
            .parse()
            .map_err(|e| Rejection::malformed(format!("Content-Digest: {e}")))?;
        let mut pairs = Vec::new();
        for (key, entry) in &dict {
            let sfv::ListEntry::Item(item) = entry else {
                return Err(Rejection::malformed("Content-Digest: a value is a list"));
            };
            let bytes = item
                .bare_item
                .as_byte_sequence()
                .ok_or_else(|| Rejection::malformed("Content-Digest: a value is not :bytes:"))?;
            pairs.push((key.as_str().to_string(), bytes.to_vec()));
        }
        verify_pairs(
            "Content-Digest",
            pairs.iter().map(|(a, v)| (a.as_str(), Encoded::Raw(v))),
            body,
        )?;
        checked.content_digest = true;
    }
    Ok(checked)
}

enum Encoded<'a> {
    Base64(&'a str),
    Raw(&'a [u8]),
}

/// Every supported algorithm must match; at least one must be supported.
fn verify_pairs<'a>(
    field: &str,
    pairs: impl Iterator<Item = (&'a str, Encoded<'a>)>,
    body: &[u8],
) -> Result<(), Rejection> {
    let mut supported = 0;
    for (alg, value) in pairs {
        let algorithm = match alg {
            "sha-256" => &SHA256,
            "sha-512" => &SHA512,
            _ => continue,
        };
        supported += 1;
        let expected = match value {
            Encoded::Raw(bytes) => bytes.to_vec(),
            Encoded::Base64(text) => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| Rejection::malformed(format!("{field}: {alg} is not base64")))?,
        };
        if digest(algorithm, body).as_ref() != expected.as_slice() {
            return Err(Rejection::new(
                Outcome::DigestMismatch,
                format!("the body does not match its {field} ({alg})"),
            ));
        }
    }
    if supported == 0 {
        return Err(Rejection::new(
            Outcome::UnsupportedAlgorithm,
            format!("{field} has no SHA-256 or SHA-512 value"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"hello": "world"}"#;
    // RFC 9530 Appendix D's example body and its digests, as published.
    const SHA256_B64: &str = "X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn matching_digests_pass_in_both_fields() {
        let sha512 =
            base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(&SHA512, BODY));
        let h = headers(&[
            ("digest", &format!("SHA-256={SHA256_B64}")),
            (
                "content-digest",
                &format!("sha-256=:{SHA256_B64}:, sha-512=:{sha512}:"),
            ),
        ]);
        let checked = check(&h, BODY).unwrap();
        assert!(checked.digest && checked.content_digest);
        assert_eq!(check(&HeaderMap::new(), BODY).unwrap(), Checked::default());
        // Unknown algorithms beside a known one are ignored.
        let h = headers(&[("digest", &format!("MD5=abc, sha-256={SHA256_B64}"))]);
        assert!(check(&h, BODY).unwrap().digest);
    }

    #[test]
    fn wrong_unknown_and_unreadable_digests_say_which() {
        let outcome = |pairs: &[(&str, &str)]| check(&headers(pairs), BODY).unwrap_err().outcome;
        let other = base64::engine::general_purpose::STANDARD
            .encode(ring::digest::digest(&SHA256, b"tampered"));
        assert_eq!(
            outcome(&[("digest", &format!("SHA-256={other}"))]),
            Outcome::DigestMismatch
        );
        assert_eq!(
            outcome(&[("content-digest", &format!("sha-256=:{other}:"))]),
            Outcome::DigestMismatch
        );
        assert_eq!(
            outcome(&[("digest", "MD5=rL0Y20zC+Fzt72VPzMSk2A==")]),
            Outcome::UnsupportedAlgorithm
        );
        assert_eq!(outcome(&[("digest", "SHA-256")]), Outcome::Malformed);
        assert_eq!(outcome(&[("digest", "SHA-256=***")]), Outcome::Malformed);
        assert_eq!(
            outcome(&[("content-digest", &format!("sha-256={SHA256_B64}"))]),
            Outcome::Malformed
        );
    }
}
