//! Phase 5 end to end: API keys, bearer JWTs made by PyPI's PyJWT (HS256, RS256, ES256,
//! EdDSA) against a JWKS that PyJWT exported, and client certificates made by rcgen over real
//! TLS. Each refusal gets its status, `WWW-Authenticate` and `result`, refused requests never
//! reach the upstream, and `fedgate_auth_attempts_total` is scraped from the real `/metrics`.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fedgate_tests::*;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use sha2::Digest as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "fedgate";

fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn with_headers(url: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(empty()).unwrap()
}

fn attempts(m: &str, route: &str, method: &str, result: &str) -> Option<f64> {
    metric(
        m,
        "fedgate_auth_attempts_total",
        &[("route", route), ("method", method), ("result", result)],
    )
}

/// Checks a refusal: status, challenge (for a 401), JSON `result`, and that the credential is
/// not echoed.
fn refused(
    (status, headers, body): &(StatusCode, HeaderMap, Bytes),
    want: u16,
    result: &str,
    challenge: Option<&str>,
    secret: &str,
) {
    assert_eq!(status.as_u16(), want, "{result}: {body:?}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        headers.get("www-authenticate").map(|v| v.to_str().unwrap()),
        challenge,
        "{result}"
    );
    let doc: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(doc["result"], result, "{doc}");
    assert!(doc["error"].as_str().is_some_and(|e| !e.is_empty()));
    let text = String::from_utf8_lossy(body);
    assert!(
        secret.is_empty() || !text.contains(secret),
        "the credential is echoed: {text}"
    );
}

/// `[auth]` with Alice's and Bob's keys and the JWKS at `jwks`, and the routes of the suite.
fn auth_config(up: &TestUpstream, jwks: &str) -> String {
    format!(
        r#"{upstream}
[auth]
[[auth.api_keys]]
principal = "alice"
sha256 = "{alice}"
[[auth.api_keys]]
principal = "bob"
sha256 = "{bob}"
[auth.jwt]
jwks_file = {jwks:?}
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
[[routes]]
name = "keys"
path_prefix = "/keys"
upstream = "app"
auth = ["api_key"]
[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "app"
auth = ["api_key"]
principals = ["alice"]
[[routes]]
name = "tokens"
path_prefix = "/tokens"
upstream = "app"
auth = ["jwt", "api_key"]
[[routes]]
name = "open"
path_prefix = "/"
upstream = "app"
"#,
        upstream = upstream_block("app", &[up.url()], ""),
        alice = sha256_hex("alice-key"),
        bob = sha256_hex("bob-key"),
    )
}

/// A token made by PyJWT with the key file `key` (in `dir`) and claims `claims`.
fn token(
    dir: &Path,
    alg: &str,
    key: &str,
    kid: Option<&str>,
    claims: &serde_json::Value,
) -> String {
    pyjwt(&json!({
        "op": "sign",
        "alg": alg,
        "key_file": dir.join(key),
        "kid": kid,
        "claims": claims,
    }))
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now() + 300, "iat": now()})
}

#[tokio::test]
async fn api_keys_and_jwts_are_checked_refused_and_counted() {
    let keys = tempfile::tempdir().unwrap();
    let jwks = pyjwt(&json!({"op": "keys", "dir": keys.path()}));
    let up = TestUpstream::start("app").await;
    let gw = TestGateway::start(&auth_config(&up, &jwks)).await;
    let api_key = "ApiKey realm=\"fedgate\"";

    // API keys.
    let ok = send(with_headers(
        &gw.url("/keys/a"),
        &[("x-api-key", "alice-key")],
    ))
    .await;
    assert_eq!(ok.0, 200);
    assert_eq!(ok.2, "upstream app");
    assert_eq!(up.hits(), 1);
    let wrong = send(with_headers(
        &gw.url("/keys/a"),
        &[("x-api-key", "alice-kex")],
    ))
    .await;
    refused(&wrong, 401, "invalid", Some(api_key), "alice-kex");
    let none = send(get(&gw.url("/keys/a"))).await;
    refused(&none, 401, "missing", Some(api_key), "");
    let bob = send(with_headers(
        &gw.url("/admin/x"),
        &[("x-api-key", "bob-key")],
    ))
    .await;
    refused(&bob, 403, "forbidden", None, "bob-key");
    let alice = send(with_headers(
        &gw.url("/admin/x"),
        &[("x-api-key", "alice-key")],
    ))
    .await;
    assert_eq!(alice.0, 200);
    assert_eq!(up.hits(), 2, "refused requests never reach the upstream");

    // JWTs from PyJWT, one per algorithm, each verified by its key in the JWKS.
    let dir = keys.path();
    for (alg, key, kid) in [
        ("HS256", "hs.key", "hs"),
        ("RS256", "rsa.pem", "rsa"),
        ("ES256", "ec.pem", "ec"),
        ("EdDSA", "ed.pem", "ed"),
    ] {
        let t = token(dir, alg, key, Some(kid), &claims(&format!("svc-{alg}")));
        let auth = format!("Bearer {t}");
        let r = send(with_headers(
            &gw.url("/tokens/a"),
            &[("authorization", &auth)],
        ))
        .await;
        assert_eq!(r.0, 200, "{alg}: {:?}", r.2);
        // The credential goes upstream as sent: the proxy does not rewrite requests.
        assert_eq!(up.last().headers["authorization"], auth.as_str());
    }
    assert_eq!(up.hits(), 6);
    let both = "Bearer realm=\"fedgate\", ApiKey realm=\"fedgate\"";
    let bad: Vec<(&str, String)> = vec![
        (
            "expired",
            token(
                dir,
                "RS256",
                "rsa.pem",
                Some("rsa"),
                &json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "late", "exp": now() - 3600}),
            ),
        ),
        (
            "invalid",
            token(
                dir,
                "ES256",
                "ec.pem",
                Some("ec"),
                &json!({"iss": ISSUER, "aud": "another-service", "sub": "x", "exp": now() + 300}),
            ),
        ),
        (
            "invalid",
            token(
                dir,
                "EdDSA",
                "ed.pem",
                Some("ed"),
                &json!({"iss": "https://evil.example", "aud": AUDIENCE, "sub": "x", "exp": now() + 300}),
            ),
        ),
        // Signed by a key the JWKS does not have, under the kid of one it has.
        (
            "invalid",
            token(dir, "RS256", "stranger-rsa.pem", Some("rsa"), &claims("x")),
        ),
        (
            "invalid",
            token(dir, "HS256", "stranger-hs.key", None, &claims("x")),
        ),
        ("invalid", token(dir, "none", "", None, &claims("x"))),
        (
            "invalid",
            token(
                dir,
                "HS256",
                "hs.key",
                Some("hs"),
                &json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now() + 7200, "nbf": now() + 3600}),
            ),
        ),
    ];
    for (result, t) in &bad {
        let auth = format!("Bearer {t}");
        let r = send(with_headers(
            &gw.url("/tokens/a"),
            &[("authorization", &auth)],
        ))
        .await;
        refused(&r, 401, result, Some(both), t);
    }
    // Nothing at all counts as the route's first method; an API key is accepted too.
    refused(
        &send(get(&gw.url("/tokens/a"))).await,
        401,
        "missing",
        Some(both),
        "",
    );
    let by_key = send(with_headers(
        &gw.url("/tokens/a"),
        &[("x-api-key", "bob-key")],
    ))
    .await;
    assert_eq!(by_key.0, 200);
    // A route without auth does nothing in phase 5.
    assert_eq!(send(get(&gw.url("/elsewhere"))).await.0, 200);
    assert_eq!(up.hits(), 8);

    let m = gw.metrics().await;
    let expect = [
        (
            "keys",
            "api_key",
            [
                ("ok", 1.0),
                ("missing", 1.0),
                ("invalid", 1.0),
                ("expired", 0.0),
                ("forbidden", 0.0),
            ],
        ),
        (
            "admin",
            "api_key",
            [
                ("ok", 1.0),
                ("missing", 0.0),
                ("invalid", 0.0),
                ("expired", 0.0),
                ("forbidden", 1.0),
            ],
        ),
        (
            "tokens",
            "jwt",
            [
                ("ok", 4.0),
                ("missing", 1.0),
                ("invalid", 6.0),
                ("expired", 1.0),
                ("forbidden", 0.0),
            ],
        ),
        (
            "tokens",
            "api_key",
            [
                ("ok", 1.0),
                ("missing", 0.0),
                ("invalid", 0.0),
                ("expired", 0.0),
                ("forbidden", 0.0),
            ],
        ),
    ];
    for (route, method, results) in expect {
        for (result, value) in results {
            assert_eq!(
                attempts(&m, route, method, result),
                Some(value),
                "{route} {method} {result}"
            );
        }
    }
    // Series exist only for the methods a route accepts, and none for open routes.
    assert_eq!(attempts(&m, "keys", "jwt", "ok"), None);
    assert_eq!(attempts(&m, "tokens", "mtls", "missing"), None);
    assert!(!series(&m, "fedgate_auth_attempts_total")
        .iter()
        .any(|l| l.contains("route=\"open\"")));
    assert_eq!(
        metric(
            &m,
            "fedgate_requests_total",
            &[
                ("route", "tokens"),
                ("upstream", "app"),
                ("method", "GET"),
                ("status", "401")
            ]
        ),
        Some(8.0)
    );
    let (ok, report) = promtool_check_metrics(&m);
    assert!(ok, "{report}");
}

#[tokio::test]
async fn the_jwks_is_read_again_on_reload_and_a_bad_one_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let jwks = pyjwt(&json!({"op": "keys", "dir": keys.path()}));
    let up = TestUpstream::start("app").await;
    let body = auth_config(&up, &jwks);
    let gw = TestGateway::start(&body).await;
    let hs = format!(
        "Bearer {}",
        token(keys.path(), "HS256", "hs.key", Some("hs"), &claims("svc"))
    );
    let call = || {
        send(with_headers(
            &gw.url("/tokens/a"),
            &[("authorization", &hs)],
        ))
    };
    assert_eq!(call().await.0, 200);

    // The HS256 key leaves the set: after a reload its tokens no longer verify.
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&jwks).unwrap()).unwrap();
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kid"] != "hs");
    std::fs::write(&jwks, doc.to_string()).unwrap();
    gw.rewrite(&body).await.expect("the reload succeeds");
    refused(
        &call().await,
        401,
        "invalid",
        Some("Bearer realm=\"fedgate\", ApiKey realm=\"fedgate\""),
        "",
    );

    // A JWKS that does not parse refuses the reload, naming the field; the running
    // configuration keeps serving.
    std::fs::write(&jwks, "{\"keys\": 7}").unwrap();
    let err = gw.rewrite(&body).await.unwrap_err().to_string();
    assert!(err.contains("auth.jwt.jwks_file"), "{err}");
    let rs = format!(
        "Bearer {}",
        token(keys.path(), "RS256", "rsa.pem", Some("rsa"), &claims("svc"))
    );
    let r = send(with_headers(
        &gw.url("/tokens/a"),
        &[("authorization", &rs)],
    ))
    .await;
    assert_eq!(r.0, 200);
    let m = gw.metrics().await;
    assert_eq!(attempts(&m, "tokens", "jwt", "ok"), Some(2.0));
    assert_eq!(attempts(&m, "tokens", "jwt", "invalid"), Some(1.0));
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "error")]),
        Some(1.0)
    );
}

#[test]
fn check_refuses_a_missing_jwks_and_a_malformed_hash_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n[[routes]]\nupstream = \"app\"\nauth = [\"api_key\", \"jwt\"]\n";
    let cases = [
        (
            format!(
                "{base}[[auth.api_keys]]\nprincipal = \"a\"\nsha256 = \"{}\"\n[auth.jwt]\njwks_file = \"nowhere.json\"\nissuer = \"i\"\naudience = \"a\"\n",
                sha256_hex("k")
            ),
            "auth.jwt.jwks_file",
            "nowhere.json",
        ),
        (
            format!("{base}[[auth.api_keys]]\nprincipal = \"a\"\nsha256 = \"not-a-sha256\"\n"),
            "auth.api_keys[0].sha256",
            "64 hex digits",
        ),
    ];
    for (text, field, detail) in cases {
        let path = dir.path().join("fedgate.toml");
        std::fs::write(&path, text).unwrap();
        let (code, err) = run_bin("check", &path);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(field) && err.contains(detail), "{err}");
    }
}

/// A CA and its issuer, written to `dir/NAME-ca.pem`.
fn ca(dir: &Path, name: &str) -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{name} CA"));
    params.distinguished_name = dn;
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).unwrap();
    Issuer::new(params, key)
}

/// A leaf certificate with DNS names `sans` and common name `cn`: its chain and key.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    sans: &[&str],
    cn: &str,
) -> (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    String,
    String,
) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let cert = params.signed_by(&key, issuer).unwrap();
    let der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    (
        vec![cert.der().clone()],
        der,
        cert.pem(),
        key.serialize_pem(),
    )
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// GET `path` over TLS to `addr`, trusting `server_ca`, presenting `identity` if given.
/// `Err` when the handshake or the exchange fails; a gateway that neither answers nor closes
/// within [`ANSWER_WITHIN`] fails the test.
async fn tls_get(
    addr: std::net::SocketAddr,
    server_ca: &CertificateDer<'static>,
    identity: Option<&Identity>,
    path: &str,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    tokio::time::timeout(ANSWER_WITHIN, tls_exchange(addr, server_ca, identity, path))
        .await
        .unwrap_or_else(|_| panic!("GET {path} over TLS: no answer and no close"))
}

async fn tls_exchange(
    addr: std::net::SocketAddr,
    server_ca: &CertificateDer<'static>,
    identity: Option<&Identity>,
    path: &str,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_ca.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("gw.example").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "gw.example")
        .body(empty())
        .unwrap();
    // With TLS 1.3 the server judges the client certificate after the client has finished
    // its side of the handshake: a refusal shows on the first exchange.
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, headers, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_principals_and_unknown_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clients = ca(d, "clients");
    let strangers = ca(d, "strangers");
    let servers = ca(d, "servers");
    let (_, _, server_pem, server_key) = leaf(&servers, &["gw.example"], "gw");
    std::fs::write(d.join("gw.pem"), server_pem).unwrap();
    std::fs::write(d.join("gw.key"), server_key).unwrap();
    let server_ca = CertificateDer::from_pem_file(d.join("servers-ca.pem")).unwrap();
    // A: named by its SAN; B: a common name only; C: signed by a CA the gateway does not know.
    let a = leaf(&clients, &["a.client.example"], "ignored-cn");
    let b = leaf(&clients, &[], "b-worker");
    let c = leaf(&strangers, &["a.client.example"], "c");
    let (a, b, c): (Identity, Identity, Identity) = ((a.0, a.1), (b.0, b.1), (c.0, c.1));

    let up = TestUpstream::start("app").await;
    let dd = d.display();
    let listener = |name: &str, mode: &str| {
        format!(
            "[[listeners]]\nname = \"{name}\"\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{dd}/gw.pem\", key = \"{dd}/gw.key\" }}]\nclient_ca_file = \"{dd}/clients-ca.pem\"\nclient_auth = \"{mode}\"\n"
        )
    };
    let text = format!(
        "[server]\naccess_log = false\n[admin]\naddress = \"127.0.0.1:0\"\n[reload]\nwatch = false\n{}{}{}\
         [[routes]]\nname = \"svc\"\npath_prefix = \"/svc\"\nupstream = \"app\"\nauth = [\"mtls\"]\n\
         [[routes]]\nname = \"only-a\"\npath_prefix = \"/only-a\"\nupstream = \"app\"\nauth = [\"mtls\"]\nprincipals = [\"a.client.example\"]\n\
         [[routes]]\nname = \"only-b\"\npath_prefix = \"/only-b\"\nupstream = \"app\"\nauth = [\"mtls\"]\nprincipals = [\"b-worker\"]\n\
         [[routes]]\nname = \"open\"\npath_prefix = \"/\"\nupstream = \"app\"\n",
        listener("required", "required"),
        listener("optional", "optional"),
        upstream_block("app", &[up.url()], ""),
    );
    let gw = TestGateway::start_full(&text).await;
    let addrs = gw.gw().listener_addrs().to_vec();
    let (required, optional) = (addrs[0].1, addrs[1].1);

    // Required mode: a certificate from the configured CA gets through, its principal from
    // the SAN (A) or the common name (B), as the allow lists show.
    let r = tls_get(required, &server_ca, Some(&a), "/svc/x")
        .await
        .unwrap();
    assert_eq!(r.0, 200);
    assert_eq!(r.2, "upstream app");
    assert_eq!(
        tls_get(required, &server_ca, Some(&a), "/only-a")
            .await
            .unwrap()
            .0,
        200
    );
    let forbidden = tls_get(required, &server_ca, Some(&b), "/only-a")
        .await
        .unwrap();
    refused(&forbidden, 403, "forbidden", None, "");
    assert_eq!(
        tls_get(required, &server_ca, Some(&b), "/only-b")
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(up.hits(), 3);
    // An unknown CA's certificate, or none at all, fails the handshake.
    let e = tls_get(required, &server_ca, Some(&c), "/open")
        .await
        .unwrap_err();
    assert!(!e.is_empty());
    tls_get(required, &server_ca, None, "/open")
        .await
        .expect_err("no certificate on a required listener");

    // Optional mode: no certificate is fine for open routes, 401 missing on mtls routes; an
    // unknown certificate still fails the handshake.
    assert_eq!(
        tls_get(optional, &server_ca, None, "/open")
            .await
            .unwrap()
            .0,
        200
    );
    let missing = tls_get(optional, &server_ca, None, "/svc/x").await.unwrap();
    refused(
        &missing,
        401,
        "missing",
        Some("Certificate realm=\"fedgate\""),
        "",
    );
    tls_get(optional, &server_ca, Some(&c), "/svc/x")
        .await
        .expect_err("an unknown certificate on an optional listener");
    assert_eq!(
        tls_get(optional, &server_ca, Some(&a), "/svc/y")
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(up.hits(), 5, "refused requests never reach the upstream");
    // Plain HTTP to a TLS listener is not TLS at all.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = TcpStream::connect(required).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: gw.example\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
    }

    // Each failed handshake is counted by listener and reason. The client may see the
    // refusal a moment before the listener counts it.
    let handshakes = |m: &str, listener: &str, reason: &str| {
        metric(
            m,
            "fedgate_tls_handshake_errors_total",
            &[("listener", listener), ("reason", reason)],
        )
    };
    let want = [
        ("required", "client_certificate", 2.0),
        ("required", "protocol", 1.0),
        ("required", "timeout", 0.0),
        ("required", "other", 0.0),
        ("optional", "client_certificate", 1.0),
        ("optional", "protocol", 0.0),
        ("optional", "timeout", 0.0),
        ("optional", "other", 0.0),
    ];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let m = loop {
        let m = gw.metrics().await;
        let counted = want
            .iter()
            .all(|(l, r, v)| handshakes(&m, l, r) == Some(*v));
        if counted || tokio::time::Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for (listener, reason, value) in want {
        assert_eq!(
            handshakes(&m, listener, reason),
            Some(value),
            "{listener} {reason}"
        );
    }
    let (ok, report) = promtool_check_metrics(&m);
    assert!(ok, "{report}");

    let expect = [
        ("svc", "ok", 2.0),
        ("svc", "missing", 1.0),
        ("svc", "invalid", 0.0),
        ("svc", "forbidden", 0.0),
        ("only-a", "ok", 1.0),
        ("only-a", "forbidden", 1.0),
        ("only-b", "ok", 1.0),
        ("only-b", "forbidden", 0.0),
    ];
    for (route, result, value) in expect {
        assert_eq!(
            attempts(&m, route, "mtls", result),
            Some(value),
            "{route} {result}"
        );
    }
    assert!(!series(&m, "fedgate_auth_attempts_total")
        .iter()
        .any(|l| l.contains("route=\"open\"")));
}
