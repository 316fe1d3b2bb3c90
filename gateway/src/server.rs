//! Phase 1: accept, TLS and HTTP. Each listener runs one accept loop bounded by its
//! connection limit; each connection is served by hyper-util's auto builder (HTTP/1.1 with
//! upgrades, HTTP/2 by prior knowledge or ALPN) and watched for graceful shutdown. A TLS
//! handshake that fails is counted by listener and reason
//! (`fedgate_tls_handshake_errors_total`).
//!
//! A reload changes listeners without a restart: a listener that keeps its address keeps
//! its socket and serves new connections with the new [`Settings`] (certificates, limits,
//! timeouts); a new or moved one is bound before the reload commits, so a port that cannot
//! be bound rejects the whole reload; a removed one stops accepting and its connections
//! drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::body::Guarded;
use crate::config::ListenerConfig;
use crate::gateway::Shared;
use crate::metrics::Metrics;
use crate::proxy::{self, ConnInfo};
use crate::tls::HandshakeFailure;
use crate::upload::{ClientBody, EndGate};

/// What a reload can change on a listener that keeps its socket: the TLS material
/// (certificates are read again on every reload, so a renewed certificate is served without
/// a restart), the HTTP limits and timeouts. Each new connection reads it once; connections
/// already open keep what they started with.
pub struct Settings {
    pub config: ListenerConfig,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    /// TLS listeners: `fedgate_tls_handshake_errors_total` of this listener, by reason.
    handshake_errors: Option<[prometheus::IntCounter; 4]>,
}

impl Settings {
    pub fn new(config: &ListenerConfig, metrics: &Metrics) -> Result<Settings, String> {
        let tls = match &config.tls {
            Some(t) => Some(TlsAcceptor::from(Arc::new(
                crate::tls::server_config(t)
                    .map_err(|e| format!("listener {}: {e}", config.name))?,
            ))),
            None => None,
        };
        Ok(Settings {
            config: config.clone(),
            builder: http_builder(config),
            handshake_errors: tls
                .as_ref()
                .map(|_| metrics.tls_handshake_errors(&config.name)),
            tls,
        })
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A bound public listener, ready to serve.
#[derive(Debug)]
pub struct Listener {
    pub local_addr: SocketAddr,
    socket: TcpListener,
    settings: Settings,
}

/// Binds a listener socket (with `SO_REUSEADDR` and a deep backlog) and prepares TLS.
pub fn bind(config: &ListenerConfig, metrics: &Metrics) -> Result<Listener, String> {
    let settings = Settings::new(config, metrics)?;
    let addr = config.address;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(|e| format!("listener {}: {e}", config.name))?;
    let setup = || -> std::io::Result<()> {
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(false).ok();
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        Ok(())
    };
    setup().map_err(|e| format!("listener {} cannot bind {addr}: {e}", config.name))?;
    let std_listener: std::net::TcpListener = socket.into();
    let listener = TcpListener::from_std(std_listener)
        .map_err(|e| format!("listener {}: {e}", config.name))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| format!("listener {}: {e}", config.name))?;
    Ok(Listener {
        local_addr,
        socket: listener,
        settings,
    })
}

fn http_builder(config: &ListenerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        // hyper's read buffer bounds the request head; it refuses less than 8 KiB.
        .max_buf_size(config.max_header_bytes.max(8192))
        .keep_alive(true)
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    if config.tls.as_ref().is_some_and(|t| !t.http2) {
        builder = builder.http1_only();
    }
    builder
}

/// A listener that is serving: its accept loop, and what a reload changes in place.
#[derive(Debug)]
pub struct Running {
    pub local_addr: SocketAddr,
    settings: Arc<ArcSwap<Settings>>,
    limit: Arc<Semaphore>,
    max_connections: usize,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Starts accepting on a bound listener; its connections are watched by `graceful`.
    pub fn start(listener: Listener, shared: Arc<Shared>, graceful: Arc<Drain>) -> Running {
        let max_connections = listener.settings.config.max_connections;
        let settings = Arc::new(ArcSwap::from_pointee(listener.settings));
        let limit = Arc::new(Semaphore::new(max_connections));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener.socket,
            settings.clone(),
            limit.clone(),
            shared,
            graceful,
            stop_rx,
        ));
        Running {
            local_addr: listener.local_addr,
            settings,
            limit,
            max_connections,
            stop,
            task,
        }
    }

    /// The configuration the listener serves new connections with.
    pub fn config(&self) -> ListenerConfig {
        self.settings.load().config.clone()
    }

    /// Serves new connections with `settings`. A lower connection limit takes effect as
    /// open connections close: no connection is cut for it.
    pub fn update(&mut self, settings: Settings) {
        let max = settings.config.max_connections;
        if max > self.max_connections {
            self.limit.add_permits(max - self.max_connections);
        } else if max < self.max_connections {
            let excess = u32::try_from(self.max_connections - max).unwrap_or(u32::MAX);
            let limit = self.limit.clone();
            // The semaphore is fair: while this waits for permits, no new connection gets
            // one before it, so the listener accepts again only below the new limit.
            tokio::spawn(async move {
                if let Ok(p) = limit.acquire_many_owned(excess).await {
                    p.forget();
                }
            });
        }
        self.max_connections = max;
        self.settings.store(Arc::new(settings));
    }

    /// Stops accepting; open connections are left to drain.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Accepts connections until `stop` turns true; connections are watched by `graceful`.
async fn accept_loop(
    socket: TcpListener,
    settings: Arc<ArcSwap<Settings>>,
    limit: Arc<Semaphore>,
    shared: Arc<Shared>,
    graceful: Arc<Drain>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // At the connection limit, stop accepting (the kernel backlog holds new clients)
        // instead of accepting and dropping.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = crate::gateway::stopped(&mut stop) => return,
        };
        let (stream, client) = tokio::select! {
            r = socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(listener = %settings.load().config.name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::gateway::stopped(&mut stop) => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let settings = settings.load_full();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let builder = &settings.builder;
            match &settings.tls {
                None => {
                    serve(
                        stream,
                        ConnInfo::new(client, false),
                        shared,
                        builder,
                        &settings.config,
                        watcher,
                    )
                    .await
                }
                Some(acceptor) => {
                    let timeout = settings
                        .config
                        .tls
                        .as_ref()
                        .map_or(std::time::Duration::from_secs(10), |t| t.handshake_timeout);
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            // mTLS: the verified client certificate names the principal of
                            // every request on this connection, so it is read once, here.
                            let session = tls_stream.get_ref().1;
                            let info = ConnInfo::new(client, true)
                                .with_client_principal(crate::auth::mtls::peer_principal(session))
                                .with_server_name(session.server_name());
                            serve(tls_stream, info, shared, builder, &settings.config, watcher)
                                .await
                        }
                        Ok(Err(e)) => {
                            let reason = HandshakeFailure::of(&e);
                            if let Some(counters) = &settings.handshake_errors {
                                counters[reason as usize].inc();
                            }
                            tracing::debug!(%client, error = %e, reason = reason.as_str(), "TLS handshake failed");
                        }
                        Err(_) => {
                            if let Some(counters) = &settings.handshake_errors {
                                counters[HandshakeFailure::Timeout as usize].inc();
                            }
                            tracing::debug!(%client, "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

/// Tells every connection to finish what it is doing and close (HTTP/1.1: after the
/// response in progress; HTTP/2: GOAWAY, then the open streams end), and waits for all of
/// them to be gone.
#[derive(Debug)]
pub struct Drain {
    signal: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            signal: watch::Sender::new(false),
        }
    }
}

impl Drain {
    pub fn new() -> Drain {
        Drain::default()
    }

    /// What one connection holds while it is served: told when to drain, and counted
    /// until it is dropped.
    pub fn watcher(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    /// Tells every connection to drain, then waits until every watcher is dropped.
    pub async fn shutdown(&self) {
        self.signal.send_replace(true);
        self.signal.closed().await;
    }
}

/// The requests of one connection still being answered (until their response bodies are
/// sent or dropped), and when the last one ended: what its idle timeout is measured from.
#[derive(Debug)]
pub struct InFlight {
    open: std::sync::atomic::AtomicUsize,
    /// Milliseconds since `since` at which the connection last became idle.
    idle_from: std::sync::atomic::AtomicU64,
    since: tokio::time::Instant,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight {
            open: Default::default(),
            idle_from: Default::default(),
            since: tokio::time::Instant::now(),
        }
    }

    /// Counts a request as open until the returned guard is dropped.
    fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Open(self.clone())
    }

    /// When the connection will have been idle for `timeout`, or `None` when it has been.
    fn idle_deadline(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = tokio::time::Instant::now();
        if self.open.load(Relaxed) > 0 {
            return Some(now + timeout);
        }
        let at = self.since + Duration::from_millis(self.idle_from.load(Relaxed)) + timeout;
        (at > now).then_some(at)
    }
}

/// One open request of a connection (see [`InFlight`]); the response body carries it.
#[derive(Debug)]
pub struct Open(Arc<InFlight>);

impl Drop for Open {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.0.open.fetch_sub(1, Relaxed) == 1 {
            let ms = self.0.since.elapsed().as_millis() as u64;
            self.0.idle_from.store(ms, Relaxed);
        }
    }
}

/// `make()`'s value in a box of its own, allocated first so that the value can be written
/// straight into it.
#[inline(always)]
fn boxed<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

async fn serve<I>(
    io: I,
    conn: ConnInfo,
    shared: Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    config: &ListenerConfig,
    mut drain: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = conn.client;
    let conn = Arc::new(conn);
    let served = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = served.clone();
    let cancels = Arc::new(Cancels::default());
    let watch_cancels = cancels.clone();
    let in_flight = Arc::new(InFlight::new());
    let active = in_flight.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        first.store(true, std::sync::atomic::Ordering::Relaxed);
        let open = active.open();
        let rt = shared.runtime();
        let conn = conn.clone();
        // An HTTP/2 body's end is believed only once the stream is known not to have been
        // reset (see `upload::ClientBody`).
        let (gate, req) = if req.version() == http::Version::HTTP_2
            && !http_body::Body::is_end_stream(req.body())
        {
            let gate = EndGate::new(true);
            (Some(gate.clone()), req.map(|b| ClientBody::gated(b, gate)))
        } else {
            (None, req.map(ClientBody::new))
        };
        let http2 = req.version() == http::Version::HTTP_2;
        // The request's future is kilobytes; boxed once, it is not copied again on its way
        // into the connection's dispatcher (each move of a future copies all of it).
        let handled = Guarded::new(boxed(|| proxy::handle(rt, req, conn)), gate);
        let cancels = cancels.clone();
        async move {
            // An HTTP/2 request whose future is dropped before it answers was cancelled by
            // the client (RST_STREAM): counted, so a connection that cancels what it opens
            // faster than it completes anything (rapid reset of accepted streams, which
            // the h2 crate's own bound on not yet accepted ones does not see) is closed.
            let guard = http2.then(|| Cancel(cancels, false));
            let mut resp = handled.await;
            if let Some(g) = guard {
                g.completed();
            }
            resp.body_mut().hold(open);
            Ok::<_, Infallible>(resp)
        }
    });
    // hyper-util reads a connection's first bytes (to tell HTTP/2's preface from HTTP/1.1)
    // before hyper's header-read deadline starts, and hyper's HTTP/2 server has no header
    // deadline at all: without one of its own, a client that connects and sends nothing,
    // part of the preface, or a header block it never finishes would hold a connection slot
    // for ever. The connection's first request must be complete within the deadline.
    let io = FirstBytes::until(io, config.header_read_timeout, served);
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let mut connection = std::pin::pin!(connection);
    // After the first request, a connection with no request in progress for
    // `idle_timeout` is closed: HTTP/1.1 waits for its next request head only for
    // `header_read_timeout` (hyper's own deadline), HTTP/2 has none, so an idle or
    // PING-only connection, or one that opened a stream and never finished its header
    // block, would hold its slot for ever. Draining: GOAWAY, and the connection gets
    // `header_read_timeout` more to end before it is dropped.
    let idle_timeout = config.idle_timeout;
    let idle = tokio::time::sleep(idle_timeout);
    let mut idle = std::pin::pin!(idle);
    // Set once GOAWAY (or its HTTP/1.1 equivalent) is sent: by a drain, which waits as
    // long as the gateway's grace period, or by the idle timeout, which does not.
    let mut closing: Option<&str> = None;
    loop {
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%client, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = drain.wait_for(|d| *d), if closing.is_none() => {
                // Also when the gateway is gone (the sender dropped): drain all the same.
                connection.as_mut().graceful_shutdown();
                closing = Some("drain");
            }
            () = &mut idle, if closing != Some("drain") => {
                if closing.is_some() {
                    tracing::debug!(%client, "idle connection did not close after GOAWAY; dropping it");
                    return;
                }
                match in_flight.idle_deadline(idle_timeout) {
                    Some(at) => idle.as_mut().reset(at),
                    None => {
                        tracing::debug!(%client, idle_ms = idle_timeout.as_millis() as u64, "closing an idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = Some("idle");
                        idle.as_mut().reset(tokio::time::Instant::now() + config.header_read_timeout);
                    }
                }
            }
            () = watch_cancels.abusive.notified() => {
                tracing::info!(%client, "closing an HTTP/2 connection that cancels most of the streams it opens");
                return;
            }
        }
    }
}

/// Client-cancelled and completed HTTP/2 requests of one connection.
#[derive(Debug, Default)]
struct Cancels {
    cancelled: std::sync::atomic::AtomicU64,
    completed: std::sync::atomic::AtomicU64,
    abusive: tokio::sync::Notify,
}

/// Cancelled streams a connection may have before the ratio is looked at.
const CANCELS_ALLOWED: u64 = 100;

/// Counts its request as cancelled when dropped before [`Cancel::completed`].
struct Cancel(Arc<Cancels>, bool);

impl Cancel {
    fn completed(mut self) {
        self.0
            .completed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.1 = true;
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.1 {
            return;
        }
        let cancelled = self.0.cancelled.fetch_add(1, Relaxed) + 1;
        // Browsers cancel some streams (a navigation away, a superseded fetch); a
        // connection that cancels more than it completes, past a hundred, is an attack.
        if cancelled > CANCELS_ALLOWED && cancelled > self.0.completed.load(Relaxed) {
            self.0.abusive.notify_one();
        }
    }
}

pin_project! {
    /// A connection whose first bytes (or, with `until`, whose first request) must arrive
    /// within a deadline; after that, plain pass-through (one branch per read).
    pub(crate) struct FirstBytes<I> {
        #[pin]
        io: I,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        served: Option<Arc<std::sync::atomic::AtomicBool>>,
    }
}

impl<I> FirstBytes<I> {
    pub(crate) fn new(io: I, within: Duration) -> Self {
        FirstBytes {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            served: None,
        }
    }

    /// The deadline holds until `served` turns true: the connection's first request has
    /// been read whole and handed to the service.
    pub(crate) fn until(
        io: I,
        within: Duration,
        served: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        FirstBytes {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            served: Some(served),
        }
    }
}

impl<I: AsyncRead> AsyncRead for FirstBytes<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let Some(deadline) = this.deadline else {
            return this.io.poll_read(cx, buf);
        };
        if this
            .served
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
        {
            *this.deadline = None;
            return this.io.poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before && this.served.is_none() => {
                *this.deadline = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite> AsyncWrite for FirstBytes<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
