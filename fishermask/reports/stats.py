"""The report's tests of its comparisons: p values, Holm's adjustment within a family (one table of
comparisons), and the seeds a paired comparison needs for a given power.

For the scores of two variants by seed (AUBC per seed):

* paired (the seeds match, see :func:`~fishermask.reports.data.diff_ci`): d_s = a_s − b_s over
  the n shared seeds, d̄ their mean, s = std(d, ddof=1); t = d̄ / (s / √n) with n − 1 degrees of
  freedom and p = 2·P(T_{n−1} > |t|) (``scipy.stats.ttest_rel``);
* unpaired (the seeds do not match): Welch's t = (ā − b̄) / √(s_a²/n_a + s_b²/n_b) with the
  Welch–Satterthwaite degrees of freedom (``scipy.stats.ttest_ind(equal_var=False)``);
* no spread (s = 0, or s_a = s_b = 0): p = 0 for a nonzero difference (t = ±∞, as scipy gives it)
  and p = 1 for none (identical scores: scipy's t = 0/0 is NaN); differences and spreads up to
  ``TINY`` (the rounding of AUBCs in [0, 1]) count as 0;
* no test (one seed on a side, one pair): p is NaN.

Holm within a family of m tests, p_(1) ≤ … ≤ p_(m) sorted ascending (ties keep their order):
p_holm_(i) = max_{j≤i} min(1, (m − j + 1)·p_(j)).  m counts the tests the family holds: a
comparison without a test (NaN p) is none, and one shown both ways (a − b and b − a) is one.

Power of the two-sided paired t-test at level α with n paired seeds, mean difference Δ and sd σ
of the differences: power(n) = P(|T'| > t_{1−α/2, n−1}), T' ~ noncentral t with n − 1 degrees
of freedom and noncentrality √n·Δ/σ (``scipy.stats.nct``), computed as the two upper tails
P(T'_{nc} > t) + P(T'_{−nc} > t) (scipy's lower tail of a far noncentral t can be NaN).  The
seeds needed for a power are the smallest n ≥ 2 that reach it (power grows with n): None where
Δ or σ is 0 or undefined, or for an unpaired comparison (no paired σ to plan with; run the same
seeds for both variants).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from fishermask.reports.data import diff_ci

ALPHA = 0.05
POWER = 0.8
TINY = 1e-12  # |difference| or sd up to this counts as 0 (float rounding, not spread)


def _degenerate_p(diff: float) -> float:
    """p of a difference without spread: 0 for a nonzero one (t = ±∞), 1 for none."""
    return 1.0 if abs(diff) <= TINY else 0.0


def t_test(values: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """``values`` − ``baseline`` (scores by seed): ``diff``, ``ci95``, ``n`` and ``paired`` as
    :func:`diff_ci` has them, ``sd`` of the paired differences (NaN unpaired or for one pair) and
    the two-sided ``p`` (paired t-test, else Welch's; NaN when there is no test)."""
    from scipy import stats  # on use: scipy.stats takes a second to import

    d = diff_ci(values, baseline)
    out = {"n": d["n"], "diff": d["diff"], "ci95": d["ci"], "paired": d["paired"],
           "sd": math.nan, "p": math.nan}
    if d["paired"]:
        common = sorted(set(values) & set(baseline))
        if len(common) < 2:
            return out
        a = np.array([values[s] for s in common])
        b = np.array([baseline[s] for s in common])
        out["sd"] = float(np.std(a - b, ddof=1))
        out["p"] = (_degenerate_p(out["diff"]) if out["sd"] <= TINY
                    else float(stats.ttest_rel(a, b).pvalue))
        return out
    a, b = np.array(list(values.values())), np.array(list(baseline.values()))
    if len(a) >= 2 and len(b) >= 2:
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        out["p"] = (_degenerate_p(out["diff"]) if se <= TINY
                    else float(stats.ttest_ind(a, b, equal_var=False).pvalue))
    return out


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment of ``ps`` (in their order): sorted ascending,
    p_holm_(i) = max_{j≤i} min(1, (m − j + 1)·p_(j)); NaN (no test) stays NaN, not in m."""
    tested = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    out = [math.nan] * len(ps)
    running = 0.0
    for j, i in enumerate(tested, start=1):
        running = max(running, min(1.0, (len(tested) - j + 1) * ps[i]))
        out[i] = running
    return out


def power(n: int, diff: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with ``n`` ≥ 2 pairs: P(|T'| > t_{1−α/2, n−1}),
    T' ~ noncentral t(n − 1, √n·diff/sd), as P(T'_{nc} > t) + P(T'_{−nc} > t)."""
    from scipy import stats

    df, nc = n - 1, math.sqrt(n) * diff / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def seeds_for_power(diff: float, sd: float, target: float = POWER,
                    alpha: float = ALPHA) -> Optional[int]:
    """The smallest n ≥ 2 with :func:`power` (n, diff, sd) ≥ ``target`` (doubling, then
    bisection); None where diff or sd is 0 (up to ``TINY``) or NaN."""
    if math.isnan(diff) or math.isnan(sd) or abs(diff) <= TINY or sd <= TINY:
        return None
    lo, hi = 1, 2  # power(lo) < target (one pair: no test); power(hi) is checked
    while power(hi, diff, sd, alpha) < target:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power(mid, diff, sd, alpha) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def comparison(family: str, a: str, b: str, scores_a: dict[int, float],
               scores_b: dict[int, float], metric: str, min_gap: float) -> dict[str, Any]:
    """One row of ``comparisons.json``: ``a`` − ``b`` in AUBC of ``metric`` (``p_holm`` is set by
    :func:`family`).  ``seeds_for_power`` plans for the observed difference and
    ``seeds_for_min_gap`` for ``min_gap``, both with the observed paired sd."""
    t = t_test(scores_a, scores_b)
    sd = t["sd"] if t["paired"] else math.nan
    return {"family": family, "a": a, "b": b, "metric": f"aubc/{metric}", "paired": t["paired"],
            "n": t["n"], "diff": t["diff"], "ci95": t["ci95"], "sd": t["sd"], "p": t["p"],
            "p_holm": math.nan, "seeds_for_power": seeds_for_power(t["diff"], sd),
            "min_gap": min_gap, "seeds_for_min_gap": seeds_for_power(min_gap, sd)}


def _test_key(row: dict[str, Any]) -> tuple:
    return frozenset((row["a"], row["b"])), row["metric"]


def family(name: str, pairs: list[tuple[str, str]], scores, metric: str,
           min_gap: float) -> list[dict[str, Any]]:
    """The rows of one table's comparisons (``pairs`` of variants, ``scores[variant][metric]``
    by seed) with their Holm p within the table; a pair shown both ways is one test."""
    rows = [comparison(name, a, b, scores[a][metric], scores[b][metric], metric, min_gap)
            for a, b in pairs]
    tests = {_test_key(r): r["p"] for r in rows}  # a − b and b − a: the same p
    adjusted = dict(zip(tests, holm(list(tests.values()))))
    for r in rows:
        r["p_holm"] = adjusted[_test_key(r)]
    return rows


def as_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with NaN as None (JSON's null)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows]
