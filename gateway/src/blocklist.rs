//! Phase 3: the blocklist. Domains (each with its subdomains) and IP networks, from the
//! config and from a file reloaded with it. A request is refused with 403 when
//!
//! - the client address is in a blocked network (`address`);
//! - it is signed with a key of a blocked instance (`instance`): first the host of the key
//!   id it claims, read by the same parser phase 6 verifies with but without verifying
//!   anything, so a blocked instance costs no signature check and no body read; then, once
//!   phase 6 has verified a signature, the verified signer's host;
//! - its body (on a route that reads it whole) is a JSON activity whose top-level `actor`
//!   is on a blocked domain (`actor`), whoever signed it.
//!
//! The file has one entry per line: a domain (`evil.example`, `*.evil.example`), an address
//! or a CIDR block; `#` starts a comment. Mastodon's domain-block CSV export is read as it is:
//! the first column is the domain, and its `#domain,...` header is a comment.

use std::collections::HashSet;
use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::activity::{is_activity_json, Activity};
use crate::register;
use crate::netset::{parse_net, NetSet};
use crate::signature::instance_of;
use crate::signature::verifier::Signer;
use prometheus::{IntCounterVec, IntGauge, Registry};

/// Why a request was refused: the `reason` label of `fedgate_blocked_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client address is in a blocked network.
    Address,
    /// The request is signed with a key of a blocked instance.
    Instance,
    /// The activity in the body names an actor of a blocked instance.
    Actor,
}

impl Reason {
    /// Every reason, in declaration order (`reason as usize` indexes it).
    pub const ALL: [Reason; 3] = [Reason::Address, Reason::Instance, Reason::Actor];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Address => "address",
            Reason::Instance => "instance",
            Reason::Actor => "actor",
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
            if let Some(key_id) = crate::signature::claimed_key_id(headers) {
                if self.blocks_host(&instance_of(&key_id)) {
                    return Some(Reason::Instance);
                }
            }
        }
        None
    }

    /// After phase 6: whether the instance whose signature verified is blocked.
    pub fn blocks_signer(&self, signer: &Signer) -> bool {
        self.has_domains() && self.blocks_host(&signer.instance)
    }

    /// For a route that read the body whole: `Some(Reason::Actor)` when the body is a JSON
    /// activity (by its `Content-Type`) whose top-level `actor` (an id, an object with an
    /// `id`, or an array of them; every `actor` key) is on a blocked domain. The body is
    /// read by [`Activity::parse`], which builds no document tree.
    pub fn check_activity(&self, headers: &HeaderMap, body: &[u8]) -> Option<Reason> {
        if !self.has_domains() || body.is_empty() || !is_activity_json(headers) {
            return None;
        }
        self.check_actors(&Activity::parse(body)?)
    }

    /// As [`Blocklist::check_activity`], on the request's shared view: the body is parsed
    /// once for the blocklist and every plugin of the request.
    pub fn check_activity_view(&self, view: &crate::activity::LazyActivity) -> Option<Reason> {
        if !self.has_domains() {
            return None;
        }
        self.check_actors(view.get()?)
    }

    fn check_actors(&self, activity: &Activity<'_>) -> Option<Reason> {
        // `instance_of`, not `Activity::actor_host`: it finds a host in ids that are not
        // URLs (`evil.example/u`) too, and it checks every actor, not the first.
        activity
            .actors
            .iter()
            .any(|a| self.blocks_host(&instance_of(a)))
            .then_some(Reason::Actor)
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

/// The blocklist families (phase 3), registered by [`BlocklistFamilies::register`].
#[derive(Debug, Clone)]
pub struct BlocklistFamilies {
    /// `fedgate_blocked_requests_total{reason}`.
    pub blocked: IntCounterVec,
    /// `fedgate_blocklist_size`: domains and networks on the blocklist.
    pub size: IntGauge,
}

impl BlocklistFamilies {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(BlocklistFamilies {
            blocked: register::counter_vec(
                registry,
                "fedgate_blocked_requests_total",
                "Requests refused by the blocklist, by reason (address, instance).",
                &["reason"],
            )?,
            size: register::gauge(
                registry,
                "fedgate_blocklist_size",
                "Domains and networks on the blocklist of the running configuration.",
            )?,
        })
    }
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
    fn the_key_id_is_read_as_the_verifiers_read_it() {
        let b = list("evil.example\n");
        let ok: IpAddr = "203.0.113.9".parse().unwrap();
        for cavage in [
            // Unquoted, spaced, behind a look-alike parameter, upper case.
            r#"keyId=https://evil.example/users/x#main-key,signature="AAAA""#,
            r#"keyId ="https://evil.example/users/x#main-key",signature="AAAA""#,
            r#"xkeyid="https://good.example/k",keyId="https://evil.example/users/x",signature="AAAA""#,
            r#"KEYID="https://EVIL.example/users/x",signature="AAAA""#,
        ] {
            assert_eq!(
                b.check(ok, &headers("signature", cavage)),
                Some(Reason::Instance),
                "{cavage}"
            );
        }
        let rfc = headers(
            "signature-input",
            r#"sig1=("@method");xkeyid="https://good.example/k";keyid="https://evil.example/k""#,
        );
        assert_eq!(b.check(ok, &rfc), Some(Reason::Instance));
        // Two field lines make one dictionary; the verifier reads the joined one.
        let mut two = HeaderMap::new();
        two.append(
            "signature-input",
            HeaderValue::from_static(r#"sig1=("@method");keyid="https://good.example/k""#),
        );
        two.append(
            "signature-input",
            HeaderValue::from_static(r#"sig1=("@method");keyid="https://evil.example/k""#),
        );
        assert_eq!(b.check(ok, &two), Some(Reason::Instance));
        // A key id that only looks blocked to a substring scan.
        let good = headers(
            "signature",
            r#"keyId="https://good.example/k",xkeyid="https://evil.example/k",signature="AAAA""#,
        );
        assert_eq!(b.check(ok, &good), None);
    }

    #[test]
    fn verified_signers_are_checked_by_their_host() {
        let b = list("evil.example\n");
        let signer = |instance: &str| Signer {
            key_id: format!("https://{instance}/k"),
            instance: instance.to_string(),
        };
        assert!(b.blocks_signer(&signer("evil.example")));
        assert!(b.blocks_signer(&signer("a.evil.example")));
        assert!(!b.blocks_signer(&signer("good.example")));
        assert!(!Blocklist::default().blocks_signer(&signer("evil.example")));
    }

    #[test]
    fn actors_of_json_activities() {
        let b = list("evil.example\n");
        let json = headers("content-type", "application/activity+json");
        let check = |h: &HeaderMap, body: &str| b.check_activity(h, body.as_bytes());
        for body in [
            r#"{"type":"Create","actor":"https://evil.example/users/x","object":{"actor":"https://good.example/u"}}"#,
            r#"{"actor":{"type":"Person","id":"https://a.evil.example/u","name":"x"}}"#,
            r#"{"actor":["https://good.example/u",{"id":"https://evil.example/u"}]}"#,
            r#"{"actor":"https://good.example/u","actor":"https://evil.example/u"}"#,
            r#"{"act\u006fr":"https:\/\/evil.example\/u"}"#,
            r#"{"object":{"type":"Note"},"actor":"https://EVIL.example:443/u"}"#,
        ] {
            assert_eq!(check(&json, body), Some(Reason::Actor), "{body}");
        }
        for body in [
            r#"{"type":"Create","actor":"https://good.example/u","object":{"actor":"https://evil.example/u"}}"#,
            r#"{"attributedTo":"https://evil.example/u"}"#,
            r#"{"actor":null}"#,
            r#"["https://evil.example/u"]"#,
            r#"{"actor":"https://evil.example/u""#,
            "",
        ] {
            assert_eq!(check(&json, body), None, "{body}");
        }
        let evil = r#"{"actor":"https://evil.example/u"}"#;
        for t in [
            "application/ld+json; profile=\"https://www.w3.org/ns/activitystreams\"",
            "Application/JSON",
        ] {
            assert_eq!(
                check(&headers("content-type", t), evil),
                Some(Reason::Actor),
                "{t}"
            );
        }
        assert_eq!(check(&headers("content-type", "text/plain"), evil), None);
        assert_eq!(check(&HeaderMap::new(), evil), None);
        assert_eq!(
            Blocklist::default().check_activity(&json, evil.as_bytes()),
            None
        );
    }
}
