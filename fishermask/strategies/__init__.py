"""Strategies: build one with its parameters, call it every round.

Use from your own training loop::

    from fishermask.strategies import FisherMask
    strategy = FisherMask(sparsity=0.002)          # parameters checked here, once
    picks = strategy.select(model, pool, labeled, n=100, seed=0).indices

or, for a one-off call, ``select("fishermask", model, pool, labeled, n=100, sparsity=0.002)``.

**Your own strategy** (``strategy.name: mypkg.al:MyStrategy``, or an entry point in the group
``fishermask.strategies``): a subclass of :class:`Strategy` that sets ``Params`` (a pydantic
model of its parameters, the other ``strategy.*`` keys) and implements ``query(ctx, n)``
returning a :class:`Selection` of ``n`` indices from ``ctx.unlabeled``; see
:class:`~fishermask.strategies.base.Strategy`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel

from fishermask.plugins import Plugin, PluginError, resolve
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
    plugin: Optional[Plugin] = None  # where a plug-in came from (None: built in)


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


def strategy_spec(name: str, key: str = "strategy.name") -> StrategySpec:
    """The built-in strategy ``name``, or the plug-in it names (an import path or an installed
    entry point), checked to be a :class:`Strategy` subclass with a ``Params`` model; a
    :class:`~fishermask.plugins.PluginError` naming ``key`` otherwise."""
    if isinstance(name, str) and name in STRATEGIES:
        return STRATEGIES[name]
    plugin = resolve("strategies", name, key, {n: s.cls for n, s in STRATEGIES.items()})
    cls = plugin.obj
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise PluginError(f"{key}: {name!r} is a {type(cls).__name__}, not a subclass of "
                          f"fishermask.strategies.Strategy")
    if inspect.isabstract(cls):
        raise PluginError(f"{key}: {name!r} does not implement query(ctx, n)")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
        raise PluginError(f"{key}: {name!r}.Params must be a pydantic BaseModel of its parameters")
    doc = (cls.__doc__ or "").strip().splitlines()
    spec = StrategySpec(name, cls, cls.Params, doc[0] if doc else "", plugin)
    checks.PARAMS.setdefault(name, cls.Params)  # messages can say which strategy takes a key
    return spec


def build_strategy(name: str, **params: Any) -> Strategy:
    """The strategy ``name`` (built in, or a plug-in), built with ``params`` (checked)."""
    try:
        return strategy_spec(name, key="strategy").cls(**params)
    except PluginError as exc:
        raise ValueError(str(exc)) from None


def select(strategy: str, model, pool, labeled, n: int, *, seed: int = 0, executor=None,
           device: str = "auto", batch_size: int = 256, max_memory_gb: float = 16.0,
           classifier: Optional[str] = None, **params: Any) -> Selection:
    """Pick ``n`` pool indices with the strategy named ``strategy`` built with ``params``
    (e.g. ``sparsity=0.002``): ``build_strategy(strategy, **params).select(model, pool,
    labeled, n, seed=seed, ...)``; see :meth:`Strategy.select
    <fishermask.strategies.base.Strategy.select>` for the arguments and their checks."""
    return build_strategy(strategy, **params).select(
        model, pool, labeled, n, seed=seed, executor=executor, device=device,
        batch_size=batch_size, max_memory_gb=max_memory_gb, classifier=classifier)


__all__ = ["Badge", "Bait", "Entropy", "EntropySampling", "FisherMask", "FisherMaskAuthors",
           "FisherMaskParams",
           "KCenter", "KCenterGreedy", "LeastConfidence", "Margin", "MarginSampling", "Random",
           "RandomSampling", "STRATEGIES", "Selection", "SelectionContext", "Strategy",
           "StrategySpec", "build_strategy", "select", "strategy_spec"]
