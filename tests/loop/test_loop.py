"""The AL loop: determinism, resume after a crash equals an uninterrupted run, MLflow layout."""

import json
import os

import pytest

from fishermask.loop import ActiveLearningLoop
from fishermask.tracking.tracker import MlflowTracker
from tests.helpers import tiny_config

pytestmark = pytest.mark.integration  # Ray, an MLflow server, the CLI or the loop

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def curves(records):
    return [(r.n_labels, r.accuracy, r.balanced_accuracy, r.picked, r.labels_per_class)
            for r in records]


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("strategy", ["entropy", "fishermask"])
def test_resume_equals_uninterrupted(tmp_path, strategy):
    extra = {"sparsity": 0.01} if strategy == "fishermask" else {}
    cfg = tiny_config(tmp_path / "a", strategy={"name": strategy, **extra})
    full = ActiveLearningLoop.from_config(cfg, progress=False).run()
    assert [r.n_labels for r in full] == [8, 14, 20]

    cfg_b = tiny_config(tmp_path / "b", strategy={"name": strategy, **extra})

    def crash_after_round_1(loop, rec):
        if rec.round == 1:
            raise Crash("simulated crash")

    with pytest.raises(Crash):
        ActiveLearningLoop.from_config(cfg_b, progress=False, on_round=crash_after_round_1).run()
    resumed_loop = ActiveLearningLoop.from_config(cfg_b, progress=False)
    resumed = resumed_loop.run()
    assert curves(resumed) == curves(full)
    # picks per round are the strategy's, labels accumulate without duplicates
    assert len(set(resumed_loop.labeled.tolist())) == 20


def test_same_seed_same_curves_other_seed_differs(tmp_path):
    a = ActiveLearningLoop.from_config(tiny_config(tmp_path / "a"), progress=False).run()
    b = ActiveLearningLoop.from_config(tiny_config(tmp_path / "b"), progress=False).run()
    c = ActiveLearningLoop.from_config(tiny_config(tmp_path / "c", seed=1), progress=False).run()
    assert curves(a) == curves(b)
    assert curves(a) != curves(c)


def test_per_round_records(tmp_path):
    loop = ActiveLearningLoop.from_config(tiny_config(tmp_path), progress=False)
    recs = loop.run()
    for r in recs:
        assert 0 <= r.accuracy <= 1 and 0 <= r.balanced_accuracy <= 1
        assert len(r.per_class_accuracy) == 4 and sum(r.labels_per_class) == r.n_labels
        assert r.train_seconds > 0 and r.epochs >= 1
    assert recs[0].picked == [] and all(len(r.picked) == 6 for r in recs[1:])
    sel = loop.selected_indices()
    assert len(sel["initial"]) == 8 and [len(x) for x in sel["rounds"]] == [6, 6]


def test_mlflow_layout(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(tmp_path, strategy={"name": "fishermask", "sparsity": 0.01},
                      experiment="layout-test")
    tracker = MlflowTracker(uri)
    loop = ActiveLearningLoop.from_config(cfg, tracker=tracker, progress=False)
    loop.run()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("layout-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["strategy.name"] == "fishermask" and params["strategy.sparsity"] == "0.01"
    assert params["data.dataset"] == "digits" and params["seed"] == "0"
    hist = client.get_metric_history(run.info.run_id, "accuracy")
    assert sorted(m.step for m in hist) == [8, 14, 20]  # step = number of labels
    for key in ("balanced_accuracy", "class_accuracy/3", "class_labels/0", "time/query_seconds",
                "time/train_seconds", "time/phase_greedy_seconds", "time/phase_mask_seconds",
                "train/epochs", "progress/round"):
        assert key in run.data.metrics, key
    flat = [k for k in run.data.metrics if "/" not in k]  # the top-level charts: the two curves
    assert sorted(flat) == ["accuracy", "balanced_accuracy"], flat
    hist = client.get_metric_history(run.info.run_id, "aubc/accuracy")  # summary, at the end
    assert [m.step for m in hist] == [20]
    steps_acc = sorted((m.step, m.value) for m in client.get_metric_history(
        run.info.run_id, "accuracy"))
    assert run.data.metrics["final/accuracy"] == steps_acc[-1][1]
    assert run.data.metrics["aubc/accuracy"] == pytest.approx(
        ((steps_acc[0][1] + steps_acc[1][1]) * 6 + (steps_acc[1][1] + steps_acc[2][1]) * 6) / 24)
    assert "None" not in run.data.params.values()
    assert params["budget.total"] == "20" and params["data.data_dir_resolved"].startswith("/")
    tags = run.data.tags
    assert tags["variant"] == "fishermask" and tags["seed"] == "0"
    assert tags["mlflow.user"] and tags["version.fishermask"] and tags["device"] == "cpu"
    assert "budget: 8 + 2 × 6 = 20 labels" in tags["mlflow.note.content"]
    inputs = {(d.dataset.name, dict((t.key, t.value) for t in d.tags)["mlflow.data.context"])
              for d in run.inputs.dataset_inputs}
    assert inputs == {("digits-pool", "pool"), ("digits-test", "test")}
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "selected_indices.json", "learning_curve.png",
            "mask_profile.png", "rounds"} <= arts
    path = client.download_artifacts(run.info.run_id, "selected_indices.json", str(tmp_path))
    sel = json.loads(open(path).read())
    assert sel == loop.selected_indices()
    rounds = {a.path for a in client.list_artifacts(run.info.run_id, "rounds")}
    assert "rounds/round_001_mask_profile.json" in rounds


def test_resumed_run_continues_same_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(tmp_path, experiment="resume-test")

    def crash(loop, rec):
        if rec.round == 1:
            raise Crash()

    with pytest.raises(Crash):
        ActiveLearningLoop.from_config(cfg, tracker=MlflowTracker(uri), progress=False, on_round=crash).run()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resume-test")
    assert client.search_runs([exp.experiment_id])[0].info.status == "FAILED"
    ActiveLearningLoop.from_config(cfg, tracker=MlflowTracker(uri), progress=False).run()
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "accuracy")]
    assert sorted(steps) == [8, 14, 20]  # no duplicated points after the resume


def test_files_of_a_round_cut_short_after_its_metrics_are_logged_on_resume(tmp_path,
                                                                           monkeypatch):
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(tmp_path, experiment="files", strategy={"name": "fishermask",
                                                               "sparsity": 0.05})
    real = MlflowClient.log_artifacts
    lost = "rounds/round_001_mask_profile.json"

    def stopped(self, run_id, local_dir, artifact_path=None):  # Ctrl-C after round 1's metrics
        if (Path(local_dir) / lost).exists() and not stopped.done:
            stopped.done = True
            raise KeyboardInterrupt
        return real(self, run_id, local_dir, artifact_path)

    stopped.done = False
    monkeypatch.setattr(MlflowClient, "log_artifacts", stopped)
    with pytest.raises(KeyboardInterrupt):
        ActiveLearningLoop.from_config(cfg, tracker=MlflowTracker(uri), progress=False).run()
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("files").experiment_id])[0]
    assert run.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [8, 14]
    ActiveLearningLoop.from_config(cfg, tracker=MlflowTracker(uri), progress=False).run()
    files = {f.path for f in client.list_artifacts(run.info.run_id, "rounds")}
    assert files == {lost, "rounds/round_002_mask_profile.json"}
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")]
    assert sorted(steps) == [8, 14, 20]
