#!/usr/bin/env bash
# Runs fedgate's whole test suite on a fresh machine: installs what the tests need
# (promtool from Debian's prometheus package, the wasm32-wasip2 target), then runs every
# unit and end-to-end test of the workspace.
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

cargo build --workspace --all-targets --locked
cargo test --workspace --locked "$@"
