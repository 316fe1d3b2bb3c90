//! Listeners change on reload without a restart: renewed certificates are served to new
//! connections (on SIGHUP-style reloads and when the file watcher sees the files change),
//! listeners are added, moved and removed, connection limits change, the admin server
//! moves, and a port that cannot be bound rejects the whole reload. Settings that need a
//! restart are reported on `/metrics` for as long as the file asks for them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fedgate_tests::*;
use http::Request;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A CA that issues leaf certificates for `a.example` into `dir/a.pem` and `dir/a.key`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap().der().clone();
        Ca {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    /// Writes a new leaf (new key) over the files and returns its certificate.
    fn issue(&self, dir: &std::path::Path) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["a.example".to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        // Key first, then the certificate: a reload between the two writes sees a pair
        // that does not match and keeps the running certificate.
        std::fs::write(dir.join("a.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("a.pem"), cert.pem()).unwrap();
        cert.der().clone()
    }

    fn client(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(cfg))
    }
}

/// A TLS connection: the certificate the gateway presented, and an HTTP/1.1 sender.
async fn connect_tls(
    ca: &Ca,
    addr: SocketAddr,
) -> (
    CertificateDer<'static>,
    SendRequest<http_body_util::Full<bytes::Bytes>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = ca
        .client()
        .connect(ServerName::try_from("a.example").unwrap(), tcp)
        .await
        .expect("handshake");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    (presented, sender)
}

/// A plain HTTP/1.1 connection to `addr`.
async fn connect_plain(addr: SocketAddr) -> SendRequest<http_body_util::Full<bytes::Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get_on(
    sender: &mut SendRequest<http_body_util::Full<bytes::Bytes>>,
    path: &str,
) -> (u16, bytes::Bytes) {
    let req = Request::get(path)
        .header("host", "a.example")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn tls_config(dir: &std::path::Path, up: &TestUpstream, reload: &str) -> String {
    let d = dir.display();
    format!(
        r#"[server]
access_log = false
shutdown_grace = "5s"
[admin]
address = "127.0.0.1:0"
[reload]
{reload}
[[listeners]]
name = "tls"
address = "127.0.0.1:0"
[listeners.tls]
certificates = [{{ cert = "{d}/a.pem", key = "{d}/a.key" }}]
{}
[[routes]]
name = "all"
upstream = "app"
"#,
        upstream_block("app", &[up.url()], "")
    )
}

fn reloads(m: &str, result: &str) -> f64 {
    metric(m, "fedgate_config_reloads_total", &[("result", result)]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_renewed_certificate_and_keeps_open_connections() {
    let up = TestUpstream::start("a").await;
    let pem = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let first = ca.issue(pem.path());
    let gw = TestGateway::start_full(&tls_config(pem.path(), &up, "watch = false")).await;

    let (presented, mut open) = connect_tls(&ca, gw.addr).await;
    assert_eq!(presented, first);
    assert_eq!(get_on(&mut open, "/before").await.0, 200);

    // The files are renewed in place; the configuration text does not change.
    let renewed = ca.issue(pem.path());
    assert_ne!(renewed, first);
    gw.gw().reload().await.expect("reload with renewed files");

    let (presented, mut fresh) = connect_tls(&ca, gw.addr).await;
    assert_eq!(
        presented, renewed,
        "a new connection gets the renewed certificate"
    );
    assert_eq!(get_on(&mut fresh, "/after").await.0, 200);
    // The connection opened before the reload keeps serving.
    let (status, body) = get_on(&mut open, "/still-open").await;
    assert_eq!((status, &body[..]), (200, &b"upstream a"[..]));
    assert_eq!(gw.gw().listener_addr("tls"), Some(gw.addr), "same socket");

    // A key that does not match its certificate keeps the running certificate.
    std::fs::write(
        pem.path().join("a.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    assert!(gw.gw().reload().await.is_err());
    let (presented, _) = connect_tls(&ca, gw.addr).await;
    assert_eq!(presented, renewed);

    let m = gw.metrics().await;
    assert_eq!(reloads(&m, "success"), 1.0);
    assert_eq!(reloads(&m, "error"), 1.0);
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_watcher_serves_a_renewed_certificate() {
    let up = TestUpstream::start("a").await;
    let pem = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let first = ca.issue(pem.path());
    let gw = TestGateway::start_full(&tls_config(
        pem.path(),
        &up,
        "watch = true\npoll_interval = \"50ms\"",
    ))
    .await;
    assert_eq!(connect_tls(&ca, gw.addr).await.0, first);

    // Modification times have a granularity: make sure the renewed files look newer.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let renewed = ca.issue(pem.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if connect_tls(&ca, gw.addr).await.0 == renewed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher did not pick up the renewed certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = gw.metrics().await;
    assert!(reloads(&m, "success") >= 1.0);
}

/// A configuration with the public listener, then `listeners` (more keys of its table, or
/// more `[[listeners]]` tables), then the upstream and route.
fn with_listeners(up: &TestUpstream, admin: &str, server: &str, listeners: &str) -> String {
    format!(
        r#"[server]
access_log = false
shutdown_grace = "5s"
{server}
[admin]
address = "{admin}"
[reload]
watch = false
[[listeners]]
name = "public"
address = "127.0.0.1:0"
{listeners}
{}
[[routes]]
name = "all"
upstream = "app"
"#,
        upstream_block("app", &[up.url()], "")
    )
}

async fn reload_with(gw: &TestGateway, text: &str) -> Result<(), fedgate::gateway::ReloadError> {
    std::fs::write(&gw.config_path, text).unwrap();
    gw.gw().reload().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_by_reload_and_removed_ones_drain() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start_full(&with_listeners(&up, "127.0.0.1:0", "", "")).await;
    let port = free_port();
    let second = format!("[[listeners]]\nname = \"second\"\naddress = \"127.0.0.1:{port}\"\n");
    reload_with(&gw, &with_listeners(&up, "127.0.0.1:0", "", &second))
        .await
        .expect("reload adding a listener");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(gw.gw().listener_addr("second"), Some(addr));
    assert_eq!(gw.gw().listener_addr("public"), Some(gw.addr));
    let (status, _, body) = send(get(&format!("http://{addr}/added"))).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"upstream a"[..]));

    // A keep-alive connection and a request in flight on the listener about to go.
    let mut idle = connect_plain(addr).await;
    assert_eq!(get_on(&mut idle, "/first").await.0, 200);
    let mut busy = connect_plain(addr).await;
    let in_flight = tokio::spawn(async move { get_on(&mut busy, "/slow/400").await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    reload_with(&gw, &with_listeners(&up, "127.0.0.1:0", "", ""))
        .await
        .expect("reload removing a listener");
    assert_eq!(gw.gw().listener_addr("second"), None);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a removed listener accepts no connection"
    );
    // Its connections drain: the request in flight completes, the idle connection serves.
    assert_eq!(in_flight.await.unwrap().0, 200);
    assert_eq!(get_on(&mut idle, "/after-removal").await.0, 200);
    // The listener that stayed kept its socket throughout.
    let (status, _, _) = send(get(&gw.url("/public"))).await;
    assert_eq!(status, 200);

    let m = gw.metrics().await;
    assert_eq!(reloads(&m, "success"), 2.0);
    assert_eq!(reloads(&m, "error"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_cannot_be_bound_rejects_the_whole_reload() {
    let up = TestUpstream::start("a").await;
    let other = TestUpstream::start("b").await;
    let gw = TestGateway::start_full(&with_listeners(&up, "127.0.0.1:0", "", "")).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // The same reload also sends the route elsewhere: none of it may take effect.
    let text = with_listeners(
        &other,
        "127.0.0.1:0",
        "",
        &format!("[[listeners]]\nname = \"second\"\naddress = \"127.0.0.1:{port}\"\n"),
    );
    let err = reload_with(&gw, &text)
        .await
        .expect_err("the port is taken");
    assert!(err.to_string().contains("second"), "{err}");
    assert_eq!(gw.gw().listener_addrs().len(), 1);
    let (status, _, body) = send(get(&gw.url("/kept"))).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"upstream a"[..]));
    assert_eq!(other.hits(), 0);
    let m = gw.metrics().await;
    assert_eq!(reloads(&m, "error"), 1.0);
    assert_eq!(reloads(&m, "success"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_connection_limit_admits_waiting_clients() {
    let up = TestUpstream::start("a").await;
    // Keys right after `with_listeners`' public listener belong to its table.
    let limited =
        |n: usize| with_listeners(&up, "127.0.0.1:0", "", &format!("max_connections = {n}"));
    let gw = TestGateway::start_full(&limited(1)).await;
    let mut first = connect_plain(gw.addr).await;
    assert_eq!(get_on(&mut first, "/one").await.0, 200);
    // The second client connects (the kernel's backlog holds it) but is not served while
    // the first connection holds the only slot.
    let mut second = connect_plain(gw.addr).await;
    let waiting = tokio::spawn(async move { get_on(&mut second, "/two").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served past the connection limit");
    assert_eq!(up.hits(), 1);

    reload_with(&gw, &limited(2))
        .await
        .expect("reload raising the limit");
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting client is served once the limit rises")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(up.hits(), 2);
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_server_moves_to_its_new_address() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start_full(&with_listeners(&up, "127.0.0.1:0", "", "")).await;
    let old = gw.gw().admin_addr();
    let port = free_port();
    reload_with(
        &gw,
        &with_listeners(&up, &format!("127.0.0.1:{port}"), "", ""),
    )
    .await
    .expect("reload moving the admin server");
    let new: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(gw.gw().admin_addr(), new);
    let (status, _, body) = send(get(&format!("http://{new}/metrics"))).await;
    assert_eq!(status, 200);
    let m = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(reloads(&m, "success"), 1.0);
    assert!(
        TcpStream::connect(old).await.is_err(),
        "the old admin address is released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_are_reported_while_the_file_asks_for_them() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start_full(&with_listeners(&up, "127.0.0.1:0", "workers = 2", "")).await;
    let admin = gw.gw().admin_addr();
    let pending = |m: &str, setting: &str| {
        metric(
            m,
            "fedgate_config_restart_required",
            &[("setting", setting)],
        )
    };
    let scrape = || async move {
        let (_, _, body) = send(get(&format!("http://{admin}/metrics"))).await;
        String::from_utf8(body.to_vec()).unwrap()
    };
    let m = scrape().await;
    assert_eq!(pending(&m, "workers"), Some(0.0));

    let changed = with_listeners(&up, "127.0.0.1:0", "workers = 3\nlog_format = \"text\"", "");
    for _ in 0..2 {
        // Reported on every reload that still asks for it, not only on the first.
        reload_with(&gw, &changed).await.expect("reload");
        let m = scrape().await;
        assert_eq!(pending(&m, "workers"), Some(1.0));
        assert_eq!(pending(&m, "log_format"), Some(1.0));
        assert_eq!(pending(&m, "event_interval"), Some(0.0));
    }
    reload_with(&gw, &with_listeners(&up, "127.0.0.1:0", "workers = 2", ""))
        .await
        .expect("reload");
    let m = scrape().await;
    assert_eq!(pending(&m, "workers"), Some(0.0));
    assert_eq!(pending(&m, "log_format"), Some(0.0));
    assert_eq!(reloads(&m, "success"), 3.0);
    let (ok, out) = promtool_check_metrics(&m);
    assert!(ok, "{out}");
}
