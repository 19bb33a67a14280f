"""The sweep's Ray side before any trial (in process, on the session's 2-CPU local Ray and a real
sqlite MLflow store): trials the Ray cannot place, and a start that ran no trial."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from fishermask.cli import main
from fishermask.sweeps.command import create_parent, read_state, write_state
from fishermask.sweeps.cluster import forget_start
from fishermask.sweeps.grid import load_sweep
from fishermask.tracking.tracker import PARENT_TAG

pytestmark = pytest.mark.integration  # Ray, an MLflow store, the CLI


def test_trials_the_ray_cannot_place_stop_before_any_state(ray_local, tmp_path, capsys,
                                                           make_tiny_sweep):
    path = make_tiny_sweep(tmp_path)
    code = main(["sweep", str(path), "--set", "execution.shards=3", "--storage",
                 str(tmp_path / "st"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    err = capsys.readouterr().err
    assert code == 2
    # the local machine's check (2 CPUs) comes first; on a cluster the cluster's check says it
    assert "needs 4 CPUs (1 for the trial + execution.shards=3 × 1), but this machine has 2" in err
    assert not list((tmp_path / "st").rglob("*.json")) and not (tmp_path / "m.db").exists()
    code = main(["sweep", str(path), "--set", "execution.gpus_per_shard=1", "--set",
                 "execution.shards=1", "--set", "execution.backend=ray", "--storage",
                 str(tmp_path / "st"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and "1 GPU missing" in err


def test_a_start_that_ran_no_trial_is_forgotten(tmp_path, make_tiny_sweep):
    sweep = load_sweep(make_tiny_sweep(tmp_path))
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    exp_path = str(tmp_path / "st" / sweep.name)
    parent = create_parent(client, sweep, exp_path)
    write_state(exp_path, {"parent_run_id": parent})
    assert forget_start(client, exp_path, parent, sweep.experiment)
    assert read_state(exp_path) is None
    assert client.get_run(parent).info.lifecycle_stage == "deleted"
    # once a trial has started (it has a child run), the state stays for --resume
    parent = create_parent(client, sweep, exp_path)
    write_state(exp_path, {"parent_run_id": parent})
    exp = client.get_experiment_by_name(sweep.experiment)
    client.create_run(exp.experiment_id, tags={PARENT_TAG: parent})
    assert not forget_start(client, exp_path, parent, sweep.experiment)
    assert read_state(exp_path)["parent_run_id"] == parent
    assert client.get_run(parent).info.lifecycle_stage == "active"
