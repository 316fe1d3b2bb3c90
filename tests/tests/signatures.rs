//! Phase 6 end to end: requests signed by PyPI's `httpsig` (draft-cavage) and
//! `http-message-signatures` (RFC 9421), and by npm's `http-signature`,
//! `@peertube/http-signature` and `@misskey-dev/node-http-message-signatures`, reach the
//! gateway over real sockets; enforcing routes refuse what does not verify with 401 and the right
//! `result`, observing routes forward everything, and the metrics count each outcome.

use std::time::{Duration, SystemTime};

use fedgate_tests::*;
use serde_json::json;

const BOB: &str = "https://remote.example/users/bob#main-key";
const EVE: &str = "https://other.example/users/eve#main-key";
const CAROL_ED: &str = "https://ed.example/users/carol#ed25519-key";
const CREATE: &str = r#"{"@context":"https://www.w3.org/ns/activitystreams","type":"Create","actor":"https://remote.example/users/bob","object":{"type":"Note","content":"hi"}}"#;
const INBOX_COVERS: [&str; 5] = ["(request-target)", "host", "date", "digest", "content-type"];

fn config(up: &TestUpstream) -> String {
    let key = |id: &str, file: &str| {
        format!(
            "[[signatures.keys]]\nkey_id = {id:?}\npem_file = {:?}\n",
            signature_testdata(file).display().to_string()
        )
    };
    format!(
        "{}{}{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        key(BOB, "rsa-2048.pub.pem"),
        // Eve's key id names another key than the one that signs below.
        key(EVE, "rsa-2048-other.pub.pem"),
        key(CAROL_ED, "ed25519.pub.pem"),
        "[[routes]]\nname = \"observed\"\npath_prefix = \"/observed\"\nupstream = \"app\"\nsignatures = \"observe\"\n",
        "[[routes]]\nname = \"inbox\"\npath_prefix = \"/\"\nupstream = \"app\"\nsignatures = \"enforce\"\n",
    )
}

/// A POST of `body` to `path`, signed by httpsig over `covers` with Bob's private key
/// under `key_id`, with `date` (default now).
fn signed(
    key_id: &str,
    path: &str,
    body: &str,
    covers: &[&str],
    date: Option<SystemTime>,
) -> Vec<(String, String)> {
    let mut spec = json!({
        "key_id": key_id,
        "key_file": signature_testdata("rsa-2048.key.pem"),
        "algorithm": "rsa-sha256",
        "method": "POST",
        "path": path,
        "host": "local.example",
        "headers": {"content-type": "application/activity+json"},
        "body": body,
        "covered": covers,
        "digest": true,
    });
    if let Some(date) = date {
        spec["date"] = json!(httpdate::fmt_http_date(date));
    }
    httpsig_sign(&spec)
}

/// A refused request: the `result` it must get, its headers and its body.
type Refused<'a> = (&'a str, Vec<(String, String)>, &'a str);

fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
    headers.iter().filter(|(k, _)| k != name).cloned().collect()
}

#[tokio::test]
async fn httpsig_signatures_are_verified_enforced_and_counted() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config(&up)).await;
    let inbox = gw.url("/users/alice/inbox");
    let hour = Duration::from_secs(3600);

    // A valid delivery reaches the upstream with its signature and body untouched.
    let good = signed(BOB, "/users/alice/inbox", CREATE, &INBOX_COVERS, None);
    let (status, _, _) = send(request("POST", &inbox, &good, CREATE)).await;
    assert_eq!(status, 200);
    let seen = up.last();
    assert_eq!(seen.body_len, CREATE.len() as u64);
    let sent = |name: &str| good.iter().find(|(k, _)| k == name).unwrap().1.clone();
    assert_eq!(seen.headers["signature"], sent("signature").as_str());
    assert_eq!(seen.headers["digest"], sent("digest").as_str());
    assert_eq!(up.hits(), 1);

    let refused: Vec<Refused<'_>> = vec![
        // The body changed after signing: the signed Digest no longer matches it.
        ("digest_mismatch", good.clone(), r#"{"type":"Delete"}"#),
        // Signed by Bob's key under Eve's key id.
        (
            "invalid",
            signed(EVE, "/users/alice/inbox", CREATE, &INBOX_COVERS, None),
            CREATE,
        ),
        // Signed for another inbox.
        (
            "invalid",
            signed(BOB, "/users/carol/inbox", CREATE, &INBOX_COVERS, None),
            CREATE,
        ),
        (
            "unknown_key",
            signed(
                "https://nobody.example/k",
                "/users/alice/inbox",
                CREATE,
                &INBOX_COVERS,
                None,
            ),
            CREATE,
        ),
        (
            "expired",
            signed(
                BOB,
                "/users/alice/inbox",
                CREATE,
                &INBOX_COVERS,
                Some(SystemTime::now() - 48 * hour),
            ),
            CREATE,
        ),
        (
            "expired",
            signed(
                BOB,
                "/users/alice/inbox",
                CREATE,
                &INBOX_COVERS,
                Some(SystemTime::now() + 2 * hour),
            ),
            CREATE,
        ),
        // A covered field stripped on the way.
        ("malformed", without(&good, "content-type"), CREATE),
        // A POST whose signature leaves the digest out.
        (
            "malformed",
            signed(
                BOB,
                "/users/alice/inbox",
                CREATE,
                &["(request-target)", "host", "date"],
                None,
            ),
            CREATE,
        ),
        // An algorithm nobody verifies.
        (
            "unsupported_algorithm",
            good.iter()
                .map(|(k, v)| (k.clone(), v.replace("rsa-sha256", "hmac-sha256")))
                .collect(),
            CREATE,
        ),
        (
            "missing",
            vec![("content-type".into(), "application/activity+json".into())],
            CREATE,
        ),
    ];
    for (result, headers, body) in &refused {
        let (status, h, text) = send(request("POST", &inbox, headers, body)).await;
        assert_eq!(status, 401, "{result}");
        assert_eq!(h["content-type"], "application/json");
        let doc: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(doc["result"], *result, "{doc}");
        assert!(doc["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(up.hits(), 1, "refused requests never reach the upstream");

    // Observing routes count the same failure and forward the request.
    let observed = gw.url("/observed/inbox");
    let wrong = signed(EVE, "/observed/inbox", CREATE, &INBOX_COVERS, None);
    let (status, _, _) = send(request("POST", &observed, &wrong, CREATE)).await;
    assert_eq!(status, 200);
    let fine = signed(BOB, "/observed/inbox", CREATE, &INBOX_COVERS, None);
    let (status, _, _) = send(request("POST", &observed, &fine, CREATE)).await;
    assert_eq!(status, 200);
    assert_eq!(up.hits(), 3);

    let m = gw.metrics().await;
    let verifications = |route: &str, scheme: &str, result: &str| {
        metric(
            &m,
            "fedgate_signature_verifications_total",
            &[("route", route), ("scheme", scheme), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(verifications("inbox", "cavage", "valid"), 1.0, "{m}");
    assert_eq!(verifications("inbox", "cavage", "digest_mismatch"), 1.0);
    assert_eq!(verifications("inbox", "cavage", "invalid"), 2.0);
    assert_eq!(verifications("inbox", "cavage", "unknown_key"), 1.0);
    assert_eq!(verifications("inbox", "cavage", "expired"), 2.0);
    assert_eq!(verifications("inbox", "cavage", "malformed"), 2.0);
    assert_eq!(
        verifications("inbox", "cavage", "unsupported_algorithm"),
        1.0
    );
    assert_eq!(verifications("inbox", "none", "missing"), 1.0);
    assert_eq!(verifications("observed", "cavage", "invalid"), 1.0);
    assert_eq!(verifications("observed", "cavage", "valid"), 1.0);
    let by_instance = |instance: &str, result: &str| {
        metric(
            &m,
            "fedgate_signature_failures_by_instance_total",
            &[("instance", instance), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(by_instance("remote.example", "digest_mismatch"), 1.0, "{m}");
    assert_eq!(by_instance("other.example", "invalid"), 2.0);
    assert_eq!(by_instance("nobody.example", "unknown_key"), 1.0);
    assert_eq!(by_instance("unknown", "missing"), 1.0);
    // Only Bob's instance sent signatures that verified.
    assert_eq!(
        metric(&m, "fedgate_federation_peers", &[]),
        Some(1.0),
        "{m}"
    );
    let req = |route: &str, status: &str| {
        metric(
            &m,
            "fedgate_requests_total",
            &[
                ("route", route),
                ("upstream", "app"),
                ("method", "POST"),
                ("status", status),
            ],
        )
    };
    assert_eq!(req("inbox", "401"), Some(refused.len() as f64));
    assert_eq!(req("observed", "200"), Some(2.0));
    let (ok, out) = promtool_check_metrics(&m);
    assert!(ok, "{out}");
    gw.shutdown().await;
}

/// A POST signed by http-message-signatures with the key of `file` under `key_id`.
fn rfc9421(
    key_id: &str,
    file: &str,
    algorithm: &str,
    covered: &[&str],
    created: Option<SystemTime>,
) -> Vec<(String, String)> {
    let mut spec = json!({
        "key_id": key_id,
        "key_file": signature_testdata(file),
        "algorithm": algorithm,
        "method": "POST",
        "url": "http://local.example/users/alice/inbox",
        "headers": {"Content-Type": "application/activity+json"},
        "body": CREATE,
        "covered": covered,
        "content_digest": covered.contains(&"content-digest"),
    });
    if let Some(t) = created {
        spec["created"] = json!(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs());
    }
    // The HTTP client sets the length of the body it sends (a test may send another body
    // than the one signed); the library leaves Host to the client too, and the signature
    // covers it through @target-uri.
    let mut headers = without(&rfc9421_sign(&spec), "Content-Length");
    headers.push(("host".into(), "local.example".into()));
    headers
}

#[tokio::test]
async fn rfc9421_signatures_from_http_message_signatures_are_verified() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config(&up)).await;
    let inbox = gw.url("/users/alice/inbox");
    let covered = ["@method", "@target-uri", "content-digest", "content-type"];
    let day = Duration::from_secs(24 * 3600);

    for (key_id, file, algorithm) in [
        (CAROL_ED, "ed25519.key.pem", "ed25519"),
        (BOB, "rsa-2048.key.pem", "rsa-v1_5-sha256"),
        (BOB, "rsa-2048.key.pem", "rsa-pss-sha512"),
    ] {
        let headers = rfc9421(key_id, file, algorithm, &covered, None);
        let (status, _, body) = send(request("POST", &inbox, &headers, CREATE)).await;
        assert_eq!(
            status,
            200,
            "{algorithm}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(up.hits(), 3);
    let seen = up.last();
    assert!(seen.headers.contains_key("signature-input"));
    assert!(seen.headers.contains_key("content-digest"));

    let good = rfc9421(CAROL_ED, "ed25519.key.pem", "ed25519", &covered, None);
    let refused: Vec<Refused<'_>> = vec![
        ("digest_mismatch", good.clone(), r#"{"type":"Delete"}"#),
        // Carol's Ed25519 signature presented under Bob's RSA key id.
        (
            "invalid",
            good.iter()
                .map(|(k, v)| (k.clone(), v.replace(CAROL_ED, BOB)))
                .collect(),
            CREATE,
        ),
        (
            "expired",
            rfc9421(
                CAROL_ED,
                "ed25519.key.pem",
                "ed25519",
                &covered,
                Some(SystemTime::now() - 2 * day),
            ),
            CREATE,
        ),
        (
            "malformed",
            rfc9421(
                CAROL_ED,
                "ed25519.key.pem",
                "ed25519",
                &["@method", "@target-uri", "content-type"],
                None,
            ),
            CREATE,
        ),
        (
            "unknown_key",
            rfc9421(
                "https://nobody.example/k",
                "ed25519.key.pem",
                "ed25519",
                &covered,
                None,
            ),
            CREATE,
        ),
        (
            "unsupported_algorithm",
            rfc9421(BOB, "rsa-2048.pub.pem", "hmac-sha256", &covered, None),
            CREATE,
        ),
    ];
    for (result, headers, body) in &refused {
        let (status, _, text) = send(request("POST", &inbox, headers, body)).await;
        assert_eq!(status, 401, "{result}");
        let doc: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(doc["result"], *result, "{doc}");
    }
    assert_eq!(up.hits(), 3, "refused requests never reach the upstream");

    let m = gw.metrics().await;
    let verifications = |result: &str| {
        metric(
            &m,
            "fedgate_signature_verifications_total",
            &[
                ("route", "inbox"),
                ("scheme", "rfc9421"),
                ("result", result),
            ],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(verifications("valid"), 3.0, "{m}");
    for result in [
        "digest_mismatch",
        "invalid",
        "expired",
        "malformed",
        "unknown_key",
        "unsupported_algorithm",
    ] {
        assert_eq!(verifications(result), 1.0, "{result}\n{m}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn npm_signers_are_verified() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config(&up)).await;
    let inbox = gw.url("/users/alice/inbox");
    let hour = Duration::from_secs(3600);
    let sign =
        |library: &str, key_id: &str, file: &str, covers: &[&str], date: Option<SystemTime>| {
            let mut spec = json!({
                "library": library,
                "key_id": key_id,
                "key_file": signature_testdata(file),
                "method": "POST",
                "path": "/users/alice/inbox",
                "host": "local.example",
                "headers": {"content-type": "application/activity+json"},
                "body": CREATE,
                "covered": covers,
            });
            if let Some(date) = date {
                spec["date"] = json!(httpdate::fmt_http_date(date));
            }
            npm_sign(&spec)
        };
    // joyent's rsa-sha256, PeerTube's hs2019, and Misskey's draft signatures (Ed25519 as
    // `ed25519-sha512`, and RSA) with both Digest and Content-Digest.
    let signers = [
        ("http-signature", BOB, "rsa-2048.key.pem", "rsa-sha256"),
        ("peertube", BOB, "rsa-2048.key.pem", "hs2019"),
        ("misskey", CAROL_ED, "ed25519.key.pem", "ed25519-sha512"),
        ("misskey", BOB, "rsa-2048.key.pem", "rsa-sha256"),
    ];
    let mut refusals = 0;
    for (library, key_id, file, algorithm) in signers {
        let good = sign(library, key_id, file, &INBOX_COVERS, None);
        let signature = good
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("signature"))
            .expect("a Signature header")
            .1
            .clone();
        assert!(
            signature.contains(&format!("algorithm=\"{algorithm}\"")),
            "{library}: {signature}"
        );
        let (status, _, body) = send(request("POST", &inbox, &good, CREATE)).await;
        assert_eq!(status, 200, "{library}: {}", String::from_utf8_lossy(&body));

        // Each library's own signatures, spoiled the ways a delivery goes wrong.
        let unsupported: Vec<(String, String)> = good
            .iter()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("signature") {
                    v.replace(
                        &format!("algorithm=\"{algorithm}\""),
                        "algorithm=\"hmac-sha256\"",
                    )
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect();
        let refused: Vec<Refused<'_>> = vec![
            ("digest_mismatch", good.clone(), r#"{"type":"Delete"}"#),
            // The same private key under Eve's key id, whose trusted key is another.
            (
                "invalid",
                sign(library, EVE, file, &INBOX_COVERS, None),
                CREATE,
            ),
            (
                "expired",
                sign(
                    library,
                    key_id,
                    file,
                    &INBOX_COVERS,
                    Some(SystemTime::now() - 48 * hour),
                ),
                CREATE,
            ),
            (
                "expired",
                sign(
                    library,
                    key_id,
                    file,
                    &INBOX_COVERS,
                    Some(SystemTime::now() + 2 * hour),
                ),
                CREATE,
            ),
            // The digest left out of what is signed.
            (
                "malformed",
                sign(
                    library,
                    key_id,
                    file,
                    &["(request-target)", "host", "date"],
                    None,
                ),
                CREATE,
            ),
            // A covered field stripped on the way.
            ("malformed", without(&good, "content-type"), CREATE),
            ("unsupported_algorithm", unsupported, CREATE),
        ];
        for (result, headers, body) in &refused {
            let (status, _, text) = send(request("POST", &inbox, headers, body)).await;
            assert_eq!(status, 401, "{library} {algorithm}: {result}");
            let doc: serde_json::Value = serde_json::from_slice(&text).unwrap();
            assert_eq!(doc["result"], *result, "{library} {algorithm}: {doc}");
        }
        refusals += refused.len();
    }
    assert_eq!(
        up.hits(),
        signers.len(),
        "refused requests never reach the upstream"
    );
    let seen = up.last();
    assert!(seen.headers.contains_key("digest") && seen.headers.contains_key("content-digest"));

    let m = gw.metrics().await;
    let verifications = |result: &str| {
        metric(
            &m,
            "fedgate_signature_verifications_total",
            &[("route", "inbox"), ("scheme", "cavage"), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    let n = signers.len() as f64;
    assert_eq!(verifications("valid"), n, "{m}");
    assert_eq!(verifications("digest_mismatch"), n, "{m}");
    assert_eq!(verifications("invalid"), n, "{m}");
    assert_eq!(verifications("expired"), 2.0 * n, "{m}");
    assert_eq!(verifications("malformed"), 2.0 * n, "{m}");
    assert_eq!(verifications("unsupported_algorithm"), n, "{m}");
    assert_eq!(refusals, 7 * signers.len());
    // remote.example (Bob) and ed.example (Carol).
    assert_eq!(
        metric(&m, "fedgate_federation_peers", &[]),
        Some(2.0),
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn signed_gets_of_an_actor_are_verified() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config(&up)).await;
    let actor = gw.url("/users/alice");
    // A remote instance fetching an actor document signs a GET without a body: Mastodon
    // covers (request-target), host and date.
    let covers = ["(request-target)", "host", "date"];
    let httpsig = httpsig_sign(&json!({
        "key_id": BOB,
        "key_file": signature_testdata("rsa-2048.key.pem"),
        "algorithm": "rsa-sha256",
        "method": "GET",
        "path": "/users/alice",
        "host": "local.example",
        "headers": {"accept": "application/activity+json"},
        "body": "",
        "covered": covers,
    }));
    let npm = npm_sign(&json!({
        "library": "http-signature",
        "key_id": BOB,
        "key_file": signature_testdata("rsa-2048.key.pem"),
        "method": "GET",
        "path": "/users/alice",
        "host": "local.example",
        "headers": {"accept": "application/activity+json"},
        "body": "",
        "covered": covers,
    }));
    let mut rfc = without(
        &rfc9421_sign(&json!({
            "key_id": CAROL_ED,
            "key_file": signature_testdata("ed25519.key.pem"),
            "algorithm": "ed25519",
            "method": "GET",
            "url": "http://local.example/users/alice",
            "headers": {"Accept": "application/activity+json"},
            "body": "",
            "covered": ["@method", "@target-uri"],
            "content_digest": false,
        })),
        "Content-Length",
    );
    rfc.push(("host".into(), "local.example".into()));
    for (who, headers) in [("httpsig", &httpsig), ("npm", &npm), ("rfc9421", &rfc)] {
        let (status, _, body) = send(request("GET", &actor, headers, "")).await;
        assert_eq!(status, 200, "{who}: {}", String::from_utf8_lossy(&body));
    }
    // Signed for another actor: refused.
    let (status, _, _) = send(request("GET", &gw.url("/users/bob"), &httpsig, "")).await;
    assert_eq!(status, 401);
    // A GET that does not cover host is refused, as Mastodon refuses it.
    let no_host = httpsig_sign(&json!({
        "key_id": BOB,
        "key_file": signature_testdata("rsa-2048.key.pem"),
        "algorithm": "rsa-sha256",
        "method": "GET",
        "path": "/users/alice",
        "host": "local.example",
        "headers": {},
        "body": "",
        "covered": ["(request-target)", "date"],
    }));
    let (status, _, text) = send(request("GET", &actor, &no_host, "")).await;
    assert_eq!(status, 401);
    let doc: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(doc["result"], "malformed", "{doc}");
    assert_eq!(up.hits(), 3);
    let m = gw.metrics().await;
    let count = |scheme: &str, result: &str| {
        metric(
            &m,
            "fedgate_signature_verifications_total",
            &[("route", "inbox"), ("scheme", scheme), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("cavage", "valid"), 2.0);
    assert_eq!(count("rfc9421", "valid"), 1.0);
    assert_eq!(count("cavage", "invalid"), 1.0);
    assert_eq!(count("cavage", "malformed"), 1.0);
}

#[tokio::test]
async fn plugins_see_the_verified_signer() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&format!(
        "{}{}{}{}",
        upstream_block("app", &[up.url()], ""),
        format_args!(
            "[[signatures.keys]]\nkey_id = {BOB:?}\npem_file = {:?}\n",
            signature_testdata("rsa-2048.pub.pem").display().to_string()
        ),
        plugin("signer", "hostile", "", "mode = \"echo-signer\""),
        plugin_route(
            "observed",
            "/",
            "app",
            &["signer"],
            "signatures = \"observe\""
        ),
    ))
    .await;
    let inbox = gw.url("/users/alice/inbox");
    let good = signed(BOB, "/users/alice/inbox", CREATE, &INBOX_COVERS, None);
    let (status, _, _) = send(request("POST", &inbox, &good, CREATE)).await;
    assert_eq!(status, 200);
    assert_eq!(
        up.last().headers["x-signer"],
        format!("remote.example {BOB}").as_str()
    );
    // A signature that fails (observe mode forwards it) names no signer.
    let (status, _, _) = send(request("POST", &inbox, &good, r#"{"type":"Undo"}"#)).await;
    assert_eq!(status, 200);
    assert_eq!(up.last().headers["x-signer"], "none");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_trust_store_reloads_with_the_config() {
    let up = TestUpstream::start("app").await;
    let route = "[[routes]]\nname = \"inbox\"\npath_prefix = \"/\"\nupstream = \"app\"\nsignatures = \"enforce\"\n";
    let without_bob = format!("{}{route}", upstream_block("app", &[up.url()], ""));
    let gw = TestGateway::start(&without_bob).await;
    let inbox = gw.url("/users/alice/inbox");
    let deliver = || async {
        let headers = signed(BOB, "/users/alice/inbox", CREATE, &INBOX_COVERS, None);
        let (status, _, body) = send(request("POST", &inbox, &headers, CREATE)).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (status, body) = deliver().await;
    assert_eq!(status, 401);
    assert!(body.contains("unknown_key"), "{body}");
    assert_eq!(
        metric(&gw.metrics().await, "fedgate_trust_store_size", &[]),
        Some(0.0)
    );

    // Bob's key added: the next delivery verifies.
    gw.rewrite(&config(&up)).await.unwrap();
    assert_eq!(deliver().await.0, 200);
    assert_eq!(
        metric(&gw.metrics().await, "fedgate_trust_store_size", &[]),
        Some(3.0)
    );

    // A broken key file keeps the running trust store and says which entry is wrong.
    let broken = format!(
        "{}[[signatures.keys]]\nkey_id = {BOB:?}\npem_file = \"/nonexistent/bob.pem\"\n{route}",
        upstream_block("app", &[up.url()], "")
    );
    let err = gw.rewrite(&broken).await.unwrap_err().to_string();
    assert!(err.contains("signatures.keys[0].pem_file"), "{err}");
    assert_eq!(deliver().await.0, 200);
    assert_eq!(
        metric(&gw.metrics().await, "fedgate_trust_store_size", &[]),
        Some(3.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_key_file_refuses_the_config_and_names_the_entry() {
    let dir = std::env::temp_dir().join(format!("fedgate-sig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("not-a-key.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let path = dir.join("fedgate.toml");
    let listener = "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n";
    std::fs::write(
        &path,
        format!(
            "{listener}[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [[signatures.keys]]\nkey_id = \"k\"\npem_file = {:?}\n\
             [[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"app\"\nsignatures = \"enforce\"\n",
            cert.display().to_string()
        ),
    )
    .unwrap();
    let (code, stderr) = run_bin("check", &path);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("signatures.keys[0].pem_file"), "{stderr}");
    std::fs::write(&path, listener.to_string() + "[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"app\"\nsignatures = \"sometimes\"\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n").unwrap();
    let (code, stderr) = run_bin("check", &path);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("routes[0].signatures"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
