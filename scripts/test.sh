#!/usr/bin/env bash
# Run the test suite (creates the environment first if needed).  Extra arguments go to pytest.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"
python -m pytest "$@"
