//! Observers: finished exchanges handed to a plugin's `observe` hook in batches, off the
//! request path (ABI 0.2.0), and its `on-tick` timer.
//!
//! The request path only pushes: one lock-free push onto the plugin's bounded queue when a
//! response has ended, which never waits. When the queue is full the exchange is dropped
//! and counted (`dropped`), so a slow or stuck observer costs requests nothing. One thread
//! per observing plugin takes exchanges off the queue and delivers them in batches: as soon
//! as [`ObserverConfig::batch`] are queued, or when the oldest queued one has waited
//! [`ObserverConfig::max_delay`], so boundary crossings and cold caches are paid once per
//! batch. The same thread runs the plugin's `on-tick` at its interval. Producers wake the
//! thread only when the queue goes from empty to one item (to start the delay) and when it
//! reaches a batch; otherwise a push is one atomic operation on the queue.
//!
//! Stopping it through its [`Handle`] delivers everything still queued first: a reload or a
//! drain loses nothing that was counted. Delivery order is the order responses ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
#[cfg(test)]
use std::sync::Mutex;
#[cfg(test)]
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use prometheus::{IntCounter, IntGauge};

/// How an observing plugin's exchanges are batched (`plugins.NAME.observe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserverConfig {
    /// Exchanges per batch, at most.
    pub batch: usize,
    /// Longest an exchange waits in the queue before its batch is delivered.
    pub max_delay: Duration,
    /// Exchanges queued at most; beyond it, new ones are dropped and counted.
    pub queue: usize,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        ObserverConfig {
            batch: 64,
            max_delay: Duration::from_millis(100),
            queue: 8192,
        }
    }
}

/// The metric handles of one observing plugin.
#[derive(Debug, Clone)]
pub struct ObserverMetrics {
    /// Exchanges dropped because the queue was full.
    pub dropped: IntCounter,
    /// Exchanges delivered: counted when the plugin's call for their batch has returned.
    pub delivered: IntCounter,
    /// Batches delivered.
    pub batches: IntCounter,
    /// Exchanges queued now.
    pub queued: IntGauge,
}

/// The producer side: what the request path holds.
#[derive(Debug)]
pub struct Queue<T> {
    items: ArrayQueue<T>,
    batch: usize,
    metrics: ObserverMetrics,
    worker: std::sync::OnceLock<std::thread::Thread>,
}

impl<T> Queue<T> {
    /// Queues one finished exchange; drops (and counts) it when the queue is full. Never
    /// blocks.
    pub fn push(&self, item: T) {
        if self.items.push(item).is_err() {
            self.metrics.dropped.inc();
            return;
        }
        let len = self.items.len();
        if len == 1 || len == self.batch {
            if let Some(t) = self.worker.get() {
                t.unpark();
            }
        }
    }

    /// Exchanges queued now.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A running observer: its queue and its delivery thread.
#[derive(Debug)]
pub struct Observer<T> {
    queue: Arc<Queue<T>>,
    /// The delivery thread, joined by `close` in tests; the gateway stops threads through
    /// their [`Handle`] and waits for `done`.
    #[cfg(test)]
    thread: Mutex<Option<JoinHandle<()>>>,
    handle: Handle,
}

/// What a gateway keeps of each delivery thread it started, to stop them all and wait for
/// them at shutdown, whether or not their plugin is still loaded.
#[derive(Debug, Clone)]
pub struct Handle {
    stop: Arc<AtomicBool>,
    thread: std::thread::Thread,
    done: Arc<AtomicBool>,
}

impl Handle {
    /// Asks the thread to deliver what is queued and end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }

    /// Whether the thread has ended.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Sets `done` when the delivery thread ends, however it ends.
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What the delivery thread calls.
pub struct Hooks<T> {
    /// Delivers one batch (in the order the exchanges were queued).
    pub deliver: Box<dyn FnMut(Vec<T>) + Send>,
    /// `on-tick` and its interval, for plugins that registered one.
    pub tick: Option<(Duration, Box<dyn FnMut() + Send>)>,
}

impl<T> std::fmt::Debug for Hooks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("tick", &self.tick.as_ref().map(|t| t.0))
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Observer<T> {
    /// Starts the delivery thread of plugin `name`.
    pub fn start(
        name: &str,
        config: ObserverConfig,
        metrics: ObserverMetrics,
        hooks: Hooks<T>,
    ) -> std::io::Result<Observer<T>> {
        let queue = Arc::new(Queue {
            items: ArrayQueue::new(config.queue.max(1)),
            batch: config.batch.clamp(1, config.queue.max(1)),
            metrics,
            worker: std::sync::OnceLock::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("fedgate-observe-{name}"))
            .spawn({
                let (queue, stop, done) = (queue.clone(), stop.clone(), done.clone());
                move || {
                    let _done = Done(done);
                    run(&queue, &stop, config, hooks)
                }
            })?;
        let _ = queue.worker.set(thread.thread().clone());
        let handle = Handle {
            stop,
            thread: thread.thread().clone(),
            done,
        };
        Ok(Observer {
            queue,
            #[cfg(test)]
            thread: Mutex::new(Some(thread)),
            handle,
        })
    }

    /// The handle that stops the thread and tells when it has ended.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The queue the request path pushes finished exchanges onto.
    pub fn queue(&self) -> &Arc<Queue<T>> {
        &self.queue
    }

    /// Stops the thread once everything queued is delivered, and waits for it (blocking:
    /// call it off the async workers). Exchanges pushed after this are dropped and counted
    /// as the queue fills, never delivered.
    #[cfg(test)]
    pub fn close(&self) {
        self.handle.stop();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl<T> Drop for Observer<T> {
    fn drop(&mut self) {
        // Not joined here (a drop may happen on an async worker): the thread delivers what
        // is left and ends on its own.
        self.handle.stop();
    }
}

fn run<T>(queue: &Queue<T>, stop: &AtomicBool, config: ObserverConfig, mut hooks: Hooks<T>) {
    let mut next_tick = hooks
        .tick
        .as_ref()
        .map(|(every, _)| Instant::now() + *every);
    // When the oldest exchange now queued was first seen.
    let mut waiting_since: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let now = Instant::now();
        if let (Some(at), Some((every, tick))) = (next_tick, hooks.tick.as_mut()) {
            if now >= at && !stopping {
                tick();
                // A tick that overran its interval is not run twice in a row.
                next_tick = Some((at + *every).max(Instant::now()));
            }
        }
        let queued = queue.items.len();
        queue.metrics.queued.set(queued as i64);
        if queued > 0 && waiting_since.is_none() {
            waiting_since = Some(now);
        }
        let due = waiting_since.is_some_and(|t| now.duration_since(t) >= config.max_delay);
        if queued >= queue.batch || (queued > 0 && (due || stopping)) {
            let mut batch = Vec::with_capacity(queued.min(queue.batch));
            while batch.len() < queue.batch {
                match queue.items.pop() {
                    Some(x) => batch.push(x),
                    None => break,
                }
            }
            // Counted once the plugin has had them: a reader that sees the count sees
            // what the plugin made of them.
            let n = batch.len() as u64;
            (hooks.deliver)(batch);
            queue.metrics.delivered.inc_by(n);
            queue.metrics.batches.inc();
            // What is still queued arrived after the batch's oldest: its wait starts now.
            waiting_since = None;
            continue;
        }
        if stopping {
            queue.metrics.queued.set(0);
            return;
        }
        let mut wake = waiting_since.map(|t| t + config.max_delay);
        if let Some(t) = next_tick {
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        match wake {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn metrics() -> ObserverMetrics {
        ObserverMetrics {
            dropped: IntCounter::new("d", "d").unwrap(),
            delivered: IntCounter::new("e", "e").unwrap(),
            batches: IntCounter::new("b", "b").unwrap(),
            queued: IntGauge::new("q", "q").unwrap(),
        }
    }

    fn observer(
        config: ObserverConfig,
        m: &ObserverMetrics,
    ) -> (Observer<u32>, mpsc::Receiver<(Vec<u32>, Instant)>) {
        let (tx, rx) = mpsc::channel();
        let o = Observer::start(
            "test",
            config,
            m.clone(),
            Hooks {
                deliver: Box::new(move |b| {
                    let _ = tx.send((b, Instant::now()));
                }),
                tick: None,
            },
        )
        .unwrap();
        (o, rx)
    }

    #[test]
    fn a_full_batch_is_delivered_at_once_and_a_partial_one_after_the_delay() {
        let m = metrics();
        let config = ObserverConfig {
            batch: 4,
            max_delay: Duration::from_millis(300),
            queue: 100,
        };
        let (o, rx) = observer(config, &m);
        let pushed = Instant::now();
        for i in 0..4 {
            o.queue().push(i);
        }
        let (batch, at) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(batch, vec![0, 1, 2, 3]);
        assert!(
            at - pushed < Duration::from_millis(250),
            "a full batch waited {:?} for the delay",
            at - pushed
        );
        let pushed = Instant::now();
        o.queue().push(4);
        o.queue().push(5);
        let (batch, at) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(batch, vec![4, 5]);
        assert!(
            at - pushed >= Duration::from_millis(290),
            "a partial batch went after {:?}, before the delay",
            at - pushed
        );
        // Counted once the delivery returned: after the close, which waits for the thread.
        o.close();
        assert_eq!(m.delivered.get(), 6);
        assert_eq!(m.batches.get(), 2);
        assert_eq!(m.dropped.get(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_close_delivers_everything_queued() {
        let m = metrics();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        let config = ObserverConfig {
            batch: 2,
            max_delay: Duration::from_millis(10),
            queue: 8,
        };
        // The first batch blocks until the test lets it go: the observer is stuck.
        let o = Observer::start(
            "stuck",
            config,
            m.clone(),
            Hooks {
                deliver: Box::new(move |b: Vec<u32>| {
                    let _ = gate_rx.recv();
                    let _ = tx.send(b);
                }),
                tick: None,
            },
        )
        .unwrap();
        o.queue().push(0);
        o.queue().push(1);
        // Wait until the stuck thread has taken the first batch off the queue.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !o.queue().is_empty() {
            assert!(Instant::now() < deadline, "the first batch was never taken");
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = Instant::now();
        for i in 2..20 {
            o.queue().push(i);
        }
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "pushing onto a full queue waited"
        );
        assert_eq!(m.dropped.get(), 10, "8 fit, 10 dropped");
        // Let every batch through, then close: all 10 accepted exchanges arrive, in order.
        let release = std::thread::spawn(move || {
            for _ in 0..10 {
                if gate_tx.send(()).is_err() {
                    break;
                }
            }
        });
        o.close();
        release.join().unwrap();
        let got: Vec<u32> = rx.try_iter().flatten().collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(m.delivered.get(), 10);
        assert_eq!(m.queued.get(), 0);
    }

    #[test]
    fn ticks_run_at_their_interval_between_batches() {
        let m = metrics();
        let (tx, rx) = mpsc::channel();
        let o = Observer::<u32>::start(
            "ticking",
            ObserverConfig::default(),
            m,
            Hooks {
                deliver: Box::new(|_| {}),
                tick: Some((
                    Duration::from_millis(100),
                    Box::new(move || {
                        let _ = tx.send(Instant::now());
                    }),
                )),
            },
        )
        .unwrap();
        let started = Instant::now();
        let ticks: Vec<Instant> = (0..4)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        o.close();
        let first = ticks[0] - started;
        assert!(
            first >= Duration::from_millis(95),
            "the first tick came after {first:?}, before its interval"
        );
        for w in ticks.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= Duration::from_millis(90) && gap < Duration::from_millis(400),
                "ticks {gap:?} apart, the interval is 100 ms"
            );
        }
    }
}
