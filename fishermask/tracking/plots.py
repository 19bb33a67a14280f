"""Figures: a run's learning curve and FisherMask's mask profile (the paper's Fig. 2), by tensor
name and over rounds."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curve(records, title: str = ""):
    """Accuracy and balanced accuracy against the number of labels."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    x = [r.n_labels for r in records]
    ax.plot(x, [r.accuracy for r in records], "o-", label="accuracy")
    ax.plot(x, [r.balanced_accuracy for r in records], "s--", label="balanced accuracy")
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def mask_profile(profile: list[dict], title: str = "FisherMask: fraction of each tensor in the mask"):
    """Bar chart of the fraction selected per parameter tensor, in network order."""
    fig, ax = plt.subplots(figsize=(max(6, len(profile) * 0.12), 3.5), dpi=100)
    ax.bar([p["layer"] + 1 for p in profile], [p["fraction"] for p in profile], color="tab:blue")
    ax.set_xlabel("parameter tensor (network order)")
    ax.set_ylabel("fraction in mask")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def short_name(name: str) -> str:
    return name.replace(".weight", ".w").replace(".bias", ".b")


def mask_heatmap(ax, names: list[str], rows: list[str], frac, fig=None) -> None:
    """Rounds (rows) × tensors (columns, network order, named) heat map of the mask fraction, on
    a log colour scale (a tensor's fraction spans 1e-4..1)."""
    import numpy as np
    from matplotlib.colors import LogNorm

    frac = np.clip(np.asarray(frac, dtype=float), 1e-4, 1.0)
    im = ax.imshow(frac, aspect="auto", cmap="magma", norm=LogNorm(vmin=1e-4, vmax=1.0),
                   interpolation="nearest")
    ax.set_xticks(range(len(names)), [short_name(n) for n in names], rotation=90,
                  fontsize=7 if len(names) <= 40 else 5)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    if fig is not None:
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01,
                     label="fraction of the tensor in the mask (black: none)")


def mask_profile_rounds(profiles: list[tuple[int, list[dict]]], title: str = "FisherMask mask profile"):
    """``profiles``: ``(round, profile)`` pairs; a profile is FisherMask's list of
    ``{layer, name, size, selected, fraction}``.  One row per round, one column per tensor."""
    names = [p["name"] for p in profiles[0][1]]
    frac = [[next((q["fraction"] for q in prof if q["name"] == n), 0.0) for n in names]
            for _, prof in profiles]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names) + 2.5), 0.35 * len(profiles) + 2.6),
                           dpi=100)
    mask_heatmap(ax, names, [f"round {r}" for r, _ in profiles], frac, fig)
    ax.set_title(title + " (rounds × tensors)", fontsize=10)
    fig.tight_layout()
    return fig
