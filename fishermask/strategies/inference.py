"""Per-batch model computations that executors run over the pool (eval mode, test transform).

Each is a picklable callable ``fn(model, x) -> Tensor | dict[str, Tensor]`` with one row per
sample, so an executor can run it on any slice of the pool and concatenate or sum the results.
The penultimate features h(x) are the input of the model's final ``nn.Linear`` (found by
:func:`~fishermask.kernels.head.find_head`, at the attribute path ``classifier`` when given).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from fishermask.kernels.head import features_logits, find_head


@torch.no_grad()
def probs(model, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities p(x), ``[B, C]``."""
    return F.softmax(model(x).float(), dim=1)


def features_probs(model, x: torch.Tensor, classifier: Optional[str] = None):
    """h(x) [B, d] and p(x) [B, C] (float32) from one forward pass."""
    h, logits = features_logits(model, x, find_head(model, classifier)[1])
    return h.float(), F.softmax(logits.float(), dim=1)


class ProbsFeatures:
    """``{"probs": p(x) [B, C], "features": h(x) [B, d]}`` from one forward pass."""

    def __init__(self, classifier: Optional[str] = None):
        self.classifier = classifier

    @torch.no_grad()
    def __call__(self, model, x):
        h, p = features_probs(model, x, self.classifier)
        return {"probs": p, "features": h}


class Features(ProbsFeatures):
    """Penultimate features h(x), ``[B, d]``."""

    @torch.no_grad()
    def __call__(self, model, x):
        return features_probs(model, x, self.classifier)[0]
