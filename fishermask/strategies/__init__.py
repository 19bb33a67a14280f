"""Strategy registry and the library entry point :func:`select`.

Use from your own training loop::

    from fishermask.strategies import select
    picks = select("fishermask", model, pool_inputs, labeled_idx, n=100, seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from fishermask.errors import ConfigError
from fishermask.strategies.base import NoParams, Selection, SelectionContext, Strategy
from fishermask.strategies.baselines import (Badge, EntropySampling, KCenterGreedy,
                                             LeastConfidence, MarginSampling, RandomSampling)
from fishermask.strategies.fisher import Bait, FisherMask, FisherMaskParams


@dataclass(frozen=True)
class StrategySpec:
    name: str
    cls: type[Strategy]
    params: type[BaseModel]
    description: str


class FisherMaskAuthorsParams(FisherMaskParams):
    """The authors' public code: no √p scaling, mask Fisher on the first 1024 pool items."""

    prob_scaling: bool = False
    mask_subset: str = "first"


_SPECS = [
    StrategySpec("random", RandomSampling, NoParams, "uniform at random"),
    StrategySpec("entropy", EntropySampling, NoParams, "max predictive entropy"),
    StrategySpec("margin", MarginSampling, NoParams, "min top-2 probability margin"),
    StrategySpec("least_confidence", LeastConfidence, NoParams, "min top probability"),
    StrategySpec("kcenter", KCenterGreedy, NoParams, "k-center greedy (core-set)"),
    StrategySpec("badge", Badge, NoParams, "k-means++ on last-layer gradient embeddings"),
    StrategySpec("bait", Bait, Bait.Params, "BAIT: last-layer Fisher greedy"),
    StrategySpec("fishermask", FisherMask, FisherMask.Params, "FisherMask: masked Fisher greedy"),
    StrategySpec("fishermask_authors", FisherMask, FisherMaskAuthorsParams,
                 "FisherMask as in the authors' public code (no √p, first-1024 mask Fisher)"),
]
STRATEGIES: dict[str, StrategySpec] = {s.name: s for s in _SPECS}


def get_strategy_spec(name: str) -> StrategySpec:
    if name not in STRATEGIES:
        raise ConfigError(f"strategy.name: unknown strategy {name!r}; valid strategies: "
                          f"{', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def build_strategy(name: str, **params: Any) -> Strategy:
    spec = get_strategy_spec(name)
    strategy = spec.cls.__new__(spec.cls)
    strategy.params = spec.params(**params)
    return strategy


class _TensorPool:
    """Adapter so a plain input tensor ``[N, ...]`` (already transformed) acts as a pool."""

    def __init__(self, inputs, num_classes: int):
        self._x, self.num_classes = inputs, num_classes

    def __len__(self):
        return len(self._x)

    def inputs(self, idx, **_):
        return self._x[np.asarray(idx)]


def select(strategy: str, model, pool, labeled, n: int, *, seed: int = 0, device: str = "auto",
           batch_size: int = 256, max_memory_gb: float = 16.0, **params: Any) -> Selection:
    """Pick ``n`` pool indices to label next with the named strategy.

    ``pool`` is an :class:`~fishermask.data.ImageData` or a tensor of model-ready inputs
    ``[N, ...]``; ``labeled`` the pool indices already labeled; ``params`` the strategy's
    parameters (e.g. ``sparsity=0.002``).  Runs in this process.
    """
    import torch

    from fishermask.execution.local import LocalExecutor

    strat = build_strategy(strategy, **params)
    labeled = np.unique(np.asarray(labeled, dtype=np.int64))
    with torch.no_grad():
        num_classes = int(model(pool.inputs(np.arange(1)) if hasattr(pool, "inputs")
                                else pool[:1]).shape[1])
    if not hasattr(pool, "inputs"):
        pool = _TensorPool(pool, num_classes)
    unlabeled = np.setdiff1d(np.arange(len(pool)), labeled)
    ex = LocalExecutor(device=device, batch_size=batch_size, max_memory_gb=max_memory_gb)
    ex.bind(pool)
    ex.set_model(model)
    ctx = SelectionContext(model=ex.model, executor=ex, labeled=labeled, unlabeled=unlabeled,
                           num_classes=num_classes, rng=np.random.default_rng(seed))
    return strat.select(ctx, n)


__all__ = ["STRATEGIES", "StrategySpec", "Strategy", "Selection", "SelectionContext",
           "build_strategy", "get_strategy_spec", "select"]
