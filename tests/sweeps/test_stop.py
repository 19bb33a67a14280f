"""Stopping and restarting a sweep: SIGTERM to the driver (as a scheduler or `kill` sends it)
ends it KILLED with the resume command, and --resume finishes it; a resume whose grid changed is
refused; a state file cut short is named, and --restart gets past it or past an old tracking
server that is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import write_tiny_sweep
from fishermask.cli import main

pytestmark = pytest.mark.integration  # Ray, the CLI and real sweeps


def _runs(uri: str, experiment: str) -> dict[str, str]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id])}


def test_sigterm_ends_the_sweep_killed_with_the_resume_command(tmp_path):
    path = write_tiny_sweep(tmp_path, experiment="stopped")
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "storage"
    cmd = [sys.executable, "-m", "fishermask", "sweep", str(path), "--tracking-uri", uri,
           "--storage", str(storage), "--address", "local"]
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import faulthandler, signal\nfaulthandler.register(signal.SIGUSR1, all_threads=True)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 150
    while not list((storage / "stopped-tiny").glob("trial_*/checkpoint_*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no trial reported a round in time"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # the driver only
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # a hang: say where (faulthandler on SIGUSR1, below)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(3)
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the sweep did not stop within 120 s of SIGTERM:\n{err[-8000:]}")
    assert proc.returncode == 143, err[-3000:]  # Ray's own handler ended it with 134 before
    last = err.strip().splitlines()[-1]
    assert last.startswith("terminated (SIGTERM); finished trials and the rounds of unfinished")
    assert last.endswith("--resume") and str(path) in last
    statuses = _runs(uri, "stopped")
    assert statuses.pop("sweep stopped-tiny") == "KILLED"
    assert statuses and set(statuses.values()) <= {"KILLED", "FINISHED"}  # none left RUNNING

    res = subprocess.run(cmd + ["--resume"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    statuses = _runs(uri, "stopped")
    assert len(statuses) == 5 and set(statuses.values()) == {"FINISHED"}


def _state(storage: Path, text: str) -> Path:
    folder = storage / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fishermask_sweep.json").write_text(text)
    return folder


def test_a_resume_whose_grid_changed_is_refused(tmp_path, capsys):
    path = write_tiny_sweep(tmp_path)
    storage = tmp_path / "storage"
    _state(storage, json.dumps({"parent_run_id": "p", "tracking_uri": "sqlite:///x.db",
                                "digest": "000000000000"}))
    assert main(["sweep", str(path), "--storage", str(storage), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "are not the ones sweep 'tiny' started with, and a resume runs only those" in err
    assert "--restart" in err and err.count("\n") == 1


def test_a_state_file_cut_short_is_named_and_restart_gets_past_it(tmp_path, capsys):
    path = write_tiny_sweep(tmp_path)
    storage = tmp_path / "storage"
    folder = _state(storage, '{"parent_run_id": "ab')
    for flag in ([], ["--resume"]):
        assert main(["sweep", str(path), "--storage", str(storage), *flag]) == 2
        err = capsys.readouterr().err
        assert f"the sweep state {folder}/fishermask_sweep.json cannot be read" in err
        assert "--restart starts the sweep afresh" in err and "Traceback" not in err
    # --restart passes the unreadable state: what stops it now is the next check, the URI
    assert main(["sweep", str(path), "--storage", str(storage), "--restart",
                 "--tracking-uri", "htp://nowhere"]) == 2
    assert "unknown scheme 'htp'" in capsys.readouterr().err


def test_restart_does_not_need_the_old_sweeps_tracking_server(tmp_path, capsys):
    path = write_tiny_sweep(tmp_path)
    storage = tmp_path / "storage"
    _state(storage, json.dumps({"parent_run_id": "p", "tracking_uri": "http://127.0.0.1:9",
                                "digest": "000000000000"}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["sweep", str(path), "--storage", str(storage), "--restart",
                 "--tracking-uri", uri]) == 0
    assert set(_runs(uri, "tiny").values()) == {"FINISHED"}
    state = json.loads((storage / "tiny" / "fishermask_sweep.json").read_text())
    assert state["tracking_uri"] == uri and state["parent_run_id"] != "p"


def test_the_summary_counts_the_trials_at_a_time_that_max_concurrent_allows(tmp_path):
    from types import SimpleNamespace

    from fishermask.sweeps.grid import load_sweep
    from fishermask.sweeps.summary import summarize

    spec = load_sweep(write_tiny_sweep(tmp_path)).trials[0].to_dict()  # 1 CPU a trial
    results = [SimpleNamespace(config={"trial": spec}, path=f"trial_k{i}", error=None,
                               metrics={"done": True, "trial_seconds": 10.0, "loop_seconds": 8.0,
                                        "mlflow_seconds": 1.0, "tune_seconds": 0.5})
               for i in range(4)]
    free, _ = summarize(results, 10.0, {"FINISHED": 4}, {"CPU": 8.0}, {})
    capped, ok = summarize(results, 40.0, {"FINISHED": 4}, {"CPU": 8.0}, {}, max_concurrent=1)
    assert ok and "for 4 trials (4 at a time)" in free
    assert "for 4 trials (1 at a time)" in capped
    assert "Overhead over the sweep (adds actor start-up, scheduling, idle slots): 2.00 s" in capped
