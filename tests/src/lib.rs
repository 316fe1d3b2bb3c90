//! Test harness for fedgate's end-to-end suites: real sockets on 127.0.0.1:0, a real upstream
//! server ([`TestUpstream`]), the gateway started from a real config file ([`TestGateway`]) or
//! as the real binary ([`fedgate_bin`]), and small client helpers.

pub mod h2raw;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target exactly as received (path and query).
    pub target: String,
    /// The request URI's authority: HTTP/2's `:authority` (HTTP/1.1 targets have none).
    pub authority: Option<String>,
    pub headers: HeaderMap,
    pub version: http::Version,
    pub body_len: u64,
    pub body_sha256: String,
}

/// A real HTTP/1.1 + HTTP/2 upstream on 127.0.0.1:0 whose behaviour is chosen by path:
/// - `/hash`: reads the whole body, answers its length and SHA-256 (streaming, no buffering)
/// - `/echo`: streams the body back
/// - `/bytes/N`: streams N bytes of a known pattern
/// - `/slow/MS`: waits MS milliseconds, then answers 200
/// - `/status/N`: answers status N
/// - `/close`: answers 200 with `Connection: close`, then closes the connection
/// - `/ws`: WebSocket echo (HTTP/1.1 upgrade)
/// - anything else: 200 with body `upstream NAME`
///
/// Every response carries `x-upstream: NAME`.
///
/// Faults can be injected ([`Fault`]): on every request ([`TestUpstream::set_fault`]) or
/// only on the health check path `/healthz` ([`TestUpstream::set_health`]); the server can
/// be killed (listener closed, connections dropped) and restarted on the same port.
#[derive(Debug, Clone)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
    health_hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    stop: Arc<tokio::sync::Notify>,
    fault: Arc<Mutex<Fault>>,
    health_fault: Arc<Mutex<Fault>>,
    /// Bumped by [`TestUpstream::kill`]: every open connection is dropped.
    kills: Arc<tokio::sync::watch::Sender<u64>>,
}

/// What a connection task needs to reset its connection: a second handle on the socket
/// (to set SO_LINGER 0) and the signal that drops the connection.
#[derive(Debug)]
struct ResetHandle {
    signal: tokio::sync::oneshot::Sender<()>,
    twin: Option<std::net::TcpStream>,
}

/// A fault an upstream injects into its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Answer with this status.
    Status(u16),
    /// Never answer (the connection stays open).
    Hang,
    /// Reset the connection (TCP RST) instead of answering.
    Reset,
}

impl TestUpstream {
    pub async fn start(name: &str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let up = TestUpstream {
            addr,
            name: name.to_string(),
            seen: Arc::default(),
            hits: Arc::default(),
            health_hits: Arc::default(),
            connections: Arc::default(),
            stop: Arc::new(tokio::sync::Notify::new()),
            fault: Arc::new(Mutex::new(Fault::None)),
            health_fault: Arc::new(Mutex::new(Fault::None)),
            kills: Arc::new(tokio::sync::watch::channel(0).0),
        };
        up.serve(listener);
        up
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = state.stop.notified() => return,
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                // A second handle on the socket, to turn its close into a reset only when a
                // `Fault::Reset` asks for one.
                let Ok(std_stream) = stream.into_std() else {
                    continue;
                };
                let twin = std_stream.try_clone().ok();
                let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
                    continue;
                };
                let st = state.clone();
                let builder = builder.clone();
                let mut killed = state.kills.subscribe();
                let (reset_tx, reset_rx) = tokio::sync::oneshot::channel::<()>();
                let reset_tx = Arc::new(Mutex::new(Some(ResetHandle {
                    signal: reset_tx,
                    twin,
                })));
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        let reset = reset_tx.clone();
                        async move { Ok::<_, Infallible>(st.answer(req, reset).await) }
                    });
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = killed.changed() => {}
                        _ = reset_rx => {}
                    }
                });
            }
        });
    }

    /// Stops accepting new connections (existing ones finish).
    pub fn stop(&self) {
        self.stop.notify_waiters();
    }

    /// Kills the server: the listener closes (connects are refused) and every open
    /// connection is closed.
    pub async fn kill(&self) {
        self.stop.notify_waiters();
        self.kills.send_modify(|k| *k += 1);
        // Let the accept loop drop its listener.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Serves again on the same address after [`TestUpstream::kill`].
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind upstream");
        self.serve(listener);
    }

    /// Injects `fault` into every request.
    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Injects `fault` into requests for the health check path `/healthz` only.
    pub fn set_health(&self, fault: Fault) {
        *self.health_fault.lock().unwrap() = fault;
    }

    /// Requests for `/healthz` so far (they are not counted in [`TestUpstream::hits`]).
    pub fn health_hits(&self) -> usize {
        self.health_hits.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw no request")
    }

    async fn answer(
        &self,
        mut req: Request<Incoming>,
        reset: Arc<Mutex<Option<ResetHandle>>>,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        let fault = if path == "/healthz" {
            self.health_hits.fetch_add(1, Ordering::SeqCst);
            *self.health_fault.lock().unwrap()
        } else {
            self.hits.fetch_add(1, Ordering::SeqCst);
            *self.fault.lock().unwrap()
        };
        match fault {
            Fault::None => {}
            Fault::Status(code) => {
                let mut r = full(format!("fault {code} from {}", self.name));
                *r.status_mut() = StatusCode::from_u16(code).unwrap();
                r.headers_mut()
                    .insert("x-upstream", self.name.parse().unwrap());
                return r;
            }
            Fault::Hang => std::future::pending::<()>().await,
            Fault::Reset => {
                let handle = reset.lock().unwrap().take();
                if let Some(h) = handle {
                    // SO_LINGER 0: closing the socket sends RST instead of FIN.
                    if let Some(twin) = h.twin {
                        if let Ok(t) = tokio::net::TcpStream::from_std(twin) {
                            let _ = t.set_zero_linger();
                        }
                    }
                    let _ = h.signal.send(());
                }
                std::future::pending::<()>().await;
            }
        }
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let mut seen = Seen {
            method: req.method().to_string(),
            target,
            authority: req.uri().authority().map(|a| a.to_string()),
            headers: req.headers().clone(),
            version: req.version(),
            body_len: 0,
            body_sha256: String::new(),
        };
        let mut resp = if path == "/ws" {
            self.websocket(&mut req)
        } else if path == "/echo" {
            let body = req.into_body().boxed();
            self.record(seen);
            Response::new(body)
        } else {
            // Hash the body as it streams in, so large uploads never sit in memory.
            let mut hasher = Sha256::new();
            let mut len = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            len += d.len() as u64;
                            hasher.update(d);
                        }
                    }
                    Err(_) => break,
                }
            }
            seen.body_len = len;
            seen.body_sha256 = hex::encode(hasher.finalize());
            let hash_body = format!("{} {}", len, seen.body_sha256);
            self.record(seen);
            if path == "/hash" {
                full(hash_body)
            } else if let Some(n) = path.strip_prefix("/bytes/") {
                pattern_body(n.parse().unwrap_or(0))
            } else if let Some(ms) = path.strip_prefix("/slow/") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
                full("slow done".to_string())
            } else if path == "/close" {
                let mut r = full("closing".to_string());
                r.headers_mut()
                    .insert("connection", "close".parse().unwrap());
                r
            } else if let Some(code) = path.strip_prefix("/status/") {
                let mut r = full(format!("status {code}"));
                *r.status_mut() = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
                r
            } else {
                full(format!("upstream {}", self.name))
            }
        };
        resp.headers_mut()
            .insert("x-upstream", self.name.parse().unwrap());
        resp
    }

    fn record(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }

    fn websocket(&self, req: &mut Request<Incoming>) -> Response<Body> {
        use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            let mut r = full("not a websocket request".into());
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        };
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                let (tx, rx) = ws.split();
                let _ = rx
                    .filter(|m| {
                        futures_util::future::ready(
                            m.as_ref().is_ok_and(|m| m.is_text() || m.is_binary()),
                        )
                    })
                    .forward(tx)
                    .await;
            }
        });
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert("connection", "upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert(
            "sec-websocket-accept",
            derive_accept_key(key.as_bytes()).parse().unwrap(),
        );
        r
    }
}

pub fn full(s: String) -> Response<Body> {
    Response::new(
        Full::new(Bytes::from(s))
            .map_err(|never| match never {})
            .boxed(),
    )
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body of `n` bytes of a repeating pattern, streamed in 64 KiB chunks.
pub fn pattern_body(n: u64) -> Response<Body> {
    Response::new(pattern_stream(n))
}

/// Streams `n` pattern bytes in 64 KiB chunks.
pub fn pattern_stream(n: u64) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK as u64) as usize;
            Some((
                Ok::<_, hyper::Error>(Frame::data(chunk.slice(..take))),
                left - take as u64,
            ))
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// SHA-256 of the pattern stream of `n` bytes.
pub fn pattern_sha256(n: u64) -> String {
    const CHUNK: usize = 64 * 1024;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let mut h = Sha256::new();
    let mut left = n;
    while left > 0 {
        let take = left.min(CHUNK as u64) as usize;
        h.update(&chunk[..take]);
        left -= take as u64;
    }
    hex::encode(h.finalize())
}

/// A gateway started in-process from a real config file written to a temp directory.
#[derive(Debug)]
pub struct TestGateway {
    pub gateway: Option<fedgate::Gateway>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// Minimal config head: one plain listener and the admin socket on port 0, no file watching.
pub const HEAD: &str = r#"
[server]
access_log = false
shutdown_grace = "5s"
[admin]
address = "127.0.0.1:0"
[reload]
watch = false
[[listeners]]
name = "public"
address = "127.0.0.1:0"
"#;

impl TestGateway {
    /// Starts a gateway with `HEAD` followed by `body` (upstreams and routes).
    pub async fn start(body: &str) -> TestGateway {
        Self::start_full(&format!("{HEAD}\n{body}")).await
    }

    /// Starts a gateway from complete config text.
    pub async fn start_full(text: &str) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("fedgate.toml");
        std::fs::write(&config_path, text).unwrap();
        let cfg = fedgate::config::load(&config_path).expect("test config must be valid");
        let gateway = fedgate::Gateway::start(cfg, Some(config_path.clone()))
            .await
            .expect("gateway starts");
        let addr = gateway.listener_addrs()[0].1;
        let admin = gateway.admin_addr();
        TestGateway {
            gateway: Some(gateway),
            addr,
            admin,
            dir,
            config_path,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn gw(&self) -> &fedgate::Gateway {
        self.gateway.as_ref().unwrap()
    }

    /// Writes new config text (with `HEAD`) to the file and reloads it.
    pub async fn rewrite(&self, body: &str) -> Result<(), fedgate::gateway::ReloadError> {
        std::fs::write(&self.config_path, format!("{HEAD}\n{body}")).unwrap();
        self.gw().reload().await
    }

    pub async fn metrics(&self) -> String {
        let (status, _, body) = send(get(&format!("http://{}/metrics", self.admin))).await;
        assert_eq!(status, 200);
        String::from_utf8(body.to_vec()).unwrap()
    }

    pub async fn shutdown(mut self) -> bool {
        self.gateway.take().unwrap().shutdown().await
    }
}

/// The value of one sample in Prometheus text output, labels given in any order.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (n, rest) = match series.find('{') {
            Some(i) => (&series[..i], &series[i + 1..series.len() - 1]),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let found: HashMap<&str, &str> = rest
            .split(',')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if found.len() == labels.len() && labels.iter().all(|(k, v)| found.get(k) == Some(v)) {
            return value.parse().ok();
        }
    }
    None
}

type PlainClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// A shared HTTP/1.1 keep-alive client.
pub fn client() -> PlainClient {
    static C: OnceLock<PlainClient> = OnceLock::new();
    C.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
        .clone()
}

/// An HTTP/2 (prior knowledge) client.
pub fn h2_client() -> PlainClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub fn get(url: &str) -> Request<Body> {
    Request::get(url).body(empty()).unwrap()
}

pub fn post(url: &str, body: impl Into<Bytes>) -> Request<Body> {
    Request::post(url)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

/// A request with `headers` (as the signers return them) and a body.
pub fn request(method: &str, url: &str, headers: &[(String, String)], body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

/// Sends with the shared client and collects the response.
pub async fn send(req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    send_with(&client(), req).await
}

/// How long a test waits for a whole answer before it fails, naming the request: a gateway
/// that never answers fails its test instead of stalling the suite.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// Sends with `c` and collects the response, within [`ANSWER_WITHIN`].
pub async fn send_with(c: &PlainClient, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let what = format!("{} {}", req.method(), req.uri());
    let exchange = async {
        let resp = c.request(req).await.expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, headers, body)
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .unwrap_or_else(|_| panic!("no whole answer to {what} within {ANSWER_WITHIN:?}"))
}

/// Upstream and route config for one upstream named `name`.
pub fn upstream_block(name: &str, urls: &[String], extra: &str) -> String {
    let eps: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[upstreams.{name}]\nendpoints = [{}]\n{extra}\n",
        eps.join(", ")
    )
}

/// The repository root (the workspace the tests belong to).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where cargo puts build output: `CARGO_TARGET_DIR`, else `target/` in the repository.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The `fedgate` binary, built once per test process. It is built as the test command builds
/// the workspace (every target, so with the same resolved features): after that command this
/// is a no-op, where building the binary alone would rebuild its dependencies with other
/// features while the tests run.
pub fn fedgate_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = target_dir().join("debug").join("fedgate");
        if prebuilt() {
            assert!(bin.exists(), "no fedgate binary at {}", bin.display());
            return bin;
        }
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "--workspace", "--all-targets"])
            .current_dir(workspace_root())
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building the fedgate binary failed");
        bin
    })
    .clone()
}

/// Whether the test command built everything before the tests started
/// (`FEDGATE_TESTS_PREBUILT=1`, set by scripts/test.sh): then no test runs cargo, so no
/// build can replace a test binary that another test is about to execute.
fn prebuilt() -> bool {
    std::env::var_os("FEDGATE_TESTS_PREBUILT").is_some_and(|v| v == "1")
}

/// A free port on 127.0.0.1 for the binary's config (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `url` until it answers `want` or the deadline passes.
pub async fn wait_for_status(url: &str, want: u16, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_millis(500), client().request(get(url))).await
        {
            if r.status().as_u16() == want {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Runs `fedgate SUBCOMMAND --config FILE` to completion; returns the exit code and stderr.
pub fn run_bin(subcommand: &str, config: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(fedgate_bin())
        .args([subcommand, "--config"])
        .arg(config)
        .output()
        .expect("the fedgate binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A plugin component built for `wasm32-wasip2`: `crate_name` from `plugins/` (the shipped
/// plugins) or `tests/plugins/` (test fixtures). The first call builds both workspaces
/// (release, into the shared target directory), as the test command does, so a test always
/// loads components built from the sources it runs with.
pub fn plugin_wasm(crate_name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let (root, target) = (workspace_root(), target_dir());
        let manifests: &[&str] = if prebuilt() {
            &[]
        } else {
            &["plugins/Cargo.toml", "tests/plugins/Cargo.toml"]
        };
        for manifest in manifests {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-q", "--release", "--target", "wasm32-wasip2"])
                .arg("--manifest-path")
                .arg(root.join(manifest))
                .arg("--target-dir")
                .arg(&target)
                .current_dir(&root)
                .status()
                .expect("cargo build runs");
            assert!(
                status.success(),
                "building {manifest} for wasm32-wasip2 failed (the target is installed by \
                 `rustup target add wasm32-wasip2`, which scripts/test.sh runs)"
            );
        }
        target.join("wasm32-wasip2").join("release")
    });
    let path = dir.join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.exists(), "no component at {}", path.display());
    path
}

/// A `[plugins.NAME]` section for component `crate_name` (see [`plugin_wasm`]), with extra
/// keys and the plugin's own `config` table (TOML lines).
pub fn plugin(name: &str, crate_name: &str, extra: &str, config: &str) -> String {
    plugin_at(name, &plugin_wasm(crate_name), extra, config)
}

/// A `[plugins.NAME]` section for the component at `path`.
pub fn plugin_at(name: &str, path: &Path, extra: &str, config: &str) -> String {
    format!(
        "[plugins.{name}]\npath = {:?}\n{extra}\n[plugins.{name}.config]\n{config}\n",
        path.display().to_string()
    )
}

/// A `[[routes]]` entry with its plugin chain and extra keys.
pub fn plugin_route(
    name: &str,
    prefix: &str,
    upstream: &str,
    plugins: &[&str],
    extra: &str,
) -> String {
    let list: Vec<String> = plugins.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "[[routes]]\nname = {name:?}\npath_prefix = {prefix:?}\nupstream = {upstream:?}\nplugins = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// `fedgate_plugin_invocations_total` for one plugin, hook and result; 0 when absent.
pub fn invocations(m: &str, plugin: &str, hook: &str, result: &str) -> f64 {
    metric(
        m,
        "fedgate_plugin_invocations_total",
        &[("plugin", plugin), ("hook", hook), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Every sample of metric `name` that has labels (one line each).
pub fn series<'a>(m: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}{{");
    m.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// `/health` of a test gateway: the status code and the document.
pub async fn health(gw: &TestGateway) -> (u16, serde_json::Value) {
    let (code, _, body) = send(get(&format!("http://{}/health", gw.admin))).await;
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (code.as_u16(), doc)
}

/// The `/health` entry of plugin `name`.
pub fn plugin_health(doc: &serde_json::Value, name: &str) -> serde_json::Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "plugin" && c["name"] == name)
        .unwrap_or_else(|| panic!("no plugin entry {name} in {doc}"))
        .clone()
}

/// Runs `promtool check metrics` on `text`: whether it passed, and what it printed.
pub fn promtool_check_metrics(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by the test command (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// A file of the signature module's test keys (`gateway/src/signature/testdata/`).
pub fn signature_testdata(name: &str) -> PathBuf {
    workspace_root()
        .join("gateway/src/signature/testdata")
        .join(name)
}

/// The Python that has the independent HTTP-signature clients installed: the test command
/// (`scripts/test.sh`) makes a virtual environment in `target/pyenv` from
/// `tests/signers/requirements.txt`; `FEDGATE_TEST_PYTHON` names another one.
pub fn signer_python() -> PathBuf {
    let python = std::env::var_os("FEDGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("pyenv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs tests/signers/requirements.txt there",
        python.display()
    );
    python
}

/// Signs a request with PyPI's `httpsig`, draft-cavage (`tests/signers/httpsig_sign.py`;
/// `spec` as that script documents) and returns the headers to send.
pub fn httpsig_sign(spec: &serde_json::Value) -> Vec<(String, String)> {
    run_signer("httpsig_sign.py", spec)
}

/// Signs a request with PyPI's `http-message-signatures`, RFC 9421
/// (`tests/signers/rfc9421_sign.py`) and returns the headers to send.
pub fn rfc9421_sign(spec: &serde_json::Value) -> Vec<(String, String)> {
    run_signer("rfc9421_sign.py", spec)
}

/// Signs a request with one of the npm packages of `tests/signers/package.json`
/// (`tests/signers/npm_sign.mjs`; `spec["library"]` picks it), installed by the test command
/// in `target/npm`, and returns the headers to send.
pub fn npm_sign(spec: &serde_json::Value) -> Vec<(String, String)> {
    let npm = target_dir().join("npm");
    assert!(
        npm.join("node_modules").exists(),
        "{} is missing: run scripts/test.sh, which installs tests/signers/package.json there",
        npm.display()
    );
    let mut command = std::process::Command::new("node");
    command
        .arg(workspace_root().join("tests/signers/npm_sign.mjs"))
        .env("FEDGATE_NPM", npm);
    run(command, "npm_sign.mjs", spec)
}

/// Runs `tests/signers/jwt_sign.py` (PyPI's PyJWT) with `spec` as that script documents:
/// `op: "keys"` writes keys and a JWKS and returns the JWKS path, `op: "sign"` returns a
/// compact token.
pub fn pyjwt(spec: &serde_json::Value) -> String {
    run_signer("jwt_sign.py", spec)
        .into_iter()
        .find(|(k, _)| k == "out")
        .map(|(_, v)| v)
        .expect("jwt_sign.py prints {\"out\": ...}")
}

fn run_signer(script: &str, spec: &serde_json::Value) -> Vec<(String, String)> {
    let mut command = std::process::Command::new(signer_python());
    command.arg(workspace_root().join("tests/signers").join(script));
    run(command, script, spec)
}

/// Runs a signer with `spec` as JSON on its stdin; its stdout is a JSON object of headers.
fn run(
    mut command: std::process::Command,
    script: &str,
    spec: &serde_json::Value,
) -> Vec<(String, String)> {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the signer runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("the signer prints JSON");
    headers
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// An HTTP/1.1 response read off a raw socket by [`read_response`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and header fields, as received.
    pub head: String,
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 response (framed by `Content-Length` or chunked, or with no body)
/// from a raw socket, within [`ANSWER_WITHIN`]: for tests that need to own the socket (its
/// local address, when it closes, what else is sent on it).
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> RawResponse {
    let exchange = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = find_bytes(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            read_more(s, &mut buf, &mut chunk).await;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().expect("a Content-Length"));
        let body = if let Some(len) = length {
            while buf.len() < head_end + len {
                read_more(s, &mut buf, &mut chunk).await;
            }
            buf[head_end..head_end + len].to_vec()
        } else if lower.contains("transfer-encoding: chunked") {
            loop {
                if let Some(b) = dechunk(&buf[head_end..]) {
                    break b;
                }
                read_more(s, &mut buf, &mut chunk).await;
            }
        } else {
            Vec::new()
        };
        RawResponse { status, head, body }
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .unwrap_or_else(|_| panic!("no whole response within {ANSWER_WITHIN:?}"))
}

async fn read_more<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) {
    use tokio::io::AsyncReadExt;
    let n = s.read(chunk).await.expect("reading the response");
    assert!(
        n > 0,
        "the connection closed mid-response: {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A whole chunked body (no trailers), or `None` while it is incomplete.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = find_bytes(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line + 2..];
        if size == 0 {
            return data.starts_with(b"\r\n").then_some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Polls the admin listener at `admin` until sample `name{labels}` is `want` (metrics are
/// recorded when a response body ends, which may be just after the client has read it);
/// panics with the last value seen when `within` passes. Returns the metrics text.
pub async fn wait_for_metric(
    admin: &str,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    within: Duration,
) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, _, body) = send(get(&format!("http://{admin}/metrics"))).await;
        assert_eq!(status, 200);
        let text = String::from_utf8(body.to_vec()).unwrap();
        let got = metric(&text, name, labels);
        if got == Some(want) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{labels:?} is {got:?}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of every sample of `name` whose labels contain all of `labels`.
pub fn sum(m: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let bare = format!("{name} ");
    m.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&bare))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

/// Polls `/metrics` until `done` holds for its text, and returns that text; panics with
/// the last text seen after `within`.
pub async fn wait_until(gw: &TestGateway, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let m = gw.metrics().await;
        if done(&m) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reached after {within:?}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `/metrics` until `sum(name, labels)` is `want`; returns the text.
pub async fn wait_for_sum(
    gw: &TestGateway,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    within: Duration,
) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let m = gw.metrics().await;
        let got = sum(&m, name, labels);
        if got == want {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}{labels:?} sums to {got}, not {want}, after {within:?}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until each of the observing `plugins` has had every exchange the gateway finished
/// (`fedgate_requests_total`, all routes): for suites whose observers are on every route.
/// Returns the metrics text.
pub async fn settle_observers(gw: &TestGateway, plugins: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = gw.metrics().await;
        let finished = sum(&m, "fedgate_requests_total", &[]);
        let behind: Vec<&str> = plugins
            .iter()
            .copied()
            .filter(|p| {
                sum(
                    &m,
                    "fedgate_plugin_observed_exchanges_total",
                    &[("plugin", p)],
                ) != finished
            })
            .collect();
        if behind.is_empty() {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "observers {behind:?} have not had all {finished} exchanges:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
