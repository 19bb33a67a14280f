"""The executor interface the AL loop and the strategies talk to, plus pieces both executors share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Optional

import numpy as np
import torch

from fishermask.errors import FishermaskError

BatchFn = Callable[[torch.nn.Module, torch.Tensor], Any]


class PoolExecutor(ABC):
    """Runs per-sample work over the pool.  Lifecycle: ``bind(pool)`` once per run,
    ``set_model(model)`` once per round, then any number of ``map``/``sum``/``fisher_greedy``."""

    @abstractmethod
    def bind(self, pool) -> None:
        """Hold the pool (an :class:`~fishermask.data.ImageData`) for the whole run."""

    @abstractmethod
    def set_model(self, model: torch.nn.Module) -> None:
        """Use these weights (eval mode) for the round's computations."""

    @abstractmethod
    def map(self, fn: BatchFn, indices: np.ndarray) -> Any:
        """``fn`` on the pool rows ``indices`` (test transform), outputs concatenated in that order."""

    @abstractmethod
    def sum(self, fn: BatchFn, indices: np.ndarray) -> Any:
        """Sum over the rows ``indices`` of ``fn``'s per-batch outputs (float64 accumulation)."""

    @abstractmethod
    def fisher_greedy(self, embed_fn: BatchFn, *, candidates: np.ndarray, labeled: np.ndarray,
                      n: int, fisher_target: str = "dense", lam: float = 1.0,
                      oversample: int = 1, weighting: str = "bait") -> tuple[np.ndarray, dict]:
        """Embed the whole pool with ``embed_fn`` (``[B, C, k]``, attribute ``k``), build the
        target F over the pool (dense or diagonal), and run the greedy of DESIGN §2 picking ``n``
        of ``candidates``.  Returns (picked pool indices in order of addition, info with phase
        seconds)."""

    def close(self) -> None:
        """Release resources (actors, memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise FishermaskError("execution.device is 'cuda' but no GPU is visible; "
                              "use --set execution.device=auto (or cpu)")
    return torch.device(device)


def greedy_memory_gb(pool_size: int, n_candidates: int, num_classes: int, k: int,
                     fisher_target: str) -> float:
    """Bytes (in GB) the greedy phase holds: the pool's embeddings V (float32), the candidates'
    Ṽ, Z and W (W only for a dense target), and k×k matrices (F, A and a work copy)."""
    per_row = num_classes * k * 4
    arrays = pool_size * per_row + n_candidates * per_row * (3 if fisher_target == "dense" else 2)
    square = (3 * k * k * 8) if fisher_target == "dense" else (k * k * 8)
    return (arrays + square) / 1e9


def check_memory(need_gb: float, limit_gb: float, *, what: str, shards: int = 1) -> None:
    if need_gb > limit_gb:
        raise FishermaskError(
            f"{what} needs about {need_gb:.1f} GB per process but execution.max_memory_gb is "
            f"{limit_gb:g}. Lower strategy.sparsity (smaller mask k), use "
            f"strategy.fisher_target=diag, spread the pool over more execution.shards "
            f"(now {shards}), or raise execution.max_memory_gb if the machine has the memory.")


def add_outputs(acc: Optional[Any], out: Any) -> Any:
    """Accumulate a tensor or dict of tensors in float64."""
    if isinstance(out, dict):
        acc = acc or {}
        for key, val in out.items():
            acc[key] = add_outputs(acc.get(key), val)
        return acc
    out = out.detach().to("cpu", torch.float64)
    return out if acc is None else acc + out


def cat_outputs(parts: list[Any]) -> Any:
    """Concatenate per-batch tensors (or dicts of tensors) along the sample axis."""
    if not parts:
        return torch.zeros(0)
    if isinstance(parts[0], dict):
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return torch.cat(parts)


def gram_sum(V: torch.Tensor, fisher_target: str) -> torch.Tensor:
    """Σ_x V_xᵀV_x over the rows of ``V`` [n, C, k] in float64: dense ``[k, k]`` or its diagonal."""
    V64 = V.to(torch.float64)
    if fisher_target == "diag":
        return (V64 * V64).sum(dim=(0, 1))
    flat = V64.reshape(-1, V64.shape[-1])
    return flat.T @ flat
