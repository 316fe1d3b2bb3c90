//! The real binary under signals and load: graceful drain on SIGTERM and SIGINT with a
//! request in flight, a drain whose grace period runs out, reload on SIGHUP, a 1 GiB upload
//! streamed with bounded memory, the JSON access log, and `fedgate demo`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
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
    start_edited(upstream, |t| t).await.0
}

/// Lines a process writes to stderr, collected as they come.
type Lines = Arc<Mutex<Vec<String>>>;

/// Collects `child`'s stderr lines on a thread of their own.
fn capture_stderr(child: &mut Child) -> Lines {
    use std::io::BufRead;
    let lines: Lines = Arc::default();
    let stderr = child.stderr.take().expect("stderr is piped");
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Starts the binary with the standard config passed through `edit`, its stderr captured.
async fn start_edited(
    upstream: &TestUpstream,
    edit: impl FnOnce(String) -> String,
) -> (Running, Lines) {
    let (public, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fedgate.toml");
    std::fs::write(&config, edit(config_text(public, admin, upstream, "/"))).unwrap();
    let mut child = Command::new(fedgate_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = capture_stderr(&mut child);
    let proc = Proc(child);
    assert!(
        wait_for_status(
            &format!("http://127.0.0.1:{admin}/ready"),
            200,
            Duration::from_secs(20)
        )
        .await,
        "fedgate did not become ready"
    );
    (
        Running {
            proc,
            public,
            admin,
            _dir: dir,
            config,
        },
        lines,
    )
}

/// Waits for the process to exit, at most `within`; its exit code.
async fn exit_code(proc: &mut Proc, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = proc.0.try_wait().unwrap() {
            return s.code();
        }
        assert!(
            Instant::now() < deadline,
            "fedgate did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_in_flight_requests() {
    let up = TestUpstream::start("a").await;
    let mut g = start(&up).await;
    // Long enough that /ready is seen 503 before the drain ends, even on a loaded machine.
    let slow = tokio::spawn(send(get(&format!(
        "http://127.0.0.1:{}/slow/3000",
        g.public
    ))));
    // The request is in flight once the upstream has it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while up.hits() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    g.proc.signal(libc::SIGINT);
    assert!(
        wait_for_status(
            &format!("http://127.0.0.1:{}/ready", g.admin),
            503,
            Duration::from_secs(5)
        )
        .await,
        "/ready did not turn 503 during the drain"
    );
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"slow done");
    assert_eq!(
        exit_code(&mut g.proc, Duration::from_secs(20)).await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_past_the_grace_period_cuts_requests_and_exits_3() {
    let up = TestUpstream::start("a").await;
    let (mut g, lines) = start_edited(&up, |t| {
        t.replace("shutdown_grace = \"5s\"", "shutdown_grace = \"1s\"")
    })
    .await;
    let url = format!("http://127.0.0.1:{}/slow/60000", g.public);
    let stuck = tokio::spawn(async move { client().request(get(&url)).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    while up.hits() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signalled = Instant::now();
    g.proc.signal(libc::SIGTERM);
    // Exit code 3: the grace period ended with a connection still open.
    assert_eq!(
        exit_code(&mut g.proc, Duration::from_secs(30)).await,
        Some(3)
    );
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "exited after {took:?}, before the 1 s grace period"
    );
    // The request that outlived the grace period got no answer.
    let cut = tokio::time::timeout(Duration::from_secs(20), stuck)
        .await
        .expect("the cut request still waits")
        .unwrap();
    assert!(cut.is_err(), "the cut request was answered: {cut:?}");
    // The reader thread may still be taking the last lines out of the pipe.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = lines.lock().unwrap().join("\n");
        if log.contains("grace period ended with connections still open") {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_one_json_line_per_request_with_every_field() {
    use tokio::io::AsyncWriteExt;
    let up = TestUpstream::start("a").await;
    let (g, lines) = start_edited(&up, |t| {
        t.replace(
            "access_log = false",
            "access_log = true\nlog_format = \"json\"\nlog_level = \"info\"",
        )
    })
    .await;

    // A raw socket, so the client address the log must name is known.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", g.public))
        .await
        .unwrap();
    let client = s.local_addr().unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sent = Instant::now();
    s.write_all(
        format!(
            "POST /hash?secret=1 HTTP/1.1\r\nHost: log.example\r\nx-request-id: req-log-0001\r\n\
             traceparent: 00-{trace}-00f067aa0ba902b7-01\r\ncontent-length: 11\r\n\r\nhello world"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200);
    let want_body = format!(
        "11 {}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"hello world"))
    );
    assert_eq!(r.body, want_body.as_bytes());
    drop(s);

    // The line is written when the response body ends: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let found = lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "fedgate::access")
            .collect::<Vec<_>>();
        if !found.is_empty() {
            assert_eq!(found.len(), 1, "one access line per request: {found:?}");
            break found[0].clone();
        }
        // The line is written when the body ends, just after the client has read it: its
        // duration is bounded by the time until the line is seen.
        assert!(Instant::now() < deadline, "no access-log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let upper_ms = sent.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["route"], "main", "{line}");
    assert_eq!(line["upstream"], "app", "{line}");
    assert_eq!(line["endpoint"], up.url(), "{line}");
    assert_eq!(line["method"], "POST", "{line}");
    // The path without its query (which may carry secrets).
    assert_eq!(line["path"], "/hash", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["bytes_in"], 11, "{line}");
    assert_eq!(line["bytes_out"], want_body.len(), "{line}");
    assert_eq!(line["complete"], true, "{line}");
    assert_eq!(line["error"], "-", "{line}");
    assert_eq!(line["request_id"], "req-log-0001", "{line}");
    assert_eq!(line["trace_id"], trace, "{line}");
    assert_eq!(line["client"], client.to_string(), "{line}");
    let duration = line["duration_ms"]
        .as_f64()
        .expect("duration_ms is a number");
    assert!(
        duration > 0.0 && duration <= upper_ms,
        "duration_ms {duration} outside (0, {upper_ms}]"
    );
    assert!(line["timestamp"].is_string(), "{line}");

    // Every line the process wrote is JSON, the start-up line included.
    let all = lines.lock().unwrap().clone();
    for l in &all {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not a JSON line: {l}"
        );
    }
    assert!(all.iter().any(|l| l.contains("fedgate started")), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_a_federation_server_and_counts_it() {
    let (public, admin) = (free_port(), free_port());
    let mut child = Command::new(fedgate_bin())
        .args(["demo", "--listen"])
        .arg(format!("127.0.0.1:{public}"))
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = capture_stderr(&mut child);
    let proc = Proc(child);
    assert!(
        wait_for_status(
            &format!("http://127.0.0.1:{admin}/ready"),
            200,
            Duration::from_secs(20)
        )
        .await,
        "the demo did not become ready"
    );
    let base = format!("http://127.0.0.1:{public}");
    let json = |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).unwrap();

    let (s, h, b) = send(get(&format!("{base}/.well-known/nodeinfo"))).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(json(&b)["links"][0]["href"], format!("{base}/nodeinfo/2.1"));

    let (s, _, b) = send(get(&format!("{base}/nodeinfo/2.1"))).await;
    assert_eq!(s, 200);
    let ni = json(&b);
    assert_eq!(ni["software"]["name"], "fedgate-demo");
    assert_eq!(ni["protocols"][0], "activitypub");

    let host = format!("127.0.0.1:{public}");
    let (s, h, b) = send(get(&format!(
        "{base}/.well-known/webfinger?resource=acct:alice@{host}"
    )))
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/jrd+json");
    let wf = json(&b);
    assert_eq!(wf["subject"], format!("acct:alice@{host}"));
    assert_eq!(wf["links"][0]["href"], format!("{base}/users/alice"));

    let (s, h, b) = send(get(&format!("{base}/users/alice"))).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/activity+json");
    let actor = json(&b);
    assert_eq!(actor["id"], format!("{base}/users/alice"));
    assert_eq!(actor["type"], "Person");
    assert_eq!(actor["inbox"], format!("{base}/users/alice/inbox"));

    let activity = r#"{"@context":"https://www.w3.org/ns/activitystreams","type":"Follow","actor":"https://remote.example/users/bob","object":"http://demo/users/alice"}"#;
    let inbox = |path: &str| {
        request(
            "POST",
            &format!("{base}{path}"),
            &[("content-type".into(), "application/activity+json".into())],
            activity,
        )
    };
    assert_eq!(send(inbox("/users/alice/inbox")).await.0, 202);
    assert_eq!(send(inbox("/inbox")).await.0, 202);

    let (s, _, b) = send(get(&format!("{base}/health"))).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["status"], "ok");
    let (s, _, b) = send(get(&format!("http://127.0.0.1:{admin}/health"))).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["status"], "healthy");

    let counted = |route: &'static str, method: &'static str, status: &'static str| {
        [
            ("route", route),
            ("upstream", "demo"),
            ("method", method),
            ("status", status),
        ]
    };
    let admin_addr = format!("127.0.0.1:{admin}");
    let within = Duration::from_secs(10);
    wait_for_metric(
        &admin_addr,
        "fedgate_requests_total",
        &counted("well-known", "GET", "200"),
        2.0,
        within,
    )
    .await;
    for (route, method, status) in [
        ("nodeinfo", "GET", "200"),
        ("users", "GET", "200"),
        ("users", "POST", "202"),
        ("inbox", "POST", "202"),
        ("health", "GET", "200"),
    ] {
        wait_for_metric(
            &admin_addr,
            "fedgate_requests_total",
            &counted(route, method, status),
            1.0,
            within,
        )
        .await;
    }

    let mut proc = proc;
    proc.signal(libc::SIGTERM);
    assert_eq!(exit_code(&mut proc, Duration::from_secs(20)).await, Some(0));
    let log = lines.lock().unwrap().join("\n");
    assert!(log.contains("demo: try"), "{log}");
}
