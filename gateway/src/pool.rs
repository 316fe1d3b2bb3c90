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
//! Idle connections are swept by a reaper task that closes the ones idle longer than
//! `idle_timeout` or closed by the upstream. One the upstream closed since the last sweep is
//! noticed by the first poll of the exchange that takes it: that poll reads the end of
//! stream before it writes anything, so the request was never sent, hyper hands it back
//! untouched, and it is retried on a fresh connection. That is safe for every method.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tower::Service;

use crate::body::RequestBody;
use crate::upstream::{BoxError, Counted, CountingConnector};

type Sender = http1::SendRequest<RequestBody>;
type Driver = http1::Connection<Counted, RequestBody>;

/// Why a request could not be sent or answered.
#[derive(Debug)]
pub enum SendError {
    /// Opening the connection (TCP, TLS) failed or took longer than `connect_timeout`.
    Connect(BoxError),
    /// The exchange on an open connection failed.
    Http(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Http(e) => write!(f, "{e}"),
        }
    }
}

/// One HTTP/1.1 connection: the request sender and the protocol state machine that does
/// the IO, driven by whoever holds it.
struct Conn {
    sender: Sender,
    driver: Driver,
    /// The driver finished (closed by either side, or failed): never poll it again.
    done: bool,
}

impl Conn {
    /// Lets the connection do whatever IO is ready. Registers `cx` for more.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if self.done {
            return;
        }
        if let Poll::Ready(result) = Pin::new(&mut self.driver).poll(cx) {
            self.done = true;
            if let Err(e) = result {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        }
    }

    /// Whether the connection can carry another request now.
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx);
        !self.done && matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }
}

struct Idle {
    conn: Box<Conn>,
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
    builder: http1::Builder,
    connect_timeout: Duration,
    max_idle: usize,
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
pub struct Lent {
    /// Boxed: the protocol state is large, and futures and bodies holding it move.
    conn: Box<Conn>,
    shared: Arc<Shared>,
    slot: usize,
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent").field("slot", &self.slot).finish()
    }
}

impl Lent {
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        self.conn.drive(cx);
    }

    /// Returns the connection to its idle list if the exchange left it reusable (the
    /// upstream did not ask to close, nothing is left unread), or closes it.
    pub fn release(mut self) {
        // Usually the read that finished the body also left the connection waiting for
        // the next request; only otherwise is it polled (without a waker) to get there.
        if !(!self.conn.done && self.conn.sender.is_ready()) {
            let mut cx = Context::from_waker(Waker::noop());
            if !self.conn.reusable(&mut cx) {
                return;
            }
        }
        let shared = self.shared;
        let mut idle = shared.slots[self.slot]
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if idle.len() < shared.max_idle {
            idle.push(Idle {
                conn: self.conn,
                sweeps: 0,
            });
        }
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
                reaper: AtomicBool::new(false),
                sweep_period,
                max_sweeps,
            }),
        }
    }

    /// Idle connections of endpoint `slot` right now.
    pub fn idle(&self, slot: usize) -> usize {
        self.shared.slots[slot]
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Sends `req` (origin-form target) to endpoint `slot` and waits for the response head.
    /// The returned connection must be driven while the response body is read.
    pub async fn send(
        &self,
        slot: usize,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lent), SendError> {
        loop {
            let (conn, reused) = match self.checkout(slot) {
                Some(conn) => (conn, true),
                // Boxed: connecting is rare, and its state would otherwise make every
                // request's future (moved several times on its way into hyper) larger.
                None => (Box::pin(self.connect(slot)).await?, false),
            };
            let mut lent = Lent {
                conn,
                shared: self.shared.clone(),
                slot,
            };
            let mut response = std::pin::pin!(lent.conn.sender.try_send_request(req));
            let result = poll_fn(|cx| {
                lent.conn.drive(cx);
                response.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(resp) => return Ok((resp, lent)),
                Err(mut e) => match e.take_message() {
                    // Not a byte of it was written: the reused connection was closing.
                    Some(back) if reused => req = back,
                    _ => return Err(SendError::Http(e.into_error())),
                },
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
        let io = self.dial(slot).await?;
        let (mut sender, driver) = self
            .shared
            .builder
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = driver.with_upgrades().await {
                tracing::debug!(error = %e, "upgraded upstream connection ended with an error");
            }
        });
        sender.send_request(req).await.map_err(SendError::Http)
    }

    /// Takes the most recently used idle connection, closing closed ones on the way.
    ///
    /// Whether the upstream closed it while it sat idle is found out by the first poll of
    /// the exchange, which reads the pending end of stream before writing anything; hyper
    /// then hands the request back and [`send`](Self::send) retries on a fresh connection.
    fn checkout(&self, slot: usize) -> Option<Box<Conn>> {
        let idle = &self.shared.slots[slot].idle;
        loop {
            let entry = idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            let conn = entry.conn;
            if !conn.done && conn.sender.is_ready() {
                return Some(conn);
            }
        }
    }

    async fn connect(&self, slot: usize) -> Result<Box<Conn>, SendError> {
        let io = self.dial(slot).await?;
        let (sender, driver) = self
            .shared
            .builder
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        self.start_reaper();
        Ok(Box::new(Conn {
            sender,
            driver,
            done: false,
        }))
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

impl Shared {
    /// Closes idle connections that sat through more than `max_sweeps` sweeps, or that the
    /// upstream closed.
    fn sweep(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        for slot in &self.slots {
            let mut closed = Vec::new();
            {
                let mut idle = slot.idle.lock().unwrap_or_else(|e| e.into_inner());
                // Oldest first stays oldest first: checkout takes from the end.
                for mut entry in std::mem::take(&mut *idle) {
                    entry.sweeps += 1;
                    if entry.sweeps <= self.max_sweeps && entry.conn.reusable(&mut cx) {
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
