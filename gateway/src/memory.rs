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
//! long. Plugin loading therefore runs on one thread, [`on_loader`], which trims its own
//! heap after each job and again a few seconds later.

use std::sync::{mpsc, OnceLock};
use std::time::Duration;

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

/// When the loader thread trims its heap again after a job: a replaced plugin is freed
/// (into this thread's heap, which allocated it) once the last request using the old
/// runtime has ended, a moment after the reload that compiled its successor.
const TRIM_AFTER: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(5),
];

type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the loader thread, one long-lived thread for the heavy, bursty work of
/// loading plugins (reading components, compiling them), and returns its result. Keeping
/// that work on one thread keeps what it allocates in one heap, which the thread trims
/// after each job and again while a replaced runtime is being freed; jobs run one at a
/// time, in order.
pub async fn on_loader<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    static LOADER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(job());
    });
    let sender = LOADER.get_or_init(|| {
        let (send, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("fedgate-loader".into())
            .spawn(move || loader(jobs))
            .expect("the loader thread starts");
        send
    });
    sender
        .send(job)
        .map_err(|_| "the loader thread is gone".to_string())?;
    rx.await.map_err(|_| "the loading job panicked".to_string())
}

fn loader(jobs: mpsc::Receiver<Job>) {
    loop {
        let Ok(job) = jobs.recv() else { return };
        // A panicking job is reported to its caller (its result channel closes unsent).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        let mut waited = Duration::ZERO;
        for after in TRIM_AFTER {
            match jobs.recv_timeout(after - waited) {
                Ok(job) => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            waited = after;
            trim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loader_runs_jobs_in_order_and_survives_a_panic() {
        let first = on_loader(|| std::thread::current().name().map(String::from))
            .await
            .unwrap();
        assert_eq!(first.as_deref(), Some("fedgate-loader"));
        let panicked = on_loader(|| -> u32 { panic!("a hostile component") }).await;
        assert_eq!(panicked, Err("the loading job panicked".to_string()));
        let (a, b) = tokio::join!(on_loader(|| 1), on_loader(|| 2));
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    }
}
