//! TLS termination with generated certificates: the certificate is chosen by SNI, HTTP/2 is
//! negotiated by ALPN, and an untrusting client fails the handshake. Upstreams over TLS:
//! verified against a configured CA, connections reused, an untrusted upstream refused.

use std::sync::Arc;

use fedgate_tests::*;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::Digest as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Pki {
    ca: CertificateDer<'static>,
    leaves: Vec<CertificateDer<'static>>,
}

fn make_pki(dir: &std::path::Path, names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let ca = ca_cert.der().clone();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaves = Vec::new();
    for n in names {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![n.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join(format!("{n}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{n}.key")), key.serialize_pem()).unwrap();
        leaves.push(cert.der().clone());
    }
    Pki { ca, leaves }
}

fn client_config(
    trust: Option<&CertificateDer<'static>>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = trust {
        roots.add(ca.clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

async fn tls_gateway(up: &TestUpstream) -> (TestGateway, Pki, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), &["a.example", "b.example"]);
    let d = dir.path().display();
    let text = format!(
        r#"[server]
access_log = false
[admin]
address = "127.0.0.1:0"
[reload]
watch = false
[[listeners]]
name = "tls"
address = "127.0.0.1:0"
[listeners.tls]
certificates = [
  {{ cert = "{d}/a.example.pem", key = "{d}/a.example.key" }},
  {{ cert = "{d}/b.example.pem", key = "{d}/b.example.key" }},
]
{}
[[routes]]
name = "all"
upstream = "app"
"#,
        upstream_block("app", &[up.url()], "")
    );
    let gw = TestGateway::start_full(&text).await;
    (gw, pki, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate_and_requests_flow_over_http1_and_h2() {
    let up = TestUpstream::start("a").await;
    let (gw, pki, _pem_dir) = tls_gateway(&up).await;

    for (i, name) in ["a.example", "b.example"].iter().enumerate() {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let tls = TlsConnector::from(client_config(Some(&pki.ca), &[b"http/1.1"]))
            .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
            .await
            .expect("handshake with a trusted certificate");
        let (_, session) = tls.get_ref();
        assert_eq!(
            session.peer_certificates().unwrap()[0],
            pki.leaves[i],
            "wrong certificate for {name}"
        );
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/over-tls")
            .header("host", *name)
            .body(empty())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"upstream a");
        let seen = up.last();
        assert_eq!(seen.headers["x-forwarded-proto"], "https");
        assert_eq!(seen.headers["host"], *name);
    }

    // ALPN negotiates HTTP/2.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let tls = TlsConnector::from(client_config(Some(&pki.ca), &[b"h2", b"http/1.1"]))
        .connect(ServerName::try_from("a.example").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post("https://a.example/hash")
        .body(post("http://x/", vec![7u8; 50_000]).into_body())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).starts_with("50000 "));
    assert_eq!(up.last().headers["via"], "2 fedgate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_certificate_fails_the_handshake() {
    let up = TestUpstream::start("a").await;
    let (gw, _pki, _pem_dir) = tls_gateway(&up).await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let result = TlsConnector::from(client_config(None, &[]))
        .connect(ServerName::try_from("a.example").unwrap(), tcp)
        .await;
    assert!(result.is_err(), "an untrusted certificate was accepted");
    assert_eq!(up.hits(), 0);
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), &["a.example", "b.example"]);
    let d = dir.path().display();
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"{d}/a.example.pem\", key = \"{d}/b.example.key\" }}]\n"
    );
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let (code, err) = run_bin("check", &path);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("listeners[0].tls.certificates[0].cert"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_over_tls_are_verified_and_their_connections_reused() {
    // The TLS upstream is a second gateway terminating TLS in front of a plain upstream.
    let up = TestUpstream::start("a").await;
    let (tls_gw, _pki, pem_dir) = tls_gateway(&up).await;
    let d = pem_dir.path().display();
    let https = format!("https://127.0.0.1:{}", tls_gw.addr.port());
    let trusted = format!(
        "{}\n[upstreams.app.tls]\nca_file = \"{d}/ca.pem\"\nserver_name = \"b.example\"\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        upstream_block("app", std::slice::from_ref(&https), "")
    );
    let gw = TestGateway::start(&trusted).await;

    for i in 0..5 {
        let (status, _, body) = send(get(&gw.url(&format!("/tls/{i}")))).await;
        assert_eq!(status, 200);
        assert_eq!(body, "upstream a");
    }
    let payload = vec![42u8; 300_000];
    let (status, _, body) = send(post(&gw.url("/hash"), payload.clone())).await;
    assert_eq!(status, 200);
    let want = format!(
        "{} {}",
        payload.len(),
        hex::encode(sha2::Sha256::digest(&payload))
    );
    assert_eq!(String::from_utf8_lossy(&body), want);
    assert_eq!(up.last().headers["host"], gw.addr.to_string());
    let m = gw.metrics().await;
    let idle = metric(
        &m,
        "fedgate_upstream_connections",
        &[("upstream", "app"), ("state", "idle")],
    );
    assert_eq!(idle, Some(1.0), "one TLS connection carried every request");

    // A CA that did not sign the upstream's certificate: the handshake fails, 502.
    let other = tempfile::tempdir().unwrap();
    make_pki(other.path(), &["b.example"]);
    let untrusted = trusted.replace(&d.to_string(), &other.path().display().to_string());
    let gw2 = TestGateway::start(&untrusted).await;
    let (status, _, _) = send(get(&gw2.url("/tls"))).await;
    assert_eq!(status, 502);
    let m = gw2.metrics().await;
    let connect_errors = metric(
        &m,
        "fedgate_upstream_errors_total",
        &[("upstream", "app"), ("kind", "connect")],
    );
    assert_eq!(connect_errors, Some(1.0));
}

/// What the HTTP/2 TLS upstream saw of one request.
#[derive(Debug, Clone)]
struct H2Seen {
    alpn: Option<Vec<u8>>,
    version: http::Version,
    method: String,
    target: String,
    authority: Option<String>,
    traceparent: Option<String>,
    body_len: usize,
    body_sha256: String,
}

/// An upstream that speaks only HTTP/2 over TLS (ALPN `h2`), with a certificate for
/// `h2.example` from the CA in `dir`; it answers `h2 ok` and records every request.
async fn h2_tls_upstream(
    dir: &std::path::Path,
) -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<H2Seen>>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    make_pki(dir, &["h2.example"]);
    let cert = CertificateDer::from_pem_file(dir.join("h2.example.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("h2.example.key")).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen2, conns2) = (seen.clone(), conns.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            conns2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (acceptor, seen) = (acceptor.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (seen, alpn) = (seen.clone(), alpn.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let bytes = body.collect().await.unwrap().to_bytes();
                        seen.lock().unwrap().push(H2Seen {
                            alpn,
                            version: parts.version,
                            method: parts.method.to_string(),
                            target: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            authority: parts.uri.authority().map(|a| a.to_string()),
                            traceparent: parts
                                .headers
                                .get("traceparent")
                                .map(|v| v.to_str().unwrap().to_string()),
                            body_len: bytes.len(),
                            body_sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                        });
                        Ok::<_, std::convert::Infallible>(full("h2 ok".to_string()))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstreams_over_tls_negotiate_h2_and_get_requests_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, seen, conns) = h2_tls_upstream(dir.path()).await;
    let d = dir.path().display();
    let gw = TestGateway::start(&format!(
        "{}\n[upstreams.app.tls]\nca_file = \"{d}/ca.pem\"\nserver_name = \"h2.example\"\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        upstream_block(
            "app",
            &[format!("https://{addr}")],
            "protocol = \"http2\""
        )
    ))
    .await;

    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let req = Request::get(gw.url("/users/alice?page=2&x=%2F"))
        .header("traceparent", traceparent)
        .body(empty())
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, 200);
    assert_eq!(body, "h2 ok");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (status, _, body) = send(post(&gw.url("/inbox"), payload.clone())).await;
    assert_eq!(status, 200);
    assert_eq!(body, "h2 ok");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]), "ALPN chose h2");
        assert_eq!(s.version, http::Version::HTTP_2);
        // The client's Host travels as `:authority`.
        assert_eq!(s.authority.as_deref(), Some(gw.addr.to_string().as_str()));
    }
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/users/alice?page=2&x=%2F");
    assert_eq!(seen[0].traceparent.as_deref(), Some(traceparent));
    assert_eq!(seen[0].body_len, 0);
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].target, "/inbox");
    assert_eq!(seen[1].body_len, payload.len());
    assert_eq!(
        seen[1].body_sha256,
        hex::encode(sha2::Sha256::digest(&payload))
    );
    // Both requests shared one TLS connection.
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
}
