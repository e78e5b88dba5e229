#!/usr/bin/env bash
# Installs libtorch (once), builds pretext and its plugins in release mode, and runs the main job:
# an MLP autoencoder pretrained on the 8x8 digits and scored by a linear probe. Extra arguments are
# passed to `pretext run` as overrides, such as `trainer.epochs=20`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
cargo build --release --workspace
exec target/release/pretext run experiments/digits-autoencoder.toml "$@"
