//! Phase 5, API keys: the key a client presents in the configured header is hashed with
//! SHA-256 and compared with every stored hash in constant time. The config holds only
//! hashes, so neither the file nor a memory dump gives a key away, and the lookup takes the
//! same time whichever key (if any) matched.

use std::sync::Arc;

use http::header::{HeaderName, AUTHORIZATION};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::Failure;

/// The header clients send their key in, unless `[auth] api_key_header` says otherwise.
pub const DEFAULT_HEADER: &str = "x-api-key";

/// The configured keys: the header they arrive in and (hash, principal) pairs.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    header: HeaderName,
    /// In `Authorization` a key is written `ApiKey <key>`, so the field can also carry
    /// other schemes (a bearer token for the JWT method).
    prefixed: bool,
    keys: Vec<([u8; 32], Arc<str>)>,
}

impl Default for ApiKeys {
    fn default() -> Self {
        ApiKeys::new(HeaderName::from_static(DEFAULT_HEADER), Vec::new())
    }
}

impl ApiKeys {
    /// `keys` are SHA-256 digests of the keys with their principals; the config refuses
    /// duplicate digests, so at most one entry matches a key.
    pub fn new(header: HeaderName, keys: Vec<([u8; 32], Arc<str>)>) -> Self {
        ApiKeys {
            prefixed: header == AUTHORIZATION,
            header,
            keys,
        }
    }

    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a request carries, if any: the header's value (after `ApiKey ` when the
    /// header is `Authorization`), trimmed; an empty value is no key.
    pub fn presented<'a>(&self, headers: &'a HeaderMap) -> Option<&'a [u8]> {
        let mut v = headers.get(&self.header)?.as_bytes();
        if self.prefixed {
            let (scheme, rest) = split_scheme(v)?;
            if !scheme.eq_ignore_ascii_case(b"apikey") {
                return None;
            }
            v = rest;
        }
        let v = v.trim_ascii();
        (!v.is_empty()).then_some(v)
    }

    /// The principal whose key this is. Every stored digest is compared, each in constant
    /// time, and the match is selected without a branch, so timing tells nothing about which
    /// entry (or how much of a digest) matched.
    pub fn lookup(&self, key: &[u8]) -> Result<Arc<str>, Failure> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, (stored, _)) in self.keys.iter().enumerate() {
            let eq = stored.ct_eq(&digest);
            index.conditional_assign(&(i as u64), eq);
            found |= eq;
        }
        if bool::from(found) {
            Ok(self.keys[index as usize].1.clone())
        } else {
            Err(Failure::invalid("the API key is not valid"))
        }
    }
}

/// `Scheme rest` of an `Authorization` value.
pub(crate) fn split_scheme(v: &[u8]) -> Option<(&[u8], &[u8])> {
    let v = v.trim_ascii_start();
    let space = v.iter().position(|&b| b == b' ')?;
    Some((&v[..space], &v[space + 1..]))
}

/// Parses the hex SHA-256 of a key as `[[auth.api_keys]] sha256` holds it.
pub fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(format!(
            "expected 64 hex digits (the SHA-256 of the key), got {} characters",
            hex.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
            _ => return Err("expected hex digits (0-9, a-f)".to_string()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys(header: &'static str) -> ApiKeys {
        let entries = (0..50)
            .map(|i| {
                let key = format!("key-{i}");
                (
                    Sha256::digest(key.as_bytes()).into(),
                    Arc::from(format!("p{i}").as_str()),
                )
            })
            .collect();
        ApiKeys::new(HeaderName::from_static(header), entries)
    }

    #[test]
    fn every_stored_key_is_found_and_nothing_else() {
        let k = keys("x-api-key");
        for i in 0..50 {
            assert_eq!(
                k.lookup(format!("key-{i}").as_bytes()).unwrap().as_ref(),
                format!("p{i}")
            );
        }
        for wrong in ["key-50", "key-1 ", "", "KEY-1"] {
            assert_eq!(
                k.lookup(wrong.as_bytes()).unwrap_err().result,
                super::super::AuthResult::Invalid
            );
        }
    }

    #[test]
    fn keys_in_authorization_need_the_apikey_scheme() {
        let k = keys("authorization");
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("ApiKey key-3"));
        assert_eq!(k.presented(&h), Some(&b"key-3"[..]));
        h.insert(AUTHORIZATION, HeaderValue::from_static("apikey   key-3 "));
        assert_eq!(k.presented(&h), Some(&b"key-3"[..]));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer key-3"));
        assert_eq!(k.presented(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("ApiKey "));
        assert_eq!(k.presented(&h), None);
        let plain = keys("x-api-key");
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static(" key-9"));
        assert_eq!(plain.presented(&h), Some(&b"key-9"[..]));
        assert_eq!(plain.presented(&HeaderMap::new()), None);
    }

    #[test]
    fn digests_are_64_hex_digits() {
        let d = Sha256::digest(b"k");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_digest(&hex).unwrap(), <[u8; 32]>::from(d));
        assert_eq!(
            parse_digest(&hex.to_uppercase()).unwrap(),
            <[u8; 32]>::from(d)
        );
        assert!(parse_digest(&hex[1..]).is_err());
        assert!(parse_digest(&format!("{}zz", &hex[2..])).is_err());
    }
}
