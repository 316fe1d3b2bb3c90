//! The data plane's transport: what carries upstream bytes, below the protocols. The
//! connector that dials an endpoint (TCP, then TLS for `https`) and counts every
//! connection it opens until it closes ([`CountingConnector`], [`Counted`]), the
//! per-connection stream count of HTTP/2 ([`ConnTag`], [`Stream`]), the open and active
//! connection counts ([`ConnStats`], [`ActiveConn`]), the TLS client settings of every
//! upstream-facing connection ([`client_tls`]: upstreams, health probes, key fetches, plugin
//! outbound calls), and the error type bodies share ([`BoxError`]).
//!
//! The HTTP/1.1 client ([`crate::h1`]), the pool ([`crate::pool`]), the upstreams
//! ([`crate::upstream`]), their health probes and the key fetcher are built on this
//! module; it depends on no other module of the gateway.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// The error of the bodies the data plane relays, and of connecting.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The crypto provider used everywhere in the gateway (TLS listeners included).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS client settings of every upstream-facing connection: rustls with the ring
/// provider and its safe default versions, `roots` (the public web's roots from
/// webpki-roots when `None`), no client certificate, and `alpn` offered. Upstream
/// connectors pass no ALPN: hyper-rustls sets it from the protocol it is built for (`h2`
/// for HTTP/2, none for HTTP/1.1) and refuses a configuration that already has one.
pub fn client_tls(roots: Option<rustls::RootCertStore>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let roots = roots.unwrap_or_else(|| rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tls
}

/// How an upstream's endpoints are dialled: what [`https_connector`] builds a connector
/// from, read from the upstream's config once.
#[derive(Debug, Clone)]
pub struct DialSettings {
    pub connect_timeout: Duration,
    /// Trust roots for `https` endpoints; `None`: the public web's.
    pub roots: Option<rustls::RootCertStore>,
    /// The TLS server name presented and verified, whatever an endpoint's host is.
    pub server_name: Option<ServerName<'static>>,
    /// HTTP/2 (offered by ALPN) rather than HTTP/1.1.
    pub http2: bool,
}

/// A connector of an upstream's endpoints (or of its health probes): TCP with the connect
/// timeout, and TLS for `https`. Each connector has TLS client settings (and so a session
/// cache) of its own.
pub fn https_connector(dial: &DialSettings) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(dial.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));

    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(dial.roots.clone(), &[]))
        .https_or_http();
    if let Some(name) = &dial.server_name {
        builder = builder
            .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name.clone()));
    }
    // ALPN offers exactly the protocol the pool will speak.
    if dial.http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    }
}

/// Open and active connection counts of one upstream: `open` is kept by its connector,
/// `active` by [`ActiveConn`] guards (a pooled HTTP/1.1 connection on loan, an HTTP/2
/// connection with a stream in flight, an upgraded connection carrying its tunnel).
#[derive(Debug, Default)]
pub struct ConnStats {
    pub open: AtomicI64,
    pub active: AtomicI64,
}

/// One upstream connection counted as active for as long as this lives.
#[derive(Debug)]
pub struct ActiveConn(Arc<ConnStats>);

impl ActiveConn {
    pub fn new(stats: &Arc<ConnStats>) -> Self {
        stats.active.fetch_add(1, Ordering::Relaxed);
        ActiveConn(stats.clone())
    }
}

impl Drop for ActiveConn {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wraps the connector so every connection it opens is counted until it closes.
#[derive(Debug, Clone)]
pub struct CountingConnector {
    inner: HttpsConnector<HttpConnector>,
    stats: Arc<ConnStats>,
    /// Dial this endpoint (scheme, authority: also the TLS server name) whatever the
    /// request's URI says; `None` dials the URI given.
    dial: Option<Uri>,
    /// HTTP/2: connections carry many streams, and are tagged so each response can say
    /// which connection it came on.
    multiplexed: bool,
}

impl CountingConnector {
    /// Dials the URI it is given, counting connections into `stats`.
    pub fn new(inner: HttpsConnector<HttpConnector>, stats: Arc<ConnStats>) -> Self {
        CountingConnector {
            inner,
            stats,
            dial: None,
            multiplexed: false,
        }
    }

    /// The same connector for an HTTP/2 client of one endpoint: it dials `endpoint`
    /// whatever a request names, and tags each connection with its stream count.
    pub fn multiplexed(&self, endpoint: Uri) -> Self {
        CountingConnector {
            dial: Some(endpoint),
            multiplexed: true,
            ..self.clone()
        }
    }

    pub fn stats(&self) -> &Arc<ConnStats> {
        &self.stats
    }
}

impl tower::Service<Uri> for CountingConnector {
    type Response = Counted;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let fut = self.inner.call(self.dial.clone().unwrap_or(uri));
        let stats = self.stats.clone();
        let multiplexed = self.multiplexed;
        Box::pin(async move {
            let io = fut.await?;
            stats.open.fetch_add(1, Ordering::Relaxed);
            let tag = multiplexed.then(|| {
                ConnTag(Arc::new(Streams {
                    count: AtomicUsize::new(0),
                    stats: stats.clone(),
                }))
            });
            Ok(Counted {
                io,
                stats,
                dedicated: None,
                tag,
            })
        })
    }
}

/// An upstream connection that decrements the open count when closed.
#[derive(Debug)]
pub struct Counted {
    io: Io,
    stats: Arc<ConnStats>,
    /// Counted active for its whole life (see [`Counted::dedicate`]).
    dedicated: Option<ActiveConn>,
    /// HTTP/2: the stream count, handed to every response through `Connected::extra`.
    tag: Option<ConnTag>,
}

impl Counted {
    /// Counts the connection as active until it closes: a connection of its own for an
    /// upgrade carries that exchange and then its tunnel, and is never idle.
    pub fn dedicate(&mut self) {
        if self.dedicated.is_none() {
            self.dedicated = Some(ActiveConn::new(&self.stats));
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        let connected = self.io.connected();
        match &self.tag {
            Some(tag) => connected.extra(tag.clone()),
            None => connected,
        }
    }
}

/// Which HTTP/2 connection a response came on: found in the response's extensions.
#[derive(Debug, Clone)]
pub struct ConnTag(Arc<Streams>);

/// The streams in flight on one HTTP/2 connection; the connection is active while there
/// is at least one.
#[derive(Debug)]
struct Streams {
    count: AtomicUsize,
    stats: Arc<ConnStats>,
}

/// One stream in flight on an HTTP/2 connection, until dropped.
#[derive(Debug)]
pub struct Stream(Arc<Streams>);

impl Stream {
    pub fn open(tag: &ConnTag) -> Self {
        if tag.0.count.fetch_add(1, Ordering::AcqRel) == 0 {
            tag.0.stats.active.fetch_add(1, Ordering::Relaxed);
        }
        Stream(tag.0.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.stats.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Read for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
