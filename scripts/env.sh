#!/usr/bin/env bash
# Create (if needed) the project's virtual environment in .venv and install fishermask into it.
# Sourced by quickstart.sh and test.sh.  The dependency caps in pyproject.toml pick the CPU torch
# wheel on CPU machines that provide one and PyPI's normal CUDA builds on GPU machines.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${FISHERMASK_VENV:-$ROOT/.venv}"
export MLFLOW_DISABLE_TELEMETRY=true RAY_USAGE_STATS_ENABLED=0
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.fishermask-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "installing fishermask and its dependencies (first time: a minute or two)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$VENV/bin/python" -c "import fishermask, torch, torchvision, ray, mlflow" 
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
