//! The cost of one operation on a plugin's key-value store as the `store` host functions
//! make it (shard hash, one shard lock, map and eviction-order updates, metric handles),
//! without the Wasm boundary: on one thread, and on two threads sharing the store (each on
//! its own keys, and both on one hot key).
//!
//! ```sh
//! cargo bench -p fedgate --features internals --bench plugin_store
//! ```

// The figures are the benchmark's output.
#![allow(clippy::print_stdout)]

#[path = "support/timing.rs"]
mod timing;

use std::hint::black_box;
use std::sync::Arc;

use fedgate::plugin::store::{Store, StoreLimits, StoreMetrics};
use timing::{ns_per_call, ns_per_call_threads};

/// Keys each case cycles through.
const KEYS: u32 = 10_000;

fn main() {
    // 10 000 entries by default: room for the 40 000 the cases use.
    let limits = StoreLimits {
        max_entries: 100_000,
        ..StoreLimits::default()
    };
    let store = Arc::new(Store::new(limits, StoreMetrics::detached()));
    // Keys as a plugin might use them; built once, outside the timing.
    let names = |kind: &str| -> Vec<Vec<String>> {
        (0..2)
            .map(|t| {
                (0..KEYS)
                    .map(|i| format!("{kind}:thread{t}:remote{i}.example"))
                    .collect()
            })
            .collect()
    };
    let (keys, counters) = (names("seen"), names("count"));
    // Keys holding values, and keys holding counters (for `increment`).
    let key = |t: usize, i: u32| keys[t][(i % KEYS) as usize].as_str();
    let counter = |t: usize, i: u32| counters[t][(i % KEYS) as usize].as_str();
    let value = b"{\"seen\":1712345678,\"score\":0.25}".to_vec();
    for t in 0..2 {
        for i in 0..KEYS {
            store.set(key(t, i), value.clone(), None).unwrap();
            store.increment(counter(t, i), 1, None).unwrap();
        }
    }

    println!(
        "plugin store operations ({} entries held, {} shards, median of 5 batches)",
        store.len(),
        store.shards()
    );
    println!("{:<58} {:>10}", "case", "ns each");
    let row = |label: &str, ns: f64| println!("{label:<58} {ns:>10.0}");

    row(
        "get, 10 000 keys in turn (33-byte values)",
        ns_per_call(|i| {
            black_box(store.get(key(0, i)));
        }),
    );
    row(
        "get, absent key",
        ns_per_call(|i| {
            black_box(store.get(key(0, i).split_at(5).1));
        }),
    );
    row(
        "set, 10 000 keys in turn (replacing, 33-byte values)",
        ns_per_call(|i| {
            black_box(store.set(key(0, i), value.clone(), None).is_ok());
        }),
    );
    row(
        "set with TTL, 10 000 keys in turn",
        ns_per_call(|i| {
            black_box(store.set(key(0, i), value.clone(), Some(60_000)).is_ok());
        }),
    );
    row(
        "increment, 10 000 counters in turn",
        ns_per_call(|i| {
            black_box(store.increment(counter(0, i), 1, Some(60_000)).is_ok());
        }),
    );
    row(
        "increment, one hot key",
        ns_per_call(|_| {
            black_box(store.increment("hot", 1, None).is_ok());
        }),
    );
    row(
        "compare-and-swap, expected mismatch",
        ns_per_call(|i| {
            black_box(store.compare_and_swap(key(0, i), Some(b"x"), vec![1], None) == Ok(false));
        }),
    );

    // A full store: every new key evicts the oldest entry of its shard.
    let full = Store::new(
        StoreLimits {
            max_entries: 1_000,
            ..limits
        },
        StoreMetrics::detached(),
    );
    let fresh: Vec<String> = (0..100_000).map(|i| format!("new{i}")).collect();
    row(
        "set, new keys into a full store (1 000 entries, evicting)",
        ns_per_call(|i| {
            let k = &fresh[(i % 100_000) as usize];
            black_box(full.set(k, value.clone(), None).is_ok());
        }),
    );

    println!("two threads at once (slowest thread's time per call)");
    row(
        "get, own keys",
        ns_per_call_threads(2, |t, i| {
            black_box(store.get(key(t, i)));
        }),
    );
    row(
        "set, own keys",
        ns_per_call_threads(2, |t, i| {
            black_box(store.set(key(t, i), value.clone(), None).is_ok());
        }),
    );
    row(
        "increment, own counters",
        ns_per_call_threads(2, |t, i| {
            black_box(store.increment(counter(t, i), 1, None).is_ok());
        }),
    );
    row(
        "increment, one hot key shared",
        ns_per_call_threads(2, |_, _| {
            black_box(store.increment("hot", 1, None).is_ok());
        }),
    );
}
