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

use crate::pool::Lent;
use crate::record::Completion;

/// The client's request body on its way upstream, counting bytes into a shared counter.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    counter: Option<Arc<AtomicU64>>,
}

impl RequestBody {
    pub fn new(inner: Incoming, counter: Option<Arc<AtomicU64>>) -> Self {
        RequestBody { inner, counter }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(c)) = (&polled, &this.counter) {
            if let Some(d) = frame.data_ref() {
                c.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

enum Inner {
    Upstream(Incoming),
    Fixed(Option<Bytes>),
}

/// The body sent to the client: relayed from upstream or a fixed local body.
pub struct ResponseBody {
    inner: Inner,
    /// The HTTP/1.1 upstream connection the body arrives on: driven here, and returned to
    /// its pool once the body is complete.
    conn: Option<Lent>,
    completion: Option<Completion>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    pub fn upstream(body: Incoming, conn: Option<Lent>, completion: Completion) -> Self {
        let mut b = ResponseBody {
            inner: Inner::Upstream(body),
            conn,
            completion: Some(completion),
        };
        // Nothing to read (HEAD, 204, 304, an empty body): the connection is free now.
        if b.is_end_stream() {
            b.release_conn();
        }
        b
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
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match &mut this.inner {
            Inner::Fixed(data) => {
                let frame = data.take().map(|d| Ok(Frame::data(d)));
                if frame.is_none() {
                    this.finish();
                }
                Poll::Ready(frame)
            }
            Inner::Upstream(body) => {
                // What the connection already read is delivered without touching its IO;
                // only when nothing is waiting does the connection get to read more.
                let mut polled = Pin::new(&mut *body).poll_frame(cx);
                if polled.is_pending() {
                    if let Some(conn) = &mut this.conn {
                        conn.drive(cx);
                        polled = Pin::new(body).poll_frame(cx);
                    }
                }
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(d), Some(c)) = (frame.data_ref(), this.completion.as_mut()) {
                            c.add_response_bytes(d.len() as u64);
                        }
                    }
                    Poll::Ready(None) => this.finish(),
                    Poll::Ready(Some(Err(_))) => {
                        this.conn = None;
                        if let Some(c) = this.completion.take() {
                            c.finish(false);
                        }
                    }
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Fixed(d) => d.is_none(),
            Inner::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Fixed(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Upstream(b) => b.size_hint(),
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
