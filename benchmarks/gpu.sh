#!/usr/bin/env bash
# The greedy, one FisherMask round, BAIT and a features-pool round at the paper's scale on one GPU (about 8 minutes on
# an H200): prints seconds and peak GPU memory per part.
#
#   bash benchmarks/gpu.sh                       # DEVICE=cuda, full sizes
#   DEVICE=cpu bash benchmarks/gpu.sh --greedy-pool 300 --greedy-k 400 ...   # any size flag
#
# Size flags (defaults = the paper's scale): --greedy-pool 6750 --greedy-labeled 500
# --greedy-k 22353 --greedy-d 512 --greedy-n 500 --model resnet18 --round-pool 6750
# --round-labeled 500 --round-n 500 --sparsity 0.002 --bait-pool 1000000 --bait-d 512
# --bait-labeled 1000 --bait-n 100 --features-pool 1000000 --features-d 128 --features-labeled
# 1000 --features-n 100 --features-hidden 256 --features-sparsity 0.08; --only greedy,round,bait,features,features_fishermask selects parts.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
export MLFLOW_DISABLE_TELEMETRY=true RAY_USAGE_STATS_ENABLED=0
echo "gpu.sh: DEVICE=${DEVICE:-cuda}, $(date -u +%FT%TZ), load average $(cut -d' ' -f1 /proc/loadavg)"
exec "${PYTHON:-python}" "$here/bench_gpu.py" --device "${DEVICE:-cuda}" "$@"
