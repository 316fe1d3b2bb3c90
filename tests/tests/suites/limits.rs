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

const EVIL: &str = "https://evil.example/users/x#main-key";
const CAROL_ED: &str = "https://ed.example/users/carol#ed25519-key";
const EVIL_ED: &str = "https://evil.example/users/y#ed25519-key";

/// Blocks `evil.example`; the trust store has Bob's RSA key under Bob's and under an
/// `evil.example` key id, and the Ed25519 test key under Carol's and another `evil.example`
/// one. `/users` enforces signatures, `/buffered` reads bodies whole without checking
/// signatures, `/streamed` streams them.
fn signed_blocklist_config(up: &TestUpstream) -> String {
    let key = |id: &str, file: &str| {
        format!(
            "[[signatures.keys]]\nkey_id = {id:?}\npem_file = {:?}\n",
            signature_testdata(file).display().to_string()
        )
    };
    format!(
        r#"{}{}{}{}{}
[blocklist]
entries = ["evil.example"]
[[routes]]
name = "inbox"
path_prefix = "/users"
upstream = "app"
signatures = "enforce"
[[routes]]
name = "buffered"
path_prefix = "/buffered"
upstream = "app"
buffer_body = "64KiB"
[[routes]]
name = "streamed"
path_prefix = "/streamed"
upstream = "app"
"#,
        upstream_block("app", &[up.url()], ""),
        key(BOB, "rsa-2048.pub.pem"),
        key(EVIL, "rsa-2048.pub.pem"),
        key(CAROL_ED, "ed25519.pub.pem"),
        key(EVIL_ED, "ed25519.pub.pem"),
    )
}

/// `headers` with the `Signature` field rewritten by `edit`: the signature does not cover
/// its own field, so it still verifies.
fn rewritten(headers: &[(String, String)], edit: impl Fn(&str) -> String) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| match k.eq_ignore_ascii_case("signature") {
            true => (k.clone(), edit(v)),
            false => (k.clone(), v.clone()),
        })
        .collect()
}

/// The test Ed25519 key's signature of `data`, base64, made by the `cryptography` package
/// of the signers' Python.
fn ed25519_sign(data: &str) -> String {
    use std::io::Write;
    let script = "import sys, base64\n\
        from cryptography.hazmat.primitives.serialization import load_pem_private_key\n\
        key = load_pem_private_key(open(sys.argv[1], 'rb').read(), None)\n\
        sys.stdout.write(base64.b64encode(key.sign(sys.stdin.buffer.read())).decode())\n";
    let mut child = std::process::Command::new(signer_python())
        .arg("-c")
        .arg(script)
        .arg(signature_testdata("ed25519.key.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// An RFC 9421 inbox delivery of `body` signed with the test Ed25519 key: `params` are the
/// signature's parameters (`;created=...;keyid="..."`) and `first_line`, if any, another
/// `Signature-Input` field line sent before the signed one.
fn rfc9421_delivery(body: &str, params: &str, first_line: Option<&str>) -> Vec<(String, String)> {
    use base64::Engine;
    use sha2::Digest;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let digest = format!("sha-256=:{}:", b64(&sha2::Sha256::digest(body.as_bytes())));
    let covered = r#"("@method" "@target-uri" "content-digest" "content-type")"#;
    let base = format!(
        "\"@method\": POST\n\
         \"@target-uri\": http://local.example/users/alice/inbox\n\
         \"content-digest\": {digest}\n\
         \"content-type\": application/activity+json\n\
         \"@signature-params\": {covered}{params}"
    );
    let mut headers = vec![
        ("host".to_string(), "local.example".to_string()),
        (
            "content-type".to_string(),
            "application/activity+json".to_string(),
        ),
        ("content-digest".to_string(), digest),
    ];
    if let Some(line) = first_line {
        headers.push(("signature-input".to_string(), line.to_string()));
    }
    headers.push((
        "signature-input".to_string(),
        format!("sig1={covered}{params}"),
    ));
    headers.push((
        "signature".to_string(),
        format!("sig1=:{}:", ed25519_sign(&base)),
    ));
    headers
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Rewrites a `Signature` value signed under a key id.
type Rewrite = fn(&str, &str) -> String;

#[tokio::test]
async fn a_blocked_instance_cannot_hide_its_key_id_from_the_blocklist() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&signed_blocklist_config(&up)).await;
    let inbox = gw.url("/users/alice/inbox");
    let post = |h: &[(String, String)]| request("POST", &inbox, h, CREATE);

    // Draft-cavage: the key id unquoted, with a space before `=`, or behind a look-alike
    // parameter. Each form verifies: with Bob's key id it is forwarded.
    let forms: [(&str, Rewrite); 3] = [
        ("unquoted", |v, id| {
            v.replace(&format!("keyId=\"{id}\""), &format!("keyId={id}"))
        }),
        ("spaced", |v, id| {
            v.replace(&format!("keyId=\"{id}\""), &format!("keyId =\"{id}\""))
        }),
        ("shadowed", |v, _| {
            format!("xkeyid=\"https://remote.example/users/bob#main-key\",{v}")
        }),
    ];
    let bob = delivery(BOB);
    let evil = delivery(EVIL);
    for (name, edit) in &forms {
        let h = rewritten(&bob, |v| edit(v, BOB));
        assert_ne!(h, bob, "{name}");
        assert_eq!(send(post(&h)).await.0, 200, "{name} with Bob's key id");
        let h = rewritten(&evil, |v| edit(v, EVIL));
        let (status, _, body) = send(post(&h)).await;
        assert_eq!(
            (status.as_u16(), &body[..]),
            (403, &b"forbidden\n"[..]),
            "{name}"
        );
    }
    assert_eq!(up.hits(), 3);

    // RFC 9421: a look-alike parameter before `keyid` (signed, as every parameter is), and
    // a second `Signature-Input` line that replaces the first one's signature.
    let created = now_secs();
    let params = |first: &str, second: &str| {
        format!(";created={created};xkeyid=\"{first}\";keyid=\"{second}\"")
    };
    let h = rfc9421_delivery(CREATE, &params(EVIL_ED, CAROL_ED), None);
    assert_eq!(
        send(post(&h)).await.0,
        200,
        "Carol behind an evil look-alike"
    );
    let h = rfc9421_delivery(CREATE, &params(CAROL_ED, EVIL_ED), None);
    assert_eq!(
        send(post(&h)).await.0,
        403,
        "evil behind Carol's look-alike"
    );
    let h = rfc9421_delivery(
        CREATE,
        &format!(";created={created};keyid=\"{EVIL_ED}\""),
        Some(&format!("sig1=(\"@method\");keyid=\"{CAROL_ED}\"")),
    );
    assert_eq!(send(post(&h)).await.0, 403, "evil on a second line");
    assert_eq!(up.hits(), 4);

    let m = gw.metrics().await;
    assert_eq!(blocked(&m, "instance"), 5.0);
    assert_eq!(blocked(&m, "address"), 0.0);
    assert_eq!(blocked(&m, "actor"), 0.0);
    // Refused before phase 6: only the forwarded ones were verified.
    let verified = |scheme: &str| {
        metric(
            &m,
            "fedgate_signature_verifications_total",
            &[("route", "inbox"), ("scheme", scheme), ("result", "valid")],
        )
    };
    assert_eq!(verified("cavage"), Some(3.0));
    assert_eq!(verified("rfc9421"), Some(1.0));
}

#[tokio::test]
async fn activities_of_blocked_actors_are_refused_whoever_signs_them() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&signed_blocklist_config(&up)).await;
    let inbox = gw.url("/users/alice/inbox");
    let activity = |actor: &str| {
        format!(
            r#"{{"@context":"https://www.w3.org/ns/activitystreams","type":"Create","actor":{actor},"object":{{"type":"Note","attributedTo":"https://evil.example/users/x"}}}}"#
        )
    };
    let signed = |body: &str| {
        httpsig_sign(&json!({
            "key_id": BOB,
            "key_file": signature_testdata("rsa-2048.key.pem"),
            "algorithm": "rsa-sha256",
            "method": "POST",
            "path": "/users/alice/inbox",
            "host": "local.example",
            "headers": {"content-type": "application/activity+json"},
            "body": body,
            "covered": ["(request-target)", "host", "date", "digest", "content-type"],
            "digest": true,
        }))
    };

    // Signed by Bob (remote.example), for a blocked actor: refused.
    let body = activity(r#""https://evil.example/users/x""#);
    let (status, _, text) = send(request("POST", &inbox, &signed(&body), &body)).await;
    assert_eq!((status.as_u16(), &text[..]), (403, &b"forbidden\n"[..]));
    // An actor of another instance than the signer's, not blocked: forwarded (that is not
    // this check's business), as is Bob's own activity.
    let body = activity(r#""https://other.example/users/y""#);
    assert_eq!(
        send(request("POST", &inbox, &signed(&body), &body)).await.0,
        200
    );
    let body = activity(r#""https://remote.example/users/bob""#);
    assert_eq!(
        send(request("POST", &inbox, &signed(&body), &body)).await.0,
        200
    );
    assert_eq!(up.hits(), 2);

    // Unsigned, on a route that reads bodies: the actor as an object, a subdomain,
    // JSON-LD with a profile.
    let body = activity(r#"{"type":"Person","id":"https://relay.evil.example/actor"}"#);
    let ld = "application/ld+json; profile=\"https://www.w3.org/ns/activitystreams\"";
    let typed = |t: &str| vec![("content-type".to_string(), t.to_string())];
    let url = gw.url("/buffered/inbox");
    assert_eq!(send(request("POST", &url, &typed(ld), &body)).await.0, 403);
    // Not JSON by its type, or on a route that streams the body: not read.
    assert_eq!(
        send(request("POST", &url, &typed("text/plain"), &body))
            .await
            .0,
        200
    );
    let streamed = gw.url("/streamed/inbox");
    assert_eq!(
        send(request("POST", &streamed, &typed(ld), &body)).await.0,
        200
    );
    assert_eq!(up.hits(), 4);

    let m = gw.metrics().await;
    assert_eq!(blocked(&m, "actor"), 2.0);
    assert_eq!(blocked(&m, "instance"), 0.0);
    assert_eq!(blocked(&m, "address"), 0.0);
    // The refused delivery was refused before its signature was checked.
    assert_eq!(
        metric(
            &m,
            "fedgate_signature_verifications_total",
            &[
                ("route", "inbox"),
                ("scheme", "cavage"),
                ("result", "valid")
            ],
        ),
        Some(2.0)
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
