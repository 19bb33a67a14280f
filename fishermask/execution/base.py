"""The executor interface the AL loop and the strategies talk to, and the ``execution:`` parameters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from fishermask.errors import FishermaskError
from fishermask.strategies import inprocess

BatchFn = inprocess.BatchFn


class ExecutionParams(BaseModel):
    """Where the pool's per-sample work runs (``execution:``): in this process, or on Ray shard actors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    backend: Literal["auto", "local", "ray"] = "auto"
    shards: int = Field(1, ge=1)
    cpus_per_shard: float = Field(1, gt=0)
    gpus_per_shard: float = Field(0, ge=0)
    address: Optional[str] = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(256, ge=1, description="inference/embedding batch size")
    max_memory_gb: float = Field(16.0, gt=0)
    threads: Optional[int] = Field(None, ge=1, description="torch threads per process")

    @property
    def use_ray(self) -> bool:
        if self.backend == "auto":
            return self.shards > 1 or self.address is not None
        return self.backend == "ray"


class PoolExecutor(ABC):
    """Runs per-sample work over the pool.  Lifecycle: ``bind(pool)`` once per run,
    ``set_model(model)`` once per round, then any number of ``map``/``sum``/``embed_resident``."""

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
    def embed_resident(self, embed_fn: BatchFn, indices: np.ndarray):
        """Embed the pool rows ``indices`` (sorted) with ``embed_fn`` and keep them where they were
        computed, split into CHUNK-aligned shards; returns a group with ``call(method, *args)``
        over the :class:`~fishermask.kernels.resident.ResidentShard` s and ``close()``."""

    def close(self) -> None:
        """Release resources (actors, memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def resolve_device(device: str) -> torch.device:
    """The torch device ``execution.device`` names (``auto``: cuda when a GPU is visible)."""
    try:
        return inprocess.resolve_device(device)
    except ValueError:
        raise FishermaskError("execution.device is 'cuda' but no GPU is visible; "
                              "use --set execution.device=auto (or cpu)") from None
