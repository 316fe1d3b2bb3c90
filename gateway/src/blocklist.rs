//! Phase 3: the blocklist. Domains (each with its subdomains) and IP networks, from the
//! config and from a file reloaded with it. A request is refused with 403 when the client
//! address is in a blocked network, or when it is signed with a key of a blocked instance:
//! the host of the key id it claims, read from its `Signature`, `Authorization` or
//! `Signature-Input` field without verifying anything, so a blocked instance costs no
//! signature check and no body read. (A request that claims another instance's key fails
//! phase 6 on enforcing routes.)
//!
//! The file has one entry per line: a domain (`evil.example`, `*.evil.example`), an address
//! or a CIDR block; `#` starts a comment. Mastodon's domain-block CSV export is read as it is:
//! the first column is the domain, and its `#domain,...` header is a comment.

use std::collections::HashSet;
use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::netset::{parse_net, NetSet};

/// Why a request was refused: the `reason` label of `fedgate_blocked_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client address is in a blocked network.
    Address,
    /// The request is signed with a key of a blocked instance.
    Instance,
}

impl Reason {
    pub const ALL: [Reason; 2] = [Reason::Address, Reason::Instance];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Address => "address",
            Reason::Instance => "instance",
        }
    }
}

/// The validated blocklist of one configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    domains: HashSet<Box<str>>,
    nets: NetSet,
}

impl Blocklist {
    /// Entries as given in the config or read from the file: each a domain, an address or
    /// a CIDR block. The error says what is wrong with which entry.
    pub fn add(&mut self, entry: &str) -> Result<(), String> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("empty entry".into());
        }
        if entry.contains(':') || entry.contains('/') || entry.parse::<IpAddr>().is_ok() {
            self.nets.insert(parse_net(entry)?);
            return Ok(());
        }
        self.domains.insert(normalize_domain(entry)?.into());
        Ok(())
    }

    pub fn add_net(&mut self, net: IpNet) {
        self.nets.insert(net);
    }

    /// Reads a blocklist file's text; errors name the line.
    pub fn add_file(&mut self, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default();
            // Mastodon's CSV export: the domain is the first column.
            let entry = line.split(',').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            self.add(entry)
                .map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        Ok(())
    }

    /// Domains and networks on the list.
    pub fn len(&self) -> usize {
        self.domains.len() + self.nets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn has_domains(&self) -> bool {
        !self.domains.is_empty()
    }

    pub fn has_networks(&self) -> bool {
        !self.nets.is_empty()
    }

    pub fn blocks_address(&self, ip: IpAddr) -> bool {
        self.nets.contains(ip)
    }

    /// Whether `host` or any domain above it is blocked. `host` may carry a port.
    pub fn blocks_host(&self, host: &str) -> bool {
        let host = strip_port(host).trim_end_matches('.');
        if host.is_empty() {
            return false;
        }
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let mut rest = host;
        loop {
            if self.domains.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => rest = parent,
                _ => return false,
            }
        }
    }

    /// Phase 3 for one request: the reason to refuse it, if any. `client` is the client
    /// address as the trusted proxies report it.
    pub fn check(&self, client: IpAddr, headers: &HeaderMap) -> Option<Reason> {
        if self.has_networks() && self.blocks_address(client) {
            return Some(Reason::Address);
        }
        if self.has_domains() {
            if let Some(host) = claimed_key_id(headers).map(key_id_host) {
                if self.blocks_host(host) {
                    return Some(Reason::Instance);
                }
            }
        }
        None
    }
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

fn normalize_domain(entry: &str) -> Result<String, String> {
    let d = entry.strip_prefix("*.").unwrap_or(entry);
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    let valid = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!(
            "{entry:?} is not a domain, an IP address or a CIDR block (write internationalised domains in their xn-- form)"
        ));
    }
    Ok(d)
}

/// The key id a request claims, from the first signature field present: cavage
/// `Signature` or `Authorization: Signature`, or RFC 9421 `Signature-Input`.
pub fn claimed_key_id(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("signature-input") {
        return param(v.to_str().ok()?, "keyid=\"");
    }
    if let Some(v) = headers.get("signature") {
        return param(v.to_str().ok()?, "keyid=\"");
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let rest = auth
        .get(..10)?
        .eq_ignore_ascii_case("signature ")
        .then(|| &auth[10..])?;
    param(rest, "keyid=\"")
}

/// The quoted value after `name` (ASCII case-insensitive), up to the closing quote.
fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let at = value
        .as_bytes()
        .windows(name.len())
        .position(|w| w.eq_ignore_ascii_case(name.as_bytes()))?;
    let rest = &value[at + name.len()..];
    rest.find('"').map(|end| &rest[..end])
}

/// The host of a key id URL (`remote.example` for `https://remote.example/users/bob#main-key`).
pub fn key_id_host(key_id: &str) -> &str {
    let rest = key_id.split_once("://").map_or(key_id, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit('@').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn list(entries: &str) -> Blocklist {
        let mut b = Blocklist::default();
        b.add_file(entries).unwrap();
        b
    }

    #[test]
    fn domains_block_their_subdomains_only() {
        let b = list("evil.example\n*.spam.example.\n# comment\n\nBad.Example # trailing\n");
        assert_eq!(b.len(), 3);
        assert!(b.blocks_host("evil.example"));
        assert!(b.blocks_host("a.b.evil.example"));
        assert!(b.blocks_host("EVIL.example:443"));
        assert!(b.blocks_host("spam.example"));
        assert!(b.blocks_host("bad.example"));
        assert!(!b.blocks_host("notevil.example"));
        assert!(!b.blocks_host("example"));
        assert!(!b.blocks_host("evil.example.org"));
        assert!(!b.blocks_host(""));
    }

    #[test]
    fn addresses_and_networks() {
        let b = list("192.0.2.0/24\n2001:db8::/32\n198.51.100.7\n");
        assert!(b.blocks_address("192.0.2.1".parse().unwrap()));
        assert!(b.blocks_address("198.51.100.7".parse().unwrap()));
        assert!(b.blocks_address("2001:db8::5".parse().unwrap()));
        assert!(!b.blocks_address("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn mastodon_csv_export_is_read() {
        let csv = "#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate\n\
                   evil.example,suspend,true,true,Spam,false\n\
                   noisy.example,silence,false,false,,false\n";
        let b = list(csv);
        assert_eq!(b.len(), 2);
        assert!(b.blocks_host("noisy.example"));
    }

    #[test]
    fn bad_lines_are_named() {
        let mut b = Blocklist::default();
        let e = b.add_file("ok.example\nnot a domain\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = b.add_file("10.0.0.1/8").unwrap_err();
        assert!(e.contains("host bits"), "{e}");
        assert!(b.add("ünïcode.example").is_err());
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn instances_come_from_the_claimed_key_id() {
        let b = list("evil.example\n192.0.2.0/24\n");
        let ok: IpAddr = "203.0.113.9".parse().unwrap();
        let cavage = headers(
            "signature",
            r#"keyId="https://evil.example/users/x#main-key",algorithm="rsa-sha256",headers="(request-target) host date",signature="AAAA""#,
        );
        assert_eq!(b.check(ok, &cavage), Some(Reason::Instance));
        let auth = headers(
            "authorization",
            r#"Signature keyId="https://a.evil.example/actor#main-key",signature="AAAA""#,
        );
        assert_eq!(b.check(ok, &auth), Some(Reason::Instance));
        let rfc = headers(
            "signature-input",
            r#"sig1=("@method" "@target-uri");created=1;keyid="https://evil.example/k""#,
        );
        assert_eq!(b.check(ok, &rfc), Some(Reason::Instance));
        let good = headers(
            "signature",
            r#"keyId="https://good.example/users/x#main-key",signature="AAAA""#,
        );
        assert_eq!(b.check(ok, &good), None);
        assert_eq!(b.check(ok, &HeaderMap::new()), None);
        assert_eq!(
            b.check("192.0.2.3".parse().unwrap(), &good),
            Some(Reason::Address)
        );
    }

    #[test]
    fn key_id_hosts() {
        assert_eq!(
            key_id_host("https://remote.example/users/bob#main-key"),
            "remote.example"
        );
        assert_eq!(key_id_host("https://u@h.example:8443/k"), "h.example:8443");
        assert_eq!(key_id_host("test-key-rsa"), "test-key-rsa");
    }
}
