#!/usr/bin/env bash
# Installs what the tests need (libtorch and the Python reference tools, once), builds every crate
# and runs every test with cargo-nextest. Extra arguments go to `cargo nextest run`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest not found; installing it" >&2
  cargo install --locked cargo-nextest
fi
# The integration tests load the plugin libraries from the target folder, so build them all first.
cargo build --workspace
cargo nextest run --workspace --no-fail-fast "$@"
