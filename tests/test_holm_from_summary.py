"""scripts/holm_from_summary.py: the p, Holm p, paired sd and seeds for power that it recovers from
a report's table cells (Δ ± 95 % CI half-width, n paired seeds), checked on a hand-made summary
against scipy on the per-seed scores the cells were made from."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "holm_from_summary.py"
_spec = importlib.util.spec_from_file_location("holm_from_summary", SCRIPT)
hfs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hfs)

# AUBC by seed (5 paired seeds) of four variants
SCORES = {"random": [0.60, 0.64, 0.58, 0.66, 0.62],
          "margin": [0.71, 0.73, 0.69, 0.77, 0.72],
          "fishermask": [0.69, 0.70, 0.66, 0.73, 0.71],
          "bait": [0.70, 0.69, 0.68, 0.71, 0.69]}


def _cell(a: str, b: str, digits: int, paired: bool = False) -> str:
    d = np.subtract(SCORES[a], SCORES[b])
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return (f"{d.mean():+.{digits}f} ± {half:.{digits}f} "
            f"({'paired, ' if paired else ''}n={len(d)})")


def _summary(digits: int = 12) -> str:
    c = lambda a, b, paired=False: _cell(a, b, digits, paired)  # noqa: E731
    return "\n".join([
        "# Report: hand-made", "", "## Area under the budget curve", "",
        "| variant | seeds | AUBC acc. | Δ vs random | final acc. |", "|---|---|---|---|---|",
        "| random | 5 | 0.62 ± 0.03 | – | 0.7 ± 0.1 |",
        *[f"| {v} | 5 | 0.7 ± 0.03 | {c(v, 'random', True)} | 0.8 ± 0.1 |"
          for v in ("margin", "fishermask", "bait")], "",
        "## FisherMask against each strategy", "",
        "| FisherMask variant | against | Δ AUBC | wins |", "|---|---|---|---|",
        *[f"| fishermask | {v} | {c('fishermask', v)} | 1/5 |"
          for v in ("random", "margin", "bait")],
        f"| bait | fishermask | {c('bait', 'fishermask')} | 4/5 |",  # one test, shown both ways
        "", "## FisherMask ablation", "",
        "| variant | √p scaling | AUBC | Δ vs fishermask | wins | Δ vs random |",
        "|---|---|---|---|---|---|",
        f"| fishermask | yes | 0.7 ± 0.02 | – | – | {c('fishermask', 'random')} |",
        f"| bait | no | 0.69 ± 0.01 | {c('bait', 'fishermask')} | 1/5 | {c('bait', 'random')} |",
        "", "### The comparisons under each evaluation", "",
        "| first | second | Δ (one) | wins | verdict | Δ (two) | wins | verdict |",
        "|---|---|---|---|---|---|---|---|",
        f"| margin | random | {c('margin', 'random')} | 5/5 | higher | "
        f"{c('margin', 'random').split(' (')[0]} (unpaired, n=5) | 5/5 | higher |", ""])


def _holm(ps: list[float]) -> list[float]:
    """Holm's step-down, written out: the i-th smallest p times (m − i + 1), made monotone."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, top = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        top = max(top, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = top
    return out


def _by_table(text: str) -> dict[str, list[dict]]:
    return {t["title"]: hfs.comparisons(t) for t in hfs.tables(text)}


def test_p_and_sd_from_a_cell_are_the_paired_t_test_of_the_scores():
    rows = _by_table(_summary())["FisherMask against each strategy"]
    assert [(r["a"], r["b"]) for r in rows] == [("fishermask", "random"), ("fishermask", "margin"),
                                                ("fishermask", "bait"), ("bait", "fishermask")]
    for r in rows:
        a, b = np.array(SCORES[r["a"]]), np.array(SCORES[r["b"]])
        assert r["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-8)
        assert r["sd"] == pytest.approx(np.std(a - b, ddof=1), rel=1e-8)
        assert r["n"] == 5


def test_holm_within_each_table_counts_a_pair_shown_both_ways_once():
    by = _by_table(_summary())
    p = lambda a, b: sps.ttest_rel(SCORES[a], SCORES[b]).pvalue  # noqa: E731
    versus = by["FisherMask against each strategy"]
    expected = _holm([p("fishermask", v) for v in ("random", "margin", "bait")])  # m = 3, not 4
    assert [r["p_holm"] for r in versus[:3]] == pytest.approx(expected, rel=1e-8)
    assert versus[3]["p_holm"] == versus[2]["p_holm"]
    base = by["Area under the budget curve"]
    assert [r["p_holm"] for r in base] == pytest.approx(
        _holm([p(v, "random") for v in ("margin", "fishermask", "bait")]), rel=1e-8)
    ablation = by["FisherMask ablation"]  # both Δ columns: one family of three tests
    assert [(r["a"], r["b"]) for r in ablation] == [("fishermask", "random"),
                                                    ("bait", "fishermask"), ("bait", "random")]
    assert [r["p_holm"] for r in ablation] == pytest.approx(
        _holm([p("fishermask", "random"), p("bait", "fishermask"), p("bait", "random")]),
        rel=1e-8)


def test_an_unpaired_cell_has_no_test_and_is_not_counted():
    rows = _by_table(_summary())["The comparisons under each evaluation"]
    assert [r["column"] for r in rows] == ["Δ (one)", "Δ (two)"]
    assert math.isnan(rows[1]["p"]) and math.isnan(rows[1]["p_holm"])
    assert rows[1]["seeds_for_power"] is None
    assert rows[0]["p_holm"] == pytest.approx(rows[0]["p"], rel=1e-12)  # m = 1


def test_rounded_cells_give_nearly_the_same_p():
    exact = _by_table(_summary())["FisherMask against each strategy"]
    rounded = _by_table(_summary(digits=4))["FisherMask against each strategy"]
    for e, r in zip(exact, rounded):
        assert r["p"] == pytest.approx(e["p"], rel=0.05, abs=1e-4)


def _power(k: int, diff: float, sd: float) -> float:
    """The two-sided paired t-test's power with k seeds, by scipy's noncentral t (both tails)."""
    crit, nc = sps.t.ppf(0.975, k - 1), math.sqrt(k) * diff / sd
    return sps.nct.sf(crit, k - 1, nc) + sps.nct.sf(crit, k - 1, -nc)


def test_seeds_for_power_is_the_first_n_with_80_percent_power_by_the_noncentral_t():
    rows = hfs.comparisons(hfs.tables(_summary())[1], gap=0.005)
    for r in rows:
        for n, diff in ((r["seeds_for_power"], r["diff"]), (r["seeds_for_gap"], 0.005)):
            assert _power(n, diff, r["sd"]) >= 0.8
            assert n == 2 or _power(n - 1, diff, r["sd"]) < 0.8
    assert any(r["seeds_for_gap"] != r["seeds_for_power"] for r in rows)


def test_zero_half_width_and_one_seed():
    assert hfs.t_from_cell(0.01, 0.0, 5) == {"p": 0.0, "sd": 0.0}
    assert hfs.t_from_cell(0.0, 0.0, 5)["p"] == 1.0
    assert math.isnan(hfs.t_from_cell(0.01, 0.02, 1)["p"])


def test_the_command_prints_each_table_with_raw_and_holm_p(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text(_summary(digits=4))
    out = subprocess.run([sys.executable, str(SCRIPT), str(path), "--gap", "0.01"],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert "## FisherMask against each strategy (3 tests, Holm within this table)" in out
    assert "## FisherMask ablation (3 tests, Holm within this table)" in out
    assert "| p | Holm p | Holm p < 0.05 | seeds for 80 % power at Δ | at 0.01 |" in out
    line = next(x for x in out.splitlines() if x.startswith("| fishermask | margin |"))
    r = _by_table(_summary(digits=4))["FisherMask against each strategy"][1]
    assert f"| {r['p']:.4f} | {r['p_holm']:.4f} |" in line
