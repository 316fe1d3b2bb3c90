#!/usr/bin/env bash
# Runs fedgate's whole test suite on a fresh machine: installs what the tests need
# (promtool from Debian's prometheus package, the wasm32-wasip2 target, the HTTP-signature
# clients from PyPI), builds the plugins,
# then runs every unit and end-to-end test: the plugins', the SDK's and the gateway's.
# Arguments are passed to `cargo nextest run` (a test name filter, say).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The independent HTTP-signature clients the end-to-end tests sign requests with: PyPI
# packages (tests/signers/requirements.txt) in a virtual environment the tests find in the
# target directory ...
pyenv="${CARGO_TARGET_DIR:-target}/pyenv"
if [ ! -x "$pyenv/bin/python" ]; then
  python3 -m venv "$pyenv" 2>/dev/null || {
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$pyenv"
  }
fi
"$pyenv/bin/pip" install -q --disable-pip-version-check -r tests/signers/requirements.txt
# ... and from npm (tests/signers/package.json, locked), in the target directory too.
npmdir="${CARGO_TARGET_DIR:-target}/npm"
mkdir -p "$npmdir"
cp tests/signers/package.json tests/signers/package-lock.json "$npmdir/"
(cd "$npmdir" && npm ci --no-audit --no-fund --loglevel=error)

# Plugins are built for wasm32-wasip2; rustup here does not install targets on its own.
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

# The plugins (plugins/) and the test fixtures (tests/plugins/) are workspaces of their own,
# built for wasm32-wasip2 into the shared target directory, where the end-to-end tests load
# them from. Their own unit tests run natively, against the SDK's in-memory host.
for ws in plugins tests/plugins; do
  cargo build --locked --release --target wasm32-wasip2 --manifest-path "$ws/Cargo.toml" --target-dir target
  cargo test --locked --manifest-path "$ws/Cargo.toml" --target-dir target
done

# The workspace's tests run under cargo-nextest, each test in a process of its own with a
# time limit (.config/nextest.toml), so one hung test fails alone and names itself.
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
cargo build --workspace --all-targets --locked
# The benches reach the gateway's internal modules through its `internals` feature: built
# here so that they keep compiling.
cargo build --locked -p fedgate --benches --features internals
# Everything the tests run is built now: the tests use it as it is rather than each calling
# cargo, whose builds could replace a test binary while another test starts it.
FEDGATE_TESTS_PREBUILT=1 cargo nextest run --workspace --locked "$@"
# nextest does not run doctests: the SDK's examples run here (the gateway has none).
cargo test --locked -p fedgate-sdk --doc
# A short run of every fuzz target (fuzz/, libFuzzer through cargo-fuzz, installed if
# missing), after the inputs that once broke a bound (fuzz/regressions/); only for the whole
# suite, not for a filtered run.
if [ $# -eq 0 ]; then
  bash scripts/fuzz.sh smoke
fi
