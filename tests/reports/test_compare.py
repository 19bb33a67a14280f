"""Two evaluations side by side (scripts/compare_evaluations.py): the tables on hand-made runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fishermask.reports.compare import compare, curves_figure, drops
from fishermask.reports.data import RunData


def _run(strategy, seed, accs):
    steps = np.arange(10, 10 * len(accs) + 1, 10)
    return RunData(run_id=f"{strategy}{seed}", variant=strategy, strategy=strategy, seed=seed,
                   status="FINISHED", context={}, steps=steps,
                   curves={"accuracy": np.array(accs, dtype=float),
                           "balanced_accuracy": np.array(accs, dtype=float)})


def _evaluations():
    # smooth: margin is 0.1 above random at every budget on every seed
    smooth = [_run("random", s, [0.5, 0.6, 0.7 + 0.01 * s]) for s in range(4)]
    smooth += [_run("margin", s, [0.5, 0.7, 0.8 + 0.01 * s]) for s in range(4)]
    # noisy: the same means, but margin drops on seeds 0 and 1 and random on seed 2
    noisy = [_run("random", s, [0.5, 0.6, 0.7 + 0.01 * s + (0.2 if s == 2 else 0)])
             for s in range(4)]
    noisy += [_run("margin", s, [0.5, 0.7, (0.5 if s < 2 else 0.95)]) for s in range(4)]
    return {"recalibrated": smooth, "as trained": noisy}


def test_drops_count_rounds_that_lose_accuracy():
    assert drops(_run("x", 0, [0.5, 0.7, 0.5, 0.6, 0.58]), "accuracy", 0.05) == 1
    assert drops(_run("x", 0, [0.5, 0.7, 0.5, 0.6, 0.5]), "accuracy", 0.05) == 2


def test_compare_tables_show_how_the_verdict_changes(tmp_path):
    text = "\n".join(compare(_evaluations()))
    rows = [line for line in text.splitlines() if line.startswith("| margin | random |")]
    assert len(rows) == 1
    cells = rows[0].split(" | ")
    # recalibrated: +0.075 AUBC on every seed (0.1 higher from 20 labels on) -> higher, 4/4
    assert cells[2].startswith("+0.0750 ± 0.0000 (n=4)") and cells[3] == "4/4"
    assert cells[4] == "higher"
    # as trained: seeds 0/1 lose, the interval contains zero
    assert cells[6] == "2/4" and cells[7].startswith("not significant")
    each = text.split("### The comparisons")[0]
    assert "| margin | as trained | 4 |" in each and "| margin | recalibrated | 4 |" in each
    noisy_margin = next(line for line in each.splitlines()
                        if line.startswith("| margin | as trained |"))
    assert noisy_margin.endswith("| 0.5 |")  # two of four runs drop once
    assert curves_figure(_evaluations(), tmp_path / "c.png").stat().st_size > 5000


def test_compare_only_uses_strategies_both_evaluations_have():
    ev = _evaluations()
    ev["as trained"] += [_run("entropy", s, [0.5, 0.6, 0.7]) for s in range(4)]
    text = "\n".join(compare(ev))
    assert "entropy" not in text
    with pytest.raises(ValueError, match="no strategy has finished runs in every evaluation"):
        compare({"a": [], "b": ev["as trained"]})


def test_one_seed_has_no_spread():
    one = {"a": [_run("margin", 0, [0.5, 0.7])], "b": [_run("margin", 0, [0.5, 0.6])]}
    row = next(line for line in compare(one) if line.startswith("| margin | a | 1 |"))
    assert row.split(" | ")[5] == "–"  # not a spread of 0.000


@pytest.mark.integration
def test_the_script_refuses_repeated_names_and_a_missing_store(tmp_path):
    script = Path(__file__).resolve().parents[2] / "scripts" / "compare_evaluations.py"
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}

    def call(*sweeps):
        args = [sys.executable, str(script), "--out", "o"]
        for s in sweeps:
            args += ["--sweep", s]
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)

    same = call("recal=x", "recal=y")
    assert same.returncode != 0 and "each --sweep needs its own NAME" in same.stderr
    missing = call("a=nope", "b=nope2")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "error: no MLflow store at sqlite:///" in missing.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "o").exists()
