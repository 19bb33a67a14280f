#!/usr/bin/env bash
# The CPU studies of docs/results.md that take longer than one sitting, one after another, each
# resumable (scripts/gpu_study.py --resume): the sparsity ablation, then 15 seeds of eight variants
# (resnet18_narrow, FashionMNIST Setting 1 low).
#
#   bash scripts/long_studies.sh DATA [OUT=studies]      # DATA holds FashionMNIST/raw
#   bash scripts/long_studies.sh --save [OUT=studies]    # keep the finished trials in the repository
#                                                        # (the data folder written as DIR)
#
# A study's finished trials are kept, between sittings, in docs/results/in_progress/NAME/
# results.jsonl (--save copies them there; commit them).  A run starts from that file when OUT
# has none yet, so a fresh clone goes on where the last sitting stopped; a trial a sitting cut
# short starts again from round 0 (its checkpoints stay in OUT, which a new machine lacks).
# When a study has all its trials, report it (docs/results.md says how) and remove its
# in_progress folder.  WORKERS (default 2) trials run at a time, one torch thread each.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# NAME:SWEEP pairs (a file in sweeps/ without .yaml, or a path); KEPT: where sittings keep them
studies="${STUDIES:-sparsity:fashion_mnist_resnet_setting1_low_sparsity seeds15:fashion_mnist_resnet_setting1_low_15seeds}"
kept="${KEPT:-$root/docs/results/in_progress}"
if [ "${1:-}" = "--save" ]; then
  out="${2:-$root/studies}"
  for pair in $studies; do
    name=${pair%%:*}
    if [ -f "$out/$name/results.jsonl" ]; then
      mkdir -p "$kept/$name"
      # the data folder is this machine's: kept as DIR (a run gives its own with --set)
      python3 - "$out/$name/results.jsonl" "$kept/$name/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for row in rows:
    if isinstance(row.get("config", {}).get("data"), dict) and "data_dir" in row["config"]["data"]:
        row["config"]["data"]["data_dir"] = "DIR"
    row["overrides"] = ["data.data_dir=DIR" if o.startswith("data.data_dir=") else o
                        for o in row.get("overrides", [])] if "overrides" in row else None
    if row["overrides"] is None:
        del row["overrides"]
    if "sweeps/" in row.get("sweep", ""):  # the sweep file, from the repository's root
        row["sweep"] = row["sweep"][row["sweep"].rfind("sweeps/"):]
with open(sys.argv[2], "w") as f:
    f.writelines(json.dumps(row) + "\n" for row in rows)
PY
      echo "kept $kept/$name/results.jsonl ($(grep -c '"event": "finished"' "$kept/$name/results.jsonl") finished trials)"
    fi
  done
  exit 0
fi
data="${1:?usage: long_studies.sh DATA [OUT] | --save [OUT]}"
out="${2:-$root/studies}"
source "$root/scripts/env.sh"
for pair in $studies; do
  name=${pair%%:*}; sweep=${pair#*:}
  case "$sweep" in */*) ;; *) sweep="$root/sweeps/$sweep.yaml" ;; esac
  if [ ! -f "$out/$name/results.jsonl" ] && [ -f "$kept/$name/results.jsonl" ]; then
    mkdir -p "$out/$name"
    cp "$kept/$name/results.jsonl" "$out/$name/results.jsonl"
  fi
  python "$root/scripts/gpu_study.py" "$sweep" --set data.data_dir="$data" \
    --set execution.device=cpu --out "$out/$name" --minutes 100000 \
    --workers "${WORKERS:-2}" --resume
done
