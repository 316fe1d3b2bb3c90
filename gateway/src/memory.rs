//! Returning freed memory to the operating system at the moments the gateway knows it has
//! freed a lot: after a plugin compilation, and after a reload has replaced a runtime.
//!
//! The allocator is the binary's choice (`fedgate` uses mimalloc); the library only knows a
//! hook the binary installs. Under steady traffic the allocator's own purging keeps the
//! resident set flat. What it does not see is a burst of frees on a thread that then goes
//! quiet: a plugin compiler's scratch memory, or a replaced plugin freed (from a worker)
//! into the heap of the thread that compiled it. A thread's heap returns such pages only
//! when that thread next collects, which for a thread that idles can take tens of seconds:
//! each plugin reload showed as a step of several MiB in the resident set that lasted that
//! long. Plugin loading therefore runs on a few loader threads, [`on_loader`], which trim
//! their own heaps after their jobs and again a few seconds later.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

/// Returns what the calling thread's heap holds unused to the operating system; installed
/// by the binary.
pub type Trim = fn();

static TRIM: OnceLock<Trim> = OnceLock::new();

/// Installs the allocator's trim function; the first installation wins.
pub fn install(trim: Trim) {
    let _ = TRIM.set(trim);
}

/// Releases the calling thread's unused heap memory, and every purge already due.
pub fn trim() {
    if let Some(t) = TRIM.get() {
        t();
    }
}

/// When a loader thread trims its heap after its last job: at once, and again while a
/// replaced runtime is being freed (into the heap of the thread that compiled it), which is
/// a moment after the reload that compiled its successor.
const TRIM_AFTER: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// Most loader threads: plugins compile side by side, one per thread.
const MAX_LOADERS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// One loader thread: its queue, and how many jobs are queued or running on it.
struct Loader {
    jobs: mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
}

fn loaders() -> &'static [Loader] {
    static LOADERS: OnceLock<Vec<Loader>> = OnceLock::new();
    LOADERS.get_or_init(|| {
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_LOADERS);
        (0..n)
            .map(|i| {
                let (jobs, queue) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("fedgate-loader-{i}"))
                    .spawn(move || loader(&queue))
                    .expect("a loader thread starts");
                Loader {
                    jobs,
                    queued: Arc::default(),
                }
            })
            .collect()
    })
}

/// Runs `job` on a loader thread and returns its result. Loader threads (one per core, at
/// most `MAX_LOADERS`) are long-lived threads for the heavy, bursty work of loading
/// plugins (reading components, compiling them): keeping that work on a few threads keeps
/// what it allocates in their heaps, which each trims after its jobs. A job goes to the
/// thread with the fewest jobs queued, so several plugins compile side by side.
pub async fn on_loader<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let loader = loaders()
        .iter()
        .min_by_key(|l| l.queued.load(Ordering::Relaxed))
        .expect("at least one loader thread");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let queued = loader.queued.clone();
    queued.fetch_add(1, Ordering::Relaxed);
    let counted: Job = Box::new(move || {
        // A panicking job is reported to its caller: its result channel closes unsent.
        // The count is given back first, so a caller that sees the result sees it too.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        queued.fetch_sub(1, Ordering::Relaxed);
        if let Ok(r) = result {
            let _ = tx.send(r);
        }
    });
    loader
        .jobs
        .send(counted)
        .map_err(|_| "the loader thread is gone".to_string())?;
    rx.await.map_err(|_| "the loading job panicked".to_string())
}

/// Has every loader thread trim its heap again over the next seconds: called once a
/// reload has replaced plugins, whose memory goes back to the threads that compiled them.
pub fn trim_loaders() {
    for l in loaders() {
        let _ = l.jobs.send(Box::new(|| {}));
    }
}

fn loader(jobs: &mpsc::Receiver<Job>) {
    // After a job: when the trims started, and the next one of TRIM_AFTER.
    let mut schedule: Option<(Instant, usize)> = None;
    loop {
        let next = match schedule {
            None => jobs
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some((from, i)) => {
                jobs.recv_timeout((from + TRIM_AFTER[i]).saturating_duration_since(Instant::now()))
            }
        };
        match next {
            Ok(job) => {
                job();
                schedule = Some((Instant::now(), 0));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                trim();
                schedule = schedule
                    .map(|(from, i)| (from, i + 1))
                    .filter(|(_, i)| *i < TRIM_AFTER.len());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loader_threads_run_jobs_side_by_side_and_survive_a_panic() {
        let name = on_loader(|| std::thread::current().name().map(String::from))
            .await
            .unwrap();
        assert!(
            name.as_deref()
                .is_some_and(|n| n.starts_with("fedgate-loader-")),
            "{name:?}"
        );
        let panicked = on_loader(|| -> u32 { panic!("a hostile component") }).await;
        assert_eq!(panicked, Err("the loading job panicked".to_string()));
        // The queue counts of a panicked job were given back: all threads are free again.
        assert!(loaders()
            .iter()
            .all(|l| l.queued.load(Ordering::Relaxed) == 0));
        if loaders().len() > 1 {
            // Two jobs that each wait for the other can only finish on two threads.
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let (b1, b2) = (barrier.clone(), barrier);
            let (a, b) = tokio::join!(
                on_loader(move || b1.wait().is_leader()),
                on_loader(move || b2.wait().is_leader())
            );
            assert_ne!(
                a.unwrap(),
                b.unwrap(),
                "exactly one of the two is the leader"
            );
        }
        trim_loaders();
        assert_eq!(on_loader(|| 7).await, Ok(7));
    }
}
