//! The client's request body on its way upstream (an upload, whatever its size): read from
//! hyper's body with trailers dropped and, for HTTP/2 clients, an end that is confirmed
//! before it is believed ([`ClientBody`], [`EndGate`]), counted as it passes, streamed or
//! read whole first ([`read_whole`]), and read to its end and dropped when the upstream
//! answered without it ([`RequestBody::discard`]). Below the HTTP/1.1 pool and the
//! upstreams, which send it; the response side is [`crate::body`].

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::transport::BoxError;

/// The client's request body on its way upstream, counting bytes into a shared counter:
/// streamed as it arrives, or already read whole for a route that buffers bodies.
#[derive(Debug)]
pub struct RequestBody {
    inner: Source,
    counter: Option<Arc<AtomicU64>>,
}

#[derive(Debug)]
enum Source {
    Incoming(ClientBody),
    /// Read whole (and counted) before forwarding; `None` once sent.
    Buffered(Option<Bytes>),
}

impl RequestBody {
    pub fn new(inner: ClientBody, counter: Option<Arc<AtomicU64>>) -> Self {
        RequestBody {
            inner: Source::Incoming(inner),
            counter,
        }
    }

    /// Reads the rest of the body in a task of its own and drops it, for at most
    /// [`DISCARD_TIME`] and [`DISCARD_BYTES`], like a lingering close.
    pub fn discard(mut self) {
        tokio::spawn(async move {
            let mut left = DISCARD_BYTES;
            let drain = async {
                while let Some(Ok(frame)) =
                    std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await
                {
                    let n = frame.data_ref().map_or(0, Bytes::len) as u64;
                    match left.checked_sub(n) {
                        Some(l) => left = l,
                        None => return,
                    }
                }
            };
            let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
        });
    }

    /// A copy to send again on a retry: only a body held whole (or none at all) can be;
    /// a streaming body was partly sent and is gone.
    pub fn replica(&self) -> Option<RequestBody> {
        match &self.inner {
            Source::Buffered(b) => Some(RequestBody {
                inner: Source::Buffered(b.clone()),
                counter: None,
            }),
            Source::Incoming(i) if i.is_end_stream() => Some(RequestBody {
                inner: Source::Buffered(None),
                counter: None,
            }),
            Source::Incoming(_) => None,
        }
    }

    /// A body read whole before forwarding; its bytes were counted as they were read.
    pub fn buffered(bytes: Bytes) -> Self {
        RequestBody {
            inner: Source::Buffered((!bytes.is_empty()).then_some(bytes)),
            counter: None,
        }
    }
}

/// The client's request body as the proxy reads it: hyper's body, with request trailers
/// dropped (they are never forwarded: RFC 9110 §6.5.1 lets a trailer carry nothing that
/// frames, routes or authenticates the message, and a proxy that cannot vet them passes
/// none), and, for HTTP/2 clients, an end that is confirmed before it is believed.
///
/// hyper reports an HTTP/2 request stream the client reset with `NO_ERROR` or `CANCEL` as
/// a body that ended, exactly like one that ended with END_STREAM. Passed on, a reset
/// upload would reach the upstream as complete: the last chunk written, the DATA frame
/// sent with END_STREAM. So the end of an HTTP/2 body is held back until the request's
/// [`EndGate`] confirms it: hyper checks for a reset of the stream every time the request's
/// future is pending, and drops the future when it finds one. A future that is polled
/// again after being pending with the end in sight has therefore been through that check
/// since the body ended, and the end is real; a future dropped before that was reset, and
/// the body fails instead (the upstream exchange is aborted, its connection closed).
#[derive(Debug)]
pub struct ClientBody {
    inner: Incoming,
    gate: Option<Arc<EndGate>>,
    /// The inner body returned its end; it is not polled again.
    ended: bool,
}

impl ClientBody {
    /// A body whose end is believed as hyper reports it (HTTP/1.1: hyper's framing already
    /// tells a cut-off body from a complete one).
    pub fn new(inner: Incoming) -> Self {
        ClientBody {
            inner,
            gate: None,
            ended: false,
        }
    }

    /// A body whose end `gate` confirms (HTTP/2 clients).
    pub fn gated(inner: Incoming, gate: Arc<EndGate>) -> Self {
        ClientBody {
            inner,
            gate: Some(gate),
            ended: false,
        }
    }

    /// Whether the body has failed (a client error, or a reset stream): a try that failed
    /// with it failed because of the client, not the upstream.
    pub fn failure_watch(&mut self) -> Arc<EndGate> {
        self.gate.get_or_insert_with(|| EndGate::new(false)).clone()
    }
}

/// The error of a body whose HTTP/2 stream the client reset before it ended.
#[derive(Debug, thiserror::Error)]
#[error("the client reset the request stream before its body ended")]
pub struct StreamReset;

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        while !this.ended {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) if frame.is_data() => return Poll::Ready(Some(Ok(frame))),
                // Trailers are dropped; hyper ends the body after them.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if let Some(g) = &this.gate {
                        g.fail();
                    }
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => this.ended = true,
            }
        }
        match &this.gate {
            Some(g) if g.confirms => g.poll_end(cx),
            _ => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        // A gated body's end is known only once it is confirmed.
        match &self.gate {
            Some(g) if g.confirms => g.state.load(Ordering::Acquire) == CONFIRMED,
            _ => self.ended || self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

const OPEN: u8 = 0;
/// The body returned its end; its owner has not yet been pending since.
const ENDED: u8 = 1;
/// The owner was pending with the end in sight: the reset check has run (or the owner is
/// dropped) before it is polled again.
const NOTED: u8 = 2;
const CONFIRMED: u8 = 3;
/// The owner went away with the end unconfirmed, or the body failed.
const FAILED: u8 = 4;
/// No owner is left to confirm an end that has not happened yet.
const ORPHANED: u8 = 5;

/// Confirms the end of an HTTP/2 request body (see [`ClientBody`]) and records whether the
/// body failed. Owned first by the request's future ([`crate::body::Guarded`]), then by the response
/// body when the response is ready before the request body has ended.
#[derive(Debug)]
pub struct EndGate {
    state: AtomicU8,
    /// Whether ends wait for confirmation (HTTP/2), or only failures are recorded.
    confirms: bool,
    /// The body waiting for its end to be confirmed.
    body: AtomicWaker,
    /// The owner, woken when the body's end is in sight.
    owner: AtomicWaker,
}

impl EndGate {
    pub fn new(confirms: bool) -> Arc<Self> {
        Arc::new(EndGate {
            state: AtomicU8::new(OPEN),
            confirms,
            body: AtomicWaker::new(),
            owner: AtomicWaker::new(),
        })
    }

    /// Whether the body failed or its stream was reset.
    pub fn failed(&self) -> bool {
        self.state.load(Ordering::Acquire) == FAILED
    }

    /// Whether the end was confirmed or the body failed: nothing is left to watch.
    pub(crate) fn settled(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), CONFIRMED | FAILED)
    }

    fn fail(&self) {
        self.state.store(FAILED, Ordering::Release);
        self.owner.wake();
    }

    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.body.register(cx.waker());
        loop {
            match self.state.load(Ordering::Acquire) {
                CONFIRMED => return Poll::Ready(None),
                FAILED | ORPHANED => {
                    self.state.store(FAILED, Ordering::Release);
                    return Poll::Ready(Some(Err(StreamReset.into())));
                }
                OPEN => {
                    if self
                        .state
                        .compare_exchange(OPEN, ENDED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.owner.wake();
                        return Poll::Pending;
                    }
                }
                _ => return Poll::Pending,
            }
        }
    }

    /// Called by the owner at the start of each of its polls.
    pub(crate) fn owner_enter(&self, cx: &mut Context<'_>) {
        self.owner.register(cx.waker());
        if self
            .state
            .compare_exchange(NOTED, CONFIRMED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.body.wake();
        }
    }

    /// Called by the owner as it returns; `pending`: it returns pending (and is woken
    /// again at once when the end is in sight, so the end is confirmed soon).
    pub(crate) fn owner_leave(&self, cx: &mut Context<'_>, pending: bool) {
        if self
            .state
            .compare_exchange(ENDED, NOTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && pending
        {
            cx.waker().wake_by_ref();
        }
    }

    /// Called when the owner goes away: an end not yet confirmed never will be.
    pub(crate) fn owner_gone(&self) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| match s {
                ENDED | NOTED => Some(FAILED),
                OPEN => Some(ORPHANED),
                _ => None,
            });
        self.body.wake();
    }
}

/// Longest a request body the upstream did not wait for is still read, and how much of it.
pub const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(5);
pub const DISCARD_BYTES: u64 = 64 << 20;

/// Why a body could not be buffered.
#[derive(Debug, PartialEq, Eq)]
pub enum BufferError {
    /// Longer than the route's `buffer_body`.
    TooLarge,
    /// The client's stream failed or ended early.
    Client,
}

/// Reads a request body whole, refusing it as soon as it passes `limit` bytes.
pub async fn read_whole(
    mut body: ClientBody,
    limit: usize,
    counter: Option<&AtomicU64>,
) -> Result<Bytes, BufferError> {
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit as u64 {
        return Err(BufferError::TooLarge);
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    // A body with a length is complete once that many bytes arrived: waiting for hyper to
    // signal its end as well would cost the connection's task another trip through the
    // scheduler.
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|_| BufferError::Client)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if let Some(c) = counter {
            c.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        let have = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if have + data.len() > limit {
            return Err(BufferError::TooLarge);
        }
        // The usual small body arrives in one frame and is kept without a copy.
        match &first {
            None => first = Some(data),
            Some(f) => {
                if rest.is_empty() {
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(rest)
    })
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let inner = match &mut this.inner {
            Source::Incoming(i) => i,
            Source::Buffered(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(c)) = (&polled, &this.counter) {
            if let Some(d) = frame.data_ref() {
                c.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Incoming(i) => i.is_end_stream(),
            Source::Buffered(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Incoming(i) => i.size_hint(),
            Source::Buffered(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
