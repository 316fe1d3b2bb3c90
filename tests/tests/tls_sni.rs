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
