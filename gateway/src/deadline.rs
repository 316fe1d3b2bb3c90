//! Phase 9: the response deadline of one try. The upstream's `response_timeout` (or the
//! route's `timeout`) is time allowed without progress: while the client's body is still
//! streaming to the upstream, every byte that moves extends the deadline, so a large upload
//! over a slow link is not cut off at the timeout; once the body is sent (or when there is
//! none), the timeout runs to the response head.
//!
//! Nothing is done per body frame: the request body already counts its bytes for the size
//! histogram, and the deadline looks at that count only when its timer fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// The try's deadline passed with no progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pin_project! {
    /// `future` bounded by a deadline that moves with the body's progress.
    #[derive(Debug)]
    pub struct Deadline<F> {
        #[pin]
        future: F,
        #[pin]
        sleep: Sleep,
        progress: Option<Arc<AtomicU64>>,
        seen: u64,
        timeout: Duration,
    }
}

/// Runs `future` until `deadline`; when `progress` (the count of request body bytes read
/// from the client) has moved by then, the deadline becomes `timeout` from that moment,
/// and so on. A stalled upload is therefore cut off between one and two timeouts after its
/// last byte, and a response waited for after the body between one and two timeouts after
/// the body ended (exactly one when the body was already complete when the try began).
pub fn within<F: Future>(
    deadline: Instant,
    timeout: Duration,
    progress: Option<Arc<AtomicU64>>,
    future: F,
) -> Deadline<F> {
    let seen = progress.as_ref().map_or(0, |p| p.load(Ordering::Relaxed));
    Deadline {
        future,
        sleep: tokio::time::sleep_until(deadline),
        progress,
        seen,
        timeout,
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        loop {
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let moved = this
                .progress
                .as_ref()
                .map(|p| p.load(Ordering::Relaxed))
                .filter(|n| n != this.seen);
            match moved {
                Some(n) => {
                    *this.seen = n;
                    this.sleep.as_mut().reset(Instant::now() + *this.timeout);
                }
                None => return Poll::Ready(Err(Elapsed)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn without_progress_it_is_a_plain_deadline() {
        let start = Instant::now();
        let r = within(
            start + Duration::from_secs(2),
            Duration::from_secs(2),
            None,
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(r, Err(Elapsed));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let done = within(
            start + Duration::from_secs(9),
            Duration::from_secs(9),
            None,
            async { 7 },
        );
        assert_eq!(done.await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_moves_the_deadline_and_a_stall_ends_it() {
        let progress = Arc::new(AtomicU64::new(0));
        let feeder = progress.clone();
        // The body moves 1 KiB every second for ten seconds, then stalls.
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                feeder.fetch_add(1024, Ordering::Relaxed);
            }
        });
        let start = Instant::now();
        let r = within(
            start + Duration::from_secs(2),
            Duration::from_secs(2),
            Some(progress.clone()),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(r, Err(Elapsed));
        assert_eq!(progress.load(Ordering::Relaxed), 10 * 1024);
        // The last byte moved at 10 s; the stall is noticed one or two timeouts later.
        let ended = start.elapsed();
        assert!(
            ended >= Duration::from_secs(12) && ended <= Duration::from_secs(14),
            "{ended:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_that_finishes_while_progressing_returns_its_output() {
        let progress = Arc::new(AtomicU64::new(0));
        let feeder = progress.clone();
        let start = Instant::now();
        let r = within(
            start + Duration::from_millis(500),
            Duration::from_millis(500),
            Some(progress),
            async move {
                for _ in 0..6 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    feeder.fetch_add(1, Ordering::Relaxed);
                }
                "answered"
            },
        )
        .await;
        assert_eq!(r, Ok("answered"));
        assert_eq!(start.elapsed(), Duration::from_millis(2400));
    }
}
