//! Phase 5, mTLS: the principal of a client certificate. The certificate itself is verified
//! in phase 1 by rustls' `WebPkiClientVerifier` against the listener's client CA
//! (`crate::tls::server_config`); here its name is read once per connection, right after the
//! handshake, and carried in `proxy::ConnInfo` for every request on that connection.
//!
//! The principal is the first of: a URI subject alternative name (SPIFFE-style workload ids
//! are URIs), a DNS subject alternative name, the subject's common name, and, for a
//! certificate naming none of those, the whole subject distinguished name.

use std::sync::Arc;

use x509_parser::extensions::GeneralName;

/// The principal of the verified client certificate of a TLS connection, if it presented
/// one.
pub fn peer_principal(conn: &rustls::ServerConnection) -> Option<Arc<str>> {
    principal(conn.peer_certificates()?.first()?.as_ref())
}

/// The principal named by a DER certificate.
pub fn principal(der: &[u8]) -> Option<Arc<str>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        let uri = names.iter().find_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        });
        let dns = names.iter().find_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        });
        if let Some(name) = uri.or(dns).filter(|n| !n.is_empty()) {
            return Some(name.into());
        }
    }
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().filter(|s| !s.is_empty()))
    {
        return Some(cn.into());
    }
    let dn = cert.subject().to_string();
    (!dn.is_empty()).then(|| dn.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert(sans: &[SanType], dn: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans.to_vec();
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn san_uri_then_dns_then_common_name() {
        let dns = SanType::DnsName("svc.example".try_into().unwrap());
        let uri = SanType::URI("spiffe://example.org/ns/web".try_into().unwrap());
        let cn = [(DnType::CommonName, "worker-7")];
        let both = cert(&[dns.clone(), uri], &cn);
        assert_eq!(
            principal(&both).as_deref(),
            Some("spiffe://example.org/ns/web")
        );
        assert_eq!(
            principal(&cert(&[dns], &cn)).as_deref(),
            Some("svc.example")
        );
        assert_eq!(principal(&cert(&[], &cn)).as_deref(), Some("worker-7"));
        let org = cert(&[], &[(DnType::OrganizationName, "Example")]);
        assert_eq!(principal(&org).as_deref(), Some("O=Example"));
        assert_eq!(principal(b"not a certificate"), None);
    }
}
