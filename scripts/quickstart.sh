#!/usr/bin/env bash
# Set up (if needed), run the quickstart sweep (sweeps/quickstart.yaml: every strategy x 3 seeds
# on digits, logged to MLflow) and write its report.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"
# A second run continues (or simply re-reports) the sweep already here instead of refusing it.
resume=()
if [ -f .fishermask/sweeps/quickstart/fishermask_sweep.json ]; then resume=(--resume); fi
fishermask sweep sweeps/quickstart.yaml "${resume[@]}" "$@"
fishermask report --experiment quickstart --out report
echo "report: $ROOT/report/summary.md (PNGs beside it); MLflow UI: $VENV/bin/mlflow ui --backend-store-uri sqlite:///$ROOT/mlflow.db"
