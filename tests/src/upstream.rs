//! The upstream side: [`TestUpstream`], a real HTTP server on 127.0.0.1:0 that records
//! what it saw and answers as a test scripts it (faults included), and body helpers.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

use crate::*;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request method, e.g. `POST`.
    pub method: String,
    /// The request target exactly as received (path and query).
    pub target: String,
    /// The request URI's authority: HTTP/2's `:authority` (HTTP/1.1 targets have none).
    pub authority: Option<String>,
    /// The header fields as received.
    pub headers: HeaderMap,
    /// The HTTP version the request came in on.
    pub version: http::Version,
    /// The body's length in bytes; 0 for `/echo`, whose body is streamed back unread.
    pub body_len: u64,
    /// The body's SHA-256, in lower-case hex; empty for `/echo`.
    pub body_sha256: String,
}

/// A real HTTP/1.1 + HTTP/2 upstream on 127.0.0.1:0 whose behaviour is chosen by path:
/// - `/hash`: reads the whole body, answers its length and SHA-256 (streaming, no buffering)
/// - `/echo`: streams the body back
/// - `/bytes/N`: streams N bytes of a known pattern
/// - `/slow/MS`: waits MS milliseconds, then answers 200
/// - `/status/N`: answers status N
/// - `/close`: answers 200 with `Connection: close`, then closes the connection
/// - `/ws`: WebSocket echo (HTTP/1.1 upgrade)
/// - anything else: 200 with body `upstream NAME`
///
/// Every response carries `x-upstream: NAME`.
///
/// Faults can be injected ([`Fault`]): on every request ([`TestUpstream::set_fault`]) or
/// only on the health check path `/healthz` ([`TestUpstream::set_health`]); the server can
/// be killed (listener closed, connections dropped) and restarted on the same port.
#[derive(Debug, Clone)]
pub struct TestUpstream {
    /// Where it listens: 127.0.0.1 and the port bound at start, kept by a restart.
    pub addr: SocketAddr,
    /// What it answers with: the `x-upstream` value and the default body `upstream NAME`.
    pub name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
    health_hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    /// Bumped by [`TestUpstream::stop`] and [`TestUpstream::kill`]: the accept loop ends.
    stops: Arc<tokio::sync::watch::Sender<u64>>,
    fault: Arc<Mutex<Fault>>,
    health_fault: Arc<Mutex<Fault>>,
    /// Bumped by [`TestUpstream::kill`]: every open connection is dropped.
    kills: Arc<tokio::sync::watch::Sender<u64>>,
}

/// What a connection task needs to reset its connection: a second handle on the socket
/// (to set SO_LINGER 0) and the signal that drops the connection.
#[derive(Debug)]
struct ResetHandle {
    signal: tokio::sync::oneshot::Sender<()>,
    twin: Option<std::net::TcpStream>,
}

/// A fault an upstream injects into its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Answer with this status (after reading the request body whole, so that the answer
    /// never races the client's upload).
    Status(u16),
    /// Answer with `status` once `after` has passed (the body read whole first).
    Late {
        /// The status answered.
        status: u16,
        /// How long after the request arrived.
        after: Duration,
    },
    /// Never answer (the connection stays open).
    Hang,
    /// Reset the connection (TCP RST) instead of answering.
    Reset,
}

impl TestUpstream {
    /// Binds 127.0.0.1:0 and serves there, as `name`, with no fault.
    pub async fn start(name: &str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let up = TestUpstream {
            addr,
            name: name.to_string(),
            seen: Arc::default(),
            hits: Arc::default(),
            health_hits: Arc::default(),
            connections: Arc::default(),
            stops: Arc::new(tokio::sync::watch::channel(0).0),
            fault: Arc::new(Mutex::new(Fault::None)),
            health_fault: Arc::new(Mutex::new(Fault::None)),
            kills: Arc::new(tokio::sync::watch::channel(0).0),
        };
        up.serve(listener);
        up
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.clone();
        // Subscribed before the task runs: a stop that comes before its first poll still
        // ends it.
        let mut stopped = self.stops.subscribe();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                // A second handle on the socket, to turn its close into a reset only when a
                // `Fault::Reset` asks for one.
                let Ok(std_stream) = stream.into_std() else {
                    continue;
                };
                let twin = std_stream.try_clone().ok();
                let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
                    continue;
                };
                let st = state.clone();
                let builder = builder.clone();
                let mut killed = state.kills.subscribe();
                let (reset_tx, reset_rx) = tokio::sync::oneshot::channel::<()>();
                let reset_tx = Arc::new(Mutex::new(Some(ResetHandle {
                    signal: reset_tx,
                    twin,
                })));
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        let reset = reset_tx.clone();
                        async move { Ok::<_, Infallible>(st.answer(req, reset).await) }
                    });
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = killed.changed() => {}
                        _ = reset_rx => {}
                    }
                });
            }
        });
    }

    /// Stops accepting new connections (existing ones finish).
    pub fn stop(&self) {
        self.stops.send_modify(|n| *n += 1);
    }

    /// Kills the server: the listener closes (connects are refused) and every open
    /// connection is closed.
    pub async fn kill(&self) {
        self.stop();
        self.kills.send_modify(|k| *k += 1);
        // Let the accept loop drop its listener.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Serves again on the same address after [`TestUpstream::kill`].
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind upstream");
        self.serve(listener);
    }

    /// Injects `fault` into every request.
    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Injects `fault` into requests for the health check path `/healthz` only.
    pub fn set_health(&self, fault: Fault) {
        *self.health_fault.lock().unwrap() = fault;
    }

    /// Requests for `/healthz` so far (they are not counted in [`TestUpstream::hits`]).
    pub fn health_hits(&self) -> usize {
        self.health_hits.load(Ordering::SeqCst)
    }

    /// `http://ADDR`: the upstream as a config's endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests so far other than those for `/healthz`, faulted ones included.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The requests recorded so far, in the order they were recorded (once their body was
    /// read): every request but those for `/healthz` and `/ws` and those a fault answered.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The request recorded last (see [`TestUpstream::seen`]). Panics when there is none.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw no request")
    }

    /// A fault's answer: `status` after `delay`, once the request body is read whole (an
    /// unread body would turn the connection's close into a reset).
    async fn fault_answer(
        &self,
        req: Request<Incoming>,
        status: u16,
        delay: Duration,
    ) -> Response<Body> {
        let _ = req.into_body().collect().await;
        tokio::time::sleep(delay).await;
        let mut r = full(format!("fault {status} from {}", self.name));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r.headers_mut()
            .insert("x-upstream", self.name.parse().unwrap());
        r
    }

    async fn answer(
        &self,
        mut req: Request<Incoming>,
        reset: Arc<Mutex<Option<ResetHandle>>>,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        let fault = if path == "/healthz" {
            self.health_hits.fetch_add(1, Ordering::SeqCst);
            *self.health_fault.lock().unwrap()
        } else {
            self.hits.fetch_add(1, Ordering::SeqCst);
            *self.fault.lock().unwrap()
        };
        match fault {
            Fault::None => {}
            Fault::Status(code) => return self.fault_answer(req, code, Duration::ZERO).await,
            Fault::Late { status, after } => return self.fault_answer(req, status, after).await,
            Fault::Hang => std::future::pending::<()>().await,
            Fault::Reset => {
                let handle = reset.lock().unwrap().take();
                if let Some(h) = handle {
                    // SO_LINGER 0: closing the socket sends RST instead of FIN.
                    if let Some(twin) = h.twin {
                        if let Ok(t) = tokio::net::TcpStream::from_std(twin) {
                            let _ = t.set_zero_linger();
                        }
                    }
                    let _ = h.signal.send(());
                }
                std::future::pending::<()>().await;
            }
        }
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let mut seen = Seen {
            method: req.method().to_string(),
            target,
            authority: req.uri().authority().map(|a| a.to_string()),
            headers: req.headers().clone(),
            version: req.version(),
            body_len: 0,
            body_sha256: String::new(),
        };
        let mut resp = if path == "/ws" {
            self.websocket(&mut req)
        } else if path == "/echo" {
            let body = req.into_body().boxed();
            self.record(seen);
            Response::new(body)
        } else {
            // Hash the body as it streams in, so large uploads never sit in memory.
            let mut hasher = Sha256::new();
            let mut len = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            len += d.len() as u64;
                            hasher.update(d);
                        }
                    }
                    Err(_) => break,
                }
            }
            seen.body_len = len;
            seen.body_sha256 = hex::encode(hasher.finalize());
            let hash_body = format!("{} {}", len, seen.body_sha256);
            self.record(seen);
            if path == "/hash" {
                full(hash_body)
            } else if let Some(n) = path.strip_prefix("/bytes/") {
                pattern_body(n.parse().unwrap_or(0))
            } else if let Some(ms) = path.strip_prefix("/slow/") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
                full("slow done".to_string())
            } else if path == "/close" {
                let mut r = full("closing".to_string());
                r.headers_mut()
                    .insert("connection", "close".parse().unwrap());
                r
            } else if let Some(code) = path.strip_prefix("/status/") {
                let mut r = full(format!("status {code}"));
                *r.status_mut() = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
                r
            } else {
                full(format!("upstream {}", self.name))
            }
        };
        resp.headers_mut()
            .insert("x-upstream", self.name.parse().unwrap());
        resp
    }

    fn record(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }

    fn websocket(&self, req: &mut Request<Incoming>) -> Response<Body> {
        use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            let mut r = full("not a websocket request".into());
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        };
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                let (tx, rx) = ws.split();
                let _ = rx
                    .filter(|m| {
                        futures_util::future::ready(
                            m.as_ref().is_ok_and(|m| m.is_text() || m.is_binary()),
                        )
                    })
                    .forward(tx)
                    .await;
            }
        });
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert("connection", "upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert(
            "sec-websocket-accept",
            derive_accept_key(key.as_bytes()).parse().unwrap(),
        );
        r
    }
}

/// A 200 response with body `s`, sent whole.
pub fn full(s: String) -> Response<Body> {
    Response::new(
        Full::new(Bytes::from(s))
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body of `n` bytes of a repeating pattern, streamed in 64 KiB chunks.
pub fn pattern_body(n: u64) -> Response<Body> {
    Response::new(pattern_stream(n))
}

/// Streams `n` pattern bytes in 64 KiB chunks.
pub fn pattern_stream(n: u64) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK as u64) as usize;
            Some((
                Ok::<_, hyper::Error>(Frame::data(chunk.slice(..take))),
                left - take as u64,
            ))
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// SHA-256 of the pattern stream of `n` bytes.
pub fn pattern_sha256(n: u64) -> String {
    const CHUNK: usize = 64 * 1024;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let mut h = Sha256::new();
    let mut left = n;
    while left > 0 {
        let take = left.min(CHUNK as u64) as usize;
        h.update(&chunk[..take]);
        left -= take as u64;
    }
    hex::encode(h.finalize())
}
