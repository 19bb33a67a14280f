"""What a reader of the MLflow UI finds after a small sweep plus ``fishermask report`` (the tiny
sweep on a real MLflow server), and the report's handling of mixed configs, repeated seeds and
user errors (real sqlite stores)."""

from __future__ import annotations

import os

import pytest
from mlflow.tracking import MlflowClient

from fishermask.cli import main

pytestmark = pytest.mark.integration  # Ray, an MLflow server, the CLI or the loop


@pytest.fixture(scope="module")
def reported(tiny_sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("ui-report") / "report"
    code = main(["report", "--run", tiny_sweep.parent_run_id, "--out", str(out),
                 "--tracking-uri", tiny_sweep.uri])
    assert code == 0
    client = MlflowClient(tiny_sweep.uri)
    exp = client.get_experiment_by_name(tiny_sweep.experiment)
    kids = client.search_runs([exp.experiment_id],
                              f"tags.`mlflow.parentRunId` = '{tiny_sweep.parent_run_id}'")
    return client, exp, client.get_run(tiny_sweep.parent_run_id), kids, out


def test_every_child_has_summary_metrics_and_grouped_names(reported):
    client, _, _, kids, _ = reported
    assert len(kids) == 4
    for r in kids:
        m = r.data.metrics
        for key in ("aubc/accuracy", "aubc/balanced_accuracy", "final/accuracy",
                    "final/balanced_accuracy"):
            assert 0 < m[key] <= 1, (key, r.info.run_name)
        curve = sorted((x.step, x.value) for x in client.get_metric_history(r.info.run_id,
                                                                            "accuracy"))
        assert m["final/accuracy"] == curve[-1][1]
        assert not [k for k in m if k.startswith(("accuracy_class_", "labels_class_"))]
        assert {"class_accuracy/0", "class_labels/3", "time/train_seconds"} <= set(m)
        assert sorted(k for k in m if "/" not in k) == ["accuracy", "balanced_accuracy"]
        assert "labels_to_target/accuracy" in m or m["final/accuracy"] < 1  # report's target


def test_params_tags_descriptions_provenance_inputs(reported, tiny_sweep):
    _, exp, parent, kids, _ = reported
    for r in [parent, *kids]:
        assert "None" not in r.data.params.values(), r.info.run_name
        assert r.data.tags["mlflow.user"]
        assert r.data.tags["version.fishermask"] and r.data.tags["version.mlflow"]
        assert r.data.tags["mlflow.note.content"]
        assert not [k for k in r.data.tags if k.startswith("fishermask.")]  # internal: hidden
    for r in kids:
        p, t = r.data.params, r.data.tags
        assert p["data.data_dir"] == "./data" and os.path.isabs(p["data.data_dir_resolved"])
        assert p["data.class_counts"] == "12, 12, 12, 40"
        assert t["variant"] == p["strategy.name"] and t["seed"] == p["seed"]
        assert t["sweep"] == "tiny" and t["device"] == "cpu"
        note = t["mlflow.note.content"]
        assert f"seed {p['seed']}" in note and "10 + 2 × 10 = 30 labels" in note
        assert "class counts 12, 12, 12, 40" in note
        names = sorted(d.dataset.name for d in r.inputs.dataset_inputs)
        assert names == ["digits-pool", "digits-test"]
        if p["strategy.name"] == "random":
            assert "strategy.sparsity" not in p
    pp = parent.data.params
    assert pp["sweep.strategy.name"] == "random, fishermask" and pp["sweep.seed"] == "0, 1"
    assert not [k for k in pp if k.startswith("strategy.")]  # per-strategy: on the children
    note = parent.data.tags["mlflow.note.content"]
    assert "4 trials" in note and "number of labels" in note
    assert "**Best variant by AUBC (accuracy):**" in note
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"]


def test_parent_has_html_report_and_variant_metrics(reported, tmp_path):
    client, _, parent, _, out = reported
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/summary.md", "report/variants.json"} <= logged
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") >= 4 and "<table>" in page
    m = parent.data.metrics
    for v in ("random", "fishermask"):
        assert 0 < m[f"variant_aubc/{v}"] <= 1 and f"variant_final/{v}" in m
    assert "variant_aubc_vs_random/fishermask" in m and "time/sweep_wall_seconds" in m
    # MLflow's markdown preview shows only absolute http(s) images: they point at get-artifact
    import urllib.request

    md = open(client.download_artifacts(parent.info.run_id, "report/summary.md",
                                        str(tmp_path))).read()
    url = (f"{client.tracking_uri}/get-artifact?path=report/learning_curves.png"
           f"&run_uuid={parent.info.run_id}")
    assert f"![learning curves]({url})" in md
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.read(8) == b"\x89PNG\r\n\x1a\n"
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert "sweep/trials.md" in names and "sweep/summary.md" not in names


def test_sweep_prints_the_runs_view_url(tiny_sweep, capsys):
    # the fixture's sweep ran before this test captured; the message is built by this helper
    from fishermask.sweeps.ending import _print_where_to_look

    client = MlflowClient(tiny_sweep.uri)
    exp = client.get_experiment_by_name("tiny")
    _print_where_to_look(client, exp.experiment_id, tiny_sweep.uri)
    text = capsys.readouterr().out
    assert (f"{tiny_sweep.uri}/#/experiments/{exp.experiment_id}/runs?"
            "workflowType=machine_learning") in text
    assert "Group by" in text and "variant" in text


# ----------------------------------------------------------------------------- hand-made store

def _fake_run(client, exp_id, seed, acc, *, lr="0.001", strategy="random", start=0):
    from mlflow.entities import Metric, Param

    run = client.create_run(exp_id, run_name=f"{strategy} seed={seed}", start_time=start,
                            tags={"variant": strategy})
    rid = run.info.run_id
    params = {"strategy.name": strategy, "seed": str(seed), "train.lr": lr,
              "data.data_dir": f"./data{seed}"}  # the location never splits a variant
    client.log_batch(rid, params=[Param(k, v) for k, v in params.items()], metrics=[
        Metric(k, a, 0, n) for n, a in zip((10, 20), acc) for k in ("accuracy",
                                                                    "balanced_accuracy")])
    client.set_terminated(rid, "FINISHED", end_time=start + 1000)
    return rid


def test_report_groups_by_config_and_counts_each_seed_once(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("mixed", artifact_location=str(tmp_path / "art"))
    _fake_run(client, exp_id, 0, (0.5, 0.6), start=1000)
    _fake_run(client, exp_id, 0, (0.1, 0.1), start=500)   # older run of seed 0: not counted
    _fake_run(client, exp_id, 1, (0.5, 0.7), start=1000)
    _fake_run(client, exp_id, 0, (0.2, 0.3), lr="0.1", start=1000)  # another config
    assert main(["report", "--experiment", "mixed", "--out", str(tmp_path / "r"),
                 "--tracking-uri", uri]) == 0
    text = (tmp_path / "r" / "summary.md").read_text()
    assert "3 finished runs in 2 variants" in text
    assert "'random' runs differ in train.lr; reported as 2 variants" in text
    assert "'random [train.lr=0.001]': 3 runs of 2 seeds; each seed counted once" in text
    row = next(line for line in text.splitlines() if line.startswith("| random [train.lr=0.001]"))
    # seeds 0 and 1 (the newest seed-0 run): AUBC 0.55 and 0.60, 95 % CI 12.71 x 0.0354 / √2
    assert "| 2 | 0.5750 ± 0.3177 |" in row


@pytest.mark.parametrize("args, message", [
    (["--baseline", "randmo"], "--baseline 'randmo' is not a strategy of these runs; choose one "
                               "of: random"),
    (["--out", "FILE"], "is a file; give a folder for the report"),
])
def test_report_user_errors(tmp_path, capsys, args, message):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    _fake_run(client, exp_id, 0, (0.5, 0.6))
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / a) if a == "FILE" else a for a in args]
    capsys.readouterr()  # the store's creation above logs
    assert main(["report", "--experiment", "e", "--tracking-uri", uri, "--no-log",
                 "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_report_in_an_empty_folder_creates_no_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["report", "--experiment", "quickstart"]) == 2
    err = capsys.readouterr().err
    assert "no MLflow store at sqlite:///" in err and "--tracking-uri" in err
    assert list(tmp_path.iterdir()) == []
