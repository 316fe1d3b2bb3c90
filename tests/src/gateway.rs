//! The gateway side: [`TestGateway`] started in-process from a real config file, the real
//! binary ([`fedgate_bin`]), config snippets, plugins built from the repository, health.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::*;

/// A gateway started in-process from a real config file written to a temp directory.
#[derive(Debug)]
pub struct TestGateway {
    /// The running gateway; taken by [`TestGateway::shutdown`].
    pub gateway: Option<fedgate::Gateway>,
    /// Where the first listener is bound.
    pub addr: SocketAddr,
    /// Where the admin server is bound.
    pub admin: SocketAddr,
    /// The temp directory holding the config file, where tests put the other files a
    /// config names; removed when the `TestGateway` is dropped.
    pub dir: tempfile::TempDir,
    /// The config file the gateway was started from and reloads.
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

    /// The URL of `path` on the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The running gateway. Panics after [`TestGateway::shutdown`].
    pub fn gw(&self) -> &fedgate::Gateway {
        self.gateway.as_ref().unwrap()
    }

    /// Writes new config text (with `HEAD`) to the file and reloads it.
    pub async fn rewrite(&self, body: &str) -> Result<(), fedgate::gateway::ReloadError> {
        std::fs::write(&self.config_path, format!("{HEAD}\n{body}")).unwrap();
        self.gw().reload().await
    }

    /// The admin server's `/metrics` text; asserts it is answered 200.
    pub async fn metrics(&self) -> String {
        let (status, _, body) = send(get(&format!("http://{}/metrics", self.admin))).await;
        assert_eq!(status, 200);
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Drains the gateway as SIGTERM does; `true` when every connection finished within
    /// the grace period.
    pub async fn shutdown(mut self) -> bool {
        self.gateway.take().unwrap().shutdown().await
    }
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
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where cargo puts build output: `CARGO_TARGET_DIR`, else `target/` in the repository.
pub(crate) fn target_dir() -> PathBuf {
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
pub(crate) fn prebuilt() -> bool {
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
