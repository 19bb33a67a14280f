"""benchmarks/gpu.sh runs every path it takes (greedy, FisherMask round, BAIT, a features pool
with BAIT and with FisherMask)
with DEVICE=cpu at tiny sizes; unknown parts exit 2 with one message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--greedy-pool", "120", "--greedy-labeled", "10", "--greedy-k", "70", "--greedy-d", "4",
        "--greedy-n", "6", "--model", "cnn_small", "--image-size", "8", "--round-pool", "60",
        "--round-labeled", "6", "--round-n", "4", "--mask-samples", "16", "--sparsity", "0.02",
        "--batch-size", "32", "--bait-pool", "400", "--bait-d", "8", "--bait-labeled", "10",
        "--bait-n", "4", "--bait-batch", "128", "--features-pool", "300", "--features-d", "6",
        "--features-labeled", "20", "--features-n", "5", "--features-hidden", "8",
        "--features-sparsity", "0.7"]


def run_gpu_sh(*args, timeout=120):
    env = dict(os.environ, DEVICE="cpu", PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_gpu_sh_runs_every_part_on_cpu():
    proc = run_gpu_sh(*TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "DEVICE=cpu" in out and "device: cpu" in out
    for part, picks in (("greedy", 6), ("round", 4), ("bait", 4), ("features", 5),
                        ("features_fishermask", 5)):
        line = next(x for x in out.splitlines() if x.startswith(f"| {part} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0, line  # seconds (3 digits), peak GB
        assert int(cells[3]) == picks, line
    assert "k=70" in out  # the greedy's structured embeddings: 10·4 factored + 30 dense


def test_gpu_sh_unknown_part_exits_2():
    proc = run_gpu_sh("--only", "greedy,nope", "--greedy-pool", "50", "--greedy-k", "30",
                      "--greedy-d", "2", "--greedy-n", "2", "--greedy-labeled", "4")
    assert proc.returncode == 2
    assert "unknown part 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_greedy_runs_and_its_methods_agree():
    """The README's greedy table comes from this script: a tiny custom case runs every method,
    and the baselines' picks agree with the engine's."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_greedy.py"),
                           "--case", "custom", "--U", "150", "--L", "10", "--C", "3", "--k", "40",
                           "--n", "5", "--threads", "1", "--min-seconds", "0.5", "--repeat", "2"],
                          env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 1 |")]
    methods = [r.split("|")[2].strip() for r in rows]
    assert [m.split(" (")[0] for m in methods] == ["engine", "public", "recompute"], proc.stdout
    assert methods[0] in ("engine (1 runs)", "engine (2 runs)")  # repeated for 0.5 s, at most 2
    for r in rows[1:]:
        assert "yes" in r.split("|")[12], r  # picks agree
