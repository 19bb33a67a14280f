"""scripts/gpu_study.sh / gpu_study.py: a sweep's grid in parallel processes within a time budget,
without Ray or MLflow (a GPU machine has neither), then the report from its results file; run here
on the CPU with a tiny sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_tiny_sweep

pytestmark = pytest.mark.integration  # real trials in worker processes
ROOT = Path(__file__).resolve().parents[1]


def _no_ray_no_mlflow(folder: Path) -> str:
    """A folder whose ``ray`` and ``mlflow`` packages fail on import, put first on the path."""
    for name in ("ray", "mlflow"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not on the GPU machine')\n")
    return str(folder)


def test_gpu_study_runs_the_grid_without_ray_or_mlflow_then_reports(tmp_path):
    sweep = write_tiny_sweep(tmp_path)
    env = dict(os.environ, SWEEP=str(sweep), STRATEGIES="[fishermask, random]", DEVICE="cpu",
               OUT=str(tmp_path / "out"), PYTHONPATH=_no_ray_no_mlflow(tmp_path / "blocked"),
               OMP_NUM_THREADS="1")
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # python3 = this interpreter
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_study.sh"), "5", "2"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "4 of 4 trials run" in proc.stdout and "FAILED" not in proc.stdout
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert rows[0]["event"] == "start" and rows[0]["gpu"] is None and rows[0]["workers"] == 2
    done = [r for r in rows if r["event"] == "finished"]
    assert sorted(r["trial"] for r in done) == ["fishermask seed=0", "fishermask seed=1",
                                                 "random seed=0", "random seed=1"]
    rounds = [r for r in rows if r["event"] == "round" and r["trial"] == "fishermask seed=1"]
    assert [r["n_labels"] for r in sorted(rounds, key=lambda r: r["round"])] == [10, 20, 30]
    assert all(r["mask_profile"] for r in rounds if r["round"] > 0)  # FisherMask's queries

    rep = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_study.py"), "--report",
                          str(tmp_path / "out" / "results.jsonl"), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=200)
    assert rep.returncode == 0, rep.stderr[-2000:]
    text = (tmp_path / "r" / "summary.md").read_text()
    assert "4 finished runs in 2 variants" in text and "ran on CPU" in text
    assert "| fishermask | 2 |" in text and "## FisherMask mask profile" in text


def test_gpu_study_starts_nothing_past_its_budget_and_refuses_an_old_results_file(tmp_path):
    sweep = write_tiny_sweep(tmp_path)
    script = str(ROOT / "scripts" / "gpu_study.py")
    proc = subprocess.run([sys.executable, script, str(sweep), "--out", "o", "--minutes", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 of 4 trials run" in proc.stdout and "random seed=0" in proc.stdout
    again = subprocess.run([sys.executable, script, str(sweep), "--out", "o"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=200)
    assert again.returncode == 2 and "results.jsonl exists; give another --out" in again.stderr
    empty = subprocess.run([sys.executable, script, "--report", "o/results.jsonl", "--out", "r"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=200)
    assert empty.returncode == 2 and "no finished trial in o/results.jsonl" in empty.stderr


def test_a_study_in_parts_resumes_and_reports_from_several_files(tmp_path):
    sweep = write_tiny_sweep(tmp_path)
    script = str(ROOT / "scripts" / "gpu_study.py")
    run = [sys.executable, script, str(sweep), "--out", "o", "--set", "sweep.seed=[0]",
           "--workers", "2"]
    first = subprocess.run(run + ["--set", "sweep.strategy.name=[random]"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and "1 of 1 trials run" in first.stdout, first.stderr[-2000:]
    # the rest of the grid later, into the same file: the finished trial is not run again
    rest = subprocess.run(run + ["--resume"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert rest.returncode == 0, rest.stderr[-2000:]
    assert "resuming: 1 trials finished" in rest.stdout and "1 of 1 trials run" in rest.stdout
    rows = [json.loads(x) for x in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["trial"] for r in rows if r["event"] == "finished") == \
        ["fishermask seed=0", "random seed=0"]
    rep = subprocess.run([sys.executable, script, "--report", "o/results.jsonl",
                          "o/results.jsonl", "--out", "r"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=200)
    assert rep.returncode == 0, rep.stderr[-2000:]
    text = (tmp_path / "r" / "summary.md").read_text()
    assert "2 finished runs in 2 variants" in text and "kinds of machine" not in text
    # a sitting on another kind of machine is named in the report
    lines = (tmp_path / "o" / "results.jsonl").read_text().splitlines()
    other = [json.dumps(dict(json.loads(x), cpu="Other CPU")) if '"start"' in x else x
             for x in lines]
    (tmp_path / "o2.jsonl").write_text("\n".join(other) + "\n")
    rep = subprocess.run([sys.executable, script, "--report", "o/results.jsonl", "o2.jsonl",
                          "--out", "r2"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=200)
    text = (tmp_path / "r2" / "summary.md").read_text()
    assert "its sittings ran on 2 kinds of machine" in text and "CPU (Other CPU)" in text


def test_long_studies_start_from_the_kept_trials_and_keep_them(tmp_path):
    sweep = write_tiny_sweep(tmp_path)
    labels = ["fishermask seed=0", "fishermask seed=1", "random seed=0", "random seed=1"]
    kept = tmp_path / "kept" / "tiny" / "results.jsonl"  # an earlier sitting finished them all,
    kept.parent.mkdir(parents=True)                     # on another kind of machine
    kept.write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "start", "gpu": None, "cpu": "Other CPU", "torch": "2.9", "cpus": 2,
         "workers": 2, "time": "t0"}] + [{"event": "finished", "trial": t} for t in labels]))
    env = dict(os.environ, STUDIES=f"tiny:{sweep}", KEPT=str(tmp_path / "kept"))
    script = str(ROOT / "scripts" / "long_studies.sh")
    run = subprocess.run(["bash", script, str(tmp_path / "data"), str(tmp_path / "out")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "resuming: 4 trials finished" in run.stdout and "0 of 0 trials run" in run.stdout
    rows = [json.loads(x) for x in (tmp_path / "out" / "tiny" / "results.jsonl").read_text()
            .splitlines()]
    assert [r["cpu"] for r in rows if r["event"] == "start"][0] == "Other CPU"
    assert len([r for r in rows if r["event"] == "start"]) == 2  # this sitting's line added
    kept.unlink()
    save = subprocess.run(["bash", script, "--save", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert save.returncode == 0 and "(4 finished trials)" in save.stdout, save.stderr
    saved = [json.loads(x) for x in kept.read_text().splitlines()]
    assert len(saved) == len(rows) and str(tmp_path / "data") not in kept.read_text()
    assert [r["overrides"] for r in saved if r.get("overrides")][-1][0] == "data.data_dir=DIR"
    assert all(r["sweep"] == str(sweep) for r in saved if "sweep" in r)  # not under sweeps/
