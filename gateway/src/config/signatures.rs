//! `[signatures]` and `[signatures.fetch]`: the clock window and body limit of HTTP
//! signature checks, the trust store (keys parsed here, so a bad key refuses the config), and
//! how keys missing from it are fetched.

use std::path::Path;
use std::time::Duration;

use super::parse::{byte_size, duration, duration_or_zero, resolve};
use super::{file, read_text, ConfigError, MAX_KEY_FILE};

/// `[signatures]`, validated: keys are parsed when the config is loaded, so a bad key file
/// refuses the config and names the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignaturesConfig {
    /// When a signature is valid: `clock_skew` (default 1 h, 0 allowed), `max_age`
    /// (default 5 min) and `max_expires` (default 12 h).
    pub window: crate::signature::Window,
    /// Largest body, in bytes, read whole to check its digest on a route that checks
    /// signatures and sets no `buffer_body` (`max_body`, default 1 MiB, at most 1 GiB);
    /// larger bodies get 413.
    pub max_body: usize,
    /// Instances with their own `instance` label in
    /// `fedgate_signature_failures_by_instance_total`; later ones count as `other`
    /// (`max_instances`, default 1000).
    pub max_instances: usize,
    /// The trust store (`[[signatures.keys]]`): each key id, as signers send it, with its
    /// parsed public key; no key id twice.
    pub keys: Vec<(String, crate::signature::key::PublicKey)>,
    /// How keys missing from `keys` are fetched (`[signatures.fetch]`, off by default).
    pub fetch: FetchConfig,
}

impl Default for SignaturesConfig {
    fn default() -> Self {
        SignaturesConfig {
            window: crate::signature::Window::default(),
            max_body: 1 << 20,
            max_instances: 1000,
            keys: Vec::new(),
            fetch: FetchConfig::default(),
        }
    }
}

/// `[signatures.fetch]`, validated: how keys missing from the trust store are fetched from
/// their key id URL and cached. A reload that leaves it equal keeps the key cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// Whether missing keys are fetched at all (`enabled`, default `false`).
    pub enabled: bool,
    /// Limit on one whole fetch: resolve, connect, TLS, answer and body (`timeout`, default
    /// 5 s, at most 60 s since the request waits for it).
    pub timeout: Duration,
    /// How long a fetched key is used before it is fetched again (`ttl`, default 1 h).
    pub ttl: Duration,
    /// How long a failed fetch is remembered; requests naming that key id meanwhile get
    /// `unknown_key` without a fetch (`negative_ttl`, default 5 min).
    pub negative_ttl: Duration,
    /// Shortest time between two fetches of a key id whose fetched key did not verify a
    /// signature, for key rotation (`refetch_interval`, default 1 min).
    pub refetch_interval: Duration,
    /// Keys and failures held at most, the oldest dropped first (`max_entries`, default
    /// 10000, at most 10 000 000).
    pub max_entries: usize,
    /// Largest actor document read, in bytes (`max_document_bytes`, default 256 KiB, at
    /// most 16 MiB).
    pub max_document_bytes: usize,
    /// Failed fetches in a row from one host that open its breaker (`breaker_failures`,
    /// default 5, at least 1).
    pub breaker_failures: u32,
    /// How long an open breaker refuses fetches from its host before one trial fetch
    /// (`breaker_open`, default 30 s).
    pub breaker_open: Duration,
    /// Whether hosts resolving to loopback, private, link-local and other non-public
    /// addresses may be fetched from (`allow_private_addresses`, default `false`).
    pub allow_private_addresses: bool,
    /// Whether `http://` key ids are fetched; otherwise only `https://` ones
    /// (`allow_http`, default `false`).
    pub allow_http: bool,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            enabled: false,
            timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(300),
            refetch_interval: Duration::from_secs(60),
            max_entries: 10_000,
            max_document_bytes: 256 << 10,
            breaker_failures: 5,
            breaker_open: Duration::from_secs(30),
            allow_private_addresses: false,
            allow_http: false,
        }
    }
}

pub(super) fn validate_signatures(
    s: &file::SignaturesSection,
    base: &Path,
) -> Result<SignaturesConfig, ConfigError> {
    use crate::signature::key::PublicKey;
    let defaults = SignaturesConfig::default();
    let window = crate::signature::Window {
        skew: duration_or_zero(
            "signatures.clock_skew",
            s.clock_skew.as_deref(),
            defaults.window.skew,
        )?,
        max_age: duration(
            "signatures.max_age",
            s.max_age.as_deref(),
            defaults.window.max_age,
        )?,
        max_expires: duration(
            "signatures.max_expires",
            s.max_expires.as_deref(),
            defaults.window.max_expires,
        )?,
    };
    let max_body = match &s.max_body {
        None => defaults.max_body,
        Some(v) => byte_size("signatures.max_body", v, 1 << 30)?,
    };
    let mut keys: Vec<(String, PublicKey)> = Vec::with_capacity(s.keys.len());
    for (i, k) in s.keys.iter().enumerate() {
        let field = |f: &str| format!("signatures.keys[{i}].{f}");
        let key_id = k
            .key_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| ConfigError::field(field("key_id"), "missing"))?;
        if keys.iter().any(|(id, _)| *id == key_id) {
            return Err(ConfigError::field(
                field("key_id"),
                format!("{key_id:?} is listed twice"),
            ));
        }
        let key = match (&k.pem, &k.pem_file, &k.multibase) {
            (Some(pem), None, None) => PublicKey::from_pem(pem)
                .map_err(|e| ConfigError::field(field("pem"), e.to_string()))?,
            (None, Some(path), None) => {
                let path = resolve(base, path);
                let text = read_text(&path, MAX_KEY_FILE).map_err(|e| {
                    ConfigError::field(field("pem_file"), format!("{}: {e}", path.display()))
                })?;
                PublicKey::from_pem(&text).map_err(|e| {
                    ConfigError::field(field("pem_file"), format!("{}: {e}", path.display()))
                })?
            }
            (None, None, Some(m)) => PublicKey::from_multibase(m)
                .map_err(|e| ConfigError::field(field("multibase"), e.to_string()))?,
            _ => {
                return Err(ConfigError::field(
                    format!("signatures.keys[{i}]"),
                    "give exactly one of pem, pem_file or multibase",
                ))
            }
        };
        keys.push((key_id, key));
    }
    Ok(SignaturesConfig {
        window,
        max_body,
        max_instances: s.max_instances.unwrap_or(defaults.max_instances),
        keys,
        fetch: validate_fetch(&s.fetch)?,
    })
}

fn validate_fetch(f: &file::FetchSection) -> Result<FetchConfig, ConfigError> {
    let d = FetchConfig::default();
    let field = |n: &str| format!("signatures.fetch.{n}");
    let max_entries = f.max_entries.unwrap_or(d.max_entries);
    if max_entries == 0 || max_entries > 10_000_000 {
        return Err(ConfigError::field(
            field("max_entries"),
            "must be between 1 and 10000000",
        ));
    }
    let breaker_failures = f.breaker_failures.unwrap_or(d.breaker_failures);
    if breaker_failures == 0 {
        return Err(ConfigError::field(
            field("breaker_failures"),
            "must be at least 1",
        ));
    }
    let timeout = duration(&field("timeout"), f.timeout.as_deref(), d.timeout)?;
    if timeout > Duration::from_secs(60) {
        return Err(ConfigError::field(
            field("timeout"),
            "must be at most 60s: requests wait for the fetch",
        ));
    }
    Ok(FetchConfig {
        enabled: f.enabled.unwrap_or(d.enabled),
        timeout,
        ttl: duration(&field("ttl"), f.ttl.as_deref(), d.ttl)?,
        negative_ttl: duration(
            &field("negative_ttl"),
            f.negative_ttl.as_deref(),
            d.negative_ttl,
        )?,
        refetch_interval: duration(
            &field("refetch_interval"),
            f.refetch_interval.as_deref(),
            d.refetch_interval,
        )?,
        max_entries,
        max_document_bytes: match &f.max_document_bytes {
            None => d.max_document_bytes,
            Some(v) => byte_size(&field("max_document_bytes"), v, 16 << 20)?,
        },
        breaker_failures,
        breaker_open: duration(
            &field("breaker_open"),
            f.breaker_open.as_deref(),
            d.breaker_open,
        )?,
        allow_private_addresses: f
            .allow_private_addresses
            .unwrap_or(d.allow_private_addresses),
        allow_http: f.allow_http.unwrap_or(d.allow_http),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{field_of, parse, MINIMAL};
    use super::*;

    #[test]
    fn fetch_settings_have_defaults_and_bad_ones_name_their_field() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.signatures.fetch, FetchConfig::default());
        assert!(!c.signatures.fetch.enabled);
        let set = format!(
            "{MINIMAL}[signatures.fetch]\nenabled = true\ntimeout = \"2s\"\nmax_document_bytes = \"64KiB\"\nallow_http = true\n"
        );
        let f = parse(&set).unwrap().signatures.fetch;
        assert!(f.enabled && f.allow_http && !f.allow_private_addresses);
        assert_eq!(f.timeout, Duration::from_secs(2));
        assert_eq!(f.max_document_bytes, 64 << 10);
        for (line, name) in [
            ("timeout = \"soon\"", "timeout"),
            ("timeout = \"5m\"", "timeout"),
            ("ttl = \"0s\"", "ttl"),
            ("negative_ttl = \"x\"", "negative_ttl"),
            ("max_entries = 0", "max_entries"),
            ("max_document_bytes = \"1TB\"", "max_document_bytes"),
            ("breaker_failures = 0", "breaker_failures"),
            ("breaker_open = \"-\"", "breaker_open"),
        ] {
            let text = format!("{MINIMAL}[signatures.fetch]\n{line}\n");
            assert_eq!(
                field_of(&text),
                format!("signatures.fetch.{name}"),
                "{line}"
            );
        }
    }
}
