//! The HTTP/1.1 upstream connection pool, connection-affine.
//!
//! A pooled connection has no task of its own. Whoever holds it drives it: the request's
//! task while it writes the request and waits for the response head, then the response
//! body (polled by the client connection's task) until the last byte is relayed, when the
//! connection goes back to its endpoint's idle list. Compared with a pool whose connections
//! run on tasks of their own, a request costs no cross-task hand-offs (request, response
//! head and every body frame would otherwise each wake another task), and backpressure is
//! plain: a client that stops reading stops the upstream read too.
//!
//! The protocol is spoken by [`crate::h1`]. Idle connections are swept by a reaper task
//! that closes the ones idle longer than `idle_timeout` or closed by the upstream. Taking an
//! idle connection checks, without blocking, that the upstream has not closed it since; one
//! closed just after that check fails its exchange before any response byte, and the request
//! is sent again on a fresh connection when that cannot repeat it: nothing was written yet,
//! or it has no body and an idempotent method.
//!
//! An upstream has at most `max_connections` HTTP/1.1 connections, idle and in use, over
//! all its endpoints: each holds a permit of the pool's semaphore. A request that finds no
//! idle connection and no permit first closes an idle connection of another endpoint (its
//! permit is then free), else waits up to `connect_timeout` for a connection to come back
//! or close, then fails (503, `connection_limit`). Taking a permit happens only when a
//! connection is opened, never for a reused one.
//!
//! Upgrade requests (WebSocket) go through hyper's client on a connection of their own,
//! which the upgraded stream then keeps; they are not counted against the limit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{request, response, Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower::Service;

use crate::h1::{self, Framing};
use crate::transport::{ActiveConn, BoxError, Counted, CountingConnector};
use crate::upload::RequestBody;

/// A pooled connection: HTTP/1.1 over a counted TCP or TLS connection.
type Conn = h1::Conn<TokioIo<Counted>>;

/// Why a request could not be sent or answered.
#[derive(Debug)]
pub enum SendError {
    /// Opening the connection (TCP, TLS) failed or took longer than `connect_timeout`.
    Connect(BoxError),
    /// The exchange on an open connection failed.
    Exchange(h1::Error),
    /// The upgrade exchange (on hyper's client) failed.
    Upgrade(hyper::Error),
    /// Every connection the upstream may have was in use for `connect_timeout`.
    Busy,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Exchange(e) => write!(f, "{e}"),
            SendError::Upgrade(e) => write!(f, "{e}"),
            SendError::Busy => write!(f, "all of the upstream's connections are in use"),
        }
    }
}

struct Idle {
    conn: Box<Conn>,
    permit: OwnedSemaphorePermit,
    /// Sweeps this connection has sat through idle; no clock is read per request.
    sweeps: u32,
}

struct Slot {
    /// `scheme://authority` of the endpoint, what the connector dials.
    uri: Uri,
    idle: Mutex<Vec<Idle>>,
}

struct Shared {
    slots: Vec<Slot>,
    connector: CountingConnector,
    /// For upgrades, which leave the pool.
    builder: http1::Builder,
    connect_timeout: Duration,
    max_idle: usize,
    /// A permit per connection the upstream may have.
    limit: Arc<Semaphore>,
    /// Requests waiting for a connection at the limit, and their wake-up when one comes
    /// back to an idle list.
    waiting: AtomicUsize,
    released: Notify,
    reaper: AtomicBool,
    /// How often the reaper sweeps, and how many sweeps a connection may sit through idle:
    /// it is closed between `idle_timeout` and `idle_timeout` plus one period after its
    /// last use.
    sweep_period: Duration,
    max_sweeps: u32,
}

/// The pool of one upstream: an idle list per endpoint.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("endpoints", &self.shared.slots.len())
            .finish_non_exhaustive()
    }
}

/// A connection on loan to one exchange. Drive it while the response body streams, then
/// [`release`](Self::release) it when the body is complete; dropping it closes it.
struct Lent {
    /// Boxed: the protocol state is large, and futures and bodies holding it move.
    conn: Box<Conn>,
    shared: Arc<Shared>,
    slot: usize,
    /// Its place under the upstream's connection limit, given back when it closes.
    permit: OwnedSemaphorePermit,
    /// A connection on loan is an active one; back in the idle list (or closed) it is not.
    _active: ActiveConn,
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent").field("slot", &self.slot).finish()
    }
}

impl Lent {
    /// Returns the connection to its idle list if the exchange left it reusable (the
    /// upstream did not ask to close, nothing is left unread or unsent), or closes it.
    /// Only for an exchange whose response body was read to its end.
    fn release(self) {
        if !self.conn.is_reusable() {
            return;
        }
        let shared = self.shared;
        let mut idle = shared.slots[self.slot]
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if idle.len() < shared.max_idle {
            idle.push(Idle {
                conn: self.conn,
                permit: self.permit,
                sweeps: 0,
            });
            drop(idle);
            if shared.waiting.load(Ordering::Acquire) > 0 {
                shared.released.notify_waiters();
            }
        }
    }
}

/// A response body read from a pooled connection. The connection goes back to its idle
/// list as soon as the last byte is read (before it reaches the client), and is closed if
/// the body fails or is given up before its end.
pub struct PooledBody {
    framing: Framing,
    /// `None` once released or closed.
    conn: Option<Lent>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl PooledBody {
    /// The whole body, when it is already read (the common small response, which arrived
    /// with its head, or no body at all): the connection is released at once.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        let conn = self.conn.as_mut()?;
        let buffered = conn.conn.take_buffered(&mut self.framing);
        if !self.framing.is_end() {
            return None;
        }
        self.release();
        Some(buffered.unwrap_or_default())
    }

    /// The next frame (see [`h1::Conn::poll_body`]); the connection is released with the
    /// last one, or closed on an error.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(None);
        };
        let polled = conn.conn.poll_body(cx, &mut self.framing);
        match &polled {
            Poll::Ready(Some(Ok(_))) if self.framing.is_end() => self.release(),
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.conn = None,
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    /// Whether the last byte has been read.
    pub fn is_end(&self) -> bool {
        self.framing.is_end()
    }

    pub fn size_hint(&self) -> SizeHint {
        self.framing
            .exact()
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }

    /// Gives the connection back to its idle list if the body was read to its end (and the
    /// exchange left it reusable); otherwise keeps it, to be closed when dropped.
    pub fn release(&mut self) {
        if self.framing.is_end() {
            if let Some(conn) = self.conn.take() {
                conn.release();
            }
        }
    }

    /// Closes the connection: the body is given up before its end.
    pub fn close(&mut self) {
        self.conn = None;
    }
}

impl Pool {
    /// A pool dialling `endpoints` (one `scheme://authority` each) through `connector`.
    pub fn new(
        endpoints: Vec<Uri>,
        connector: CountingConnector,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        max_connections: usize,
    ) -> Self {
        let sweep_period =
            (idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(15));
        let max_sweeps = u32::try_from(idle_timeout.as_nanos().div_ceil(sweep_period.as_nanos()))
            .unwrap_or(u32::MAX);
        let mut builder = http1::Builder::new();
        // One write per message: the head and a small body are copied into one buffer, which
        // costs less than a vectored write of separate slices.
        builder.writev(false);
        Pool {
            shared: Arc::new(Shared {
                slots: endpoints
                    .into_iter()
                    .map(|uri| Slot {
                        uri,
                        idle: Mutex::new(Vec::new()),
                    })
                    .collect(),
                connector,
                builder,
                connect_timeout,
                max_idle,
                limit: Arc::new(Semaphore::new(max_connections)),
                waiting: AtomicUsize::new(0),
                released: Notify::new(),
                reaper: AtomicBool::new(false),
                sweep_period,
                max_sweeps,
            }),
        }
    }

    /// Sends a request (origin-form target in `parts`) to endpoint `slot` and waits for
    /// the response head. The returned body reads the rest from the connection.
    pub async fn send(
        &self,
        slot: usize,
        parts: &request::Parts,
        mut body: RequestBody,
    ) -> Result<(response::Parts, PooledBody), SendError> {
        let had_body = !http_body::Body::is_end_stream(&body);
        loop {
            let (conn, permit, reused) = match self.checkout(slot) {
                Some((conn, permit)) => (conn, permit, true),
                // Boxed: connecting is rare, and its state would otherwise make every
                // request's future larger.
                None => match Box::pin(self.reserve(slot)).await? {
                    Reserved::Idle(conn, permit) => (conn, permit, true),
                    Reserved::New(permit) => (Box::pin(self.connect(slot)).await?, permit, false),
                },
            };
            let mut lent = Lent {
                conn,
                shared: self.shared.clone(),
                slot,
                permit,
                _active: ActiveConn::new(self.shared.connector.stats()),
            };
            match lent.conn.exchange(parts, &mut body).await {
                Ok((head, framing)) => {
                    // Answered before the body was all sent (a 413, say): the rest of the
                    // body is read and discarded, so the client can finish sending and then
                    // read the answer; closing on unread data would reset the connection
                    // and could destroy the answer on its way.
                    if !lent.conn.wrote_request() && !http_body::Body::is_end_stream(&body) {
                        body.discard();
                    }
                    let conn = Some(lent);
                    return Ok((head, PooledBody { framing, conn }));
                }
                // A kept-alive connection the upstream closed just as it was taken: the
                // request goes again on another, if that cannot repeat anything.
                Err(e) if reused && lent.conn.may_retry(&e, &parts.method, had_body) => {
                    tracing::debug!(error = %e, "reused upstream connection was closed; retrying");
                }
                Err(e) => return Err(SendError::Exchange(e)),
            }
        }
    }

    /// Sends an upgrade request (WebSocket) on a connection of its own, outside the pool:
    /// after `101 Switching Protocols` the connection belongs to the upgraded stream.
    pub async fn send_upgrade(
        &self,
        slot: usize,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut io = self.dial(slot).await?;
        // The connection serves this exchange and then the tunnel (if the upgrade is
        // accepted) until it closes: active all along, never idle.
        io.dedicate();
        let (mut sender, driver) = self
            .shared
            .builder
            .handshake(io)
            .await
            .map_err(SendError::Upgrade)?;
        tokio::spawn(async move {
            if let Err(e) = driver.with_upgrades().await {
                tracing::debug!(error = %e, "upgraded upstream connection ended with an error");
            }
        });
        sender.send_request(req).await.map_err(SendError::Upgrade)
    }

    /// Takes the most recently used idle connection that is still usable, closing the
    /// others on the way. An upstream close that arrives after this check is caught by the
    /// exchange, which retries when it safely can.
    fn checkout(&self, slot: usize) -> Option<(Box<Conn>, OwnedSemaphorePermit)> {
        let idle = &self.shared.slots[slot].idle;
        loop {
            let entry = idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            let mut conn = entry.conn;
            if conn.is_usable() {
                return Some((conn, entry.permit));
            }
        }
    }

    /// A place for a new connection to endpoint `slot` under the upstream's limit, or an
    /// idle connection to it that came back meanwhile.
    async fn reserve(&self, slot: usize) -> Result<Reserved, SendError> {
        let shared = &self.shared;
        if let Ok(p) = shared.limit.clone().try_acquire_owned() {
            return Ok(Reserved::New(p));
        }
        // At the limit: an idle connection of another endpoint gives its place up.
        if shared.close_one_idle() {
            if let Ok(p) = shared.limit.clone().try_acquire_owned() {
                return Ok(Reserved::New(p));
            }
        }
        shared.waiting.fetch_add(1, Ordering::AcqRel);
        let wait = async {
            loop {
                let released = shared.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if let Some((conn, permit)) = self.checkout(slot) {
                    return Reserved::Idle(conn, permit);
                }
                tokio::select! {
                    p = shared.limit.clone().acquire_owned() => match p {
                        Ok(p) => return Reserved::New(p),
                        // The semaphore is never closed.
                        Err(_) => std::future::pending::<()>().await,
                    },
                    () = &mut released => {}
                }
            }
        };
        let waited = tokio::time::timeout(shared.connect_timeout, wait).await;
        shared.waiting.fetch_sub(1, Ordering::AcqRel);
        waited.map_err(|_| SendError::Busy)
    }

    async fn connect(&self, slot: usize) -> Result<Box<Conn>, SendError> {
        let io = self.dial(slot).await?;
        self.start_reaper();
        Ok(Box::new(Conn::over(TokioIo::new(io))))
    }

    /// Opens a transport connection (TCP, and TLS for `https`) within `connect_timeout`.
    async fn dial(&self, slot: usize) -> Result<Counted, SendError> {
        let mut connector = self.shared.connector.clone();
        let dial = connector.call(self.shared.slots[slot].uri.clone());
        match tokio::time::timeout(self.shared.connect_timeout, dial).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(e)) => Err(SendError::Connect(e)),
            Err(_) => Err(SendError::Connect("connect timed out".into())),
        }
    }

    /// Starts the idle sweeper on first use (pools are also built where no runtime runs,
    /// e.g. by `fedgate check`). It stops when the pool is dropped.
    fn start_reaper(&self) {
        if self.shared.reaper.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let period = self.shared.sweep_period;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                shared.sweep();
            }
        });
    }
}

/// What [`Pool::reserve`] found.
enum Reserved {
    New(OwnedSemaphorePermit),
    Idle(Box<Conn>, OwnedSemaphorePermit),
}

impl Shared {
    /// Closes the longest-idle connection of any endpoint; whether there was one.
    fn close_one_idle(&self) -> bool {
        let oldest = self.slots.iter().find_map(|slot| {
            let mut idle = slot.idle.lock().unwrap_or_else(|e| e.into_inner());
            (!idle.is_empty()).then(|| idle.remove(0))
        });
        // Dropped (closed, its permit given back) outside the lock.
        oldest.is_some()
    }

    /// Closes idle connections that sat through more than `max_sweeps` sweeps, or that the
    /// upstream closed.
    fn sweep(&self) {
        for slot in &self.slots {
            let mut closed = Vec::new();
            {
                let mut idle = slot.idle.lock().unwrap_or_else(|e| e.into_inner());
                // Oldest first stays oldest first: checkout takes from the end.
                for mut entry in std::mem::take(&mut *idle) {
                    entry.sweeps += 1;
                    if entry.sweeps <= self.max_sweeps && entry.conn.is_usable() {
                        idle.push(entry);
                    } else {
                        closed.push(entry);
                    }
                }
            }
            // Closing (dropping) happens outside the lock.
            drop(closed);
        }
    }
}
