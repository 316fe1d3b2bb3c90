//! Phase 1: accept, TLS and HTTP. Each listener runs one accept loop bounded by its
//! connection limit; each connection is served by hyper-util's auto builder (HTTP/1.1 with
//! upgrades, HTTP/2 by prior knowledge or ALPN) and watched for graceful shutdown. A TLS
//! handshake that fails is counted by listener and reason
//! (`fedgate_tls_handshake_errors_total`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::ListenerConfig;
use crate::gateway::Shared;
use crate::proxy::{self, ConnInfo};
use crate::tls::HandshakeFailure;

/// A bound public listener, ready to serve.
pub struct Listener {
    pub config: ListenerConfig,
    pub socket: TcpListener,
    pub local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.config.name)
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Binds a listener socket (with `SO_REUSEADDR` and a deep backlog) and prepares TLS.
pub fn bind(config: &ListenerConfig) -> Result<Listener, String> {
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
    let tls = match &config.tls {
        Some(t) => Some(TlsAcceptor::from(Arc::new(
            crate::tls::server_config(t).map_err(|e| format!("listener {}: {e}", config.name))?,
        ))),
        None => None,
    };
    Ok(Listener {
        config: config.clone(),
        socket: listener,
        local_addr,
        tls,
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

/// Accepts connections until `stop` turns true; connections are watched by `graceful`.
pub async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(http_builder(&listener.config));
    let limit = Arc::new(Semaphore::new(listener.config.max_connections));
    let name = listener.config.name.clone();
    let handshake_errors = listener
        .tls
        .as_ref()
        .map(|_| Arc::new(shared.metrics().tls_handshake_errors(&name)));
    loop {
        // At the connection limit, stop accepting (the kernel backlog holds new clients)
        // instead of accepting and dropping.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = crate::gateway::stopped(&mut stop) => return,
        };
        let (stream, client) = tokio::select! {
            r = listener.socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::gateway::stopped(&mut stop) => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = listener.tls.clone();
        let handshake_timeout = listener.config.tls.as_ref().map(|t| t.handshake_timeout);
        let handshake_errors = handshake_errors.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    serve(
                        stream,
                        ConnInfo::new(client, false),
                        shared,
                        &builder,
                        watcher,
                    )
                    .await
                }
                Some(acceptor) => {
                    let timeout = handshake_timeout.unwrap_or(std::time::Duration::from_secs(10));
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            // mTLS: the verified client certificate names the principal of
                            // every request on this connection, so it is read once, here.
                            let peer = crate::auth::mtls::peer_principal(tls_stream.get_ref().1);
                            serve(
                                tls_stream,
                                ConnInfo::new(client, true).with_client_principal(peer),
                                shared,
                                &builder,
                                watcher,
                            )
                            .await
                        }
                        Ok(Err(e)) => {
                            let reason = HandshakeFailure::of(&e);
                            if let Some(counters) = &handshake_errors {
                                counters[reason as usize].inc();
                            }
                            tracing::debug!(%client, error = %e, reason = reason.as_str(), "TLS handshake failed");
                        }
                        Err(_) => {
                            if let Some(counters) = &handshake_errors {
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

async fn serve<I>(
    io: I,
    conn: ConnInfo,
    shared: Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = conn.client;
    let conn = Arc::new(conn);
    let service = service_fn(move |req| {
        let rt = shared.runtime();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(proxy::handle(rt, req, conn).await) }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%client, error = %e, "connection ended with an error");
    }
}
