"""The argument checks every strategy's :meth:`~fishermask.strategies.base.Strategy.select`
runs before any work: a ``TypeError`` (wrong kind of value) or ``ValueError`` (bad value) whose
message names the argument, in the library's terms."""

from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np
import torch
from pydantic import BaseModel, ValidationError

from fishermask.kernels.head import find_head

PARAMS: dict[str, type[BaseModel]] = {}
"""Strategy name → its parameter model (filled by :mod:`fishermask.strategies`), so that a
parameter one strategy lacks can be named as another strategy's."""


def check_params(strategy: str, model: type[BaseModel], params: dict[str, Any]) -> BaseModel:
    """The strategy's parameters, or a TypeError (unknown name: say which strategies take it) /
    ValueError (bad value) naming the parameter and the strategy."""
    own = list(model.model_fields)
    takes = f"takes {', '.join(own)}" if own else "takes no parameters"
    for key in params:
        if key not in own:
            others = [name for name, m in PARAMS.items() if key in m.model_fields]
            where = (f"'{key}' is a parameter of {', '.join(others)}" if others
                     else f"no strategy takes a parameter '{key}'")
            raise TypeError(f"strategy '{strategy}' has no parameter '{key}' ({where}); "
                            f"'{strategy}' {takes}")
    try:
        return model(**params)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"parameter '{key}' of strategy '{strategy}': {err['msg']} "
                         f"(got {err.get('input')!r})") from None


def check_number(name: str, value, *, positive: bool = True) -> float:
    """``value`` as a finite float (> 0 with ``positive``); TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not np.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a {'positive ' if positive else ''}finite number, "
                         f"got {value!r}")
    return float(value)


class _TensorPool:
    """Adapter so a plain input tensor ``[N, ...]`` (already transformed) acts as a pool."""

    def __init__(self, inputs, num_classes: int):
        self._x, self.num_classes = inputs, num_classes

    def __len__(self):
        return len(self._x)

    def inputs(self, idx, **_):
        return self._x[np.asarray(idx)]


def _as_pool(pool):
    """An ImageData passes as it is; a tensor or array ``[N, ...]`` of model-ready inputs gets
    checked (non-empty, numeric, finite) and wrapped later."""
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


def check_model(model, classifier: Optional[str] = None) -> tuple[str, torch.nn.Module]:
    """The model protocol every strategy relies on: an ``nn.Module`` whose output is the logits
    of a final ``nn.Linear`` (found at ``classifier``, else at ``classifier``/``fc``/``head``;
    :func:`~fishermask.kernels.head.find_head`) and finite parameters.  Returns the head's
    attribute path and the head."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module whose output is the logits of a final "
                        f"nn.Linear, got {type(model).__name__}")
    path, head = find_head(model, classifier)
    for pname, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"model: parameter {pname} has NaN or infinite values "
                             f"(did training diverge?)")
    return path, head


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
