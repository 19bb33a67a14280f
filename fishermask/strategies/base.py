"""Strategy interface: selection logic only (no Ray, no MLflow, no files).

A :class:`Strategy` is built once with validated parameters (``FisherMask(sparsity=0.002)``)
and called every round: :meth:`Strategy.select` takes the caller's model, pool and labeled
indices, runs the strategy in this process (or on the executor given) and returns a
:class:`Selection`.  Inside, a strategy's :meth:`~Strategy.query` sees a
:class:`SelectionContext`: the model, the labeled/unlabeled pool indices, a seeded RNG and an
executor that runs per-sample work over the pool wherever the pool lives (``map``, ``sum``,
``embed_resident``: the interface of :class:`fishermask.execution.base.PoolExecutor`, passed in).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from fishermask.execution.base import PoolExecutor
from fishermask.execution.local import LocalExecutor
from fishermask.kernels._checks import check_count, check_n, is_int
from fishermask.kernels.head import check_head_output
from fishermask.strategies.checks import (_as_pool, _TensorPool, check_labeled, check_model,
                                          check_number, check_params)


class NoParams(BaseModel):
    """Parameter schema of a strategy without parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class SelectionContext:
    model: torch.nn.Module
    executor: PoolExecutor        # map / sum / embed_resident over the pool
    labeled: np.ndarray           # pool indices already labeled
    unlabeled: np.ndarray         # pool indices that may be queried
    num_classes: int
    rng: np.random.Generator      # seeded for this round
    round: int = 0
    classifier: Optional[str] = None  # attribute path of the final nn.Linear (None: found)


@dataclass
class Selection:
    indices: np.ndarray                                    # pool indices, in pick order
    diagnostics: dict[str, Any] = field(default_factory=dict)  # small: time, score summary, counts
    metrics: dict[str, float] = field(default_factory=dict)    # numbers to log per round
    artifacts: dict[str, Any] = field(default_factory=dict)    # JSON-able objects to save per round
    scores: Optional[np.ndarray] = None  # each pick's score (uncertainty strategies), pick order


class Strategy(ABC):
    """Base class.  Subclasses set ``name``, ``Params`` and implement :meth:`query`.

    ``Strategy(**params)`` checks the parameters once: a ``TypeError`` for a name the strategy
    does not take (saying which strategies take it), a ``ValueError`` for a bad value, each
    naming the parameter and the strategy.
    """

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "name", None), str):
            cls.name = cls.__name__  # a plug-in without a name: messages use its class name

    def __init__(self, **params: Any):
        self.params = check_params(self.name, self.Params, params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({args})"

    def select(self, model: torch.nn.Module, pool, labeled, n: int, *, seed: int = 0,
               executor=None, device: str = "auto", batch_size: int = 256,
               max_memory_gb: float = 16.0, classifier: Optional[str] = None) -> Selection:
        """Pick ``n`` pool indices to label next.

        ``model`` is any ``nn.Module`` whose output is the logits of a final ``nn.Linear``: the
        one at the attribute path ``classifier`` (e.g. ``"head.fc"``), else the model's
        ``classifier``, ``fc`` or ``head`` (a container there gives its last ``nn.Linear``); the
        penultimate features h(x) are that layer's input.  ``pool`` an :class:`~fishermask.data.ImageData` or a tensor (or array) of model-ready
        inputs ``[N, ...]``; ``labeled`` the pool indices already labeled; ``seed`` seeds the
        strategy's randomness.  Without ``executor`` the work runs in this process on ``device``
        in batches of ``batch_size`` (``max_memory_gb`` bounds the Fisher greedy); an executor
        the caller built (e.g. a :class:`~fishermask.execution.ray.executor.RayExecutor`) is
        used as it is, bound to ``pool`` when it holds another.

        The model is left as it was given: the strategy runs it in eval mode (no BatchNorm
        statistic changes) and restores every module's train/eval flag and the device after.
        Every strategy checks its arguments the same way, before any work: a ``TypeError`` or
        ``ValueError`` naming the argument.
        """
        n = check_count("n", n, 1)
        if not is_int(seed):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        if executor is None:
            batch_size = check_count("batch_size", batch_size, 1)
            if device not in ("auto", "cpu", "cuda"):
                raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
            check_number("max_memory_gb", max_memory_gb)
        head_path, head = check_model(model, classifier)
        pool = _as_pool(pool)
        labeled = check_labeled(labeled, len(pool))
        if n > len(pool) - len(labeled):
            raise ValueError(f"n: cannot pick n={n} points, the pool has only "
                             f"{len(pool) - len(labeled)} unlabeled ({len(pool)} points, "
                             f"{len(labeled)} labeled)")
        if executor is None:
            executor = LocalExecutor(device=device, batch_size=batch_size,
                                     max_memory_gb=max_memory_gb)
        modes = [(m, m.training) for m in model.modules()]
        param = next(iter(model.parameters()), None)
        where = param.device if param is not None else None
        try:
            model.eval()  # before any forward: BatchNorm statistics stay as they are
            with torch.no_grad():
                first = pool.inputs(np.arange(1)) if hasattr(pool, "inputs") else pool[:1]
                if where is not None:
                    first = first.to(where)
            check_head_output(model, first, head, head_path)
            num_classes = head.out_features
            if not hasattr(pool, "inputs"):
                pool = _TensorPool(pool, num_classes)
            if getattr(executor, "pool", None) is not pool:
                executor.bind(pool)
            executor.set_model(model)
            unlabeled = np.setdiff1d(np.arange(len(pool)), labeled)
            ctx = SelectionContext(model=executor.model, executor=executor, labeled=labeled,
                                   unlabeled=unlabeled, num_classes=num_classes,
                                   rng=np.random.default_rng(seed), classifier=classifier)
            return self._round(ctx, n)
        finally:
            if where is not None:
                model.to(where)
            for m, mode in modes:
                m.training = mode

    def run_round(self, ctx: SelectionContext, n: int) -> Selection:
        """Pick ``n`` pool indices from ``ctx.unlabeled`` (the loop's entry point, with the
        executor and model already set up): checks ``n``, then runs and times the query."""
        return self._round(ctx, check_n(n, len(ctx.unlabeled), "unlabeled points"))

    def _round(self, ctx: SelectionContext, n: int) -> Selection:
        """The query of a checked ``n``, timed, and its picks checked."""
        t0 = time.perf_counter()
        sel = self.query(ctx, n) if n else Selection(np.zeros(0, dtype=np.int64))
        sel.indices = np.asarray(sel.indices, dtype=np.int64)
        if len(sel.indices) != n or len(np.unique(sel.indices)) != n:
            raise RuntimeError(f"{self.name} returned {len(sel.indices)} indices ({len(np.unique(sel.indices))} unique), expected {n}")
        if not np.isin(sel.indices, ctx.unlabeled).all():
            raise RuntimeError(f"{self.name} picked indices outside the unlabeled pool")
        sel.diagnostics.setdefault("seconds", time.perf_counter() - t0)
        return sel

    @abstractmethod
    def query(self, ctx: SelectionContext, n: int) -> Selection:
        ...


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` largest scores; ties go to the lowest position (stable)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order[:n]


def score_summary(scores: np.ndarray) -> dict[str, float]:
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return {}
    return {"min": float(s.min()), "mean": float(s.mean()), "max": float(s.max())}
