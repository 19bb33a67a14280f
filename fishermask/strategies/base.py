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
        if not _is_int(n):
            raise TypeError(f"n must be an integer, got {n!r} ({type(n).__name__})")
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


# ----------------------------------------------------------------------------- library checks

def _is_int(v) -> bool:
    import numbers

    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def check_positive_int(name: str, value) -> int:
    """``value`` as an int > 0; TypeError / ValueError naming ``name`` otherwise."""
    if not _is_int(value):
        raise TypeError(f"{name} must be a positive integer, got {value!r} "
                        f"({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_model(model) -> None:
    """The model protocol every strategy relies on: an ``nn.Module`` with ``features(x)`` (the
    penultimate embedding) and ``classifier`` (the last ``nn.Linear``), finite parameters."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module with features(x) and a classifier "
                        f"nn.Linear, got {type(model).__name__}")
    missing = [a for a in ("features", "classifier") if not hasattr(model, a)]
    if missing:
        raise TypeError(f"model: {type(model).__name__} has no {' or '.join(missing)}; strategies "
                        f"need model.features(x) -> [B, d] (the penultimate embedding) and "
                        f"model.classifier (the final nn.Linear, so forward = "
                        f"classifier(features(x)))")
    if not callable(model.features):
        raise TypeError(f"model.features must be a method features(x) -> [B, d], got "
                        f"{type(model.features).__name__}")
    if not isinstance(model.classifier, torch.nn.Linear):
        raise TypeError(f"model.classifier must be the final torch.nn.Linear layer, got "
                        f"{type(model.classifier).__name__}")
    for pname, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"model: parameter {pname} has NaN or infinite values "
                             f"(did training diverge?)")


def classifier_weight_name(model: torch.nn.Module) -> str:
    """Name in ``named_parameters()`` of ``model.classifier.weight`` (for models that do not
    say it themselves with a ``classifier_weight_name`` attribute)."""
    name = getattr(model, "classifier_weight_name", None)
    if isinstance(name, str):
        return name
    for pname, p in model.named_parameters():
        if p is model.classifier.weight:
            return pname
    raise TypeError("model: model.classifier.weight is not among model.named_parameters()")


def check_finite_inputs(inputs: torch.Tensor, name: str = "pool") -> None:
    if inputs.is_floating_point() or inputs.is_complex():
        bad = ~torch.isfinite(inputs.reshape(len(inputs), -1)).all(1)
        if bad.any():
            rows = torch.nonzero(bad).flatten()
            raise ValueError(f"{name}: {len(rows)} of {len(inputs)} inputs contain NaN or "
                             f"infinite values (first at index {int(rows[0])}); clean or drop "
                             f"them before selecting")


def check_labeled(labeled, pool_size: int) -> np.ndarray:
    """``labeled`` as sorted int64 pool indices: 1-D integers in [0, pool_size), no duplicates."""
    arr = np.asarray(labeled.cpu() if isinstance(labeled, torch.Tensor) else labeled)
    if arr.ndim != 1:
        if arr.ndim == 0 or arr.size:
            raise TypeError(f"labeled must be a 1-D sequence of pool indices, got an array of "
                            f"shape {arr.shape}")
        arr = arr.reshape(0)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or (np.issubdtype(arr.dtype, np.floating)
                                     and np.isfinite(arr).all()
                                     and (arr == np.round(arr)).all())):
        raise TypeError(f"labeled must hold integer pool indices, got dtype {arr.dtype} "
                        f"(e.g. {arr.ravel()[0].item()!r})")
    arr = arr.astype(np.int64)
    neg = arr[arr < 0]
    if len(neg):
        raise ValueError(f"labeled: negative pool indices {sorted(set(neg.tolist()))[:5]}; "
                         f"indices are positions 0..{pool_size - 1} in the pool")
    over = arr[arr >= pool_size]
    if len(over):
        raise ValueError(f"labeled: indices {sorted(set(over.tolist()))[:5]} are out of range "
                         f"for a pool of {pool_size} (valid: 0..{pool_size - 1})")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"labeled: duplicated indices {uniq[counts > 1][:5].tolist()}; "
                         f"each pool index may appear once")
    return uniq
