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
from fishermask.strategies.base import (NoParams, Selection, SelectionContext, Strategy, _is_int,
                                        check_finite_inputs, check_labeled, check_model,
                                        check_positive_int)
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


def _check_params(strategy: str, spec: StrategySpec, params: dict[str, Any]) -> BaseModel:
    """The strategy's parameters, or a TypeError (unknown name: say which strategies take it) /
    ValueError (bad value) naming the parameter."""
    from pydantic import ValidationError

    own = list(spec.params.model_fields)
    takes = f"takes {', '.join(own)}" if own else "takes no parameters"
    for key in params:
        if key not in own:
            others = [s.name for s in _SPECS if key in s.params.model_fields]
            where = (f"'{key}' is a parameter of {', '.join(others)}" if others
                     else f"no strategy takes a parameter '{key}'")
            raise TypeError(f"select(): strategy '{strategy}' has no parameter '{key}' ({where}); "
                            f"'{strategy}' {takes}")
    try:
        return spec.params(**params)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"select(): parameter '{key}' of strategy '{strategy}': {err['msg']} "
                         f"(got {err.get('input')!r})") from None


def _as_pool(pool):
    """An ImageData passes as it is; a tensor or array ``[N, ...]`` of model-ready inputs gets
    checked (non-empty, numeric, finite) and wrapped later."""
    import torch

    if hasattr(pool, "inputs") and hasattr(pool, "__len__"):
        return pool
    if isinstance(pool, np.ndarray):
        if not np.issubdtype(pool.dtype, np.number) or pool.dtype == bool:
            raise TypeError(f"pool must hold numeric model inputs, got an array of {pool.dtype}")
        pool = torch.from_numpy(pool)
    if not isinstance(pool, torch.Tensor):
        raise TypeError(f"pool must be a tensor [N, ...] of model-ready inputs or an ImageData, "
                        f"got {type(pool).__name__}")
    if pool.dim() == 0 or len(pool) == 0:
        raise ValueError(f"pool is empty (shape {tuple(pool.shape)}); give at least one input")
    check_finite_inputs(pool, "pool")
    return pool


def select(strategy: str, model, pool, labeled, n: int, *, seed: int = 0, device: str = "auto",
           batch_size: int = 256, max_memory_gb: float = 16.0, **params: Any) -> Selection:
    """Pick ``n`` pool indices to label next with the named strategy.

    ``pool`` is an :class:`~fishermask.data.ImageData` or a tensor (or array) of model-ready
    inputs ``[N, ...]``; ``labeled`` the pool indices already labeled; ``params`` the strategy's
    parameters (e.g. ``sparsity=0.002``).  Runs in this process.  Every strategy checks its
    arguments the same way: a ``TypeError`` or ``ValueError`` naming the argument for labeled
    indices out of range, negative or duplicated, NaN or infinite inputs, a model without
    ``features`` and ``classifier``, ``n`` or ``batch_size`` not a positive integer, and
    parameters the strategy does not take.
    """
    import torch

    from fishermask.execution.local import LocalExecutor

    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"strategy: unknown strategy {strategy!r}; valid strategies: "
                         f"{', '.join(STRATEGIES)}")
    spec = STRATEGIES[strategy]
    checked = _check_params(strategy, spec, params)
    n = check_positive_int("n", n)
    batch_size = check_positive_int("batch_size", batch_size)
    if not _is_int(seed):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if (isinstance(max_memory_gb, bool) or not isinstance(max_memory_gb, (int, float))
            or not 0 < max_memory_gb < float("inf")):
        raise ValueError(f"max_memory_gb must be a positive number, got {max_memory_gb!r}")
    check_model(model)
    pool = _as_pool(pool)
    labeled = check_labeled(labeled, len(pool))
    if n > len(pool) - len(labeled):
        raise ValueError(f"n: cannot pick n={n} points, the pool has only "
                         f"{len(pool) - len(labeled)} unlabeled ({len(pool)} points, "
                         f"{len(labeled)} labeled)")
    strat = spec.cls.__new__(spec.cls)
    strat.params = checked
    with torch.no_grad():
        first = pool.inputs(np.arange(1)) if hasattr(pool, "inputs") else pool[:1]
        num_classes = int(model(first).shape[1])
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
