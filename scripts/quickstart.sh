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
exp_id="$(python -c 'import mlflow; print(mlflow.MlflowClient("sqlite:///mlflow.db").get_experiment_by_name("quickstart").experiment_id)')"
cat <<EOF
report: $ROOT/report/report.html (one file, figures inline; summary.md and PNGs beside it)
MLflow UI (port 5000):  $VENV/bin/mlflow ui --backend-store-uri sqlite:///$ROOT/mlflow.db --port 5000
then open the runs view: http://127.0.0.1:5000/#/experiments/$exp_id/runs?workflowType=machine_learning
  compare strategies: Group by -> tag 'variant' (one row per strategy, mean over seeds), sort by
  aubc/accuracy; the chart view (second icon) then shows accuracy as mean ± band per strategy.
  The parent run 'sweep quickstart' holds report/report.html.
EOF
