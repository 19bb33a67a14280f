#!/usr/bin/env bash
# Set up (if needed) and run the quickstart: sweeps/quickstart.yaml, logged to MLflow.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"
fishermask run sweeps/quickstart.yaml "$@"
