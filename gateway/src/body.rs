//! The response body sent to the client: relayed from the upstream ([`Relay`]) or a fixed
//! local one, counted as it passes, never buffered, so a 1 GiB download costs the same
//! memory as a 1 KiB one. It carries the [`Completion`] of phase 11 and the endpoint
//! [`Lease`], and when the last frame is sent or the body is dropped it records the request
//! and then gives the lease back. What the upstream sends is read by [`Relay`]: this module
//! knows neither the pool nor the framing.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::record::Completion;
use crate::transport::BoxError;
use crate::upload::EndGate;
use crate::upstream::{Lease, Relay};

pin_project_lite::pin_project! {
    /// The future of an HTTP/2 request, owning its body's [`EndGate`] until the response
    /// is ready; the response body takes the gate over from there.
    pub struct Guarded<F> {
        #[pin]
        future: F,
        gate: Option<Arc<EndGate>>,
    }

    impl<F> PinnedDrop for Guarded<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(g) = this.project().gate.take() {
                g.owner_gone();
            }
        }
    }
}

impl<F> Guarded<F> {
    pub fn new(future: F, gate: Option<Arc<EndGate>>) -> Self {
        Guarded { future, gate }
    }
}

impl<F: std::future::Future<Output = http::Response<ResponseBody>>> std::future::Future
    for Guarded<F>
{
    type Output = http::Response<ResponseBody>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(gate) = this.gate.as_ref() else {
            return this.future.poll(cx);
        };
        gate.owner_enter(cx);
        match this.future.poll(cx) {
            Poll::Pending => {
                gate.owner_leave(cx, true);
                Poll::Pending
            }
            Poll::Ready(mut resp) => {
                if let Some(g) = this.gate.take() {
                    if !g.settled() {
                        resp.body_mut().gate = Some(g);
                    }
                }
                Poll::Ready(resp)
            }
        }
    }
}

enum Inner {
    Relay(Relay),
    Fixed(Option<Bytes>),
}

/// The body sent to the client: relayed from upstream or a fixed local body.
pub struct ResponseBody {
    inner: Inner,
    completion: Option<Completion>,
    /// The endpoint the response came from (or failed at): named in the record, and given
    /// back right after it.
    lease: Option<Lease>,
    /// The request body's end gate, when the response was ready before the request body
    /// ended (see [`crate::upload::ClientBody`]).
    gate: Option<Arc<EndGate>>,
    /// How long the upstream may leave the body without a byte before it is cut off.
    idle: Option<IdleTimer>,
    /// Keeps the client connection from counting as idle while this body is being sent.
    open: Option<crate::server::Open>,
}

/// The idle timeout of a relayed body: armed when a read has to wait, pushed back when a
/// frame arrives. A body that arrives whole never touches the timer.
struct IdleTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    moved: bool,
}

impl IdleTimer {
    /// Whether the body has been idle for longer than the timeout; registers for the
    /// timer otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if std::mem::take(&mut self.moved) {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + self.timeout);
        }
        std::future::Future::poll(sleep.as_mut(), cx).is_ready()
    }
}

/// A relayed response body stalled for longer than the route's timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing of the response body for {0:?}")]
pub struct BodyIdle(pub Duration);

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// The upstream's body from the endpoint `lease` holds, relayed; cut off when it sends
    /// nothing for `idle_timeout`.
    pub fn upstream(
        mut relay: Relay,
        lease: Lease,
        completion: Completion,
        idle_timeout: Duration,
    ) -> Self {
        // A small response usually arrives whole with its head: its connection is free
        // before a byte goes to the client.
        if let Some(whole) = relay.take_whole() {
            let mut b = Self::fixed(whole, Some(completion));
            b.lease = Some(lease);
            return b;
        }
        ResponseBody {
            inner: Inner::Relay(relay),
            completion: Some(completion),
            lease: Some(lease),
            gate: None,
            idle: Some(IdleTimer {
                timeout: idle_timeout,
                sleep: None,
                moved: false,
            }),
            open: None,
        }
    }

    pub fn fixed(bytes: Bytes, completion: Option<Completion>) -> Self {
        let mut b = ResponseBody {
            inner: Inner::Fixed((!bytes.is_empty()).then_some(bytes)),
            completion,
            lease: None,
            gate: None,
            idle: None,
            open: None,
        };
        if let Some(c) = &mut b.completion {
            if let Inner::Fixed(Some(d)) = &b.inner {
                c.add_response_bytes(d.len() as u64);
            }
        }
        b
    }

    /// Holds the lease of the endpoint that failed, for a local answer in its place: the
    /// record names the endpoint, and its in-flight count lasts as long as the body.
    pub fn hold_lease(&mut self, lease: Lease) {
        self.lease = Some(lease);
    }

    /// Counts the client connection as busy until this body is sent or dropped.
    pub fn hold(&mut self, open: crate::server::Open) {
        self.open = Some(open);
    }

    /// A local body with no metrics attached (admin endpoints).
    pub fn plain(bytes: impl Into<Bytes>) -> Self {
        Self::fixed(bytes.into(), None)
    }

    /// Records the request (naming the leased endpoint), then gives the lease back.
    fn record(&mut self, complete: bool) {
        if let Some(c) = self.completion.take() {
            c.finish(complete, self.lease.as_ref().map(|l| &l.endpoint().label));
        }
        self.lease = None;
    }

    /// Records now; the body counts as complete.
    fn finish(&mut self) {
        self.record(true);
    }

    /// The body failed: its connection is closed, the request recorded as cut short.
    fn fail(&mut self) {
        if let Inner::Relay(r) = &mut self.inner {
            r.close();
        }
        self.record(false);
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
        if let Some(g) = &this.gate {
            g.owner_enter(cx);
        }
        let polled = this.poll_relay(cx);
        if let Some(g) = &this.gate {
            // hyper checks the stream for a reset before it polls the body again.
            g.owner_leave(cx, polled.is_pending());
        }
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if let Some(idle) = &mut this.idle {
                    idle.moved = true;
                }
            }
            Poll::Pending => {
                if let Some(idle) = this.idle.as_mut() {
                    if idle.expired(cx) {
                        let timeout = idle.timeout;
                        this.fail();
                        return Poll::Ready(Some(Err(BodyIdle(timeout).into())));
                    }
                }
            }
            Poll::Ready(_) => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Fixed(d) => d.is_none(),
            Inner::Relay(r) => r.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Fixed(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Relay(r) => r.size_hint(),
        }
    }
}

impl ResponseBody {
    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let relay = match &mut self.inner {
            Inner::Fixed(data) => {
                let frame = data.take().map(|d| Ok(Frame::data(d)));
                if frame.is_none() {
                    self.finish();
                }
                return Poll::Ready(frame);
            }
            Inner::Relay(relay) => relay,
        };
        let polled = relay.poll_frame(cx);
        // The last bytes of a pooled body are in hand: its connection already serves
        // another request while they go to the client.
        let done = relay.is_done();
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.count(frame);
                if done {
                    self.finish();
                }
            }
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => self.fail(),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper may drop a body it knows is empty (HEAD, 204, 304) without polling it; that
        // is a complete response. Anything else dropped early was cut short by the client.
        let complete = self.is_end_stream();
        if complete {
            if let Inner::Relay(r) = &mut self.inner {
                r.release();
            }
        }
        if let Some(g) = self.gate.take() {
            g.owner_gone();
        }
        self.record(complete);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use http_body_util::BodyExt;

    use super::*;
    use crate::metrics::{MethodLabel, Metrics};
    use crate::upstream::Upstream;

    /// An upstream of one endpoint, and a route's metrics.
    fn fixture() -> (Arc<Upstream>, Arc<crate::metrics::RouteMetrics>) {
        let text = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n[[routes]]\nupstream = \"app\"\n";
        let config = crate::config::from_str(text, std::path::Path::new(".")).unwrap();
        let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
        let up = Upstream::new(config.upstreams["app"].clone(), metrics.upstream("app")).unwrap();
        (Arc::new(up), metrics.route("all", "app"))
    }

    fn completion(route: &Arc<crate::metrics::RouteMetrics>) -> Completion {
        Completion::new(
            Instant::now(),
            route.clone(),
            MethodLabel::of(&http::Method::GET),
            None,
            None,
        )
    }

    #[tokio::test]
    async fn the_lease_a_body_holds_is_given_back_when_the_body_ends() {
        let (up, route) = fixture();
        let mut body = ResponseBody::fixed(
            Bytes::from_static(b"bad gateway\n"),
            Some(completion(&route)),
        );
        body.hold_lease(up.pick().unwrap());
        assert_eq!(up.endpoints[0].in_flight(), 1);
        assert_eq!(route.in_flight.get(), 1);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "bad gateway\n");
        assert!(body.frame().await.is_none());
        assert_eq!(route.in_flight.get(), 0, "recorded at the end");
        assert_eq!(up.endpoints[0].in_flight(), 0, "and the lease given back");
        drop(body);
        assert_eq!(route.in_flight.get(), 0, "recorded once");
    }

    #[tokio::test]
    async fn a_body_dropped_early_records_and_gives_its_lease_back() {
        let (up, route) = fixture();
        let mut body = ResponseBody::fixed(Bytes::from_static(b"cut"), Some(completion(&route)));
        body.hold_lease(up.pick().unwrap());
        drop(body);
        assert_eq!(route.in_flight.get(), 0);
        assert_eq!(up.endpoints[0].in_flight(), 0);
        // A completion that never reached a body records itself when dropped.
        let c = completion(&route);
        assert_eq!(route.in_flight.get(), 1);
        drop(c);
        assert_eq!(route.in_flight.get(), 0);
    }
}
