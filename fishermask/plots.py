"""Figures: a run's learning curve and FisherMask's mask profile (the paper's Fig. 2)."""

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
