//! Reading `/metrics`: a sample by name and labels, sums, series, waiting for a value, and
//! Prometheus' own `promtool` check.

use std::collections::HashMap;
use std::time::Duration;

use crate::*;

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

/// Waits until no request is in flight and each of the observing `plugins` has had every
/// exchange the gateway finished (`fedgate_requests_total`, all routes): for suites whose
/// observers are on every route. (A client may read a whole response a moment before the
/// gateway records it; `fedgate_requests_in_flight` falls only once it has.) Returns the
/// metrics text.
pub async fn settle_observers(gw: &TestGateway, plugins: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = gw.metrics().await;
        let finished = sum(&m, "fedgate_requests_total", &[]);
        let in_flight = sum(&m, "fedgate_requests_in_flight", &[]);
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
        if behind.is_empty() && in_flight == 0.0 {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "observers {behind:?} have not had all {finished} exchanges \
             ({in_flight} in flight):\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
