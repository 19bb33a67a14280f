"""Baselines: random, entropy, margin, least confidence, k-center greedy, BADGE."""

from __future__ import annotations

import numpy as np
import torch

from fishermask.kernels import diversity
from fishermask.strategies import inference
from fishermask.strategies.base import Selection, SelectionContext, Strategy, score_summary, top_n


def _picked_class_counts(probs: torch.Tensor, positions: np.ndarray, C: int) -> list[int]:
    """Counts of the picks' predicted classes (the strategy does not see true labels)."""
    pred = probs[torch.as_tensor(positions, dtype=torch.long)].argmax(1)
    return torch.bincount(pred, minlength=C).tolist()


class RandomSampling(Strategy):
    name = "random"

    def query(self, ctx: SelectionContext, n: int) -> Selection:
        return Selection(ctx.rng.choice(np.sort(ctx.unlabeled), size=n, replace=False))


SCORE_ROWS = 1 << 20


class _ScoreStrategy(Strategy):
    """Pick the ``n`` unlabeled points with the largest ``score(p)`` (ties: lowest pool index)."""

    def score(self, p: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def query(self, ctx: SelectionContext, n: int) -> Selection:
        unl = np.sort(ctx.unlabeled)
        p = ctx.executor.map(inference.probs, unl)
        # float64 scores, a million rows at a time (a pool of millions: no float64 copy of p)
        s = torch.cat([self.score(p[i:i + SCORE_ROWS].double())
                       for i in range(0, len(p), SCORE_ROWS)]).numpy()
        pos = top_n(s, n)
        return Selection(unl[pos], scores=s[pos], diagnostics={
            "scores": score_summary(s), "picked_scores": score_summary(s[pos]),
            "predicted_class_counts": _picked_class_counts(p, pos, ctx.num_classes)})


class EntropySampling(_ScoreStrategy):
    """Largest predictive entropy −Σ_c p_c log p_c."""

    name = "entropy"

    def score(self, p):
        return -(p * torch.log(p.clamp_min(1e-300))).sum(1)


class MarginSampling(_ScoreStrategy):
    """Smallest margin p₍₁₎ − p₍₂₎ between the two most probable classes."""

    name = "margin"

    def score(self, p):
        top2 = p.topk(2, dim=1).values
        return -(top2[:, 0] - top2[:, 1])


class LeastConfidence(_ScoreStrategy):
    """Smallest top probability p₍₁₎."""

    name = "least_confidence"

    def score(self, p):
        return -p.max(1).values


class KCenterGreedy(Strategy):
    """Core-set k-center greedy on penultimate features; labeled points are the initial centers.
    The unlabeled features stay where they were computed (:meth:`PoolExecutor.hold`)."""

    name = "kcenter"

    def query(self, ctx: SelectionContext, n: int) -> Selection:
        unl, lab = np.sort(ctx.unlabeled), np.sort(ctx.labeled)
        fn = inference.Features(ctx.classifier)
        centers = ctx.executor.map(fn, lab)
        group = ctx.executor.hold(fn, unl, diversity.KCenterShard.from_batches, diversity.ROWS)
        try:
            pos = diversity.kcenter_select(group, centers, n).numpy()
        finally:
            group.close()
        return Selection(unl[pos])


class Badge(Strategy):
    """BADGE: k-means++ seeding on hallucinated-label last-layer gradients.  The candidates'
    probabilities and features stay where they were computed (:meth:`PoolExecutor.hold`)."""

    name = "badge"

    def query(self, ctx: SelectionContext, n: int) -> Selection:
        unl = np.sort(ctx.unlabeled)
        group = ctx.executor.hold(inference.ProbsFeatures(ctx.classifier), unl,
                                  diversity.BadgeShard.from_batches, diversity.ROWS)
        try:
            pos = diversity.badge_select(group, n, ctx.rng).numpy()
            preds = [c for part in group.run(diversity.BadgeShard.predicted, pos.tolist())
                     for c in part]
        finally:
            group.close()
        counts = torch.bincount(torch.tensor(preds, dtype=torch.long), minlength=ctx.num_classes)
        return Selection(unl[pos], diagnostics={"predicted_class_counts": counts.tolist()})
