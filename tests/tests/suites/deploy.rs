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

/// The plugin guide's configuration (its section 4) is a whole, valid configuration, as
/// the guide says: listener, admin, upstream, plugin and routes.
#[test]
fn the_plugin_guides_configuration_is_complete_and_valid() {
    let guide = std::fs::read_to_string(repo().join("docs/plugin-guide.md")).unwrap();
    let section = guide
        .split("## 4. Configure the gateway")
        .nth(1)
        .expect("the guide has its section 4");
    let toml = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("section 4 has a TOML block");
    let config = fedgate::config::from_str(toml, std::path::Path::new("/etc/fedgate"))
        .unwrap_or_else(|e| panic!("the guide's configuration is invalid: {e}\n{toml}"));
    assert_eq!(config.listeners.len(), 1);
    assert!(config.plugins.contains_key("my-plugin"));
    assert_eq!(
        config.plugins["my-plugin"].path,
        std::path::Path::new("/etc/fedgate/plugins/my_plugin.wasm")
    );
}

/// `fedgate demo-upstream` answers `/status/NNN` with that status (200 to 599), the way
/// the guide produces upstream errors on demand.
#[tokio::test]
async fn the_demo_upstream_answers_any_status_on_demand() {
    let addr = fedgate::demo::spawn_upstream("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for (path, want) in [
        ("/status/503", 503),
        ("/status/202", 202),
        ("/status/99", 400),
        ("/status/x", 400),
        ("/health", 200),
    ] {
        let (status, _, _) =
            fedgate_tests::send(fedgate_tests::get(&format!("http://{addr}{path}"))).await;
        assert_eq!(status.as_u16(), want, "{path}");
    }
}
