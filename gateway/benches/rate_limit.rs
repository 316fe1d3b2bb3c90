//! The cost of one rate-limit decision as phase 4 makes it (key built from the client
//! address, GCRA check on the bounded keyed store, counter), and of one blocklist check
//! (phase 3), on one core.
//!
//! ```sh
//! cargo bench -p fedgate --features internals --bench rate_limit
//! ```

// The figures are the benchmark's output.
#![allow(clippy::print_stdout)]

#[path = "support/timing.rs"]
mod timing;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use fedgate::blocklist::Blocklist;
use fedgate::metrics::Metrics;
use fedgate::ratelimit::{KeyKind, Limiter, LimiterConfig, Mode, RouteLimits};
use http::HeaderMap;
use timing::ns_per_call;

fn limiter(name: &str, metrics: &Metrics, count: u32, max_keys: usize) -> Arc<Limiter> {
    let config = LimiterConfig {
        name: name.into(),
        key: KeyKind::Client,
        count,
        per: Duration::from_secs(1),
        burst: count,
        mode: Mode::Enforce,
        max_keys,
        ipv6_prefix: 64,
    };
    Arc::new(Limiter::new(config, metrics.limiter(name)))
}

fn main() {
    let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
    println!("rate limit and blocklist decisions, one core (median of 5 batches)");
    println!("{:<58} {:>10}", "case", "ns each");
    let row = |label: &str, ns: f64| println!("{label:<58} {ns:>10.0}");

    // One client, allowed every time.
    let hot = RouteLimits::new("r", &[limiter("hot", &metrics, 1_000_000_000, 100_000)]);
    let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    row(
        "one client, allowed",
        ns_per_call(|_| {
            black_box(hot.check_early(black_box(ip)).is_ok());
        }),
    );

    // One client far over its limit: every decision refuses.
    let tight = RouteLimits::new("r", &[limiter("tight", &metrics, 1, 100_000)]);
    row(
        "one client, limited",
        ns_per_call(|_| {
            black_box(tight.check_early(black_box(ip)).is_err());
        }),
    );

    // 10 000 clients in turn, each with its own bucket.
    let many = RouteLimits::new("r", &[limiter("many", &metrics, 1_000_000, 100_000)]);
    row(
        "10 000 clients in turn (IPv4)",
        ns_per_call(|i| {
            let ip = IpAddr::V4(Ipv4Addr::from(0xc000_0000 + i % 10_000));
            black_box(many.check_early(ip).is_ok());
        }),
    );
    let v6 = RouteLimits::new("r", &[limiter("v6", &metrics, 1_000_000, 100_000)]);
    row(
        "10 000 clients in turn (IPv6, keyed by /64)",
        ns_per_call(|i| {
            let ip = IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_u128 << 96) | (u128::from(i % 10_000) << 64) | 7,
            ));
            black_box(v6.check_early(ip).is_ok());
        }),
    );

    // A flood of new addresses past max_keys: every decision lands in the overflow bucket.
    let flood = RouteLimits::new("r", &[limiter("flood", &metrics, 1_000_000, 1_000)]);
    row(
        "flood of new clients past max_keys (1 000)",
        ns_per_call(|i| {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            black_box(flood.check_early(ip).is_ok());
        }),
    );

    // Three limiters on one route, as an inbox might have them.
    let three = RouteLimits::new(
        "r",
        &[
            limiter("a", &metrics, 1_000_000, 100_000),
            limiter("b", &metrics, 1_000_000, 100_000),
            limiter("c", &metrics, 1_000_000, 100_000),
        ],
    );
    row(
        "three client limiters on one route",
        ns_per_call(|i| {
            let ip = IpAddr::V4(Ipv4Addr::from(0xc000_0000 + i % 1_000));
            black_box(three.check_early(ip).is_ok());
        }),
    );

    // Blocklist: 10 000 domains and 1 000 networks of 3 prefix lengths, checking a signed
    // delivery from an instance not on it.
    let mut list = Blocklist::default();
    for i in 0..10_000 {
        list.add(&format!("blocked{i}.example")).unwrap();
    }
    for i in 0..1_000u32 {
        let base = Ipv4Addr::from(0x0a00_0000 + (i << 8));
        list.add(&format!("{base}/{}", [24, 16, 8][i as usize % 3]))
            .unwrap_or(());
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        "signature",
        "keyId=\"https://social.remote.example/users/bob#main-key\",algorithm=\"rsa-sha256\",\
         headers=\"(request-target) host date digest\",signature=\"AAAA\""
            .parse()
            .unwrap(),
    );
    let client = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    row(
        &format!("blocklist check, signed request ({} entries)", list.len()),
        ns_per_call(|_| {
            black_box(list.check(black_box(client), &headers).is_none());
        }),
    );
}
