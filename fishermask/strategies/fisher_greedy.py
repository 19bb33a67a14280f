"""Fisher-information strategies: BAIT (last layer, closed form) and FisherMask (masked weights).

Both minimise tr(M_S⁻¹ F) greedily (:func:`~fishermask.strategies.fisher_round.fisher_round`); they
differ only in the embedding V_x: BAIT uses the classifier's weights, FisherMask the top-k
weights of the whole network by Fisher diagonal (the classifier forced in by default).

Greedy parameters shared by both (:class:`GreedyParams`):

* ``compute_dtype`` (float32): the dtype of the greedy's large products; its C×C state, M and the
  verified picks stay float64, so float32 and float64 pick the same batch (docs/design.md §2.4).
* ``fisher_classes`` (all) and ``top_c``: ``all`` uses V_x's C rows, the model's Fisher
  Σ_c p_c g_c g_cᵀ (the exact BAIT/FisherMask objective).  ``top`` with ``top_c: c`` restricts
  every V_x (candidates, labeled, and so M and F) to the sample's c most probable classes t_j,
  reweighted by p̂_j = p_{t_j} / Σ_i p_{t_i} (DAL-Toolbox's "fast fishing"): the Fisher of the
  prediction restricted to those classes, Σ_j p̂_j g_{t_j} g_{t_j}ᵀ.  The greedy then keeps c×c
  instead of C×C state per candidate (2·c²·8 bytes) and a step costs about c²/C² of the exact
  one's; the picks are the exact greedy's *for that objective*, which drops the least probable
  classes' terms.  With c = C it is the exact objective (the rows permuted).
"""

from __future__ import annotations

import math
import time
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fishermask.errors import ParameterError
from fishermask.kernels import fisher
from fishermask.kernels.embeddings import (STORAGE_DTYPES, FisherEmbeddings, restrict_top,
                                           row_bytes)
from fishermask.kernels.head import find_head, head_weight_name
from fishermask.strategies.base import Selection, SelectionContext, Strategy
from fishermask.strategies.fisher_round import fisher_round
from fishermask.strategies.inference import features_probs


def mask_size(sparsity: float, num_params: int) -> int:
    """k = ⌊sparsity · |θ|⌋, the number of weights in FisherMask's mask."""
    return math.floor(sparsity * num_params)


class GreedyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lam: float = Field(1.0, gt=0, description="λ in M = λI + …")
    oversample: int = Field(1, ge=1, description="r: r·K forward steps, (r−1)·K backward steps")
    weighting: Literal["bait", "uniform"] = "bait"
    fisher_target: Literal["dense", "diag"] = "dense"
    storage_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="dtype of the stored embeddings (bfloat16 halves memory)")
    compute_dtype: Literal["float32", "float64"] = Field(
        "float32", description="dtype of the greedy's large products (state and checks: float64)")
    fisher_classes: Literal["all", "top"] = Field(
        "all", description="all: the Fisher over every class; top: each sample's top_c classes")
    top_c: Optional[int] = Field(None, ge=1, validate_default=True,
                                 description="c, with fisher_classes: top")

    @field_validator("top_c")
    @classmethod
    def _top_c_with_top(cls, v, info):
        top = info.data.get("fisher_classes") == "top"
        if top and v is None:
            raise ValueError("fisher_classes: top needs top_c (the number of classes kept)")
        if v is not None and not top:
            raise ValueError("top_c applies only with fisher_classes: top")
        return v

    def classes_kept(self, num_classes: int) -> Optional[int]:
        """c for top-c classes (None: all); a ParameterError when top_c exceeds C."""
        if self.top_c is not None and self.top_c > num_classes:
            raise ParameterError(f"top_c={self.top_c}: the model has only {num_classes} classes")
        return self.top_c


class BaitParams(GreedyParams):
    oversample: int = Field(2, ge=1)


class FisherMaskParams(GreedyParams):
    sparsity: float = Field(0.002, gt=0, le=1, description="k = ⌊sparsity·|θ|⌋ masked weights")
    mask_samples: int | Literal["all"] = Field(1024, description="pool points for the mask Fisher")
    mask_subset: Literal["random", "first"] = Field(
        "random", description="seeded random pool points, or the first in pool order (authors)")
    include_last_layer: bool = True
    prob_scaling: bool = True

    @field_validator("mask_samples")
    @classmethod
    def _positive_samples(cls, v):
        if v != "all" and v < 1:
            raise ValueError("give a positive number of pool points, or 'all'")
        return v


class LastLayerEmbedding:
    """Batch fn: BAIT's V_x in factored form (h, p): one forward pass, no autograd; with
    ``top_c``, restricted to each sample's top_c classes."""

    def __init__(self, num_classes: int, d: int, storage_dtype: str = "float32",
                 top_c: Optional[int] = None, classifier: Optional[str] = None):
        self.num_classes, self.d, self.k = num_classes, d, num_classes * d
        self.storage_dtype, self.top_c, self.classifier = storage_dtype, top_c, classifier
        self.num_rows = num_classes if top_c is None else top_c
        self.row_bytes = row_bytes(num_classes, d, 0, True, storage_dtype, top_c)

    @torch.no_grad()
    def __call__(self, model, x):
        h, p = features_probs(model, x, self.classifier)
        emb = FisherEmbeddings(features=h, probs=p)
        emb = emb if self.top_c is None else restrict_top(emb, self.top_c)
        return emb.to(storage_dtype=STORAGE_DTYPES[self.storage_dtype])


class MaskedEmbedding:
    """Batch fn: FisherMask's V_x on the mask.  When the mask holds the whole classifier weight,
    that block is kept factored (h, p) and only the rest is dense."""

    def __init__(self, mask: dict, num_classes: int, prob_scaling: bool, classifier_weight: str,
                 d: int, storage_dtype: str = "float32", top_c: Optional[int] = None,
                 classifier: Optional[str] = None):
        self.num_classes, self.prob_scaling = num_classes, prob_scaling
        self.storage_dtype, self.top_c, self.classifier = storage_dtype, top_c, classifier
        self.num_rows = num_classes if top_c is None else top_c
        w_idx = mask.get(classifier_weight)
        self.factored = w_idx is not None and len(w_idx) == num_classes * d
        self.dense_mask = {n: i for n, i in mask.items()
                           if not (self.factored and n == classifier_weight) and len(i)}
        self.k_dense = int(sum(len(v) for v in self.dense_mask.values()))
        self.k = self.k_dense + (num_classes * d if self.factored else 0)
        self.row_bytes = row_bytes(num_classes, d, self.k_dense, self.factored, storage_dtype,
                                   top_c)

    def __call__(self, model, x):
        dense = (fisher.masked_embeddings(model, x, self.dense_mask, prob_scaling=self.prob_scaling)
                 if self.k_dense else None)
        h = p = None
        if self.factored or self.top_c is not None:
            with torch.no_grad():
                h, p = features_probs(model, x, self.classifier)
        emb = FisherEmbeddings(features=h if self.factored else None,
                               probs=p if self.factored else None, dense=dense,
                               prob_scaling=self.prob_scaling)
        if self.top_c is not None:
            emb = restrict_top(emb, self.top_c, probs=p)
        return emb.to(storage_dtype=STORAGE_DTYPES[self.storage_dtype])


class FisherDiagonalSum:
    """Batch fn: B · fisher_diagonal (so that sums over batches add up to Σ_x)."""

    def __call__(self, model, x):
        return {k: v * len(x) for k, v in fisher.fisher_diagonal(model, x).items()}


def mask_profile(model: torch.nn.Module, mask: dict) -> list[dict]:
    """Fraction of each parameter tensor in the mask (the paper's Fig. 2)."""
    params = dict(model.named_parameters())
    return [{"layer": i, "name": name, "size": params[name].numel(), "selected": len(idx),
             "fraction": len(idx) / params[name].numel()}
            for i, (name, idx) in enumerate(mask.items())]


class _FisherGreedyStrategy(Strategy):
    def _greedy(self, ctx: SelectionContext, n: int, embed) -> tuple[np.ndarray, dict]:
        p = self.params
        return fisher_round(ctx.executor, embed, candidates=ctx.unlabeled, labeled=ctx.labeled,
                            n=n, fisher_target=p.fisher_target, lam=p.lam,
                            oversample=p.oversample, weighting=p.weighting,
                            compute_dtype=p.compute_dtype)


class Bait(_FisherGreedyStrategy):
    """BAIT (Ash et al. 2021): greedy on the last-layer Fisher embeddings.

    ``fisher_classes: all`` (default) is exact BAIT; ``fisher_classes: top`` with ``top_c: c``
    runs the same greedy on each sample's c most probable classes, renormalised (the module
    docstring states the contract)."""

    name = "bait"
    Params = BaitParams

    def query(self, ctx: SelectionContext, n: int) -> Selection:
        _, head = find_head(ctx.model, ctx.classifier)
        embed = LastLayerEmbedding(ctx.num_classes, head.in_features, self.params.storage_dtype,
                                   self.params.classes_kept(ctx.num_classes), ctx.classifier)
        picks, info = self._greedy(ctx, n, embed)
        return Selection(picks, diagnostics=info, metrics=_phase_metrics(info))


class FisherMask(_FisherGreedyStrategy):
    """FisherMask: the Fisher-diagonal top-k weights of the whole network, then the greedy.

    ``fisher_classes``/``top_c`` as for :class:`Bait` (the module docstring): with ``top`` both
    the factored classifier block and the dense masked gradients keep the c most probable
    classes' rows (the mask itself is still chosen from the full Fisher diagonal)."""

    name = "fishermask"
    Params = FisherMaskParams

    def build_mask(self, ctx: SelectionContext) -> tuple[dict, float]:
        p = self.params
        n_all = len(ctx.labeled) + len(ctx.unlabeled)
        m = n_all if p.mask_samples == "all" else min(int(p.mask_samples), n_all)
        if p.mask_subset == "first":
            subset = np.arange(m)
        else:
            subset = np.sort(ctx.rng.choice(n_all, size=m, replace=False))
        t0 = time.perf_counter()
        sums = ctx.executor.sum(FisherDiagonalSum(), subset)
        diag = {name: (v / m).to(torch.float32) for name, v in sums.items()}
        n_params = sum(v.numel() for v in diag.values())
        k = mask_size(p.sparsity, n_params)
        force = ([head_weight_name(ctx.model, find_head(ctx.model, ctx.classifier)[1])]
                 if p.include_last_layer else [])
        try:
            mask = fisher.top_k_mask(diag, k, force=force)
        except ValueError as exc:
            raise ParameterError(f"sparsity={p.sparsity}: {exc}") from None
        return mask, time.perf_counter() - t0

    def query(self, ctx: SelectionContext, n: int) -> Selection:
        mask, mask_seconds = self.build_mask(ctx)
        _, head = find_head(ctx.model, ctx.classifier)
        embed = MaskedEmbedding(mask, ctx.num_classes, self.params.prob_scaling,
                                head_weight_name(ctx.model, head), head.in_features,
                                self.params.storage_dtype,
                                self.params.classes_kept(ctx.num_classes), ctx.classifier)
        picks, info = self._greedy(ctx, n, embed)
        info["mask_seconds"] = mask_seconds
        profile = mask_profile(ctx.model, mask)
        return Selection(picks, diagnostics=info, metrics=_phase_metrics(info),
                         artifacts={"mask_profile": profile})


class FisherMaskAuthorsParams(FisherMaskParams):
    """The authors' public code: no √p scaling, mask Fisher on the first 1024 pool items."""

    prob_scaling: bool = False
    mask_subset: Literal["random", "first"] = "first"


class FisherMaskAuthors(FisherMask):
    """FisherMask as in the authors' public code (no √p, first-1024 mask Fisher)."""

    name = "fishermask_authors"
    Params = FisherMaskAuthorsParams


def _phase_metrics(info: dict) -> dict[str, float]:
    return {f"phase_{k}": float(v) for k, v in info.items() if k.endswith("_seconds")}
