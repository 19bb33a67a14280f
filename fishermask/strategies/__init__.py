"""Strategies: build one with its parameters, call it every round.

Use from your own training loop::

    from fishermask.strategies import FisherMask
    strategy = FisherMask(sparsity=0.002)          # parameters checked here, once
    picks = strategy.select(model, pool, labeled, n=100, seed=0).indices

or, for a one-off call, ``select("fishermask", model, pool, labeled, n=100, sparsity=0.002)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from fishermask.strategies import checks
from fishermask.strategies.base import NoParams, Selection, SelectionContext, Strategy
from fishermask.strategies.baselines import (Badge, EntropySampling, KCenterGreedy,
                                             LeastConfidence, MarginSampling, RandomSampling)
from fishermask.strategies.fisher_greedy import (Bait, FisherMask, FisherMaskAuthors,
                                                 FisherMaskAuthorsParams, FisherMaskParams)

Random, Entropy, Margin, KCenter = RandomSampling, EntropySampling, MarginSampling, KCenterGreedy


@dataclass(frozen=True)
class StrategySpec:
    name: str
    cls: type[Strategy]
    params: type[BaseModel]
    description: str


_SPECS = [
    StrategySpec("random", RandomSampling, NoParams, "uniform at random"),
    StrategySpec("entropy", EntropySampling, NoParams, "max predictive entropy"),
    StrategySpec("margin", MarginSampling, NoParams, "min top-2 probability margin"),
    StrategySpec("least_confidence", LeastConfidence, NoParams, "min top probability"),
    StrategySpec("kcenter", KCenterGreedy, NoParams, "k-center greedy (core-set)"),
    StrategySpec("badge", Badge, NoParams, "k-means++ on last-layer gradient embeddings"),
    StrategySpec("bait", Bait, Bait.Params, "BAIT: last-layer Fisher greedy"),
    StrategySpec("fishermask", FisherMask, FisherMask.Params, "FisherMask: masked Fisher greedy"),
    StrategySpec("fishermask_authors", FisherMaskAuthors, FisherMaskAuthorsParams,
                 "FisherMask as in the authors' public code (no √p, first-1024 mask Fisher)"),
]
STRATEGIES: dict[str, StrategySpec] = {s.name: s for s in _SPECS}
checks.PARAMS.update({s.name: s.params for s in _SPECS})


def build_strategy(name: str, **params: Any) -> Strategy:
    """The strategy registered as ``name``, built with ``params`` (checked)."""
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ValueError(f"strategy: unknown strategy {name!r}; valid strategies: "
                         f"{', '.join(STRATEGIES)}")
    return STRATEGIES[name].cls(**params)


def select(strategy: str, model, pool, labeled, n: int, *, seed: int = 0, executor=None,
           device: str = "auto", batch_size: int = 256, max_memory_gb: float = 16.0,
           **params: Any) -> Selection:
    """Pick ``n`` pool indices with the strategy named ``strategy`` built with ``params``
    (e.g. ``sparsity=0.002``): ``build_strategy(strategy, **params).select(model, pool,
    labeled, n, seed=seed, ...)``; see :meth:`Strategy.select
    <fishermask.strategies.base.Strategy.select>` for the arguments and their checks."""
    return build_strategy(strategy, **params).select(
        model, pool, labeled, n, seed=seed, executor=executor, device=device,
        batch_size=batch_size, max_memory_gb=max_memory_gb)


__all__ = ["Badge", "Bait", "Entropy", "EntropySampling", "FisherMask", "FisherMaskAuthors",
           "FisherMaskParams",
           "KCenter", "KCenterGreedy", "LeastConfidence", "Margin", "MarginSampling", "Random",
           "RandomSampling", "STRATEGIES", "Selection", "SelectionContext", "Strategy",
           "StrategySpec", "build_strategy", "select"]
