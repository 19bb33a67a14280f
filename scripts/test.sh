#!/usr/bin/env bash
# Run the test suite (creates the environment first if needed).  Extra arguments go to pytest.
#   bash scripts/test.sh          everything (what CI runs)
#   bash scripts/test.sh --fast   the unit tests only (no Ray, MLflow server, CLI, sweep or loop)
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then args+=(-m "not integration"); else args+=("$a"); fi
done
python -m pytest ${args[@]+"${args[@]}"}
