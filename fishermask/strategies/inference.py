"""Per-batch model computations that executors run over the pool (eval mode, test transform).

Each is a picklable callable ``fn(model, x) -> Tensor | dict[str, Tensor]`` with one row per
sample, so an executor can run it on any slice of the pool and concatenate or sum the results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def probs(model, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities p(x), ``[B, C]``."""
    return F.softmax(model(x).float(), dim=1)


@torch.no_grad()
def probs_features(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"probs": p(x) [B, C], "features": h(x) [B, d]}`` from one forward pass."""
    h = model.features(x)
    return {"probs": F.softmax(model.classifier(h).float(), dim=1), "features": h.float()}


@torch.no_grad()
def features(model, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features h(x), ``[B, d]``."""
    return model.features(x).float()
