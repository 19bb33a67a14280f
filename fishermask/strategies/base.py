"""Strategy interface: selection logic only (no Ray, no MLflow, no files).

A strategy gets a :class:`SelectionContext` (the trained model, the labeled/unlabeled pool
indices, a seeded RNG and a :class:`~fishermask.execution.base.PoolExecutor` that runs per-sample
work over the pool wherever the pool lives) and returns a :class:`Selection`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    from fishermask.execution.base import PoolExecutor


class NoParams(BaseModel):
    """Parameter schema of a strategy without parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class SelectionContext:
    model: torch.nn.Module
    executor: "PoolExecutor"
    labeled: np.ndarray           # pool indices already labeled
    unlabeled: np.ndarray         # pool indices that may be queried
    num_classes: int
    rng: np.random.Generator      # seeded for this round
    round: int = 0


@dataclass
class Selection:
    indices: np.ndarray                                    # pool indices, in pick order
    diagnostics: dict[str, Any] = field(default_factory=dict)  # small: time, score summary, counts
    metrics: dict[str, float] = field(default_factory=dict)    # numbers to log per round
    artifacts: dict[str, Any] = field(default_factory=dict)    # JSON-able objects to save per round


class Strategy(ABC):
    """Base class.  Subclasses set ``name``, ``Params`` and implement :meth:`query`."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, **params: Any):
        self.params = self.Params(**params)

    def select(self, ctx: SelectionContext, n: int) -> Selection:
        """Pick ``n`` pool indices from ``ctx.unlabeled``; validates and times the query."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n > len(ctx.unlabeled):
            raise ValueError(f"cannot pick {n} points from an unlabeled pool of {len(ctx.unlabeled)}")
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
