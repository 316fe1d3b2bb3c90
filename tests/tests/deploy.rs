//! What ships in `deploy/` stays valid: every fedgate config passes validation, and the
//! Prometheus rules pass `promtool check rules` and their unit tests.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn files_with_ext(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files_with_ext(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

#[test]
fn shipped_configs_validate() {
    let mut configs = Vec::new();
    files_with_ext(&repo().join("deploy"), "toml", &mut configs);
    assert!(
        configs.len() >= 3,
        "expected the compose, container and Kubernetes configs: {configs:?}"
    );
    for c in configs {
        if let Err(e) = fedgate::config::load(&c) {
            panic!("{} is invalid: {e}", c.display());
        }
    }
    let demo = fedgate::demo::config(
        "127.0.0.1:8080".parse().unwrap(),
        "127.0.0.1:9901".parse().unwrap(),
        "127.0.0.1:3000".parse().unwrap(),
    );
    assert!(demo.is_ok(), "{demo:?}");
}

#[test]
fn prometheus_rules_pass_promtool() {
    let dir = repo().join("deploy/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "alerts.yml", "recording.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool is installed by the test command");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}
