//! The real binary under signals and load: graceful drain on SIGTERM with a request in
//! flight, reload on SIGHUP, and a 1 GiB upload streamed with bounded memory.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedgate_tests::*;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.0.id()).unwrap();
        assert_eq!(unsafe_kill(pid, sig), 0);
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32, sig: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) }
}

struct Running {
    proc: Proc,
    public: u16,
    admin: u16,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn config_text(public: u16, admin: u16, upstream: &TestUpstream, route_prefix: &str) -> String {
    format!(
        r#"[server]
workers = 1
shutdown_grace = "5s"
access_log = false
[admin]
address = "127.0.0.1:{admin}"
[reload]
watch = false
[[listeners]]
name = "public"
address = "127.0.0.1:{public}"
[upstreams.app]
endpoints = ["{}"]
[[routes]]
name = "main"
path_prefix = "{route_prefix}"
upstream = "app"
"#,
        upstream.url()
    )
}

async fn start(upstream: &TestUpstream) -> Running {
    let (public, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fedgate.toml");
    std::fs::write(&config, config_text(public, admin, upstream, "/")).unwrap();
    let proc = Proc(
        Command::new(fedgate_bin())
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for_status(
            &format!("http://127.0.0.1:{admin}/ready"),
            200,
            Duration::from_secs(20)
        )
        .await,
        "fedgate did not become ready"
    );
    Running {
        proc,
        public,
        admin,
        _dir: dir,
        config,
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let up = TestUpstream::start("a").await;
    let mut g = start(&up).await;
    let slow = tokio::spawn(send(get(&format!(
        "http://127.0.0.1:{}/slow/1500",
        g.public
    ))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    g.proc.signal(libc::SIGTERM);

    // /ready turns 503 while the slow request is still running.
    assert!(
        wait_for_status(
            &format!("http://127.0.0.1:{}/ready", g.admin),
            503,
            Duration::from_secs(1)
        )
        .await,
        "/ready did not turn 503 during the drain"
    );
    // The listener no longer accepts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", g.public))
            .await
            .is_err(),
        "new connections are still accepted while draining"
    );
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"slow done");

    let deadline = Instant::now() + Duration::from_secs(6);
    let code = loop {
        if let Some(s) = g.proc.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            Instant::now() < deadline,
            "fedgate did not exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_keeps_the_running_config() {
    let up = TestUpstream::start("a").await;
    let g = start(&up).await;
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", g.public);
    assert_eq!(send(get(&url("/x"))).await.0, 200);

    write(&g.config, &config_text(g.public, g.admin, &up, "/only/"));
    g.proc.signal(libc::SIGHUP);
    assert!(
        wait_for_status(&url("/x"), 404, Duration::from_secs(5)).await,
        "SIGHUP did not apply the new routes"
    );
    assert_eq!(send(get(&url("/only/x"))).await.0, 200);

    write(&g.config, "[[routes]]\nupstream = \"ghost\"\n");
    g.proc.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        send(get(&url("/only/x"))).await.0,
        200,
        "a bad file replaced the running config"
    );
    let (_, _, m) = send(get(&format!("http://127.0.0.1:{}/metrics", g.admin))).await;
    let m = String::from_utf8(m.to_vec()).unwrap();
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "fedgate_config_reloads_total", &[("result", "error")]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1gib_upload_streams_with_bounded_memory() {
    let up = TestUpstream::start("a").await;
    let g = start(&up).await;
    // Warm the pools and allocator first so the baseline is the steady state.
    for _ in 0..20 {
        send(post(
            &format!("http://127.0.0.1:{}/hash", g.public),
            vec![1u8; 256 * 1024],
        ))
        .await;
    }
    let baseline = g.proc.rss_kib();
    const SIZE: u64 = 1 << 30;
    let req = http::Request::post(format!("http://127.0.0.1:{}/hash", g.public))
        .body(pattern_stream(SIZE))
        .unwrap();
    let started = Instant::now();
    let upload = tokio::spawn(send(req));
    let mut peak = baseline;
    while !upload.is_finished() {
        peak = peak.max(g.proc.rss_kib());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, body) = upload.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{SIZE} {}", pattern_sha256(SIZE))
    );
    let growth_mib = (peak.saturating_sub(baseline)) as f64 / 1024.0;
    eprintln!(
        "1 GiB through the proxy in {:.1}s; gateway RSS baseline {} KiB, peak {} KiB (+{growth_mib:.1} MiB)",
        started.elapsed().as_secs_f64(),
        baseline,
        peak
    );
    assert!(
        growth_mib < 8.0,
        "RSS grew by {growth_mib:.1} MiB while streaming 1 GiB"
    );
}
