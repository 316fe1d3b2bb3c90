//! Streaming bodies in both directions. Bytes are counted as they pass, never buffered, so a
//! 1 GiB upload costs the same memory as a 1 KiB one. The response body carries the
//! [`Completion`] of phase 11 and fires it when the last frame is sent or the body is dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::h1::Framing;
use crate::pool::Lent;
use crate::record::Completion;
use crate::upstream::BoxError;

/// The client's request body on its way upstream, counting bytes into a shared counter:
/// streamed as it arrives, or already read whole for a route that buffers bodies.
#[derive(Debug)]
pub struct RequestBody {
    inner: Source,
    counter: Option<Arc<AtomicU64>>,
}

#[derive(Debug)]
enum Source {
    Incoming(Incoming),
    /// Read whole (and counted) before forwarding; `None` once sent.
    Buffered(Option<Bytes>),
}

impl RequestBody {
    pub fn new(inner: Incoming, counter: Option<Arc<AtomicU64>>) -> Self {
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
    mut body: Incoming,
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
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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

/// A response body as the upstream sends it.
#[derive(Debug)]
pub enum Relay {
    /// From hyper's client: HTTP/2 upstreams and upgrades.
    Incoming(Incoming),
    /// From a pooled HTTP/1.1 connection, which reads it and is released at its end.
    Pooled { framing: Framing, conn: Lent },
}

enum Inner {
    Incoming(Incoming),
    /// Read from `ResponseBody::conn`.
    Pooled(Framing),
    Fixed(Option<Bytes>),
}

/// The body sent to the client: relayed from upstream or a fixed local body.
pub struct ResponseBody {
    inner: Inner,
    /// The HTTP/1.1 upstream connection a pooled body is read from, returned to its pool
    /// once the body is complete.
    conn: Option<Lent>,
    completion: Option<Completion>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    pub fn upstream(body: Relay, completion: Completion) -> Self {
        match body {
            Relay::Incoming(body) => ResponseBody {
                inner: Inner::Incoming(body),
                conn: None,
                completion: Some(completion),
            },
            Relay::Pooled {
                mut framing,
                mut conn,
            } => {
                // A small response usually arrives whole with its head: its connection is
                // free before a byte goes to the client.
                let buffered = conn.take_buffered(&mut framing);
                if framing.is_end() {
                    conn.release();
                    return Self::fixed(buffered.unwrap_or_default(), Some(completion));
                }
                ResponseBody {
                    inner: Inner::Pooled(framing),
                    conn: Some(conn),
                    completion: Some(completion),
                }
            }
        }
    }

    pub fn fixed(bytes: Bytes, completion: Option<Completion>) -> Self {
        let mut b = ResponseBody {
            inner: Inner::Fixed((!bytes.is_empty()).then_some(bytes)),
            conn: None,
            completion,
        };
        if let Some(c) = &mut b.completion {
            if let Inner::Fixed(Some(d)) = &b.inner {
                c.add_response_bytes(d.len() as u64);
            }
        }
        b
    }

    /// A local body with no metrics attached (admin endpoints).
    pub fn plain(bytes: impl Into<Bytes>) -> Self {
        Self::fixed(bytes.into(), None)
    }

    fn release_conn(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
    }

    /// Records now; the body counts as complete.
    fn finish(&mut self) {
        self.release_conn();
        if let Some(c) = self.completion.take() {
            c.finish(true);
        }
    }

    /// The body failed: its connection is closed, the request recorded as cut short.
    fn fail(&mut self) {
        self.conn = None;
        if let Some(c) = self.completion.take() {
            c.finish(false);
        }
    }

    fn count(&mut self, frame: &Frame<Bytes>) {
        if let (Some(d), Some(c)) = (frame.data_ref(), self.completion.as_mut()) {
            c.add_response_bytes(d.len() as u64);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match &mut this.inner {
            Inner::Fixed(data) => {
                let frame = data.take().map(|d| Ok(Frame::data(d)));
                if frame.is_none() {
                    this.finish();
                }
                Poll::Ready(frame)
            }
            Inner::Pooled(framing) => {
                let Some(conn) = &mut this.conn else {
                    return Poll::Ready(None);
                };
                let polled = conn.poll_body(cx, framing);
                let end = framing.is_end();
                match polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        this.count(&frame);
                        // The last bytes are in hand: the connection can serve another
                        // request while they go to the client.
                        if end {
                            this.finish();
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(None) => {
                        this.finish();
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(e))) => {
                        this.fail();
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            Inner::Incoming(body) => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => this.count(frame),
                    Poll::Ready(None) => this.finish(),
                    Poll::Ready(Some(Err(_))) => this.fail(),
                    Poll::Pending => {}
                }
                polled.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Fixed(d) => d.is_none(),
            Inner::Pooled(f) => f.is_end(),
            Inner::Incoming(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Fixed(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Pooled(f) => f
                .exact()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            Inner::Incoming(b) => b.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper may drop a body it knows is empty (HEAD, 204, 304) without polling it; that
        // is a complete response. Anything else dropped early was cut short by the client.
        let complete = self.is_end_stream();
        if complete {
            self.release_conn();
        }
        if let Some(c) = self.completion.take() {
            c.finish(complete);
        }
    }
}
