//! TLS material: PEM loading for listeners and upstream trust, and the SNI certificate
//! resolver used by phase 1 (accept, TLS). All of it runs at config load, never per request,
//! except [`SniResolver::resolve`], which is one hash lookup per handshake.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a listener's TLS handshake failed: the `reason` label of
/// `fedgate_tls_handshake_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client's certificate was refused (unknown issuer, expired, bad signature...), or
    /// it sent none to a listener that requires one.
    ClientCertificate,
    /// The client spoke TLS wrongly or incompatibly: no common version or cipher suite, a
    /// malformed or unexpected message, an alert (such as its refusal of our certificate),
    /// or not TLS at all.
    Protocol,
    /// The handshake did not finish within `handshake_timeout`.
    Timeout,
    /// The connection failed under the handshake (closed or reset by the client).
    Other,
}

impl HandshakeFailure {
    /// Every reason, in declaration order (`reason as usize` indexes it).
    pub const ALL: [HandshakeFailure; 4] = [
        HandshakeFailure::ClientCertificate,
        HandshakeFailure::Protocol,
        HandshakeFailure::Timeout,
        HandshakeFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::ClientCertificate => "client_certificate",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Other => "other",
        }
    }

    /// Classifies the error a server handshake ended with: rustls's error inside it, if any.
    pub fn of(error: &std::io::Error) -> Self {
        let Some(tls) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return HandshakeFailure::Other;
        };
        match tls {
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                HandshakeFailure::ClientCertificate
            }
            _ => HandshakeFailure::Protocol,
        }
    }
}

/// Loads a certificate chain and its private key from PEM files.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let cert_pem = crate::config::read_file(cert, crate::config::MAX_KEY_FILE)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    let key_pem = crate::config::read_file(key, crate::config::MAX_KEY_FILE)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("{}: unsupported private key: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing_key);
    ck.keys_match()
        .map_err(|e| format!("{} does not match {}: {e}", key.display(), cert.display()))?;
    Ok(ck)
}

/// DNS names (subject alternative names, else the common name) of a certificate's leaf.
pub fn certificate_names(ck: &CertifiedKey) -> Vec<String> {
    let Some(leaf) = ck.cert.first() else {
        return Vec::new();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    names
}

/// Loads a PEM bundle of trusted roots.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = crate::config::read_file(path, crate::config::MAX_KEY_FILE)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem);
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(roots)
}

/// Chooses a certificate by SNI: exact name, then `*.parent` wildcard, then the default.
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("names", &self.exact.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SniResolver {
    /// The first certificate is the default for clients that send no or an unknown name.
    pub fn new(certificates: &[(Vec<String>, Arc<CertifiedKey>)]) -> Option<Self> {
        let default = certificates.first()?.1.clone();
        let mut exact = HashMap::new();
        for (names, key) in certificates {
            for n in names {
                exact.entry(n.clone()).or_insert_with(|| key.clone());
            }
        }
        Some(SniResolver { exact, default })
    }

    fn lookup(&self, name: &str) -> Arc<CertifiedKey> {
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.exact.get(&format!("*.{parent}")) {
                return k.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match hello.server_name() {
            Some(n) => self.lookup(n),
            None => self.default.clone(),
        })
    }
}

/// Builds the rustls server configuration for a TLS listener. With `client_auth` (mTLS,
/// phase 5), client certificates are verified against its CAs during the handshake: a
/// certificate that does not verify always fails it, and so does none in `required` mode.
pub fn server_config(tls: &crate::config::ListenerTls) -> Result<rustls::ServerConfig, String> {
    let resolver = SniResolver::new(&tls.certificates).ok_or("no certificate configured")?;
    let builder = rustls::ServerConfig::builder_with_provider(crate::transport::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                ca.roots.clone(),
                crate::transport::provider(),
            );
            let verifier = if ca.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client certificate verifier: {e}"))?,
            )
        }
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = if tls.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(cfg)
}

/// `fedgate_tls_handshake_errors_total{listener,reason}`, registered on `registry`.
pub fn handshake_errors_family(
    registry: &prometheus::Registry,
) -> Result<prometheus::IntCounterVec, prometheus::Error> {
    crate::register::counter_vec(
        registry,
        "fedgate_tls_handshake_errors_total",
        "Failed TLS handshakes on listeners, by listener and reason (client_certificate, protocol, timeout, other).",
        &["listener", "reason"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn handshake_failures_are_classified_from_the_rustls_error() {
        let tls = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cases = [
            (
                tls(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                HandshakeFailure::ClientCertificate,
            ),
            (
                tls(rustls::Error::NoCertificatesPresented),
                HandshakeFailure::ClientCertificate,
            ),
            (
                tls(rustls::Error::PeerIncompatible(
                    rustls::PeerIncompatible::NoCipherSuitesInCommon,
                )),
                HandshakeFailure::Protocol,
            ),
            (
                tls(rustls::Error::AlertReceived(
                    rustls::AlertDescription::BadCertificate,
                )),
                HandshakeFailure::Protocol,
            ),
            (
                io::Error::from(io::ErrorKind::ConnectionReset),
                HandshakeFailure::Other,
            ),
        ];
        for (error, want) in cases {
            assert_eq!(HandshakeFailure::of(&error), want, "{error}");
        }
        for (i, r) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
