//! The cost of reading an activity body as the gateway does: the federation view
//! (`activity::parse`, one borrowed pass), against a `serde_json::Value` tree of the same
//! body, and the blocklist's actor check built on the view, on one core. The body is a
//! 2 KiB Mastodon `Create` of a `Note` (bench/create-activity.json).
//!
//! ```sh
//! cargo bench -p fedgate --features internals --bench activity_view
//! ```

// The figures are the benchmark's output.
#![allow(clippy::print_stdout)]

#[path = "support/timing.rs"]
mod timing;

use std::hint::black_box;

use bytes::Bytes;
use fedgate::activity::{Activity, LazyActivity};
use fedgate::blocklist::{Blocklist, Reason};
use http::{HeaderMap, HeaderValue};
use timing::ns_per_call;

const CREATE: &[u8] = include_bytes!("../../bench/create-activity.json");

fn main() {
    // The figures mean nothing unless every case reads the same activity.
    let view = Activity::parse(CREATE).expect("the bench body is an activity");
    assert_eq!(view.kind.as_deref(), Some("Create"));
    assert!(view.public);

    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/activity+json"),
    );
    let mut passing = Blocklist::default();
    passing
        .add_file("evil.example\n*.spam.example\nbad.example\n")
        .unwrap();
    assert_eq!(passing.check_activity(&headers, CREATE), None);
    let mut blocking = Blocklist::default();
    blocking.add_file("remote.example\n").unwrap();
    assert_eq!(
        blocking.check_activity(&headers, CREATE),
        Some(Reason::Actor)
    );

    println!(
        "activity body reads, {} byte Mastodon Create, one core (median of 5 batches)",
        CREATE.len()
    );
    println!("{:<58} {:>10}", "case", "ns each");
    let row = |label: &str, ns: f64| println!("{label:<58} {ns:>10.0}");

    let view_ns = ns_per_call(|_| {
        black_box(Activity::parse(black_box(CREATE)));
    });
    row("activity::parse (borrowed view)", view_ns);
    row(
        "activity::parse + into_owned",
        ns_per_call(|_| {
            black_box(Activity::parse(black_box(CREATE)).map(Activity::into_owned));
        }),
    );
    let body = Bytes::from_static(CREATE);
    row(
        "LazyActivity::new + get (first get parses)",
        ns_per_call(|_| {
            let lazy = LazyActivity::new(black_box(body.clone()), true);
            black_box(lazy.get());
        }),
    );
    let value_ns = ns_per_call(|_| {
        black_box(serde_json::from_slice::<serde_json::Value>(black_box(CREATE)).ok());
    });
    row("serde_json::from_slice::<Value>", value_ns);
    row(
        "Blocklist::check_activity, actor not blocked",
        ns_per_call(|_| {
            black_box(passing.check_activity(black_box(&headers), black_box(CREATE)));
        }),
    );
    row(
        "Blocklist::check_activity, actor blocked",
        ns_per_call(|_| {
            black_box(blocking.check_activity(black_box(&headers), black_box(CREATE)));
        }),
    );
    println!("Value tree / view: {:.1}x", value_ns / view_ns);
}
