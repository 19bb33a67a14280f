#!/usr/bin/env bash
# Screenshots of a sweep in the MLflow UI (the README's pictures): the runs table grouped by
# strategy with the AUBC column, the grouped accuracy chart, and the parent's HTML report.
# Not run by the tests.  Needs Debian's chromium (apt-get install chromium) and playwright-core
# (npm install playwright-core in some folder; pass that folder's node_modules as NODE_PATH).
#
#   NODE_PATH=/path/to/node_modules scripts/mlflow_screenshots.sh sqlite:///mlflow.db quickstart shots/
#
# A sqlite (or file) store is served by `mlflow ui` on 127.0.0.1:5000 for the duration (the
# port the report's summary.md links its figures to); an http:// URI is used as it is.
set -euo pipefail
uri="${1:?tracking URI}"; experiment="${2:?experiment}"; out="${3:?output folder}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$out"
export MLFLOW_DISABLE_TELEMETRY=true
ui="$uri"; pid=""
if [[ "$uri" != http://* && "$uri" != https://* ]]; then
  ui="http://127.0.0.1:5000"
  command -v mlflow > /dev/null || { echo "mlflow not found: source .venv/bin/activate first" >&2; exit 2; }
  setsid mlflow ui --backend-store-uri "$uri" --host 127.0.0.1 --port 5000 --workers 1 \
    > "$out/mlflow-ui.log" 2>&1 &
  pid=$!
  trap 'kill -- -"$pid" 2>/dev/null || true' EXIT
  for _ in $(seq 120); do curl -sf "$ui/health" > /dev/null && break; sleep 1; done
  curl -sf "$ui/health" > /dev/null || { echo "mlflow ui did not start: $out/mlflow-ui.log" >&2; exit 1; }
fi
node "$here/mlflow_screenshots.cjs" "$ui" "$experiment" "$out"
