"""fishermask sweep: the MLflow parent/child layout on a real server, a retried trial, a refused
rerun, Tune's saved trials put back in grid order, and curves equal to the plain loop's."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fishermask.cli import main
from fishermask.sweeps.grid import load_sweep

pytestmark = pytest.mark.integration  # Ray, an MLflow server, the CLI or the loop

def _children(client, experiment, parent_id):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def _curve(client, run_id):
    hist = client.get_metric_history(run_id, "accuracy")
    return [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)]


def test_dry_run_lists_trials(tmp_path, capsys, make_tiny_sweep):
    path = make_tiny_sweep(tmp_path)
    assert main(["sweep", str(path), "--dry-run", "--set", "sweep.seed=[0,1,2]"]) == 0
    out = capsys.readouterr().out
    assert "6 trials (6 grid points)" in out and "fishermask seed=2" in out


# ----------------------------------------------------------------------------- real sweeps

def test_parent_child_runs_and_retry(tiny_sweep):
    assert tiny_sweep.code == 0
    assert not tiny_sweep.fault_marker.exists(), "the injected fault never fired"
    client = MlflowClient(tiny_sweep.uri)
    parent = client.get_run(tiny_sweep.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["mlflow.fishermask.role"] == "sweep"
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/tiny.yaml", "sweep/trials.md", "sweep/trials.json"} <= arts
    exp = client.get_experiment_by_name("tiny")
    assert len(client.search_runs([exp.experiment_id], "tags.`mlflow.fishermask.role` = 'sweep'")) == 1
    kids = _children(client, "tiny", parent.info.run_id)
    labels = sorted(r.info.run_name for r in kids)
    assert labels == ["fishermask seed=0", "fishermask seed=1", "random seed=0", "random seed=1"]
    for r in kids:  # one run per trial, even for the retried one; every round once
        assert r.info.status == "FINISHED"
        assert [s for s, _ in _curve(client, r.info.run_id)] == [10, 20, 30]
        assert r.data.params["strategy.name"] in ("random", "fishermask")


def test_rerun_without_resume_is_refused(tiny_sweep, capsys):
    args = ["sweep", str(tiny_sweep.path), "--tracking-uri", tiny_sweep.uri,
            "--storage", str(tiny_sweep.storage)]
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    other = tiny_sweep.work / "nothing"
    assert main(args[:-1] + [str(other), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def _uninterrupted_curve(sweep_file: Path, label: str, folder: Path):
    """The same trial run in-process without Ray or MLflow (1 thread, as in a trial)."""
    import torch

    from fishermask.config import from_dict
    from fishermask.loop import ActiveLearningLoop

    spec = next(t for t in load_sweep(sweep_file).trials if t.label == label)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recs = ActiveLearningLoop.from_config(from_dict(spec.config), checkpoint_dir=folder / label,
                                  progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return [(r.n_labels, r.accuracy) for r in recs]


def test_resume_puts_saved_trials_back_in_grid_order(tiny_sweep, tmp_path):
    """Tune saves its trials from a set; --resume rewrites its newest state in grid order (the
    labels of the sweep file's trial list) so that an interrupted sweep continues seed by seed."""
    import json
    import shutil

    from ray import tune

    from fishermask.sweeps.command import order_saved_trials

    exp = tmp_path / "tiny"
    shutil.copytree(tiny_sweep.storage / "tiny", exp)
    state_file = max(exp.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    entries = state["trial_data"]
    ids = [json.loads(e[0])["trial_id"] for e in entries]
    state["trial_data"] = sorted(entries, key=lambda e: json.loads(e[0])["trial_id"], reverse=True)
    state_file.write_text(json.dumps(state))

    assert order_saved_trials(str(exp)) is True
    fixed = json.loads(state_file.read_text())
    labels = [json.loads(e[0])["config"]["trial"]["label"] for e in fixed["trial_data"]]
    assert labels == [t.label for t in load_sweep(tiny_sweep.path).trials]
    assert sorted(map(tuple, fixed["trial_data"])) == sorted(map(tuple, entries))
    assert {k: v for k, v in fixed.items() if k != "trial_data"} == \
        {k: v for k, v in state.items() if k != "trial_data"}
    assert sorted(json.loads(e[0])["trial_id"] for e in fixed["trial_data"]) == sorted(ids)
    assert order_saved_trials(str(exp)) is False  # already in order: not rewritten
    assert tune.Tuner.can_restore(str(exp))
    (tmp_path / "empty").mkdir()
    assert order_saved_trials(str(tmp_path / "empty")) is False  # nothing saved yet


def test_a_sweeps_curves_are_those_of_the_plain_loop(tiny_sweep, tmp_path):
    """Tune, Ray and MLflow change nothing: a trial's curve (the retried one's too) is the
    curve of the same config run in-process (the driver SIGKILLed and --resume: see
    tests/test_cluster_faults.py)."""
    client = MlflowClient(tiny_sweep.uri)
    reference = {r.info.run_name: _curve(client, r.info.run_id)
                 for r in _children(client, "tiny", tiny_sweep.parent_run_id)}
    for label in ("random seed=0", "fishermask seed=1"):
        steps, accs = zip(*_uninterrupted_curve(tiny_sweep.path, label, tmp_path))
        assert [s for s, _ in reference[label]] == list(steps)
        assert [a for _, a in reference[label]] == pytest.approx(accs, abs=1e-6)
