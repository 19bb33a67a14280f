"""Two evaluations of one study side by side: the same strategies and seeds run twice, differing
in one setting (e.g. ``train.bn_recalibrate``), and how the conclusions change with it.

For every strategy and evaluation: AUBC mean ± std over seeds, the mean over budgets of the std
over seeds of the accuracy (the spread of the curves), and the drops per run (rounds whose test
accuracy falls by more than ``drop`` from the round before: more labels, worse model).  Then
every pair of strategies: the paired AUBC difference ± 95 % CI and the wins per seed under each
evaluation, and whether the CI excludes zero.  Pure functions over
:class:`~fishermask.reports.data.RunData` and one figure."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from fishermask.reports.data import RunData, aubc, group, mean_curve
from fishermask.reports.sections import paired, pm, std


def _scores(runs: list[RunData], metric: str) -> dict[str, dict[int, float]]:
    return {v: {r.seed: aubc(r.steps, r.curves[metric]) for r in rs}
            for v, rs in group(runs).items()}


def drops(run: RunData, metric: str, drop: float) -> int:
    """Rounds whose accuracy is more than ``drop`` below the round before."""
    return int(np.sum(np.diff(run.curves[metric]) < -drop))


def _verdict(d: dict) -> str:
    if d["n"] < 2 or np.isnan(d["ci"]):
        return "–"
    if d["diff"] - d["ci"] > 0:
        return "higher"
    if d["diff"] + d["ci"] < 0:
        return "lower"
    return "not significant"


def compare(evaluations: dict[str, list[RunData]], metric: str = "accuracy",
            drop: float = 0.05) -> list[str]:
    """Markdown lines comparing the evaluations (name → finished runs) over their common variants."""
    groups = {name: group(runs) for name, runs in evaluations.items()}
    variants = [v for v in next(iter(groups.values()), {})
                if all(v in g for g in groups.values())]
    if not variants:
        raise ValueError(f"no strategy has finished runs in every evaluation "
                         f"({', '.join(f'{n}: {len(g)} strategies' for n, g in groups.items())})")
    scores = {name: _scores(runs, metric) for name, runs in evaluations.items()}
    m = metric.replace("_", " ")
    L = ["### Each strategy under each evaluation", "",
         f"AUBC ({m}) and final {m}: mean ± std over seeds; spread = the std over seeds of the "
         f"{m}, averaged over the budgets; drops = rounds per run whose {m} falls by more than "
         f"{drop:g} from the round before (mean over seeds).", "",
         "| variant | evaluation | seeds | AUBC | final | spread | drops per run |",
         "|---|---|---|---|---|---|---|"]
    for v in variants:
        for name, g in groups.items():
            rs = g[v]
            vals = list(scores[name][v].values())
            finals = [r.curves[metric][-1] for r in rs]
            _, _, sd = mean_curve(rs, metric)
            L.append(f"| {v} | {name} | {len(rs)} | {pm(float(np.mean(vals)), std(vals))} | "
                     f"{pm(float(np.mean(finals)), std(finals), '{:.3f}')} | "
                     f"{f'{float(np.mean(sd)):.3f}' if len(rs) > 1 else '–'} | "
                     f"{np.mean([drops(r, metric, drop) for r in rs]):.1f} |")
    L += ["", "### The comparisons under each evaluation", "",
          "Δ = first minus second strategy's AUBC ± 95 % CI over seeds (paired by seed); wins = "
          "seeds where the first is higher; verdict: the CI above zero (higher), below (lower), or "
          "containing it.", "",
          "| first | second | " + " | ".join(f"Δ ({n}) | wins | verdict" for n in groups) + " |",
          "|---|---|" + "---|---|---|" * len(groups)]
    for a, b in itertools.combinations(variants[::-1], 2):  # a later strategy minus an earlier
        cells = []
        for name in groups:
            d, wins = paired(scores[name][a], scores[name][b])
            cells.append(f"{pm(d['diff'], d['ci'], '{:+.4f}')} (n={d['n']}) | {wins} | "
                         f"{_verdict(d)}")
        L.append(f"| {a} | {b} | " + " | ".join(cells) + " |")
    return L + [""]


def curves_figure(evaluations: dict[str, list[RunData]], path: Path,
                  metric: str = "accuracy") -> Path:
    """One panel per evaluation: mean ± std learning curves of the common variants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {name: group(runs) for name, runs in evaluations.items()}
    variants = [v for v in next(iter(groups.values())) if all(v in g for g in groups.values())]
    colors = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), sharey=True,
                             squeeze=False)
    for ax, (name, g) in zip(axes[0], groups.items()):
        for v in variants:
            steps, mean, sd = mean_curve(g[v], metric)
            ax.plot(steps, mean, marker="o", ms=3, color=colors[v], label=f"{v} (n={len(g[v])})")
            ax.fill_between(steps, mean - sd, mean + sd, color=colors[v], alpha=0.15, linewidth=0)
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_xlabel("labels")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"test {metric.replace('_', ' ')} (mean ± std over seeds)")
    axes[0, -1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
