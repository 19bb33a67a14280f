"""Reports: the statistics and tables on edge cases a real study runs into (one shared seed, a
baseline of another configuration, a class never picked, a phase one seed lacks), the values
left in MLflow when a report is made again, and the comparisons' tests (p, Holm, seeds for power)
against scipy computed here."""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import integrate
from scipy import stats as sps

from fishermask.reports import mlflow_log, stats
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
    # the comparisons: the file and the table view, the second report's numbers
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/comparisons.json", "report/comparisons_table.json"} <= logged
    table = json.loads(open(client.download_artifacts(
        parent.info.run_id, "report/comparisons_table.json", str(tmp_path))).read())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert len(rows) == 2 and {r["family"] for r in rows} == {"vs random", "fishermask vs others"}
    assert all(set(r) == KEYS and r["a"] == "fishermask" and r["diff"] == pytest.approx(0.1)
               for r in rows)
    assert json.loads((tmp_path / "second" / "comparisons.json").read_text()) == json.loads(open(
        client.download_artifacts(parent.info.run_id, "report/comparisons.json",
                                  str(tmp_path / "dl"))).read())
    variants = json.loads(open(client.download_artifacts(
        parent.info.run_id, "report/variants.json", str(tmp_path / "dl"))).read())
    assert len(variants["data"]) == 2  # replaced, not appended to
    aubc = variants["columns"].index("aubc_accuracy")
    assert sorted(row[aubc] for row in variants["data"]) == pytest.approx([0.5, 0.6])


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


# ----------------------------------------------------------------------------- p, Holm, power

def _holm_by_definition(ps):
    """p_holm_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)) over the sorted p, back in input order."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out = [0.0] * m
    for i in range(m):
        out[order[i]] = max(min(1.0, (m - j) * ps[order[j]]) for j in range(i + 1))
    return out


def _power(n, diff, sd):
    """P(|T'| > t_{0.975, n-1}), T' ~ nct(n - 1, sqrt(n) diff / sd): 1 - the density's integral
    over [-t, t] (scipy's lower tail, nct.cdf(-t), is NaN for a far noncentrality)."""
    crit = sps.t.ppf(0.975, n - 1)
    nc = math.sqrt(n) * diff / sd
    inside, _ = integrate.quad(sps.nct.pdf, -crit, crit, args=(n - 1, nc), epsabs=1e-12)
    assert not math.isnan(inside)
    return 1.0 - inside


def _brute_force_seeds(diff, sd):
    n = 2
    while _power(n, diff, sd) < 0.8:
        n += 1
    return n


def test_holm_from_its_definition_with_ties_and_the_cap_at_one():
    rng = np.random.default_rng(0)
    cases = [rng.uniform(0, 0.2, 7).tolist(), [0.01, 0.04, 0.01, 0.04, 0.5],
             [0.3, 0.3, 0.3], [0.02], [0.0, 0.9, 0.45, 0.45]]
    for ps in cases:
        got = stats.holm(ps)
        assert got == pytest.approx(_holm_by_definition(ps), rel=1e-12)
        ranked = [got[i] for i in sorted(range(len(ps)), key=lambda i: ps[i])]
        assert ranked == sorted(ranked) and max(got) <= 1.0  # never decreases, capped at 1
        assert all(h >= p for h, p in zip(got, ps))
    ties = stats.holm([0.01, 0.04, 0.01, 0.04, 0.5])
    assert ties[0] == ties[2] == pytest.approx(0.05) and ties[1] == ties[3] == pytest.approx(0.12)
    assert stats.holm([0.3, 0.3, 0.3]) == [pytest.approx(0.9)] * 3
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]
    nan = stats.holm([0.01, math.nan, 0.04])  # no test: not one of the m
    assert nan[0] == pytest.approx(0.02) and math.isnan(nan[1]) and nan[2] == pytest.approx(0.04)


def test_seeds_for_power_is_the_smallest_n_with_80_percent_by_the_noncentral_t():
    for diff, sd in [(0.5, 1.0), (0.8, 1.0), (0.2, 1.0), (0.01, 0.004), (-0.03, 0.02),
                     (0.003, 0.02), (1.0, 0.1)]:
        n = stats.seeds_for_power(diff, sd)
        assert n == _brute_force_seeds(abs(diff), sd)
        assert stats.power(n, diff, sd) == pytest.approx(_power(n, diff, sd))
        assert n == 2 or _power(n - 1, diff, sd) < 0.8 <= _power(n, diff, sd)
    assert stats.seeds_for_power(0.5, 1.0) == 34  # Cohen's d = 0.5: the textbook 34 pairs
    for diff, sd in [(0.0, 0.01), (0.01, 0.0), (math.nan, 0.01), (0.01, math.nan)]:
        assert stats.seeds_for_power(diff, sd) is None


def test_edge_cases_zero_difference_zero_sd_and_two_or_one_seeds():
    a = {0: 0.75, 1: 0.5, 2: 0.625}
    zero_diff = stats.t_test(a, {0: 0.7, 1: 0.55, 2: 0.625})
    assert zero_diff["diff"] == pytest.approx(0) and zero_diff["p"] == pytest.approx(1.0)
    assert stats.seeds_for_power(zero_diff["diff"], zero_diff["sd"]) is None
    shifted = {s: v - 0.25 for s, v in a.items()}  # every seed exactly 0.25 better: no spread
    zero_sd = stats.t_test(a, shifted)
    assert zero_sd["sd"] == 0 and zero_sd["p"] == 0.0
    with warnings.catch_warnings():  # scipy warns of its constant differences, and agrees
        warnings.simplefilter("ignore", RuntimeWarning)
        assert sps.ttest_rel(list(a.values()), list(shifted.values())).pvalue == 0.0
    assert stats.seeds_for_power(zero_sd["diff"], zero_sd["sd"]) is None
    same = stats.t_test(a, dict(a))  # identical: scipy's 0/0 is NaN, no evidence of a gap
    assert same["p"] == 1.0 and same["sd"] == 0
    two = stats.t_test({0: 0.7, 1: 0.8}, {0: 0.6, 1: 0.65})
    assert two["n"] == 2
    assert two["p"] == pytest.approx(sps.ttest_rel([0.7, 0.8], [0.6, 0.65]).pvalue)
    assert stats.seeds_for_power(two["diff"], two["sd"]) == _brute_force_seeds(0.125, two["sd"])
    one = stats.t_test({0: 0.7}, {0: 0.6})
    assert one["paired"] and one["n"] == 1 and math.isnan(one["p"]) and math.isnan(one["sd"])


# ----------------------------------------------------------------------------- comparisons.json

KEYS = {"a", "b", "metric", "family", "n", "diff", "ci95", "p", "p_holm", "seeds_for_power",
        "paired", "sd", "min_gap", "seeds_for_min_gap"}


def _aubc_by_seed(runs, variant):
    """AUBC per seed, computed here: the trapezoids over the labels axis over its width."""
    return {r.seed: integrate.trapezoid(r.curves["accuracy"], r.steps) / (r.steps[-1] - r.steps[0])
            for r in runs if r.variant == variant}


def _study():
    """Four variants x 5 seeds with gaps of several sizes, and one whose seeds do not match."""
    rng = np.random.default_rng(7)
    runs = []
    for s in range(5):
        noise = rng.normal(0, 0.01, 3)
        runs.append(_run("random", s, [0.5, 0.6 + noise[0], 0.65 + noise[1]]))
        runs.append(_run("margin", s, [0.5, 0.63 + noise[0] + rng.normal(0, 0.01),
                                       0.69 + noise[1]]))
        runs.append(_run("fishermask", s, [0.5, 0.62 + noise[0] + rng.normal(0, 0.02),
                                           0.67 + noise[2]]))
        runs.append(_run("bait", s + 10, [0.5, 0.61 + noise[0], 0.66 + noise[2]]))  # seeds 10-14
    return runs


def test_comparisons_json_has_a_row_per_comparison_shown_with_scipy_p_values(tmp_path):
    runs = _study()
    res = build_report(runs, tmp_path, title="stats", target=0.9, min_gap=0.02)
    rows = json.loads((tmp_path / "comparisons.json").read_text())
    assert res["files"]["comparisons"] == tmp_path / "comparisons.json"
    text = (tmp_path / "summary.md").read_text()
    versus = text.split("## FisherMask against each strategy")[1].split("\n## ")[0]
    shown = [line for line in versus.splitlines() if line.startswith("| fishermask |")]
    fam = {f: [r for r in rows if r["family"] == f] for f in {r["family"] for r in rows}}
    assert set(fam) == {"vs random", "fishermask vs others"}
    assert [(r["a"], r["b"]) for r in fam["vs random"]] == [
        ("margin", "random"), ("bait", "random"), ("fishermask", "random")]  # the table's order
    assert len(fam["fishermask vs others"]) == len(shown) == 3
    for r in rows:
        assert set(r) == KEYS and r["metric"] == "aubc/accuracy" and r["min_gap"] == 0.02
        a, b = _aubc_by_seed(runs, r["a"]), _aubc_by_seed(runs, r["b"])
        if "bait" in (r["a"], r["b"]):  # seeds 10-14 against 0-4: Welch, no paired sd to plan with
            assert not r["paired"] and r["seeds_for_power"] is None and r["sd"] is None
            want = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
        else:
            seeds = sorted(a)
            want = sps.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
            d = np.array([a[s] - b[s] for s in seeds])
            assert r["paired"] and r["n"] == 5 and r["sd"] == pytest.approx(d.std(ddof=1))
            assert r["diff"] == pytest.approx(d.mean())
            assert r["ci95"] == pytest.approx(sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5))
            assert r["seeds_for_power"] == _brute_force_seeds(d.mean(), d.std(ddof=1))
            assert r["seeds_for_min_gap"] == _brute_force_seeds(0.02, d.std(ddof=1))
        assert r["p"] == pytest.approx(want.pvalue, rel=1e-9)
    for f, members in fam.items():  # Holm within each table, from its definition
        want = _holm_by_definition([r["p"] for r in members])
        assert [r["p_holm"] for r in members] == pytest.approx(want, rel=1e-12)
    # the tables show both p values beside each comparison
    for r in fam["fishermask vs others"]:
        line = next(x for x in shown if x.startswith(f"| fishermask | {r['b']} |"))
        assert line.endswith(f"| {_p(r['p'])} | {_p(r['p_holm'])} |")
    aubc = text.split("## Area under the budget curve")[1].split("\n## ")[0]
    assert "| Δ vs random | p | Holm p |" in aubc
    seeds = text.split("## Seeds needed")[1].split("\n## ")[0]
    assert "| seeds for 0.02 |" in seeds and "| bait − random | 5 (unpaired) |" in seeds
    margin = next(r for r in fam["vs random"] if r["a"] == "margin")
    assert (f"| margin − random | 5 | {margin['diff']:+.4f} | {margin['sd']:.4f} | "
            f"{margin['seeds_for_power']:,} | {margin['seeds_for_min_gap']:,} |") in seeds
    assert seeds.count("fishermask − random") == 1  # shown in two tables, planned once


def _p(p):
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def test_significant_above_and_below_follow_the_holm_p_only(tmp_path):
    """Three gaps with raw p < 0.05 of which Holm keeps only some: every sentence that says
    significant, above or below names only pairs whose Holm p is under 0.05."""
    base = [0.60, 0.62, 0.61, 0.63, 0.60, 0.62]
    gaps = {"margin": [0.030, 0.028, 0.031, 0.029, 0.030, 0.032],   # tiny p
            "entropy": [0.004, 0.012, -0.003, 0.010, 0.006, 0.011],  # raw p ~0.03
            "bait": [0.012, -0.006, 0.009, 0.015, 0.001, 0.010]}     # raw p ~0.06
    runs = [_run("random", s, [b]) for s, b in enumerate(base)]
    runs += [_run(v, s, [b + g[s]]) for v, g in gaps.items() for s, b in enumerate(base)]
    build_report(runs, tmp_path, title="words", target=0.9)
    rows = {r["a"]: r for r in json.loads((tmp_path / "comparisons.json").read_text())}
    assert rows["entropy"]["p"] < 0.05 < rows["entropy"]["p_holm"]  # the review's case
    assert rows["margin"]["p_holm"] < 0.05 and rows["bait"]["p"] > 0.05
    text = (tmp_path / "summary.md").read_text()
    claims = re.findall(r"`([^`]+)` (above|below) `([^`]+)`", text)
    assert claims == [("margin", "above", "random")]
    for sentence in re.split(r"(?<=\.)\s", text):
        if re.search(r"significant|above|below", sentence, re.I):
            named = set(re.findall(r"`([^`]+)`", sentence)) - {"random", "comparisons.json",
                                                               "--min-gap"}
            assert all(rows[v]["p_holm"] < 0.05 for v in named), sentence


def test_edge_cases_in_the_report(tmp_path):
    """One seed: no test, null p and Holm p, no seeds to plan; a pair shown both ways is one
    test of its table (m counts it once); --min-gap's column."""
    runs = [_run("random", 0, [0.5]), _run("margin", 0, [0.6])]
    build_report(runs, tmp_path / "one", title="one seed", target=0.9)
    (row,) = json.loads((tmp_path / "one" / "comparisons.json").read_text())
    assert row["n"] == 1 and row["p"] is None and row["p_holm"] is None
    assert row["seeds_for_power"] is None and row["seeds_for_min_gap"] is None
    text = (tmp_path / "one" / "summary.md").read_text()
    assert "Holm's adjustment over" not in text and "## Seeds needed" not in text

    runs = [_run(v, s, [x + 0.01 * s * (v == "fishermask") + 0.003 * (s % 2)])
            for s in range(4) for v, x in [("random", 0.5), ("fishermask", 0.52),
                                            ("fishermask_authors", 0.51)]]
    build_report(runs, tmp_path / "both", title="both ways", target=0.9, min_gap=0.05)
    rows = json.loads((tmp_path / "both" / "comparisons.json").read_text())
    others = [r for r in rows if r["family"] == "fishermask vs others"]
    fa = next(r for r in others if (r["a"], r["b"]) == ("fishermask", "fishermask_authors"))
    af = next(r for r in others if (r["a"], r["b"]) == ("fishermask_authors", "fishermask"))
    assert fa["p"] == pytest.approx(af["p"]) and fa["p_holm"] == af["p_holm"]
    assert fa["diff"] == pytest.approx(-af["diff"])
    tests = {frozenset((r["a"], r["b"])): r["p"] for r in others}  # 3 tests in 4 rows
    want = dict(zip(tests, _holm_by_definition(list(tests.values()))))
    assert [r["p_holm"] for r in others] == pytest.approx(
        [want[frozenset((r["a"], r["b"]))] for r in others])
    text = (tmp_path / "both" / "summary.md").read_text()
    assert "over the 3 tests of this table" in text and "| seeds for 0.05 |" in text
    ablation = [r for r in rows if r["family"] == "fishermask ablation"]
    assert {(r["a"], r["b"]) for r in ablation} == {
        ("fishermask", "random"), ("fishermask_authors", "fishermask"),
        ("fishermask_authors", "random")}
