#!/usr/bin/env bash
# Runs fedgate's whole test suite on a fresh machine: installs what the tests need
# (promtool from Debian's prometheus package, the wasm32-wasip2 target), builds the plugins,
# then runs every unit and end-to-end test: the plugins', the SDK's and the gateway's.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Plugins are built for wasm32-wasip2; rustup here does not install targets on its own.
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

# The plugins (plugins/) and the test fixtures (tests/plugins/) are workspaces of their own,
# built for wasm32-wasip2 into the shared target directory, where the end-to-end tests load
# them from. Their own unit tests run natively, against the SDK's in-memory host.
for ws in plugins tests/plugins; do
  cargo build --locked --release --target wasm32-wasip2 --manifest-path "$ws/Cargo.toml" --target-dir target
  cargo test --locked --manifest-path "$ws/Cargo.toml" --target-dir target
done

cargo build --workspace --all-targets --locked
cargo test --workspace --locked "$@"
