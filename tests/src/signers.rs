//! Independently written HTTP-signature and JWT clients (from PyPI and npm) producing
//! signed requests, and their test data.

use std::path::PathBuf;

use crate::*;

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
