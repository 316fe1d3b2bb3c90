//! A real Prometheus server scrapes the real `/metrics` and sees the gateway's series.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fedgate_tests::*;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query(prom: &str, q: &str) -> serde_json::Value {
    let url = format!("{prom}/api/v1/query?query={}", urlencode(q));
    let (status, _, body) = send(get(&url)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_admin_endpoint() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&format!(
        "{}\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    ))
    .await;
    for _ in 0..7 {
        assert_eq!(send(get(&gw.url("/x"))).await.0, 200);
    }

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: fedgate\n    static_configs:\n      - targets: ['{}']\n",
            gw.admin
        ),
    )
    .unwrap();
    let port = free_port();
    let prom = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed by the test command (Debian package prometheus)"),
    );
    let base = format!("http://127.0.0.1:{port}");
    assert!(wait_for_status(&format!("{base}/-/ready"), 200, Duration::from_secs(30)).await);

    let mut last = serde_json::Value::Null;
    for _ in 0..60 {
        let v = query(
            &base,
            "sum(fedgate_requests_total{job=\"fedgate\",route=\"all\",status=\"200\"})",
        )
        .await;
        let value = v["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string);
        if value.as_deref() == Some("7") {
            let upv = query(&base, "up{job=\"fedgate\"}").await;
            assert_eq!(upv["data"]["result"][0]["value"][1], "1");
            let info = query(&base, "fedgate_build_info").await;
            assert_eq!(
                info["data"]["result"][0]["metric"]["version"],
                env!("CARGO_PKG_VERSION")
            );
            drop(prom);
            return;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Prometheus never saw the 7 requests; last answer: {last}");
}
