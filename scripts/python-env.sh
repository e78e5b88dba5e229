#!/usr/bin/env bash
# Creates (once) the Python environment that provides libtorch and the reference tools.
#
# The environment lives outside the clone, in $PRETEXT_CACHE_DIR (default ~/.cache/pretext), so a
# fresh clone or a CI run reuses the multi-gigabyte torch download. Running it again is cheap: each
# package is installed only when its pinned version is missing. Prints the venv path on stdout.
set -euo pipefail

TORCH_VERSION=2.11.0
cache_dir=${PRETEXT_CACHE_DIR:-$HOME/.cache/pretext}
venv="$cache_dir/venv-torch-$TORCH_VERSION"
python=${PYTHON:-python3}

# Pinned Python packages; torch must match the tch crate's expected libtorch. mlflow provides the
# tracking server that the MLflow tests start and the Python client that the tracking bench compares.
packages=(
  "torch==$TORCH_VERSION"
  "numpy==2.3.5"
  "scikit-learn==1.7.2"
  "safetensors==0.6.2"
  "mlflow==3.17.2"
)

mkdir -p "$cache_dir"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating Python environment in $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
fi

missing=()
for spec in "${packages[@]}"; do
  name=${spec%%==*}
  want=${spec##*==}
  have=$("$venv/bin/python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' | sed "s/+.*//" || true)
  if [ "$have" != "$want" ]; then
    missing+=("$spec")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} into $venv (torch is several GB the first time)" >&2
  "$venv/bin/python" -m pip install --quiet --progress-bar off "${missing[@]}" >&2
fi

echo "$venv"
