//! Phases 3 and 4 end to end: the blocklist and the rate limiters, over real sockets, with
//! the 429 and 403 answers, the fields they carry and exact metric values.

use std::time::Duration;

use fedgate_tests::*;
use http::Request;
use serde_json::json;

const BOB: &str = "https://remote.example/users/bob#main-key";
const CREATE: &str = r#"{"@context":"https://www.w3.org/ns/activitystreams","type":"Create","actor":"https://remote.example/users/bob","object":{"type":"Note","content":"hi"}}"#;

fn from(url: &str, client: &str) -> Request<Body> {
    request("GET", url, &[("x-forwarded-for".into(), client.into())], "")
}

/// An inbox delivery signed by httpsig with Bob's key under `key_id`.
fn delivery(key_id: &str) -> Vec<(String, String)> {
    httpsig_sign(&json!({
        "key_id": key_id,
        "key_file": signature_testdata("rsa-2048.key.pem"),
        "algorithm": "rsa-sha256",
        "method": "POST",
        "path": "/users/alice/inbox",
        "host": "local.example",
        "headers": {"content-type": "application/activity+json"},
        "body": CREATE,
        "covered": ["(request-target)", "host", "date", "digest", "content-type"],
        "digest": true,
    }))
}

fn decisions(m: &str, limiter: &str, decision: &str) -> f64 {
    metric(
        m,
        "fedgate_rate_limit_decisions_total",
        &[("limiter", limiter), ("decision", decision)],
    )
    .unwrap_or(0.0)
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn client_limits_answer_429_with_retry_after_and_ratelimit_fields() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        r#"{}
[forwarding]
trusted_proxies = ["127.0.0.1"]
[rate_limits.per-client]
key = "client"
rate = "2/min"
[rate_limits.shadow]
key = "client"
rate = "1/min"
mode = "observe"
[[routes]]
name = "api"
path_prefix = "/"
upstream = "app"
rate_limits = ["shadow", "per-client"]
"#,
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    let url = gw.url("/api/v1/timelines/public");

    // Two requests per client, then 429; each client address has its own bucket.
    for _ in 0..2 {
        assert_eq!(send(from(&url, "203.0.113.1")).await.0, 200);
    }
    let (status, headers, body) = send(from(&url, "203.0.113.1")).await;
    assert_eq!(status, 429);
    assert_eq!(&body[..], b"too many requests\n");
    // One request per 30 s refills the bucket: the next one conforms within 30 s.
    let retry: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        "\"per-client\";q=2;w=60"
    );
    assert_eq!(
        header(&headers, "ratelimit"),
        format!("\"per-client\";r=0;t={retry}")
    );
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(send(from(&url, "203.0.113.2")).await.0, 200);
    // The client's own address is the peer when X-Forwarded-For says nothing.
    assert_eq!(send(get(&url)).await.0, 200);
    assert_eq!(up.hits(), 4);

    let m = gw.metrics().await;
    assert_eq!(decisions(&m, "per-client", "allowed"), 4.0);
    assert_eq!(decisions(&m, "per-client", "limited"), 1.0);
    // The observing limiter saw all five, allowed the first of each client and let the
    // rest through.
    assert_eq!(decisions(&m, "shadow", "allowed"), 3.0);
    assert_eq!(decisions(&m, "shadow", "would_limit"), 2.0);
    assert_eq!(decisions(&m, "shadow", "limited"), 0.0);
    assert_eq!(
        metric(
            &m,
            "fedgate_requests_total",
            &[
                ("route", "api"),
                ("upstream", "app"),
                ("method", "GET"),
                ("status", "429")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn untrusted_peers_cannot_pick_their_bucket() {
    let up = TestUpstream::start("app").await;
    // No trusted proxies: X-Forwarded-For is the client's to write, and ignored.
    let gw = TestGateway::start(&format!(
        "{}[rate_limits.per-client]\nkey = \"client\"\nrate = \"1/h\"\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"app\"\nrate_limits = [\"per-client\"]\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    let url = gw.url("/");
    assert_eq!(send(from(&url, "203.0.113.1")).await.0, 200);
    assert_eq!(send(from(&url, "203.0.113.2")).await.0, 429);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn route_and_instance_limits() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        r#"{}
[[signatures.keys]]
key_id = "{BOB}"
pem_file = {:?}
[rate_limits.per-instance]
key = "instance"
rate = "1/h"
[rate_limits.per-route]
key = "route"
rate = "3/h"
[[routes]]
name = "inbox"
path_prefix = "/users/"
upstream = "app"
signatures = "observe"
rate_limits = ["per-instance"]
[[routes]]
name = "nodeinfo"
path_prefix = "/nodeinfo"
upstream = "app"
rate_limits = ["per-route"]
[[routes]]
name = "wellknown"
path_prefix = "/.well-known"
upstream = "app"
rate_limits = ["per-route"]
"#,
        upstream_block("app", &[up.url()], ""),
        signature_testdata("rsa-2048.pub.pem").display().to_string()
    ))
    .await;

    // Bob's instance gets one delivery an hour; a second one is refused after verifying.
    let inbox = gw.url("/users/alice/inbox");
    let deliver = || async {
        send(request("POST", &inbox, &delivery(BOB), CREATE))
            .await
            .0
    };
    assert_eq!(deliver().await, 200);
    assert_eq!(deliver().await, 429);
    // Unsigned requests share a bucket of their own (the route only observes signatures).
    assert_eq!(send(request("POST", &inbox, &[], CREATE)).await.0, 200);
    assert_eq!(send(request("POST", &inbox, &[], CREATE)).await.0, 429);
    // A signature that does not verify counts as unsigned: its bucket is spent.
    let forged = delivery("https://remote.example/users/mallory#main-key");
    assert_eq!(send(request("POST", &inbox, &forged, CREATE)).await.0, 429);

    // Each route listing a route limiter has its own bucket.
    for _ in 0..3 {
        assert_eq!(send(get(&gw.url("/nodeinfo/2.0"))).await.0, 200);
    }
    assert_eq!(send(get(&gw.url("/nodeinfo/2.0"))).await.0, 429);
    assert_eq!(send(get(&gw.url("/.well-known/nodeinfo"))).await.0, 200);
    assert_eq!(up.hits(), 6);

    let m = gw.metrics().await;
    assert_eq!(decisions(&m, "per-instance", "allowed"), 2.0);
    assert_eq!(decisions(&m, "per-instance", "limited"), 3.0);
    assert_eq!(decisions(&m, "per-route", "allowed"), 4.0);
    assert_eq!(decisions(&m, "per-route", "limited"), 1.0);
}

#[tokio::test]
async fn a_flood_of_distinct_clients_keeps_limiter_state_bounded() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}[forwarding]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [rate_limits.per-client]\nkey = \"client\"\nrate = \"1/h\"\nmax_keys = 64\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"app\"\nrate_limits = [\"per-client\"]\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    let url = gw.url("/");
    let flood = 2000u32;
    let mut allowed = 0u32;
    for i in 0..flood {
        let ip = std::net::Ipv4Addr::from(0xc633_6400u32 + i); // 198.51.100.0 and on
        if send(from(&url, &ip.to_string())).await.0 == 200 {
            allowed += 1;
        }
    }
    // At most 64 keys get buckets of their own; every other new key shares one bucket,
    // which allows a single request an hour.
    // (With 2000 keys over 16 shards of 4, every shard fills.)
    assert_eq!(allowed, 65, "{allowed} of {flood} allowed");
    let m = gw.metrics().await;
    assert_eq!(decisions(&m, "per-client", "allowed"), f64::from(allowed));
    assert_eq!(
        decisions(&m, "per-client", "limited"),
        f64::from(flood - allowed)
    );
    assert_eq!(up.hits(), allowed as usize);
    // The keys gauge follows within one sweep (every 5 s) and stays under the cap.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    loop {
        let keys = metric(
            &gw.metrics().await,
            "fedgate_rate_limit_keys",
            &[("limiter", "per-client")],
        );
        if keys == Some(f64::from(allowed - 1)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sweep published {} keys: {keys:?}",
            allowed - 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn blocklist_config(up: &TestUpstream, file: &std::path::Path) -> String {
    format!(
        r#"{}
[forwarding]
trusted_proxies = ["127.0.0.1"]
[blocklist]
file = {:?}
entries = ["198.51.100.0/24"]
[[routes]]
name = "health"
path_prefix = "/health"
upstream = "app"
blocklist = false
[[routes]]
name = "inbox"
path_prefix = "/"
upstream = "app"
"#,
        upstream_block("app", &[up.url()], ""),
        file.display().to_string()
    )
}

fn blocked(m: &str, reason: &str) -> f64 {
    metric(m, "fedgate_blocked_requests_total", &[("reason", reason)]).unwrap_or(0.0)
}

#[tokio::test]
async fn the_blocklist_refuses_addresses_and_instances_and_reloads() {
    let up = TestUpstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blocklist.csv");
    // Mastodon's domain-block export, as an operator would download it.
    std::fs::write(
        &file,
        "#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate\n\
         evil.example,suspend,true,true,Spam,false\n\
         2001:db8::/32,,,,,\n",
    )
    .unwrap();
    let gw = TestGateway::start(&blocklist_config(&up, &file)).await;
    let inbox = gw.url("/users/alice/inbox");

    // Addresses: from the trusted proxy's X-Forwarded-For, IPv4 and IPv6.
    let (status, _, body) = send(from(&inbox, "198.51.100.20")).await;
    assert_eq!((status.as_u16(), &body[..]), (403, &b"forbidden\n"[..]));
    assert_eq!(send(from(&inbox, "2001:db8::1")).await.0, 403);
    assert_eq!(send(from(&inbox, "203.0.113.1")).await.0, 200);
    // A route exempt from the blocklist serves a blocked address.
    assert_eq!(send(from(&gw.url("/health"), "198.51.100.20")).await.0, 200);

    // Instances: a delivery signed with a key of a blocked instance (or a subdomain) is
    // refused before its body is read or its signature checked.
    for key_id in [
        "https://evil.example/users/x#main-key",
        "https://relay.evil.example/actor#main-key",
    ] {
        let (status, _, _) = send(request("POST", &inbox, &delivery(key_id), CREATE)).await;
        assert_eq!(status, 403, "{key_id}");
    }
    assert_eq!(
        send(request("POST", &inbox, &delivery(BOB), CREATE))
            .await
            .0,
        200
    );
    assert_eq!(up.hits(), 3);
    let m = gw.metrics().await;
    assert_eq!(blocked(&m, "address"), 2.0);
    assert_eq!(blocked(&m, "instance"), 2.0);
    assert_eq!(metric(&m, "fedgate_blocklist_size", &[]), Some(3.0));

    // Blocking Bob's instance takes effect on reload.
    std::fs::write(&file, "evil.example\n2001:db8::/32\nremote.example\n").unwrap();
    gw.gw().reload().await.unwrap();
    assert_eq!(
        send(request("POST", &inbox, &delivery(BOB), CREATE))
            .await
            .0,
        403
    );
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "fedgate_blocklist_size", &[]), Some(4.0));
    assert_eq!(blocked(&m, "instance"), 3.0);

    // A broken file keeps the running list and names the line.
    std::fs::write(&file, "evil.example\nnot a domain\n").unwrap();
    let err = gw.gw().reload().await.unwrap_err().to_string();
    assert!(
        err.contains("blocklist.file") && err.contains("line 2"),
        "{err}"
    );
    assert_eq!(
        send(request("POST", &inbox, &delivery(BOB), CREATE))
            .await
            .0,
        403
    );
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "fedgate_blocklist_size", &[]), Some(4.0));
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "error")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_changed_blocklist_file_is_picked_up_by_the_watcher() {
    let up = TestUpstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blocklist.txt");
    std::fs::write(&file, "evil.example\n").unwrap();
    let text = format!(
        "{}\n{}",
        HEAD.replace("watch = false", "watch = true\npoll_interval = \"100ms\""),
        blocklist_config(&up, &file)
    );
    let gw = TestGateway::start_full(&text).await;
    let url = gw.url("/");
    assert_eq!(send(from(&url, "203.0.113.7")).await.0, 200);

    // Only the blocklist file changes; the config file stays as it is.
    std::fs::write(&file, "evil.example\n203.0.113.0/24\n").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while send(from(&url, "203.0.113.7")).await.0 != 403 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new blocklist was not applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "fedgate_blocklist_size", &[]), Some(3.0));
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn principal_limits_give_each_principal_its_own_bucket() {
    use sha2::Digest;
    let up = TestUpstream::start("app").await;
    let hash = |k: &str| hex::encode(sha2::Sha256::digest(k.as_bytes()));
    let gw = TestGateway::start(&format!(
        r#"{}
[[auth.api_keys]]
principal = "relay"
sha256 = "{}"
[[auth.api_keys]]
principal = "bridge"
sha256 = "{}"
[rate_limits.per-principal]
key = "principal"
rate = "2/h"
[[routes]]
name = "api"
path_prefix = "/"
upstream = "app"
auth = ["api_key"]
rate_limits = ["per-principal"]
"#,
        upstream_block("app", &[up.url()], ""),
        hash("relay-secret-key-0123456789"),
        hash("bridge-secret-key-0123456789"),
    ))
    .await;
    let with_key = |key: &str| {
        request(
            "GET",
            &gw.url("/api/v1/instance"),
            &[("x-api-key".into(), key.into())],
            "",
        )
    };
    for _ in 0..2 {
        assert_eq!(send(with_key("relay-secret-key-0123456789")).await.0, 200);
    }
    assert_eq!(send(with_key("relay-secret-key-0123456789")).await.0, 429);
    assert_eq!(send(with_key("bridge-secret-key-0123456789")).await.0, 200);
    // A refused credential never reaches the limiter.
    assert_eq!(send(with_key("wrong")).await.0, 401);
    let m = gw.metrics().await;
    assert_eq!(decisions(&m, "per-principal", "allowed"), 3.0);
    assert_eq!(decisions(&m, "per-principal", "limited"), 1.0);
    assert_eq!(up.hits(), 3);
}
