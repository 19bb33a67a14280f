"""Report figures: learning curves (the paper's Fig. 4/5), AUBC differences to the baseline, class
balance of the picks, and the FisherMask mask profile (Fig. 2).  Each function writes one PNG."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fishermask.reports.data import mask_layers, mask_rounds, mean_curve  # noqa: E402
from fishermask.tracking.plots import mask_heatmap, short_name  # noqa: E402

LABELS = {"accuracy": "test accuracy", "balanced_accuracy": "balanced test accuracy"}


def _colors(keys):
    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    return {k: cmap(i % cmap.N) for i, k in enumerate(keys)}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(groups, path: Path, title: str, baseline: str = "random") -> Path:
    """Accuracy and balanced accuracy against labels, mean ± std over seeds per variant."""
    colors = _colors(list(groups))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharex=True)
    for ax, metric in zip(axes, ("accuracy", "balanced_accuracy")):
        for variant, runs in groups.items():
            steps, mean, std = mean_curve(runs, metric)
            if not len(steps):
                continue
            style = "--" if runs[0].strategy == baseline else "-"
            ax.plot(steps, mean, style, marker="o", ms=3, color=colors[variant],
                    label=f"{variant} (n={len(runs)})")
            ax.fill_between(steps, mean - std, mean + std, color=colors[variant], alpha=0.15,
                            linewidth=0)
        ax.set_xlabel("labels")
        ax.set_ylabel(LABELS[metric] + " (mean ± std over seeds)")
        ax.grid(alpha=0.3)
    axes[0].set_title(title, fontsize=10, loc="left")
    axes[1].legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def aubc_diffs(rows, path: Path, metric_label: str, baseline: str) -> Path:
    """Horizontal bars: AUBC difference to the baseline with 95 % CI error bars."""
    rows = [r for r in rows if r["ref"] is not None and r["variant"] != r["ref"]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(rows), 2) + 1.2))
    y = np.arange(len(rows))
    diffs = [r["diff"]["diff"] for r in rows]
    errs = [0.0 if math.isnan(r["diff"]["ci"]) else r["diff"]["ci"] for r in rows]
    ax.barh(y, diffs, xerr=errs, color=["tab:green" if d >= 0 else "tab:red" for d in diffs],
            alpha=0.7, capsize=3)
    ax.set_yticks(y, [r["variant"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(f"normalised AUBC ({metric_label}) − {baseline}, 95 % CI over seeds")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def class_balance(groups, path: Path) -> Path:
    """Heat map: mean labels per class at the end of the budget, per variant."""
    variants = list(groups)
    n_cls = max((len(r.labels_per_class) for rs in groups.values() for r in rs), default=0)
    mat = np.array([[np.mean([r.labels_per_class[c] if c < len(r.labels_per_class) else 0
                              for r in groups[v]]) for c in range(n_cls)] for v in variants])
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * n_cls + 3), 0.4 * len(variants) + 1.6))
    im = ax.imshow(mat, aspect="auto", cmap="viridis")
    ax.set_xticks(range(n_cls), [str(c) for c in range(n_cls)])
    ax.set_yticks(range(len(variants)), variants, fontsize=8)
    ax.set_xlabel("class")
    ax.set_title("labels per class at the end (mean over seeds)", fontsize=10)
    if mat.size and n_cls <= 20:
        hi = mat.max()
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, f"{mat[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="black" if mat[i, j] > 0.6 * hi else "white")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _save(fig, path)


def mask_profile(groups, path: Path):
    """FisherMask's mask over rounds: per FisherMask variant, a rounds × tensors heat map (tensors
    named, in network order) of the fraction of each tensor in the mask, mean over seeds."""
    items = []
    for variant, runs in groups.items():
        names, by_round = mask_rounds(runs)
        if names:
            items.append((variant, names, by_round))
    if not items:
        return None
    n_cols = max(len(names) for _, names, _ in items)
    heights = [0.3 * len(by_round) + 1.4 for *_, by_round in items]
    fig, axes = plt.subplots(len(items), 1, squeeze=False,
                             figsize=(max(7, 0.3 * n_cols + 3), sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights})
    for ax, (variant, names, by_round) in zip(axes[:, 0], items):
        mask_heatmap(ax, names, [f"round {r}" for r in sorted(by_round)],
                     [by_round[r] for r in sorted(by_round)], fig)
        ax.set_title(f"{variant}: fraction of each tensor in the mask (mean over seeds)",
                     fontsize=10, loc="left")
    return _save(fig, path)


def mask_by_tensor(groups, path: Path) -> Path:
    """The paper's Fig. 2: per FisherMask variant, bars of the fraction of each tensor in the mask
    (mean over seeds and rounds) against the tensor's position in the network (1 = the input
    layer); the tallest tensors are named."""
    items = [(v, *mask_layers(rs)) for v, rs in groups.items()]
    items = [(v, names, mean) for v, names, mean, _ in items if names]
    fig, axes = plt.subplots(len(items), 1, squeeze=False, sharex=True,
                             figsize=(max(7, 0.14 * max(len(n) for _, n, _ in items) + 3),
                                      1.9 * len(items) + 1.0))
    for ax, (variant, names, mean) in zip(axes[:, 0], items):
        x = np.arange(1, len(names) + 1)
        ax.bar(x, mean, width=0.8, color="tab:purple")
        for i in np.argsort(-mean)[:3]:
            if mean[i] > 0:
                ax.annotate(short_name(names[i]), (x[i], mean[i]), fontsize=6, ha="center",
                            va="bottom", rotation=0)
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("fraction", fontsize=8)
        ax.set_title(f"{variant}: fraction of each tensor in the mask (mean over seeds, rounds)",
                     fontsize=9, loc="left")
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("tensor (network order; the last is the classifier weight)")
    return _save(fig, path)
