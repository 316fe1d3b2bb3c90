//! The timing loop every micro-benchmark here shares: each bench includes this file with
//! `#[path = "support/timing.rs"] mod timing;`.

#![allow(dead_code)] // each bench uses what it needs

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Nanoseconds per call of `f(i)`: the median of 5 batches of about 200 ms each.
pub(crate) fn ns_per_call(mut f: impl FnMut(u32)) -> f64 {
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_millis(100) {
        f(n);
        n += 1;
    }
    let batch = n * 2;
    let mut i = n;
    let mut ns: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f(i);
                i = i.wrapping_add(1);
            }
            t.elapsed().as_nanos() as f64 / f64::from(batch)
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    ns[2]
}

/// Nanoseconds per call of `f(thread, i)` on each of `threads` threads running at once: the
/// median over 5 batches of the slowest thread's wall time per call.
pub(crate) fn ns_per_call_threads(threads: usize, f: impl Fn(usize, u32) + Sync) -> f64 {
    // Size the batch from one thread's rate, as `ns_per_call` does.
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_millis(100) {
        f(0, n);
        n += 1;
    }
    let batch = n * 2;
    let mut ns: Vec<f64> = (0..5u32)
        .map(|round| {
            let start = Barrier::new(threads);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let (f, start) = (&f, &start);
                        s.spawn(move || {
                            start.wait();
                            let began = Instant::now();
                            for i in 0..batch {
                                f(t, round.wrapping_mul(batch).wrapping_add(i));
                            }
                            began.elapsed()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("bench thread"))
                    .max()
                    .expect("one thread at least")
                    .as_nanos() as f64
                    / f64::from(batch)
            })
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    ns[2]
}
