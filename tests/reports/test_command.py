"""fishermask report: the report built from hand-made runs, and the files from a real sweep's
MLflow runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import integrate
from scipy import stats as sps

from fishermask.cli import main
from fishermask.reports.command import build_report
from fishermask.reports.data import (RunData, child_runs, find_parent, group,
                                     load_run, mean_curve, split_configs)


def _run(variant, strategy, seed, accs, per_class=(3, 3, 4)):
    steps = np.array([10, 20, 30])
    seconds = {"train": 2.0 + seed, "query": 4.0}
    if strategy == "fishermask":
        seconds["query: greedy"] = 3.0
    return RunData(run_id=f"{variant}{seed}", variant=variant, strategy=strategy, seed=seed,
                   status="FINISHED", context={}, steps=steps, seconds=seconds,
                   curves={"accuracy": np.array(accs), "balanced_accuracy": np.array(accs) - 0.05},
                   labels_per_class=list(per_class),
                   mask_profiles=[[{"layer": 0, "name": "a.weight", "size": 10, "selected": 5,
                                    "fraction": 0.5},
                                   {"layer": 1, "name": "fc.weight", "size": 4, "selected": 4,
                                    "fraction": 1.0}]] if strategy == "fishermask" else [])


def test_build_report_from_hand_made_runs(tmp_path):
    runs = [_run("random", "random", s, [0.5, 0.6, 0.7 + 0.01 * s]) for s in range(3)]
    runs += [_run("fishermask", "fishermask", s, [0.5, 0.7, 0.8 + 0.01 * s], (4, 3, 3))
             for s in range(3)]
    groups = group(runs)
    assert list(groups) == ["random", "fishermask"]  # registry order
    steps, mean, std = mean_curve(groups["fishermask"], "accuracy")
    assert steps.tolist() == [10, 20, 30] and mean[-1] == pytest.approx(0.81)
    res = build_report(runs, tmp_path, title="hand-made", target=0.75)
    for name in ("learning_curves", "aubc", "class_balance", "mask_profile"):
        assert res["files"][name].stat().st_size > 5000
    text = (tmp_path / "summary.md").read_text()
    fm = next(line for line in text.splitlines() if line.startswith("| fishermask | 3 |"))
    assert "+0.0750 ± 0.0000 (paired, n=3)" in fm  # 0.1 better from 20 labels on: 1.5 / 20
    assert "| random | 0/3 | not reached | not reached |" in text
    assert "| fishermask | 3/3 | 30 ± 0 | 30 |" in text
    assert "| fishermask | 4.0 | 3.0 | 3.0 | 0.75 |" in text
    assert "fc.weight (1.000), a.weight (0.500)" in text
    versus = text.split("## FisherMask against each strategy")[1].split("##")[0]
    assert "| fishermask | random | +0.0750 ± 0.0000 (n=3) | 3/3 |" in versus
    budget = text.split("at each budget")[1].split("##")[0]
    assert "| variant | 10 | 20 | 30 |" in budget
    assert "| fishermask | 0.500 ± 0.000 | 0.700 ± 0.000 | 0.810 ± 0.010 |" in budget
    times = text.split("## Wall time per phase")[1]
    assert "| variant | train | query | query: greedy |" in times
    assert "| random | 3.0 | 4.0 | – |" in times and "| fishermask | 3.0 | 4.0 | 3.0 |" in times


def _variant(run, config):
    run.config = config
    return run


def test_ablation_table_and_every_tensor_of_the_mask(tmp_path):
    runs = [_run("random", "random", s, [0.5, 0.6, 0.6]) for s in range(3)]
    runs += [_run("fishermask", "fishermask", s, [0.5, 0.7, 0.8]) for s in range(3)]
    runs += [_variant(_run("fishermask prob_scaling=False", "fishermask", s,
                           [0.5, 0.6 + 0.02 * s, 0.7]),
                      {"strategy.prob_scaling": "False", "strategy.mask_samples": "1024"})
             for s in range(3)]
    runs += [_variant(_run("fishermask_authors", "fishermask", s, [0.5, 0.5, 0.8 + 0.01 * s]),
                      {"strategy.mask_samples": "1024"}) for s in range(3)]
    for r in runs[-3:]:
        r.strategy = "fishermask_authors"
    for r in runs[3:]:  # a large tensor: one weight of it in one round of one fishermask seed
        one = 1 if r.variant == "fishermask" and r.seed == 0 else 0
        r.mask_profiles = [p + [{"layer": 2, "name": "big.weight", "size": 100000,
                                 "selected": one, "fraction": one / 100000}]
                           for p in r.mask_profiles]
    res = build_report(runs, tmp_path, title="ablation", target=0.75)
    text = (tmp_path / "summary.md").read_text()
    abl = text.split("## FisherMask ablation")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0][2:]: line for line in abl.splitlines() if line.startswith("| fi")}
    assert rows["fishermask"].startswith("| fishermask | yes | random 1024 | 0.6750 ± 0.0000 | – |")
    # no √p: AUBC 0.600, 0.610, 0.620 against 0.675 (lower at 20 labels, the same at 10 and 30)
    assert "| no | random 1024 |" in rows["fishermask prob_scaling=False"]
    assert "| -0.0650 ± 0.0248 (n=3) |" in rows["fishermask prob_scaling=False"]
    assert "| 0/3 |" in rows["fishermask prob_scaling=False"]
    assert rows["fishermask_authors"].startswith("| fishermask_authors | no | first 1024 |")
    # the ablation variant is not repeated against every strategy
    versus = text.split("## FisherMask against each strategy")[1].split("\n## ")[0]
    assert not any(line.startswith("| fishermask prob_scaling=False |")
                   for line in versus.splitlines())
    assert "| fishermask | fishermask prob_scaling=False | +0.0650 ± " in versus
    every = text.split("Every tensor in network order")[1].split("\n## ")[0]
    assert "| 1 | a.weight | 10 | 0.5000 (5.00) | 0.5000 (5.00) |" in every
    assert "| 2 | fc.weight | 4 | 1.0000 (4.00) | 1.0000 (4.00) |" in every
    # one weight in one round of one seed of three is not "none"
    assert "| 3 | big.weight | 100000 | <0.0001 (0.33) | 0 |" in every
    assert res["files"]["mask_by_tensor"].stat().st_size > 5000


def test_training_table_says_how_often_the_epoch_cap_ended_a_training(tmp_path):
    runs = [_variant(_run("random", "random", s, [0.5, 0.6, 0.7]), {"train.max_epochs": "20"})
            for s in range(2)]
    runs[0].epochs, runs[1].epochs = [5, 20, 7], [20, 9, 11]
    runs += [_variant(_run("margin", "margin", 0, [0.5, 0.6, 0.7]),
                      {"train.max_epochs": "20", "train.epochs": "3"})]
    runs[-1].epochs = [3, 3, 3]
    build_report(runs, tmp_path, title="epochs", target=0.75)
    text = (tmp_path / "summary.md").read_text().split("## Training")[1].split("\n## ")[0]
    assert "| random | 6 | 12.0 | 20 | 20 | 2 (33%) |" in text
    assert "| margin | 3 | 3.0 | 3 | – | 0 (0%) |" in text


def test_one_seed_reports_no_spread(tmp_path):
    runs = [_run("random", "random", 0, [0.5, 0.6, 0.7]),
            _run("fishermask", "fishermask", 0, [0.5, 0.7, 0.8], (4, 3, 3))]
    build_report(runs, tmp_path, title="one seed", target=0.75)
    budget = (tmp_path / "summary.md").read_text().split("at each budget")[1].split("##")[0]
    assert "| fishermask | 0.500 | 0.700 | 0.800 |" in budget and "±" not in budget.split("|---")[1]


@pytest.mark.integration  # a real sweep on Ray, its MLflow runs, the CLI
def test_report_of_a_real_sweep(tiny_sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--experiment", "tiny", "--out", str(out),
                 "--tracking-uri", tiny_sweep.uri]) == 0
    files = {p.name for p in out.iterdir()}
    assert files == {"learning_curves.png", "aubc.png", "class_balance.png", "mask_profile.png",
                     "mask_by_tensor.png", "summary.md", "report.html", "comparisons.json"}
    text = (out / "summary.md").read_text()
    assert "4 finished runs in 2 variants" in text
    table = [line for line in text.split("## Area under")[1].split("##")[0].splitlines()
             if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| random", "| fishermask"]
    assert "(paired, n=2)" in table[2]
    balance = text.split("## Class balance")[1]
    assert "| variant | 0 | 1 | 2 | 3 | min/max |" in balance
    rare = text.split("## Labels of the rare classes by round")[1].split("##")[0]
    assert "(classes 0-2: 36 pool images)" in rare and "| variant | 10 | 20 | 30 |" in rare
    for variant in ("random", "fishermask"):  # per round up to the end's class balance
        by_round = [float(x.strip("| ")) for x in next(line for line in rare.splitlines()
                                           if line.startswith(f"| {variant} |")).split(" | ")[1:]
                    if x.strip("| ")]
        final = next(line for line in balance.splitlines() if line.startswith(f"| {variant} |"))
        assert by_round == sorted(by_round) and by_round[-1] <= 36
        assert by_round[-1] == pytest.approx(sum(float(x) for x in final.split(" | ")[1:4]), abs=0.06)
    assert "classifier.weight (1.000)" in text  # FisherMask forces the last layer in
    times = text.split("## Wall time per phase")[1].splitlines()
    header = next(line for line in times if line.startswith("| variant"))
    assert "| train | query |" in header and "query: greedy" in header and "query: mask" in header
    fm_row = next(line for line in times if line.startswith("| fishermask"))
    assert all(float(x) > 0 for x in fm_row.strip("| ").split(" | ")[1:])
    client = MlflowClient(tiny_sweep.uri)
    _comparisons_agree_with_scipy(client, out, text)
    logged = {a.path for a in client.list_artifacts(tiny_sweep.parent_run_id, "report")}
    assert {"report/summary.md", "report/learning_curves.png", "report/mask_profile.png",
            "report/report.html", "report/comparisons.json",
            "report/comparisons_table.json"} <= logged
    # the same report by parent run id, and a clear error for an unknown experiment
    assert main(["report", "--run", tiny_sweep.parent_run_id, "--out", str(tmp_path / "r2"),
                 "--tracking-uri", tiny_sweep.uri, "--no-log"]) == 0
    assert (tmp_path / "r2" / "summary.md").read_text() == text
    assert main(["report", "--experiment", "nope", "--tracking-uri", tiny_sweep.uri]) == 2
    assert "experiments there:" in capsys.readouterr().err
    # --seeds keeps only those seeds' runs; an absent seed is named with the ones there are
    assert main(["report", "--run", tiny_sweep.parent_run_id, "--out", str(tmp_path / "r3"),
                 "--tracking-uri", tiny_sweep.uri, "--no-log", "--seeds", "1"]) == 0  # of 0, 1
    assert "2 finished runs in 2 variants" in (tmp_path / "r3" / "summary.md").read_text()
    assert main(["report", "--run", tiny_sweep.parent_run_id, "--tracking-uri", tiny_sweep.uri,
                 "--no-log", "--seeds", "99"]) == 2
    assert "no finished run has seed 99; the finished runs have seeds [0, 1]" in capsys.readouterr().err
    assert main(["report", "--run", tiny_sweep.parent_run_id, "--tracking-uri", tiny_sweep.uri,
                 "--no-log", "--min-gap", "0"]) == 2
    assert "--min-gap 0.0: give a positive AUBC gap" in capsys.readouterr().err


def _comparisons_agree_with_scipy(client, out, text):
    """comparisons.json: fishermask against random in the AUBC table and in FisherMask's table,
    p from scipy's paired t-test over the sweep's two seeds (AUBC by the trapezoid rule here)."""
    rows = json.loads((out / "comparisons.json").read_text())
    assert [(r["family"], r["a"], r["b"]) for r in rows] == [
        ("vs random", "fishermask", "random"), ("fishermask vs others", "fishermask", "random")]
    parent, exp_id = find_parent(client, experiment="tiny")
    runs, _ = split_configs([load_run(client, r) for r in child_runs(client, exp_id, parent)
                             if r.info.status == "FINISHED"])
    score = {(r.variant, r.seed): integrate.trapezoid(r.curves["accuracy"], r.steps)
             / (r.steps[-1] - r.steps[0]) for r in runs}
    fm, rnd = ([score[(v, s)] for s in (0, 1)] for v in ("fishermask", "random"))
    for r in rows:
        assert {"a", "b", "metric", "family", "n", "diff", "ci95", "p", "p_holm",
                "seeds_for_power"} <= set(r)
        assert r["metric"] == "aubc/accuracy" and r["paired"] and r["n"] == 2
        assert r["diff"] == pytest.approx(np.mean(fm) - np.mean(rnd))
        assert r["p"] == pytest.approx(sps.ttest_rel(fm, rnd).pvalue, rel=1e-9)
        assert r["p_holm"] == pytest.approx(r["p"])  # one test in each table
        assert f"| {_p(r['p'])} | {_p(r['p_holm'])} |" in text


def _p(p):
    return "<0.001" if p < 0.001 else f"{p:.3f}"
