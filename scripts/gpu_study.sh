#!/usr/bin/env bash
# The paper's FashionMNIST Setting 2 at full size with resnet18 (11.2M parameters) on one GPU, as
# many seeds as fit one command of a short lease: the nine strategies of seed 0 at once, then
# seed 1 ... (scripts/gpu_study.py), no Ray or MLflow needed on the machine.
#
#   bash scripts/gpu_study.sh [MINUTES=7] [WORKERS=9]     # writes $OUT/results.jsonl
#
# A trial still running when the lease's command limit ends it leaves its finished rounds in
# results.jsonl (written round by round): set OUT to the folder that comes back from the machine.
#   python scripts/gpu_study.py --report OUT/results.jsonl --out docs/results/gpu_setting2
#
# Needs the four FashionMNIST .gz files in $DATA/FashionMNIST/raw (DATA defaults to .data in the
# repository) and torch, torchvision, numpy, scipy, scikit-learn, pyyaml, tqdm and pydantic; any
# wheels in .whl/ are installed first (for a machine that lacks one of them). SWEEP, STRATEGIES,
# DEVICE and OUT change the sweep file, its strategy list, the device and the output folder.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if compgen -G "$root/.whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$root"/.whl/*.whl
  export PYTHONPATH="/tmp/site"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MLFLOW_DISABLE_TELEMETRY=true RAY_USAGE_STATS_ENABLED=0
python3 -c "import torch, numpy, scipy, sklearn, yaml, tqdm, pydantic, fishermask, torchvision" || {
  echo "gpu_study.sh: a package is missing (above); put its wheel (and its needs') in .whl/" >&2
  exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
all="[fishermask, fishermask_authors, bait, badge, kcenter, entropy, margin, least_confidence, random]"
exec python3 "$root/scripts/gpu_study.py" "${SWEEP:-$root/sweeps/paper_fashion_mnist_setting2.yaml}" \
  --set data.data_dir="${DATA:-$root/.data}" --set execution.device="${DEVICE:-cuda}" \
  --set "sweep.strategy.name=${STRATEGIES:-$all}" \
  --out "${OUT:-$root/gpu-study}" --minutes "${1:-7}" --workers "${2:-9}" "${@:3}"
