//! Micro-benchmark of plugin hook calls on a live instance, as the request path makes them:
//! the request head lent to the store, the hook run under its deadline and memory cap, the
//! head taken back.
//!
//! ```sh
//! for ws in plugins tests/plugins; do
//!   cargo build --release --target wasm32-wasip2 --manifest-path $ws/Cargo.toml --target-dir target
//! done
//! cargo bench -p fedgate --features internals --bench plugin_call -- [COMPONENT_DIR]
//! ```
//!
//! COMPONENT_DIR holds the `.wasm` files of `plugins/` and `tests/plugins/` (default
//! `target/wasm32-wasip2/release`, where the commands above and the test command build them).

// The figures are the benchmark's output.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedgate::config::{FailurePolicy, PluginConfig};
use fedgate::metrics::Metrics;
use fedgate::plugin::{Chain, Decision, Exchange, PluginHost};
use http::{HeaderMap, HeaderValue, Method, Uri};

const CREATE: &str = include_str!("../../bench/create-activity.json");

fn config(name: &str, path: PathBuf, json: &str) -> PluginConfig {
    PluginConfig {
        name: name.into(),
        path,
        failure: FailurePolicy::Open,
        timeout: Duration::from_millis(10),
        health_check_timeout: Duration::from_secs(1),
        memory_limit: 16 << 20,
        max_series: 1000,
        store: Default::default(),
        observe: Default::default(),
        observe_timeout: Duration::from_secs(1),
        outbound: Default::default(),
        config_json: json.into(),
    }
}

fn exchange() -> Exchange {
    let mut headers = HeaderMap::new();
    for (n, v) in [
        ("host", "local.example"),
        ("content-type", "application/activity+json"),
        ("accept", "application/activity+json"),
        ("date", "Wed, 01 May 2024 12:00:00 GMT"),
        (
            "digest",
            "SHA-256=yIagDgT6kbHgBZJ9vu//py00QNiL2OSVnSVipRZQF4g=",
        ),
        (
            "user-agent",
            "Mastodon/4.3.0 (http.rb/5.2.0; +https://remote.example/)",
        ),
        ("content-length", "2048"),
    ] {
        headers.insert(n, HeaderValue::from_static(v));
    }
    Exchange {
        method: Method::POST,
        uri: Uri::from_static("/users/alice/inbox"),
        headers,
        scheme: "http",
        authority: Some(HeaderValue::from_static("local.example")),
        client: Some("192.0.2.1".parse().unwrap()),
        route: "inbox".into(),
        upstream: "app".into(),
        request_id: Some(HeaderValue::from_static("0f1e2d3c4b5a69788796a5b4c3d2e1f0")),
        body: Some(Bytes::from_static(CREATE.as_bytes())),
        signer: None,
        started: Some(Instant::now()),
        response: None,
        ..Exchange::default()
    }
}

/// Runs `chain.on_request` for about a second and returns the median of 5 batches, in ns.
fn time_calls(chain: &Chain) -> f64 {
    let mut ex = Box::new(exchange());
    for _ in 0..2_000 {
        assert!(matches!(chain.on_request(&mut ex), Decision::Continue));
    }
    let mut batches = Vec::new();
    for _ in 0..5 {
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(chain.on_request(&mut ex));
        }
        batches.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    batches.sort_by(f64::total_cmp);
    batches[2]
}

fn main() {
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
        });
    let component = |name: &str| {
        let p = dir.join(format!("{name}.wasm"));
        assert!(
            p.exists(),
            "{} is missing: build plugins/ and tests/plugins/ for wasm32-wasip2 first (see the top of benches/plugin_call.rs)",
            p.display()
        );
        p
    };
    let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
    let host = PluginHost::new(&metrics, 1).unwrap();
    let load = |name: &str, crate_name: &str, json: &str| {
        let path = component(crate_name);
        let bytes = std::fs::read(&path).unwrap();
        let t = Instant::now();
        let p = host.load(&config(name, path, json), &bytes, None).unwrap();
        (Arc::new(p), t.elapsed(), bytes.len())
    };

    let (noop, noop_load, noop_size) = load("noop", "hostile", r#"{"mode":"ok"}"#);
    let (policy, policy_load, policy_size) = load(
        "policy",
        "request_policy",
        r#"{"required_headers":["date","digest"],"denied_user_agents":["*bot*","curl/*"],"allowed_content_types":["application/activity+json","application/ld+json"],"max_body_size":"1MiB"}"#,
    );
    let (ap, ap_load, ap_size) = load("ap", "activitypub_metrics", "{}");
    let (moderation, moderation_load, moderation_size) =
        load("moderation", "moderation_events", "{}");
    let (slo, slo_load, slo_size) = load("slo", "upstream_slo", "{}");

    println!("inline hook calls on a live instance (median of 5 batches of 20 000 calls)");
    println!(
        "{:<48} {:>10} {:>12} {:>12}",
        "chain", "ns/call", "load ms", "wasm bytes"
    );
    let cell = |load: Duration, size: usize| {
        if size == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{:.1}", load.as_secs_f64() * 1e3), size.to_string())
        }
    };
    let rows = [
        (
            "empty on-request (hostile, mode ok)",
            vec![noop.clone()],
            noop_load,
            noop_size,
        ),
        (
            "request-policy, 4 rules",
            vec![policy.clone()],
            policy_load,
            policy_size,
        ),
        (
            "two empty on-requests",
            vec![noop.clone(), noop.clone()],
            Duration::ZERO,
            0,
        ),
    ];
    // FEDGATE_BENCH_ONLY=text runs only the rows whose label contains it (for profiling).
    let only = std::env::var("FEDGATE_BENCH_ONLY").unwrap_or_default();
    for (label, plugins, load, size) in rows {
        if !label.contains(only.as_str()) {
            continue;
        }
        let ns = time_calls(&Chain::new(plugins, &"inbox".into(), &"app".into()));
        let (load, size) = cell(load, size);
        println!("{label:<48} {ns:>10.0} {load:>12} {size:>12}");
    }

    println!();
    println!(
        "observers: request-path record and push per exchange; observe on the observer \
         thread per exchange (batches of 64, median of 5 runs of 8 192 exchanges)"
    );
    println!(
        "{:<48} {:>10} {:>12} {:>12} {:>12}",
        "observer", "push ns", "observe ns", "load ms", "wasm bytes"
    );
    for (label, plugin, load, size) in [
        ("activitypub-metrics, 2 KiB Create", &ap, ap_load, ap_size),
        (
            "moderation-events, 2 KiB Create",
            &moderation,
            moderation_load,
            moderation_size,
        ),
        ("upstream-slo", &slo, slo_load, slo_size),
    ] {
        if !label.contains(only.as_str()) {
            continue;
        }
        let (push, observe) = time_observer(&metrics, plugin);
        let (load, size) = cell(load, size);
        println!("{label:<48} {push:>10.0} {observe:>12.0} {load:>12} {size:>12}");
    }
    let text = {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&metrics.registry().gather(), &mut out)
            .unwrap();
        out
    };
    // The observer did its work: every exchange was counted as a Create activity.
    if "activitypub-metrics".contains(only.as_str()) {
        let counted = text
            .lines()
            .find(|l| l.starts_with("federation_activities_total{") && l.contains("Create"))
            .expect("activitypub-metrics counted the Create activities");
        println!("{counted}");
    }
}

/// Queues 8 192 finished exchanges (an inbox POST of the 2 KiB Create, answered 202) for
/// `plugin`'s observer, five times: the request-path cost per exchange (the record made
/// and pushed) and the time until the observer has had them all, per exchange. Medians.
fn time_observer(metrics: &Metrics, plugin: &Arc<fedgate::plugin::Plugin>) -> (f64, f64) {
    use fedgate::plugin::finished::Ending;
    let chain = Chain::new(vec![plugin.clone()], &"inbox".into(), &"app".into());
    let observers = chain.observers().expect("an observing plugin").clone();
    let delivered = metrics
        .plugin_families()
        .observed
        .with_label_values(&[&*plugin.name, "delivered"]);
    let dropped = metrics
        .plugin_families()
        .observed
        .with_label_values(&[&*plugin.name, "dropped"]);
    let ex = exchange();
    let body = ex.body.clone().unwrap();
    let mut head = http::Request::new(());
    *head.method_mut() = ex.method.clone();
    *head.uri_mut() = ex.uri.clone();
    *head.headers_mut() = ex.headers.clone();
    let request_id = ex.request_id.clone().unwrap();
    let (mut pushes, mut observes) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let n = 8_192u64;
        let before = delivered.get() + dropped.get();
        let t = Instant::now();
        for _ in 0..n {
            let mut o = observers.start(
                &head,
                "https",
                ex.authority.as_ref(),
                "192.0.2.1".parse().unwrap(),
                &request_id,
            );
            o.activity = Some(Arc::new(fedgate::activity::LazyActivity::new(
                body.clone(),
                true,
            )));
            Box::new(o).finish(Ending {
                status: 202,
                error: None,
                endpoint: Some("127.0.0.1:3000".into()),
                request_bytes: 2048,
                response_bytes: 0,
                completed: true,
                duration: Duration::from_micros(300),
            });
        }
        pushes.push(t.elapsed().as_nanos() as f64 / n as f64);
        while delivered.get() + dropped.get() < before + n {
            std::thread::sleep(Duration::from_micros(200));
        }
        observes.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    pushes.sort_by(f64::total_cmp);
    observes.sort_by(f64::total_cmp);
    assert_eq!(dropped.get(), 0, "the observer queue overflowed");
    (pushes[2], observes[2])
}
