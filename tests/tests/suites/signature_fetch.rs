//! Phase 6, fetched keys, end to end: requests signed by PyPI's `httpsig` and npm's Misskey
//! signer name key ids served by a real actor-document server on 127.0.0.1:0; the gateway
//! fetches the key from there, caches it (and failures), gives up on a host that hangs (its
//! timeout, then its breaker), follows a key rotation with one refetch, and by default refuses
//! to fetch from a private address at all. Every assertion on counts uses the real `/metrics`
//! and the actor server's own request and connection counts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use fedgate_tests::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

const CREATE: &str = r#"{"@context":"https://www.w3.org/ns/activitystreams","type":"Create","object":{"type":"Note","content":"hi"}}"#;
const INBOX_COVERS: [&str; 5] = ["(request-target)", "host", "date", "digest", "content-type"];
const INBOX: &str = "/users/alice/inbox";

/// A real actor-document server: documents by path (anything else is 404), or no answer at
/// all while it hangs. Counts connections and requests, and keeps the last `Accept`.
#[derive(Debug, Clone)]
struct ActorServer {
    addr: SocketAddr,
    docs: Arc<Mutex<HashMap<String, String>>>,
    /// Paths answered 302 with a `Location`.
    redirects: Arc<Mutex<HashMap<String, String>>>,
    hang: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    accept: Arc<Mutex<Option<String>>>,
}

impl ActorServer {
    async fn start() -> ActorServer {
        Self::start_with(None).await
    }

    /// An actor server behind TLS, with a certificate no public root signed.
    async fn start_tls() -> ActorServer {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> ActorServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = ActorServer {
            addr: listener.local_addr().unwrap(),
            docs: Arc::default(),
            redirects: Arc::default(),
            hang: Arc::default(),
            requests: Arc::default(),
            connections: Arc::default(),
            accept: Arc::default(),
        };
        let state = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let st = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(st.answer(req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        server
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        *self.accept.lock().unwrap() = req
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let redirect = self
            .redirects
            .lock()
            .unwrap()
            .get(req.uri().path())
            .cloned();
        if let Some(location) = redirect {
            return Response::builder()
                .status(302)
                .header("location", location)
                .body(Full::new(Bytes::from_static(b"moved")))
                .unwrap();
        }
        let doc = self.docs.lock().unwrap().get(req.uri().path()).cloned();
        match doc {
            Some(doc) => Response::builder()
                .header("content-type", "application/activity+json")
                .body(Full::new(Bytes::from(doc)))
                .unwrap(),
            None => Response::builder()
                .status(404)
                .body(Full::new(Bytes::from_static(b"not found")))
                .unwrap(),
        }
    }

    fn actor_url(&self, name: &str) -> String {
        format!("http://{}/users/{name}", self.addr)
    }

    /// Serves `/users/NAME` as a Mastodon actor whose `publicKey` is the PEM file `pub_file`.
    fn serve_actor(&self, name: &str, pub_file: &str) {
        let actor = self.actor_url(name);
        let pem = std::fs::read_to_string(signature_testdata(pub_file)).unwrap();
        let doc = json!({
            "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
            "id": actor,
            "type": "Person",
            "preferredUsername": name,
            "inbox": format!("{actor}/inbox"),
            "publicKey": {"id": format!("{actor}#main-key"), "owner": actor, "publicKeyPem": pem},
        });
        self.docs
            .lock()
            .unwrap()
            .insert(format!("/users/{name}"), doc.to_string());
    }

    /// Serves `/users/NAME` with the test Ed25519 key as a FEP-521a Multikey only.
    fn serve_multikey_actor(&self, name: &str) {
        let actor = self.actor_url(name);
        let doc = json!({
            "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/multikey/v1"],
            "id": actor,
            "type": "Person",
            "assertionMethod": [{
                "id": format!("{actor}#ed25519-key"),
                "type": "Multikey",
                "controller": actor,
                "publicKeyMultibase": ed25519_multibase(),
            }],
        });
        self.docs
            .lock()
            .unwrap()
            .insert(format!("/users/{name}"), doc.to_string());
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The test Ed25519 public key as multibase: `z`, base58btc of `0xed 0x01` and the key.
fn ed25519_multibase() -> String {
    let pem = std::fs::read_to_string(signature_testdata("ed25519.pub.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    // An Ed25519 SPKI is a 12-byte header and the 32 key bytes.
    let mut multicodec = vec![0xed, 0x01];
    multicodec.extend_from_slice(&der[der.len() - 32..]);
    format!("z{}", bs58::encode(multicodec).into_string())
}

/// The gateway's config: one enforcing route, and `[signatures.fetch]` with `fetch` lines.
fn config(up: &TestUpstream, fetch: &str) -> String {
    format!(
        "{}[[routes]]\nname = \"inbox\"\npath_prefix = \"/\"\nupstream = \"app\"\nsignatures = \"enforce\"\n[signatures.fetch]\nenabled = true\n{fetch}\n",
        upstream_block("app", &[up.url()], ""),
    )
}

/// For a server on 127.0.0.1 over plain HTTP: what a test or private deployment opts into.
const LOCAL: &str = "allow_http = true\nallow_private_addresses = true\n";

/// Headers of a POST of `CREATE` to the inbox, signed by httpsig with `key_file` (RSA).
fn httpsig(key_id: &str, key_file: &str) -> Vec<(String, String)> {
    httpsig_sign(&json!({
        "key_id": key_id,
        "key_file": signature_testdata(key_file),
        "algorithm": "rsa-sha256",
        "method": "POST",
        "path": INBOX,
        "host": "local.example",
        "headers": {"content-type": "application/activity+json"},
        "body": CREATE,
        "covered": INBOX_COVERS,
        "digest": true,
    }))
}

/// Headers of the same POST signed by npm's Misskey signer with the Ed25519 key.
fn misskey(key_id: &str) -> Vec<(String, String)> {
    npm_sign(&json!({
        "library": "misskey",
        "key_id": key_id,
        "key_file": signature_testdata("ed25519.key.pem"),
        "method": "POST",
        "path": INBOX,
        "host": "local.example",
        "headers": {"content-type": "application/activity+json"},
        "body": CREATE,
        "covered": INBOX_COVERS,
    }))
}

fn request(url: &str, headers: &[(String, String)]) -> Request<Body> {
    let mut b = Request::builder().method("POST").uri(url);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(
        Full::new(Bytes::from_static(CREATE.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

/// Sends a signed delivery: the status and the `result` of a refusal (empty when none).
async fn deliver(gw: &TestGateway, headers: &[(String, String)]) -> (u16, String) {
    let (status, _, body) = send(request(&gw.url(INBOX), headers)).await;
    let result = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|d| d["result"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status.as_u16(), result)
}

fn lookups(m: &str, result: &str) -> f64 {
    metric(
        m,
        "fedgate_signature_key_cache_lookups_total",
        &[("result", result)],
    )
    .unwrap_or(-1.0)
}

fn fetches(m: &str, result: &str) -> f64 {
    metric(
        m,
        "fedgate_signature_key_fetches_total",
        &[("result", result)],
    )
    .unwrap_or(-1.0)
}

fn verifications(m: &str, result: &str) -> f64 {
    metric(
        m,
        "fedgate_signature_verifications_total",
        &[("route", "inbox"), ("scheme", "cavage"), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn fetched_keys_verify_and_are_cached() {
    let up = TestUpstream::start("app").await;
    let actors = ActorServer::start().await;
    actors.serve_actor("bob", "rsa-2048.pub.pem");
    actors.serve_multikey_actor("carol");
    let gw = TestGateway::start(&config(&up, LOCAL)).await;
    let bob = format!("{}#main-key", actors.actor_url("bob"));

    // First delivery: the key is fetched, verifies, and the request reaches the upstream.
    assert_eq!(
        deliver(&gw, &httpsig(&bob, "rsa-2048.key.pem")).await,
        (200, String::new())
    );
    assert_eq!(up.hits(), 1);
    assert_eq!(actors.requests(), 1);
    assert_eq!(
        actors.accept.lock().unwrap().as_deref(),
        Some("application/activity+json, application/ld+json; profile=\"https://www.w3.org/ns/activitystreams\"")
    );
    // Second delivery (a new signature): the cached key, no second fetch.
    assert_eq!(
        deliver(&gw, &httpsig(&bob, "rsa-2048.key.pem")).await,
        (200, String::new())
    );
    assert_eq!(up.hits(), 2);
    assert_eq!(actors.requests(), 1);

    // Misskey's signer with the Ed25519 key, published only as a FEP-521a Multikey.
    let carol = format!("{}#ed25519-key", actors.actor_url("carol"));
    assert_eq!(deliver(&gw, &misskey(&carol)).await, (200, String::new()));
    assert_eq!(actors.requests(), 2);

    // Bob's key id, signed with another key: the cached key does not verify it, and was
    // fetched too recently (refetch_interval, 1m by default) to be fetched again.
    let (status, result) = deliver(&gw, &misskey(&bob)).await;
    assert_eq!((status, result.as_str()), (401, "invalid"));
    assert_eq!(actors.requests(), 2);
    assert_eq!(up.hits(), 3);

    let m = gw.metrics().await;
    assert_eq!(lookups(&m, "miss"), 2.0, "{m}");
    assert_eq!(lookups(&m, "hit"), 2.0, "{m}");
    assert_eq!(lookups(&m, "negative_hit"), 0.0, "{m}");
    assert_eq!(fetches(&m, "ok"), 2.0, "{m}");
    for other in [
        "timeout",
        "connect",
        "status",
        "too_large",
        "invalid_document",
        "refused_address",
        "breaker_open",
    ] {
        assert_eq!(fetches(&m, other), 0.0, "{other}: {m}");
    }
    assert_eq!(
        metric(&m, "fedgate_signature_key_cache_entries", &[]),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_signature_key_fetch_duration_seconds_count",
            &[]
        ),
        Some(2.0)
    );
    assert_eq!(verifications(&m, "valid"), 3.0, "{m}");
    assert_eq!(verifications(&m, "invalid"), 1.0, "{m}");
    let (ok, report) = promtool_check_metrics(&m);
    assert!(ok, "{report}");
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_actors_are_remembered_as_negative_entries() {
    let up = TestUpstream::start("app").await;
    let actors = ActorServer::start().await;
    let gw = TestGateway::start(&config(&up, LOCAL)).await;
    let nobody = format!("{}#main-key", actors.actor_url("nobody"));

    for _ in 0..3 {
        let (status, result) = deliver(&gw, &httpsig(&nobody, "rsa-2048.key.pem")).await;
        assert_eq!((status, result.as_str()), (401, "unknown_key"));
    }
    // One fetch (404); the next two requests found the negative entry.
    assert_eq!(actors.requests(), 1);
    assert_eq!(up.hits(), 0);
    let m = gw.metrics().await;
    assert_eq!(fetches(&m, "status"), 1.0, "{m}");
    assert_eq!(fetches(&m, "ok"), 0.0, "{m}");
    assert_eq!(lookups(&m, "miss"), 1.0, "{m}");
    assert_eq!(lookups(&m, "negative_hit"), 2.0, "{m}");
    assert_eq!(verifications(&m, "unknown_key"), 3.0, "{m}");
    assert_eq!(
        metric(&m, "fedgate_signature_key_cache_entries", &[]),
        Some(1.0)
    );

    // A signature two days old fails whatever its key: it causes no fetch (nor a lookup).
    actors.serve_actor("bob", "rsa-2048.pub.pem");
    let bob = format!("{}#main-key", actors.actor_url("bob"));
    let old = httpsig_sign(&json!({
        "key_id": bob,
        "key_file": signature_testdata("rsa-2048.key.pem"),
        "algorithm": "rsa-sha256",
        "method": "POST",
        "path": INBOX,
        "host": "local.example",
        "headers": {"content-type": "application/activity+json"},
        "body": CREATE,
        "covered": INBOX_COVERS,
        "digest": true,
        "date": httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(48 * 3600)),
    }));
    let (status, result) = deliver(&gw, &old).await;
    assert_eq!((status, result.as_str()), (401, "expired"));
    // Nor does one that does not cover the digest of its body.
    let uncovered = httpsig_sign(&json!({
        "key_id": bob,
        "key_file": signature_testdata("rsa-2048.key.pem"),
        "algorithm": "rsa-sha256",
        "method": "POST",
        "path": INBOX,
        "host": "local.example",
        "headers": {"content-type": "application/activity+json"},
        "body": CREATE,
        "covered": ["(request-target)", "host", "date"],
        "digest": true,
    }));
    let (status, result) = deliver(&gw, &uncovered).await;
    assert_eq!((status, result.as_str()), (401, "malformed"));
    assert_eq!(actors.requests(), 1);
    let m = gw.metrics().await;
    assert_eq!(lookups(&m, "miss"), 1.0, "{m}");

    // A document without the key id's key, and one whose key belongs to another host.
    let actor = actors.actor_url("mallory");
    actors.docs.lock().unwrap().insert(
        "/users/mallory".into(),
        json!({"id": actor, "publicKey": {"id": format!("{actor}#main-key"),
               "owner": "https://elsewhere.example/users/mallory",
               "publicKeyPem": std::fs::read_to_string(signature_testdata("rsa-2048.pub.pem")).unwrap()}})
        .to_string(),
    );
    let (status, result) = deliver(
        &gw,
        &httpsig(&format!("{actor}#main-key"), "rsa-2048.key.pem"),
    )
    .await;
    assert_eq!((status, result.as_str()), (401, "unknown_key"));
    let m = gw.metrics().await;
    assert_eq!(fetches(&m, "invalid_document"), 1.0, "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_hanging_host_times_out_then_its_breaker_opens() {
    let up = TestUpstream::start("app").await;
    let actors = ActorServer::start().await;
    actors.hang.store(true, Ordering::SeqCst);
    let fetch =
        format!("{LOCAL}timeout = \"500ms\"\nbreaker_failures = 2\nbreaker_open = \"1m\"\n");
    let gw = TestGateway::start(&config(&up, &fetch)).await;

    for (i, name) in ["a", "b"].iter().enumerate() {
        let key_id = format!("{}#main-key", actors.actor_url(name));
        let signed = httpsig(&key_id, "rsa-2048.key.pem");
        let started = Instant::now();
        let (status, result) = deliver(&gw, &signed).await;
        let took = started.elapsed();
        assert_eq!((status, result.as_str()), (401, "unknown_key"));
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert_eq!(actors.requests(), i + 1);
    }
    // Two timeouts in a row: the host's breaker is open, and the server is not contacted.
    let connections = actors.connections();
    let key_id = format!("{}#main-key", actors.actor_url("c"));
    let signed = httpsig(&key_id, "rsa-2048.key.pem");
    let started = Instant::now();
    let (status, result) = deliver(&gw, &signed).await;
    assert_eq!((status, result.as_str()), (401, "unknown_key"));
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(actors.requests(), 2);
    assert_eq!(actors.connections(), connections);

    let m = gw.metrics().await;
    assert_eq!(fetches(&m, "timeout"), 2.0, "{m}");
    assert_eq!(fetches(&m, "breaker_open"), 1.0, "{m}");
    assert_eq!(lookups(&m, "miss"), 3.0, "{m}");
    // Timed-out key ids are negative entries; a breaker refusal is not one.
    assert_eq!(
        metric(&m, "fedgate_signature_key_cache_entries", &[]),
        Some(2.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rotated_key_is_fetched_again_once() {
    let up = TestUpstream::start("app").await;
    let actors = ActorServer::start().await;
    // The key published first is not the one the signer holds.
    actors.serve_actor("bob", "rsa-2048-other.pub.pem");
    let fetch = format!("{LOCAL}refetch_interval = \"300ms\"\n");
    let gw = TestGateway::start(&config(&up, &fetch)).await;
    let bob = format!("{}#main-key", actors.actor_url("bob"));

    let (status, result) = deliver(&gw, &httpsig(&bob, "rsa-2048.key.pem")).await;
    assert_eq!((status, result.as_str()), (401, "invalid"));
    assert_eq!(actors.requests(), 1, "just fetched: no refetch");

    // Bob rotates to the key the signer holds.
    actors.serve_actor("bob", "rsa-2048.pub.pem");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        deliver(&gw, &httpsig(&bob, "rsa-2048.key.pem")).await,
        (200, String::new())
    );
    assert_eq!(actors.requests(), 2, "one refetch");
    assert_eq!(up.hits(), 1);
    // The new key is cached.
    assert_eq!(
        deliver(&gw, &httpsig(&bob, "rsa-2048.key.pem")).await,
        (200, String::new())
    );
    assert_eq!(actors.requests(), 2);

    let m = gw.metrics().await;
    assert_eq!(fetches(&m, "ok"), 2.0, "{m}");
    assert_eq!(lookups(&m, "miss"), 1.0, "{m}");
    assert_eq!(lookups(&m, "hit"), 2.0, "{m}");
    assert_eq!(verifications(&m, "valid"), 2.0, "{m}");
    assert_eq!(verifications(&m, "invalid"), 1.0, "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn private_addresses_are_refused_by_default() {
    let up = TestUpstream::start("app").await;
    let actors = ActorServer::start().await;
    actors.serve_actor("bob", "rsa-2048.pub.pem");
    // Only `enabled = true`: no opt-in for private addresses or plain http.
    let gw = TestGateway::start(&config(&up, "")).await;

    let https = format!("https://{}/users/bob#main-key", actors.addr);
    let (status, result) = deliver(&gw, &httpsig(&https, "rsa-2048.key.pem")).await;
    assert_eq!((status, result.as_str()), (401, "unknown_key"));
    let http = format!("{}#main-key", actors.actor_url("bob"));
    let (status, result) = deliver(&gw, &httpsig(&http, "rsa-2048.key.pem")).await;
    assert_eq!((status, result.as_str()), (401, "unknown_key"));
    assert_eq!(actors.connections(), 0);
    assert_eq!(actors.requests(), 0);

    let m = gw.metrics().await;
    assert_eq!(fetches(&m, "refused_address"), 2.0, "{m}");
    assert_eq!(fetches(&m, "ok"), 0.0, "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn redirects_are_followed_within_the_origin_only() {
    let up = TestUpstream::start("app").await;
    let actors = ActorServer::start().await;
    let elsewhere = ActorServer::start().await;
    // Bob's actor moved to /people/bob, whose document still names him as /users/bob.
    actors.serve_actor("bob", "rsa-2048.pub.pem");
    let doc = actors.docs.lock().unwrap().remove("/users/bob").unwrap();
    actors
        .docs
        .lock()
        .unwrap()
        .insert("/people/bob".into(), doc);
    actors
        .redirects
        .lock()
        .unwrap()
        .insert("/users/bob".into(), "/people/bob".into());
    // Eve's redirect leads to another server (another port: another origin).
    elsewhere.serve_actor("eve", "rsa-2048.pub.pem");
    actors
        .redirects
        .lock()
        .unwrap()
        .insert("/users/eve".into(), elsewhere.actor_url("eve"));
    let gw = TestGateway::start(&config(&up, LOCAL)).await;

    let bob = format!("{}#main-key", actors.actor_url("bob"));
    assert_eq!(
        deliver(&gw, &httpsig(&bob, "rsa-2048.key.pem")).await,
        (200, String::new())
    );
    assert_eq!(actors.requests(), 2);
    assert_eq!(
        actors.connections(),
        1,
        "the redirect is followed on the same connection"
    );

    let eve = format!("{}#main-key", actors.actor_url("eve"));
    let (status, result) = deliver(&gw, &httpsig(&eve, "rsa-2048.key.pem")).await;
    assert_eq!((status, result.as_str()), (401, "unknown_key"));
    assert_eq!(actors.requests(), 3);
    assert_eq!(elsewhere.requests(), 0);
    let m = gw.metrics().await;
    assert_eq!(fetches(&m, "ok"), 1.0, "{m}");
    assert_eq!(fetches(&m, "status"), 1.0, "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn https_key_ids_need_a_certificate_from_a_public_root() {
    let up = TestUpstream::start("app").await;
    let actors = ActorServer::start_tls().await;
    actors.serve_actor("bob", "rsa-2048.pub.pem");
    // Private addresses allowed, plain http not: the fetch goes over TLS and checks the
    // server's certificate against the Mozilla roots, which did not sign this one.
    let gw = TestGateway::start(&config(&up, "allow_private_addresses = true\n")).await;
    let bob = format!("https://{}/users/bob#main-key", actors.addr);
    let (status, result) = deliver(&gw, &httpsig(&bob, "rsa-2048.key.pem")).await;
    assert_eq!((status, result.as_str()), (401, "unknown_key"));
    assert_eq!(actors.connections(), 1);
    assert_eq!(
        actors.requests(),
        0,
        "no request without a trusted TLS session"
    );
    let m = gw.metrics().await;
    assert_eq!(fetches(&m, "connect"), 1.0, "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_key_cache_survives_reloads_that_keep_the_fetch_settings() {
    let up = TestUpstream::start("app").await;
    let actors = ActorServer::start().await;
    actors.serve_actor("bob", "rsa-2048.pub.pem");
    let gw = TestGateway::start(&config(&up, LOCAL)).await;
    let bob = format!("{}#main-key", actors.actor_url("bob"));
    assert_eq!(
        deliver(&gw, &httpsig(&bob, "rsa-2048.key.pem")).await,
        (200, String::new())
    );
    assert_eq!(actors.requests(), 1);

    // Another route, same fetch settings: the cache is kept.
    let (upstreams, rest) = config(&up, LOCAL)
        .split_once("[[routes]]")
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let text = format!(
        "{upstreams}[[routes]]\nname = \"open\"\npath_prefix = \"/open\"\nupstream = \"app\"\n[[routes]]{rest}"
    );
    gw.rewrite(&text).await.unwrap();
    assert_eq!(
        deliver(&gw, &httpsig(&bob, "rsa-2048.key.pem")).await,
        (200, String::new())
    );
    assert_eq!(actors.requests(), 1, "kept across the reload");

    // Changed fetch settings: a new cache, so the key is fetched again.
    gw.rewrite(&config(&up, &format!("{LOCAL}ttl = \"2h\"\n")))
        .await
        .unwrap();
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "fedgate_signature_key_cache_entries", &[]),
        Some(0.0)
    );
    assert_eq!(
        deliver(&gw, &httpsig(&bob, "rsa-2048.key.pem")).await,
        (200, String::new())
    );
    assert_eq!(actors.requests(), 2);
    let m = gw.metrics().await;
    assert_eq!(fetches(&m, "ok"), 2.0, "{m}");
    assert_eq!(lookups(&m, "miss"), 2.0, "{m}");
    assert_eq!(lookups(&m, "hit"), 1.0, "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn gotosocial_main_key_ids_are_fetched_from_the_key_url() {
    let up = TestUpstream::start("app").await;
    let actors = ActorServer::start().await;
    // GoToSocial's key id is a path of its own, `/users/NAME/main-key`, without a fragment;
    // that URL serves a minimal actor that carries the key.
    let actor = actors.actor_url("gts");
    let key_id = format!("{actor}/main-key");
    let pem = std::fs::read_to_string(signature_testdata("rsa-2048.pub.pem")).unwrap();
    actors.docs.lock().unwrap().insert(
        "/users/gts/main-key".into(),
        json!({
            "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
            "id": actor,
            "type": "Person",
            "preferredUsername": "gts",
            "publicKey": {"id": key_id, "owner": actor, "publicKeyPem": pem},
        })
        .to_string(),
    );
    let gw = TestGateway::start(&config(&up, LOCAL)).await;

    // GoToSocial signs RSA-SHA256 under the `hs2019` label, as PeerTube's signer does.
    let hs2019 = npm_sign(&json!({
        "library": "peertube",
        "key_id": key_id,
        "key_file": signature_testdata("rsa-2048.key.pem"),
        "method": "POST",
        "path": INBOX,
        "host": "local.example",
        "headers": {"content-type": "application/activity+json"},
        "body": CREATE,
        "covered": INBOX_COVERS,
    }));
    assert!(hs2019
        .iter()
        .any(|(k, v)| k == "signature" && v.contains("algorithm=\"hs2019\"")));
    assert_eq!(deliver(&gw, &hs2019).await, (200, String::new()));
    assert_eq!(up.hits(), 1);
    assert_eq!(actors.requests(), 1, "only the key URL was fetched");
    // httpsig's rsa-sha256 under the same key id: the cached key.
    assert_eq!(
        deliver(&gw, &httpsig(&key_id, "rsa-2048.key.pem")).await,
        (200, String::new())
    );
    assert_eq!(actors.requests(), 1);
    // A key id under the same actor that the document does not hold.
    let (status, result) = deliver(
        &gw,
        &httpsig(&format!("{actor}/other-key"), "rsa-2048.key.pem"),
    )
    .await;
    assert_eq!((status, result.as_str()), (401, "unknown_key"));
    assert_eq!(actors.requests(), 2);
    assert_eq!(up.hits(), 2);

    let m = gw.metrics().await;
    assert_eq!(fetches(&m, "ok"), 1.0, "{m}");
    assert_eq!(fetches(&m, "status"), 1.0, "{m}");
    assert_eq!(lookups(&m, "miss"), 2.0, "{m}");
    assert_eq!(lookups(&m, "hit"), 1.0, "{m}");
    assert_eq!(verifications(&m, "valid"), 2.0, "{m}");
    assert_eq!(verifications(&m, "unknown_key"), 1.0, "{m}");
    gw.shutdown().await;
}
