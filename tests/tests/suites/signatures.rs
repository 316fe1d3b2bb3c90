//! Phase 6 end to end: requests signed by PyPI's `httpsig` (draft-cavage) and
//! `http-message-signatures` (RFC 9421), and by npm's `http-signature`,
//! `@peertube/http-signature` and `@misskey-dev/node-http-message-signatures`, reach the
//! gateway over real sockets; enforcing routes refuse what does not verify with 401 and the right
//! `result`, observing routes forward everything, and the metrics count each outcome.

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;

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

const DAVE_EC: &str = "https://ec.example/users/dave#main-key";

/// [`config`] with `extra` (a `[signatures]` table or more `[[signatures.keys]]`) before the
/// trust store's keys.
fn config_with(up: &TestUpstream, extra: &str) -> String {
    let base = config(up);
    let (upstream, rest) = base.split_at(base.find("[[signatures.keys]]").unwrap());
    format!("{upstream}{extra}\n{rest}")
}

/// Dave's P-256 key in the trust store.
fn dave_ec() -> String {
    format!(
        "[[signatures.keys]]\nkey_id = {DAVE_EC:?}\npem_file = {:?}\n",
        signature_testdata("p256.pub.pem").display().to_string()
    )
}

/// Sends a POST of `body` to the inbox: the status and the `result` of a refusal (empty
/// when none).
async fn deliver(gw: &TestGateway, headers: &[(String, String)], body: &str) -> (u16, String) {
    let (status, _, text) = send(request(
        "POST",
        &gw.url("/users/alice/inbox"),
        headers,
        body,
    ))
    .await;
    let result = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|d| d["result"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status.as_u16(), result)
}

/// A POST of `CREATE` signed by one of the npm signers over `covers`, with `extra` spec
/// fields (`date`, `expires_in`).
fn npm(
    library: &str,
    key_id: &str,
    file: &str,
    covers: &[&str],
    extra: &serde_json::Value,
) -> Vec<(String, String)> {
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
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    npm_sign(&spec)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
}

fn verification_count(m: &str, scheme: &str, result: &str) -> f64 {
    metric(
        m,
        "fedgate_signature_verifications_total",
        &[("route", "inbox"), ("scheme", scheme), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn failures_by_instance_are_capped_at_max_instances() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config_with(&up, "[signatures]\nmax_instances = 2\n")).await;
    let key_of = |host: &str| format!("https://{host}/users/x#main-key");
    let unknown = |host: &str| {
        signed(
            &key_of(host),
            "/users/alice/inbox",
            CREATE,
            &INBOX_COVERS,
            None,
        )
    };
    // A valid delivery does not take one of the two named instances.
    let good = signed(BOB, "/users/alice/inbox", CREATE, &INBOX_COVERS, None);
    assert_eq!(deliver(&gw, &good, CREATE).await, (200, String::new()));
    // Failures from five instances, in this order: remote.example and other.example get
    // their own label, c.example, ed.example and d.example are folded into `other`, and the
    // first two keep their labels after that.
    let old = SystemTime::now() - Duration::from_secs(14 * 3600);
    let tampered = r#"{"type":"Delete"}"#;
    let covered = ["@method", "@target-uri", "content-digest", "content-type"];
    let sends: Vec<Refused<'_>> = vec![
        ("digest_mismatch", good.clone(), tampered),
        (
            "invalid",
            signed(EVE, "/users/alice/inbox", CREATE, &INBOX_COVERS, None),
            CREATE,
        ),
        ("unknown_key", unknown("c.example"), CREATE),
        (
            "expired",
            rfc9421(CAROL_ED, "ed25519.key.pem", "ed25519", &covered, Some(old)),
            CREATE,
        ),
        (
            "expired",
            signed(BOB, "/users/alice/inbox", CREATE, &INBOX_COVERS, Some(old)),
            CREATE,
        ),
        (
            "invalid",
            signed(EVE, "/users/alice/inbox", CREATE, &INBOX_COVERS, None),
            CREATE,
        ),
        ("unknown_key", unknown("c.example"), CREATE),
        ("unknown_key", unknown("d.example"), CREATE),
        // Unsigned: `unknown`, which is not an instance and takes no slot.
        (
            "missing",
            vec![("content-type".into(), "application/activity+json".into())],
            CREATE,
        ),
    ];
    for (result, headers, body) in &sends {
        assert_eq!(deliver(&gw, headers, body).await, (401, result.to_string()));
    }

    let m = gw.metrics().await;
    let by_instance = |instance: &str, result: &str| {
        metric(
            &m,
            "fedgate_signature_failures_by_instance_total",
            &[("instance", instance), ("result", result)],
        )
    };
    assert_eq!(
        by_instance("remote.example", "digest_mismatch"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(by_instance("remote.example", "expired"), Some(1.0), "{m}");
    assert_eq!(by_instance("other.example", "invalid"), Some(2.0), "{m}");
    assert_eq!(by_instance("other", "unknown_key"), Some(3.0), "{m}");
    assert_eq!(by_instance("other", "expired"), Some(1.0), "{m}");
    assert_eq!(by_instance("unknown", "missing"), Some(1.0), "{m}");
    let lines = series(&m, "fedgate_signature_failures_by_instance_total");
    let mut instances: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.split("instance=\"").nth(1)?.split('"').next())
        .collect();
    instances.sort_unstable();
    instances.dedup();
    assert_eq!(
        instances,
        ["other", "other.example", "remote.example", "unknown"],
        "{m}"
    );
    assert_eq!(lines.len(), 6, "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn verification_latency_is_observed_once_per_check_by_scheme() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config(&up)).await;
    let covered = ["@method", "@target-uri", "content-digest", "content-type"];
    let cavage_good = signed(BOB, "/users/alice/inbox", CREATE, &INBOX_COVERS, None);
    let cavage_wrong = signed(EVE, "/users/alice/inbox", CREATE, &INBOX_COVERS, None);
    let rfc_good = rfc9421(CAROL_ED, "ed25519.key.pem", "ed25519", &covered, None);
    let unsigned = vec![("content-type".to_string(), "application/json".to_string())];
    // Each send: the `result` it must get (empty: valid), its headers and its body.
    let sends: Vec<Refused<'_>> = vec![
        ("", cavage_good.clone(), CREATE),
        ("invalid", cavage_wrong, CREATE),
        ("digest_mismatch", cavage_good, r#"{"type":"Delete"}"#),
        ("", rfc_good.clone(), CREATE),
        ("", rfc_good.clone(), CREATE),
        ("digest_mismatch", rfc_good, r#"{"type":"Undo"}"#),
        ("missing", unsigned, CREATE),
    ];
    for (result, headers, body) in &sends {
        let (status, got) = deliver(&gw, headers, body).await;
        assert_eq!(got, *result);
        assert_eq!(status, if result.is_empty() { 200 } else { 401 });
    }
    // An observing route is timed too.
    let observed = signed(BOB, "/observed/inbox", CREATE, &INBOX_COVERS, None);
    let (status, _, _) = send(request(
        "POST",
        &gw.url("/observed/inbox"),
        &observed,
        CREATE,
    ))
    .await;
    assert_eq!(status, 200);

    let m = gw.metrics().await;
    let histogram = |suffix: &str, scheme: &str| {
        metric(
            &m,
            &format!("fedgate_signature_verification_duration_seconds_{suffix}"),
            &[("scheme", scheme)],
        )
    };
    for (scheme, checks) in [("cavage", 4.0), ("rfc9421", 3.0), ("none", 1.0)] {
        assert_eq!(histogram("count", scheme), Some(checks), "{scheme}\n{m}");
        let inf = metric(
            &m,
            "fedgate_signature_verification_duration_seconds_bucket",
            &[("scheme", scheme), ("le", "+Inf")],
        );
        assert_eq!(inf, Some(checks), "{scheme}\n{m}");
        let sum = histogram("sum", scheme).unwrap();
        // Each check takes well under a second on any machine.
        assert!(sum > 0.0 && sum < checks, "{scheme}: {sum}");
    }
    // The histogram counts what the counter counts, route by route.
    let counted = |scheme: &str| -> f64 {
        series(&m, "fedgate_signature_verifications_total")
            .iter()
            .filter(|l| l.contains(&format!("scheme=\"{scheme}\"")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(counted("cavage"), 4.0);
    assert_eq!(counted("rfc9421"), 3.0);
    assert_eq!(counted("none"), 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn bodies_past_max_body_are_refused_413_and_not_forwarded() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config_with(&up, "[signatures]\nmax_body = \"1KiB\"\n")).await;
    // A 2 KiB Create, validly signed over its digest.
    let big = format!(
        r#"{{"type":"Create","object":{{"type":"Note","content":"{}"}}}}"#,
        "x".repeat(2048)
    );
    let headers = signed(BOB, "/users/alice/inbox", &big, &INBOX_COVERS, None);
    let (status, _, body) = send(request(
        "POST",
        &gw.url("/users/alice/inbox"),
        &headers,
        &big,
    ))
    .await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert_eq!(up.hits(), 0, "the upstream saw nothing");
    // An observing route buffers (and limits) the same way.
    let observed = signed(BOB, "/observed/inbox", &big, &INBOX_COVERS, None);
    let (status, _, _) = send(request("POST", &gw.url("/observed/inbox"), &observed, &big)).await;
    assert_eq!(status, 413);
    // A body streamed without a length is cut off at the limit as it arrives.
    let streamed = http::Request::post(gw.url("/users/alice/inbox"));
    let streamed = headers
        .iter()
        .fold(streamed, |b, (k, v)| b.header(k.as_str(), v.as_str()))
        .body(pattern_stream(4096))
        .unwrap();
    let (status, _, _) = send(streamed).await;
    assert_eq!(status, 413);
    assert_eq!(up.hits(), 0);
    // A body of exactly 1 KiB is within the limit.
    let fits = format!(
        r#"{{"type":"Create","content":"{}"}}"#,
        "y".repeat(1024 - 30)
    );
    assert_eq!(fits.len(), 1024);
    let headers = signed(BOB, "/users/alice/inbox", &fits, &INBOX_COVERS, None);
    assert_eq!(deliver(&gw, &headers, &fits).await, (200, String::new()));
    assert_eq!(up.hits(), 1);
    assert_eq!(up.last().body_len, 1024);

    let m = gw.metrics().await;
    let answered = |route: &str, status: &str| {
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
    assert_eq!(answered("inbox", "413"), Some(2.0), "{m}");
    assert_eq!(answered("observed", "413"), Some(1.0), "{m}");
    assert_eq!(answered("inbox", "200"), Some(1.0), "{m}");
    // Refused before phase 6: only the delivery that fits was verified.
    assert_eq!(verification_count(&m, "cavage", "valid"), 1.0, "{m}");
    assert_eq!(
        series(&m, "fedgate_signature_verifications_total")
            .iter()
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>(),
        1.0,
        "{m}"
    );
    gw.shutdown().await;
}

#[test]
fn signature_limits_parse_and_bad_values_name_their_field() {
    let base = Path::new("/");
    let listener = "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n";
    let parse = |signatures: &str| {
        fedgate::config::from_str(&format!("{listener}[signatures]\n{signatures}\n"), base)
    };
    let c =
        parse("clock_skew = \"90s\"\nmax_age = \"30m\"\nmax_body = \"64KiB\"\nmax_instances = 7")
            .unwrap()
            .signatures;
    assert_eq!(c.window.skew, Duration::from_secs(90));
    assert_eq!(c.window.max_age, Duration::from_secs(30 * 60));
    assert_eq!(c.max_body, 64 << 10);
    assert_eq!(c.max_instances, 7);
    // A skew of zero is a strict clock; sizes may be given in bytes.
    let c = parse("clock_skew = \"0s\"\nmax_body = 4096")
        .unwrap()
        .signatures;
    assert_eq!(c.window.skew, Duration::ZERO);
    assert_eq!(c.max_body, 4096);

    for (line, field) in [
        ("clock_skew = \"soon\"", "signatures.clock_skew"),
        ("clock_skew = \"-5s\"", "signatures.clock_skew"),
        ("max_age = \"0s\"", "signatures.max_age"),
        ("max_age = \"a while\"", "signatures.max_age"),
        ("max_body = \"12 apples\"", "signatures.max_body"),
        ("max_body = 0", "signatures.max_body"),
        ("max_body = \"2GiB\"", "signatures.max_body"),
        ("max_instances = -1", "max_instances"),
        ("max_instances = \"many\"", "max_instances"),
        ("max_bodies = \"1MiB\"", "max_bodies"),
    ] {
        let err = parse(line).expect_err(line).to_string();
        assert!(err.contains(field), "{line}: {err}");
    }
}

#[tokio::test]
async fn ecdsa_p256_keys_verify_in_both_schemes() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config_with(&up, &dave_ec())).await;
    let covered = ["@method", "@target-uri", "content-digest", "content-type"];

    // RFC 9421 `ecdsa-p256-sha256` from http-message-signatures.
    let rfc = rfc9421(DAVE_EC, "p256.key.pem", "ecdsa-p256-sha256", &covered, None);
    assert!(header(&rfc, "Signature-Input").contains("alg=\"ecdsa-p256-sha256\""));
    assert_eq!(deliver(&gw, &rfc, CREATE).await, (200, String::new()));
    // draft-cavage `ecdsa-sha256` from joyent's http-signature, and PeerTube's `hs2019`,
    // which the key's type resolves to ECDSA P-256.
    let joyent = npm(
        "http-signature",
        DAVE_EC,
        "p256.key.pem",
        &INBOX_COVERS,
        &json!({}),
    );
    assert!(header(&joyent, "signature").contains("algorithm=\"ecdsa-sha256\""));
    assert_eq!(deliver(&gw, &joyent, CREATE).await, (200, String::new()));
    let peertube = npm(
        "peertube",
        DAVE_EC,
        "p256.key.pem",
        &INBOX_COVERS,
        &json!({}),
    );
    assert!(header(&peertube, "signature").contains("algorithm=\"hs2019\""));
    assert_eq!(deliver(&gw, &peertube, CREATE).await, (200, String::new()));
    // Misskey's signer, whose ECDSA signatures are `r || s` rather than DER.
    let misskey = npm(
        "misskey",
        DAVE_EC,
        "p256.key.pem",
        &INBOX_COVERS,
        &json!({}),
    );
    let sig = header(&misskey, "signature");
    let value = sig
        .split("signature=\"")
        .nth(1)
        .unwrap()
        .trim_end_matches('"');
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap();
    assert_eq!(raw.len(), 64, "{sig}");
    assert_eq!(deliver(&gw, &misskey, CREATE).await, (200, String::new()));
    assert_eq!(up.hits(), 4);

    // The same signatures refused as they should be.
    let refused: Vec<Refused<'_>> = vec![
        ("digest_mismatch", rfc.clone(), r#"{"type":"Delete"}"#),
        ("digest_mismatch", joyent.clone(), r#"{"type":"Delete"}"#),
        // Dave's P-256 signature under Bob's RSA key id.
        (
            "invalid",
            peertube
                .iter()
                .map(|(k, v)| (k.clone(), v.replace(DAVE_EC, BOB)))
                .collect(),
            CREATE,
        ),
    ];
    for (result, headers, body) in &refused {
        assert_eq!(deliver(&gw, headers, body).await, (401, result.to_string()));
    }
    assert_eq!(up.hits(), 4);
    let m = gw.metrics().await;
    assert_eq!(verification_count(&m, "rfc9421", "valid"), 1.0, "{m}");
    assert_eq!(verification_count(&m, "cavage", "valid"), 3.0, "{m}");
    assert_eq!(verification_count(&m, "rfc9421", "digest_mismatch"), 1.0);
    assert_eq!(verification_count(&m, "cavage", "digest_mismatch"), 1.0);
    assert_eq!(verification_count(&m, "cavage", "invalid"), 1.0);
    assert_eq!(
        metric(&m, "fedgate_federation_peers", &[]),
        Some(1.0),
        "ec.example only: {m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc9421_refusals_for_time_coverage_and_key() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config(&up)).await;
    let covered = ["@method", "@target-uri", "content-digest", "content-type"];
    let hour = Duration::from_secs(3600);
    let ed = |file: &str, created: Option<SystemTime>| {
        rfc9421(CAROL_ED, file, "ed25519", &covered, created)
    };
    let good = ed("ed25519.key.pem", None);
    assert_eq!(deliver(&gw, &good, CREATE).await, (200, String::new()));
    // Signed seconds ago: still valid.
    let recent = ed(
        "ed25519.key.pem",
        Some(SystemTime::now() - Duration::from_secs(5)),
    );
    assert_eq!(deliver(&gw, &recent, CREATE).await, (200, String::new()));

    let refused: Vec<Refused<'_>> = vec![
        // `created` two hours ahead of the gateway's clock.
        (
            "expired",
            ed("ed25519.key.pem", Some(SystemTime::now() + 2 * hour)),
            CREATE,
        ),
        // Fourteen hours old.
        (
            "expired",
            ed("ed25519.key.pem", Some(SystemTime::now() - 14 * hour)),
            CREATE,
        ),
        // A covered field stripped on the way: its value cannot be rebuilt.
        ("malformed", without(&good, "Content-Type"), CREATE),
        // Another Ed25519 key signing under Carol's key id.
        ("invalid", ed("ed25519-other.key.pem", None), CREATE),
        // The body changed after signing.
        ("digest_mismatch", good.clone(), r#"{"type":"Delete"}"#),
        // The body and its Content-Digest both changed: the signature no longer matches.
        (
            "invalid",
            good.iter()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("content-digest") {
                        let sum = <sha2::Sha256 as sha2::Digest>::digest(b"{}");
                        format!(
                            "sha-256=:{}:",
                            base64::engine::general_purpose::STANDARD.encode(sum)
                        )
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect(),
            "{}",
        ),
    ];
    for (result, headers, body) in &refused {
        assert_eq!(
            deliver(&gw, headers, body).await,
            (401, result.to_string()),
            "{headers:?}"
        );
    }
    assert_eq!(up.hits(), 2, "refused requests never reach the upstream");
    let m = gw.metrics().await;
    assert_eq!(verification_count(&m, "rfc9421", "valid"), 2.0, "{m}");
    assert_eq!(verification_count(&m, "rfc9421", "expired"), 2.0, "{m}");
    assert_eq!(verification_count(&m, "rfc9421", "malformed"), 1.0, "{m}");
    assert_eq!(verification_count(&m, "rfc9421", "invalid"), 2.0, "{m}");
    assert_eq!(
        verification_count(&m, "rfc9421", "digest_mismatch"),
        1.0,
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_post_without_any_digest_is_refused() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config(&up)).await;
    // httpsig signs (request-target) host date, as a GET would be signed, and no Digest
    // header is sent at all.
    let mut spec = json!({
        "key_id": BOB,
        "key_file": signature_testdata("rsa-2048.key.pem"),
        "algorithm": "rsa-sha256",
        "method": "POST",
        "path": "/users/alice/inbox",
        "host": "local.example",
        "headers": {"content-type": "application/activity+json"},
        "body": CREATE,
        "covered": ["(request-target)", "host", "date"],
        "digest": false,
    });
    let headers = httpsig_sign(&spec);
    assert!(!headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("digest")));
    assert_eq!(
        deliver(&gw, &headers, CREATE).await,
        (401, "malformed".to_string())
    );
    // Nor does an empty POST escape the rule.
    spec["body"] = json!("");
    let empty = httpsig_sign(&spec);
    assert_eq!(
        deliver(&gw, &empty, "").await,
        (401, "malformed".to_string())
    );
    assert_eq!(up.hits(), 0);
    let m = gw.metrics().await;
    assert_eq!(verification_count(&m, "cavage", "malformed"), 2.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "fedgate_signature_failures_by_instance_total",
            &[("instance", "remote.example"), ("result", "malformed")]
        ),
        Some(2.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn sha512_digests_are_checked_against_the_body() {
    use sha2::Digest as _;
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config(&up)).await;
    let sha512 = |body: &str| {
        format!(
            "SHA-512={}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(body))
        )
    };
    // httpsig signs the Digest field it is given: a SHA-512 one.
    let sign = |digest: String| {
        httpsig_sign(&json!({
            "key_id": BOB,
            "key_file": signature_testdata("rsa-2048.key.pem"),
            "algorithm": "rsa-sha256",
            "method": "POST",
            "path": "/users/alice/inbox",
            "host": "local.example",
            "headers": {"content-type": "application/activity+json", "digest": digest},
            "body": CREATE,
            "covered": INBOX_COVERS,
            "digest": false,
        }))
    };
    let good = sign(sha512(CREATE));
    assert!(header(&good, "digest").starts_with("SHA-512="));
    assert_eq!(deliver(&gw, &good, CREATE).await, (200, String::new()));
    assert_eq!(up.last().headers["digest"], header(&good, "digest"));
    // The body changed after signing.
    assert_eq!(
        deliver(&gw, &good, r#"{"type":"Delete"}"#).await,
        (401, "digest_mismatch".to_string())
    );
    // A signed SHA-512 digest of another body.
    let other = sign(sha512(r#"{"type":"Undo"}"#));
    assert_eq!(
        deliver(&gw, &other, CREATE).await,
        (401, "digest_mismatch".to_string())
    );
    assert_eq!(up.hits(), 1);
    let m = gw.metrics().await;
    assert_eq!(verification_count(&m, "cavage", "valid"), 1.0, "{m}");
    assert_eq!(
        verification_count(&m, "cavage", "digest_mismatch"),
        2.0,
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn created_and_expires_with_hs2019_ed25519_from_peertube() {
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&config(&up)).await;
    // PeerTube's signer sets (created) to now and (expires) `expires_in` later; the
    // signature dates itself and covers no Date.
    let covers = [
        "(request-target)",
        "(created)",
        "(expires)",
        "host",
        "digest",
        "content-type",
    ];
    let sign = |file: &str, expires_in: i64| {
        npm(
            "peertube",
            CAROL_ED,
            file,
            &covers,
            &json!({"expires_in": expires_in}),
        )
    };
    let good = sign("ed25519.key.pem", 300);
    let signature = header(&good, "signature");
    assert!(signature.contains("algorithm=\"hs2019\""), "{signature}");
    assert!(
        signature.contains("created=") && signature.contains("expires="),
        "{signature}"
    );
    assert_eq!(deliver(&gw, &good, CREATE).await, (200, String::new()));
    // (created) decides the time, not a Date header that is fourteen hours old.
    let stale_date = npm(
        "peertube",
        CAROL_ED,
        "ed25519.key.pem",
        &covers,
        &json!({
            "expires_in": 300,
            "date": httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(14 * 3600)),
        }),
    );
    assert_eq!(
        deliver(&gw, &stale_date, CREATE).await,
        (200, String::new())
    );
    // joyent's signer with (created) and its `ed25519-sha512` name.
    let joyent = npm(
        "http-signature",
        CAROL_ED,
        "ed25519.key.pem",
        &covers,
        &json!({}),
    );
    assert!(header(&joyent, "signature").contains("created="));
    assert_eq!(deliver(&gw, &joyent, CREATE).await, (200, String::new()));

    let refused: Vec<Refused<'_>> = vec![
        // Expired two hours ago.
        ("expired", sign("ed25519.key.pem", -2 * 3600), CREATE),
        // Another Ed25519 key under Carol's key id.
        ("invalid", sign("ed25519-other.key.pem", 300), CREATE),
        // A changed (expires) breaks the signature.
        (
            "invalid",
            good.iter()
                .map(|(k, v)| {
                    let v = if k == "signature" {
                        let expires = v
                            .split("expires=")
                            .nth(1)
                            .and_then(|r| r.split(',').next())
                            .unwrap();
                        let later: i64 = expires.trim_matches('"').parse().unwrap();
                        v.replace(
                            &format!("expires={expires}"),
                            &format!("expires={}", later + 60),
                        )
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect(),
            CREATE,
        ),
        ("digest_mismatch", good.clone(), r#"{"type":"Delete"}"#),
    ];
    for (result, headers, body) in &refused {
        assert_eq!(
            deliver(&gw, headers, body).await,
            (401, result.to_string()),
            "{headers:?}"
        );
    }
    assert_eq!(up.hits(), 3);
    let m = gw.metrics().await;
    assert_eq!(verification_count(&m, "cavage", "valid"), 3.0, "{m}");
    assert_eq!(verification_count(&m, "cavage", "expired"), 1.0, "{m}");
    assert_eq!(verification_count(&m, "cavage", "invalid"), 2.0, "{m}");
    assert_eq!(
        verification_count(&m, "cavage", "digest_mismatch"),
        1.0,
        "{m}"
    );
    gw.shutdown().await;
}
