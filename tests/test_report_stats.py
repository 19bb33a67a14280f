"""Reports: the statistics and tables on edge cases a real study runs into (one shared seed, a
baseline of another configuration, a class never picked, a phase one seed lacks), and the values
left in MLflow when a report is made again."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fishermask.reports import mlflow_log
from fishermask.reports.command import build_report
from fishermask.reports.data import RunData, baseline_for, ci95, diff_ci, group, phase_seconds


def _run(variant, seed, accs, *, strategy=None, context=None, per_class=(3, 3, 4), seconds=None,
         run_id=None, pool=None, by_step=None):
    accs = np.array(accs, dtype=float)
    return RunData(config={"data.class_counts": pool} if pool else {}, labels_by_step=by_step or {},
                   run_id=run_id or f"{variant}{seed}", variant=variant,
                   strategy=strategy or variant, seed=seed, status="FINISHED",
                   context=context or {}, steps=np.arange(10, 10 * len(accs) + 1, 10),
                   seconds=seconds or {"train": 1.0}, curves={"accuracy": accs,
                                                              "balanced_accuracy": accs},
                   labels_per_class=list(per_class))


def test_one_shared_seed_is_not_a_pairing():
    a, b = {3: 0.58, 4: 0.70, 5: 0.71, 6: 0.72}, {0: 0.60, 1: 0.61, 2: 0.59, 3: 0.60}
    d = diff_ci(a, b)
    assert not d["paired"] and d["diff"] == pytest.approx(np.mean(list(a.values())) - 0.60)
    assert d["ci"] > 0  # Welch over all four seeds each, not a one-pair difference of -0.02
    same = diff_ci({0: 0.7}, {0: 0.6})  # the same single seed on both sides: a pair
    assert same["paired"] and same["n"] == 1 and math.isnan(same["ci"])
    two = diff_ci({0: 0.7, 1: 0.8, 9: 0.1}, {0: 0.6, 1: 0.6})
    assert two["paired"] and two["n"] == 2 and two["diff"] == pytest.approx(0.15)


def test_ci95_is_the_t_interval_of_the_mean():
    assert ci95([0.5, 0.6, 0.7]) == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert math.isnan(ci95([0.5]))


def test_a_baseline_of_another_configuration_is_not_used():
    runs = [_run("random query=10", s, [0.5, 0.6, 0.7], strategy="random",
                 context={"budget.query": "10"}) for s in range(2)]
    runs += [_run("margin query=50", s, [0.5, 0.7, 0.8], strategy="margin",
                  context={"budget.query": "50"}) for s in range(2)]
    runs += [_run("margin query=10", s, [0.5, 0.7, 0.8], strategy="margin",
                  context={"budget.query": "10"}) for s in range(2)]
    groups = group(runs)
    assert baseline_for(groups["margin query=50"], groups, "random") is None
    assert baseline_for(groups["margin query=10"], groups, "random") == "random query=10"


def test_aubc_is_reported_with_its_confidence_interval(tmp_path):
    runs = [_run("random", s, [0.5, 0.6, 0.6 + 0.1 * s]) for s in range(3)]
    build_report(runs, tmp_path, title="ci", target=0.9)
    text = (tmp_path / "summary.md").read_text()
    aubcs = [(0.55 + (1.2 + 0.1 * s) / 2) / 2 for s in range(3)]  # two trapezoids, 20 labels
    want = f"| random | 3 | {np.mean(aubcs):.4f} ± {ci95(aubcs):.4f} |"
    assert want in text and "mean ± 95 % CI of the mean" in text


def test_class_balance_tells_a_rare_class_from_a_missing_one(tmp_path):
    runs = [_run("random", 0, [0.5, 0.6], per_class=(300, 299, 1)),
            _run("margin", 0, [0.5, 0.7], per_class=(300, 300, 0))]
    res = build_report(runs, tmp_path, title="balance", target=0.9)
    text = (tmp_path / "summary.md").read_text()
    assert "| random | 300.0 | 299.0 | 1.0 | <0.01 |" in text
    assert "| margin | 300.0 | 300.0 | 0.0 | 0 |" in text
    assert "class_balance" in res["files"]


def test_runs_without_class_counts_have_no_class_balance_section(tmp_path):
    runs = [_run("random", s, [0.5, 0.6], per_class=()) for s in range(2)]
    res = build_report(runs, tmp_path, title="no counts", target=0.9)
    text = (tmp_path / "summary.md").read_text()
    assert "## Class balance" not in text and "class_balance" not in res["files"]
    assert "min/max" not in text and "nan" not in text  # no empty table, no NaN ratio


def test_a_phase_one_seed_lacks_is_averaged_over_the_seeds_that_have_it():
    runs = [_run("fishermask", 0, [0.5], seconds={"train": 1.0, "query: greedy": 100.0}),
            _run("fishermask", 1, [0.5], seconds={"train": 3.0})]
    _, table = phase_seconds(runs)
    assert table["fishermask"]["query: greedy"] == 100.0
    assert table["fishermask"]["train"] == 2.0


@pytest.mark.integration
def test_a_new_report_replaces_the_values_of_an_earlier_one_in_mlflow(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("relog", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="sweep")
    ids = {s: client.create_run(exp, run_name=f"fm{s}").info.run_id for s in range(2)}
    rnd = {s: client.create_run(exp, run_name=f"random{s}").info.run_id for s in range(2)}

    def report(accs_by_seed, target, out):
        runs = [_run("random", s, [0.5, 0.5, 0.5], run_id=rnd[s]) for s in range(2)]
        runs += [_run("fishermask", s, accs_by_seed[s], run_id=ids[s]) for s in range(2)]
        res = build_report(runs, tmp_path / out, title="relog", target=target)
        mlflow_log.log_report(client, client.get_run(parent.info.run_id), runs, res, "accuracy")

    report({0: [0.6, 0.9, 0.9], 1: [0.6, 0.9, 0.9]}, 0.85, "first")
    first = client.get_run(parent.info.run_id).data.metrics
    assert first["variant_aubc/fishermask"] == pytest.approx(0.825)
    assert client.get_run(ids[0]).data.metrics["labels_to_target/accuracy"] == 20
    report({0: [0.5, 0.6, 0.7], 1: [0.5, 0.6, 0.7]}, 0.95, "second")  # lower, never reached
    second = client.get_run(parent.info.run_id).data.metrics
    assert second["variant_aubc/fishermask"] == pytest.approx(0.6)
    assert second["target/accuracy"] == pytest.approx(0.95)
    child = client.get_run(ids[0]).data.metrics
    assert math.isnan(child["labels_to_target/accuracy"]) and child["target/accuracy"] == 0.95


def test_rare_classes_by_round(tmp_path):
    """The rare classes' labels after each round, mean over seeds; no table for a balanced pool,
    for runs of different pools or without per-round counts."""
    pool = "5, 5, 5, 50"
    runs = [_run("random", s, [0.5, 0.6], pool=pool,
                 by_step={10: [1, 0, 1, 8], 20: [2, 1, 1 + s, 16 - s]}) for s in range(2)]
    runs += [_run("margin", s, [0.5, 0.7], pool=pool,
                  by_step={10: [1, 0, 1, 8], 20: [4, 3, 3 + s, 10 - s]}) for s in range(2)]
    build_report(runs, tmp_path, title="rare")
    text = (tmp_path / "summary.md").read_text()
    section = text.split("## Labels of the rare classes by round")[1].split("##")[0]
    assert "(classes 0-2: 15 pool images)" in section and "| variant | 10 | 20 |" in section
    assert "| random | 2.0 | 4.5 |" in section and "| margin | 2.0 | 10.5 |" in section

    for other in ("5, 5, 5, 5", None):  # balanced; no class counts
        plain = [_run(r.variant, r.seed, [0.5, 0.6], pool=other, by_step=r.labels_by_step)
                 for r in runs]
        build_report(plain, tmp_path / str(other), title="x")
        assert "rare classes" not in (tmp_path / str(other) / "summary.md").read_text()
    mixed = runs[:2] + [_run("margin", s, [0.5, 0.7], pool="5, 50, 5, 5",
                             by_step={10: [1, 0, 1, 8]}) for s in range(2)]
    build_report(mixed, tmp_path / "mixed", title="x")
    assert "rare classes" not in (tmp_path / "mixed" / "summary.md").read_text()
    paper = [_run(r.variant, r.seed, [0.5, 0.6], by_step=r.labels_by_step) for r in runs]
    for r in paper:  # the paper's Setting 1 by name: classes 0, 2, 3 have 250 images, 1 has 5,000
        r.config = {"data.setting": "1"}
    build_report(paper, tmp_path / "paper", title="x")
    section = (tmp_path / "paper" / "summary.md").read_text().split("rare classes by round")[1]
    assert "(classes 0, 2, 3: 750 pool images)" in section
    assert "| random | 10.0 | 19.0 |" in section.split("##")[0]  # 1+1+8; 2+1+16 and 2+2+15
    no_rounds = runs[:2] + [_run("margin", s, [0.5, 0.7], pool=pool) for s in range(2)]
    build_report(no_rounds, tmp_path / "old", title="x")
    assert "rare classes" not in (tmp_path / "old" / "summary.md").read_text()
