//! `[[listeners]]` and `[listeners.tls]`: public sockets, their limits and timeouts, and the
//! certificates (loaded here, so a bad one refuses the config) served by SNI.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;

use super::auth::{self, ClientAuth};
use super::parse::{duration, is_label_safe, parse_addr, resolve};
use super::{file, ConfigError};

/// One `[[listeners]]` entry: a socket the gateway serves proxied traffic on.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Unique name, used in log lines and as the `listener` label of
    /// `fedgate_tls_handshake_errors_total` (`name`, default `listener<N>`, N the entry's
    /// index from 0).
    pub name: String,
    /// Address the socket is bound to (`address`, required); port 0 binds any free port.
    pub address: SocketAddr,
    /// Connections served at once (`max_connections`, default 10000); beyond it new ones
    /// wait in the kernel backlog.
    pub max_connections: usize,
    /// Time a client has to send its first request and each later HTTP/1.1 request head
    /// (`header_read_timeout`, default 10 s).
    pub header_read_timeout: Duration,
    /// How long a connection may have no request in progress before it is closed.
    pub idle_timeout: Duration,
    /// Largest request head, in bytes (`max_header_bytes`, default 65536, from
    /// [`MIN_HEADER_BYTES`] to 16 MiB): a larger HTTP/1.1 head is answered 431; HTTP/2
    /// applies it to the decoded header list.
    pub max_header_bytes: usize,
    /// `[listeners.tls]`: serve TLS with these settings; `None` serves plain HTTP.
    pub tls: Option<ListenerTls>,
}

/// `[listeners.tls]`: the certificates a listener serves and its TLS settings.
#[derive(Clone)]
pub struct ListenerTls {
    /// Certificates with the names they serve; the first is the default for unknown SNI.
    pub certificates: Vec<(Vec<String>, Arc<CertifiedKey>)>,
    /// Whether `h2` is offered through ALPN (`http2`, default `true`).
    pub http2: bool,
    /// Time a client has to complete the TLS handshake (`handshake_timeout`, default 10 s).
    pub handshake_timeout: Duration,
    /// mTLS: verify client certificates against these CAs.
    pub client_auth: Option<ClientAuth>,
    /// The certificate, key and client CA files, resolved: watched with the config file, so
    /// a renewed certificate is served without a restart.
    pub files: Vec<PathBuf>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field(
                "certificates",
                &self.certificates.iter().map(|c| &c.0).collect::<Vec<_>>(),
            )
            .field("http2", &self.http2)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

/// Default of `listeners[].idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The smallest `max_header_bytes`: hyper's HTTP/1.1 read buffer, which holds the request
/// head, refuses to be smaller.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Every `[[listeners]]` entry: at least one, names and fixed addresses unique.
pub(super) fn validate_listeners(
    list: &[file::ListenerSection],
    base: &Path,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::field(
            "listeners",
            "at least one [[listeners]] entry is required",
        ));
    }
    let mut listeners = Vec::with_capacity(list.len());
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in list.iter().enumerate() {
        let listener = validate_listener(i, l, base)?;
        if !names.insert(listener.name.clone()) {
            return Err(ConfigError::field(
                format!("listeners[{i}].name"),
                format!("duplicate listener name {:?}", listener.name),
            ));
        }
        if listener.address.port() != 0 && !addrs.insert(listener.address) {
            return Err(ConfigError::field(
                format!("listeners[{i}].address"),
                format!("{} is used by another listener", listener.address),
            ));
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

fn validate_listener(
    i: usize,
    l: &file::ListenerSection,
    base: &Path,
) -> Result<ListenerConfig, ConfigError> {
    let field = |k: &str| format!("listeners[{i}].{k}");
    let name = l.name.clone().unwrap_or_else(|| format!("listener{i}"));
    if !is_label_safe(&name) {
        return Err(ConfigError::field(
            field("name"),
            "use letters, digits, '_', '-' or '.'",
        ));
    }
    let address = parse_addr(
        &field("address"),
        l.address
            .as_deref()
            .ok_or_else(|| ConfigError::field(field("address"), "missing"))?,
    )?;
    let max_connections = l.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        return Err(ConfigError::field(
            field("max_connections"),
            "must be at least 1",
        ));
    }
    let max_header_bytes = l.max_header_bytes.unwrap_or(64 * 1024);
    // The HTTP/1.1 head is bounded by hyper's read buffer, which cannot be smaller than
    // 8 KiB: a lower limit would silently act as 8192.
    if !(MIN_HEADER_BYTES..=16 * 1024 * 1024).contains(&max_header_bytes) {
        return Err(ConfigError::field(
            field("max_header_bytes"),
            "must be between 8192 and 16777216 (the HTTP/1.1 read buffer that holds the \
             request head cannot be smaller than 8192 bytes)",
        ));
    }
    let tls = match &l.tls {
        None => None,
        Some(t) => Some(validate_listener_tls(i, t, base)?),
    };
    Ok(ListenerConfig {
        name,
        address,
        max_connections,
        header_read_timeout: duration(
            &field("header_read_timeout"),
            l.header_read_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        idle_timeout: duration(
            &field("idle_timeout"),
            l.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
        )?,
        max_header_bytes,
        tls,
    })
}

fn validate_listener_tls(
    i: usize,
    t: &file::ListenerTlsSection,
    base: &Path,
) -> Result<ListenerTls, ConfigError> {
    if t.certificates.is_empty() {
        return Err(ConfigError::field(
            format!("listeners[{i}].tls.certificates"),
            "at least one certificate is required",
        ));
    }
    let mut certificates = Vec::with_capacity(t.certificates.len());
    let mut files = Vec::with_capacity(t.certificates.len() * 2 + 1);
    for (j, c) in t.certificates.iter().enumerate() {
        let field = |k: &str| format!("listeners[{i}].tls.certificates[{j}].{k}");
        let cert_path = resolve(
            base,
            c.cert
                .as_deref()
                .ok_or_else(|| ConfigError::field(field("cert"), "missing"))?,
        );
        let key_path = resolve(
            base,
            c.key
                .as_deref()
                .ok_or_else(|| ConfigError::field(field("key"), "missing"))?,
        );
        let key = crate::tls::load_certified_key(&cert_path, &key_path)
            .map_err(|e| ConfigError::field(field("cert"), e))?;
        files.push(cert_path);
        files.push(key_path);
        let mut names = Vec::new();
        for (k, n) in c.server_names.iter().enumerate() {
            let n = n.trim().to_ascii_lowercase();
            if n.is_empty() || n.contains(['/', ' ', ':']) {
                return Err(ConfigError::field(
                    format!("listeners[{i}].tls.certificates[{j}].server_names[{k}]"),
                    format!("{n:?} is not a host name"),
                ));
            }
            names.push(n);
        }
        if names.is_empty() {
            names = crate::tls::certificate_names(&key);
        }
        certificates.push((names, Arc::new(key)));
    }
    Ok(ListenerTls {
        certificates,
        http2: t.http2.unwrap_or(true),
        handshake_timeout: duration(
            &format!("listeners[{i}].tls.handshake_timeout"),
            t.handshake_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        client_auth: auth::validate_client_auth(i, t, base)?,
        files: files
            .into_iter()
            .chain(t.client_ca_file.as_deref().map(|f| resolve(base, f)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{field_of, parse, MINIMAL};
    use super::super::ConfigError;

    #[test]
    fn max_header_bytes_below_the_http1_buffer_is_refused() {
        let with = |n: usize| {
            MINIMAL.replace(
                "address = \"127.0.0.1:0\"",
                &format!("address = \"127.0.0.1:0\"\nmax_header_bytes = {n}"),
            )
        };
        match parse(&with(4096)) {
            Err(ConfigError::Field { field, message }) => {
                assert_eq!(field, "listeners[0].max_header_bytes");
                assert!(message.contains("8192"), "{message}");
                assert!(message.contains("read buffer"), "{message}");
            }
            other => panic!("4096 must be refused, got {other:?}"),
        }
        assert_eq!(field_of(&with(8191)), "listeners[0].max_header_bytes");
        assert_eq!(
            parse(&with(8192)).unwrap().listeners[0].max_header_bytes,
            8192
        );
        assert_eq!(
            field_of(&with(16 * 1024 * 1024 + 1)),
            "listeners[0].max_header_bytes"
        );
    }
}
