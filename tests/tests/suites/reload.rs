//! Configuration reload under traffic (good and bad files, zero failed requests) and config
//! errors reported by `fedgate check`, naming the field.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fedgate_tests::*;

fn routed_to(name: &str, a: &TestUpstream, b: &TestUpstream) -> String {
    format!(
        "{}{}\n[[routes]]\nname = \"all\"\nupstream = \"{name}\"\n",
        upstream_block("a", &[a.url()], ""),
        upstream_block("b", &[b.url()], "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_traffic_fail_no_request() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = TestGateway::start(&routed_to("a", &a, &b)).await;
    let url = gw.url("/traffic");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client().request(get(&url)).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let bad = routed_to("missing", &a, &b);
    let (mut good_reloads, mut bad_reloads) = (0, 0);
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let target = if round % 2 == 0 { "b" } else { "a" };
        assert!(gw.rewrite(&routed_to(target, &a, &b)).await.is_ok());
        good_reloads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = gw
            .rewrite(&bad)
            .await
            .expect_err("a route to an undefined upstream must be rejected");
        assert!(err.to_string().contains("routes[0].upstream"), "{err}");
        bad_reloads += 1;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "too little traffic: {}",
        ok.load(Ordering::Relaxed)
    );
    assert!(a.hits() > 0 && b.hits() > 0);

    // The last good file routes to "a"; the bad one after it left it in place.
    let (_, h, _) = send(get(&url)).await;
    assert_eq!(h["x-upstream"], "a");
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "success")]),
        Some(good_reloads as f64)
    );
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "error")]),
        Some(bad_reloads as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_upstreams_keep_their_pool_across_reloads() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = TestGateway::start(&routed_to("a", &a, &b)).await;
    let before = gw.gw().shared().runtime().upstreams["a"].clone();
    // Change only the route and upstream b.
    let text = format!(
        "{}{}\n[[routes]]\nname = \"renamed\"\nupstream = \"a\"\n",
        upstream_block("a", &[a.url()], ""),
        upstream_block("b", &[b.url()], "connect_timeout = \"1s\"")
    );
    gw.rewrite(&text).await.unwrap();
    let rt = gw.gw().shared().runtime();
    assert!(
        Arc::ptr_eq(&before, &rt.upstreams["a"]),
        "upstream a was rebuilt"
    );
    assert_eq!(rt.routes.routes()[0].config.name, "renamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reloads_a_changed_file_once() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let head = HEAD.replace(
        "[reload]\nwatch = false",
        "[reload]\nwatch = true\npoll_interval = \"100ms\"",
    );
    assert_ne!(head, HEAD);
    let ups = format!(
        "{}{}",
        upstream_block("a", &[a.url()], ""),
        upstream_block("b", &[b.url()], "")
    );
    let old = format!(
        "{head}\n{ups}\n[[routes]]\nname = \"old\"\npath_prefix = \"/old/\"\nupstream = \"a\"\n"
    );
    let gw = TestGateway::start_full(&old).await;
    assert_eq!(send(get(&gw.url("/old/x"))).await.0, 200);
    assert_eq!(send(get(&gw.url("/new/x"))).await.0, 404);
    // Let the watcher poll the unchanged file a few times: no reload.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "success")]).unwrap_or(0.0),
        0.0
    );

    // Replace the file in one step (as editors and ConfigMap swaps do), so the watcher
    // never reads half of it.
    let new =
        format!("{old}[[routes]]\nname = \"new\"\npath_prefix = \"/new/\"\nupstream = \"b\"\n");
    let tmp = gw.dir.path().join("fedgate.toml.tmp");
    std::fs::write(&tmp, &new).unwrap();
    std::fs::rename(&tmp, &gw.config_path).unwrap();
    assert!(
        wait_for_status(&gw.url("/new/x"), 200, Duration::from_secs(20)).await,
        "the watcher did not apply the changed file"
    );
    let (_, h, body) = send(get(&gw.url("/new/x"))).await;
    assert_eq!(h["x-upstream"], "b");
    assert_eq!(body, "upstream b");
    assert_eq!(send(get(&gw.url("/old/x"))).await.0, 200);

    // Many more polls of the same content: still exactly one reload.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "error")]).unwrap_or(0.0),
        0.0
    );
}

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let (code, err) = run_bin("check", &path);
    (code.unwrap_or(-1), err)
}

#[test]
fn check_names_the_bad_field() {
    let good = format!(
        "{HEAD}\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:3000\"]\n[[routes]]\nupstream = \"app\"\n"
    );
    let (code, err) = check(&good);
    assert_eq!(code, 0, "{err}");
    let cases = [
        (
            good.replace("[[routes]]", "[[routes]]\npath = \"/\""),
            "unknown field `path`",
        ),
        (
            good.replace("upstream = \"app\"", "upstream = \"nope\""),
            "routes[0].upstream",
        ),
        (
            good.replace(
                "[upstreams.app]",
                "[upstreams.app]\nconnect_timeout = \"fast\"",
            ),
            "upstreams.app.connect_timeout",
        ),
        (
            good.replace("http://127.0.0.1:3000", "http://127.0.0.1:3000/api"),
            "upstreams.app.endpoints[0]",
        ),
        (
            good.replace(
                "name = \"public\"\naddress = \"127.0.0.1:0\"",
                "name = \"public\"\naddress = \"nowhere\"",
            ),
            "listeners[0].address",
        ),
        (
            good.replace("shutdown_grace = \"5s\"", "shutdown_grace = 5"),
            "shutdown_grace",
        ),
        (
            // Below hyper's smallest HTTP/1.1 read buffer: refused, not silently raised.
            good.replace(
                "name = \"public\"\naddress = \"127.0.0.1:0\"",
                "name = \"public\"\naddress = \"127.0.0.1:0\"\nmax_header_bytes = 4096",
            ),
            "listeners[0].max_header_bytes",
        ),
    ];
    for (text, want) in cases {
        assert_ne!(text, good, "case {want} did not change the file");
        let (code, err) = check(&text);
        assert_eq!(code, 2, "expected exit 2 for {want}: {err}");
        assert!(err.contains(want), "expected {want:?} in: {err}");
    }
    let no_listener = good.replace(
        "[[listeners]]\nname = \"public\"\naddress = \"127.0.0.1:0\"",
        "",
    );
    let (code, err) = check(&no_listener);
    assert_eq!(code, 2);
    assert!(err.contains("`listeners`"), "{err}");
}

#[test]
fn run_refuses_a_bad_file_before_binding() {
    let admin = free_port();
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:{admin}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"ghost\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let (code, err) = run_bin("run", &path);
    assert_eq!(code, Some(2));
    assert!(err.contains("routes[0].upstream"), "{err}");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", admin)).is_ok(),
        "the admin port was bound"
    );
}
