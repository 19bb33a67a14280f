"""The executor interface the AL loop and the strategies talk to, the device rule, and the
``execution:`` parameters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from fishermask.errors import ParameterError
from fishermask.kernels._group import Resident, ShardGroup
from fishermask.kernels._shard import CHUNK, GreedyShard

BatchFn = Callable[[torch.nn.Module, torch.Tensor], Any]
"""A per-batch computation ``fn(model, x)`` with one output row per input (a tensor, a dict of
tensors or a FisherEmbeddings), run in eval mode on test-transform inputs."""


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
    """Runs per-sample work over the pool, wherever the pool lives.  Lifecycle: ``bind(pool)``
    once per run, ``set_model(model)`` once per round, then any number of ``map``/``sum``/
    ``hold``/``embed_resident``; ``close()`` at the end.

    What a strategy may use, and nothing else: :meth:`map`, :meth:`sum`, :meth:`hold` (rows kept
    where they were computed, a :class:`~fishermask.kernels._group.Resident`),
    :meth:`embed_resident` (the greedy's :class:`~fishermask.kernels._group.ShardGroup`), and the
    attributes ``pool``
    (the bound pool: ``len`` and ``num_classes``), ``model`` (the round's model, in eval mode),
    ``shards`` (how many shards hold the resident rows), ``device`` (where the driver's k×k
    work of a greedy goes; None: the CPU) and ``max_memory_gb`` (the memory budget per process).
    """

    shards: int = 1
    device: Optional[torch.device] = None
    max_memory_gb: float = 16.0
    pool: Any = None
    model: Optional[torch.nn.Module] = None

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
        """Sum over the rows ``indices`` of ``fn``'s per-batch outputs (float64), added in the
        canonical pairwise-tree order over batches (bit-identical for any number of shards)."""

    @abstractmethod
    def hold(self, fn: BatchFn, indices: np.ndarray, make: Callable[[list, int], Any],
             unit: int) -> Resident:
        """``fn`` on the pool rows ``indices`` (sorted), its outputs kept where they were
        computed: contiguous shards whose boundaries are multiples of ``unit`` (and of the batch
        size where that leaves no shard idle), each holding ``make(outputs per batch, offset)``
        (``offset``: the shard's first position in ``indices``)."""

    def embed_resident(self, embed_fn: BatchFn, indices: np.ndarray) -> ShardGroup:
        """Embed the pool rows ``indices`` (sorted) with ``embed_fn`` and keep them where they were
        computed, split into CHUNK-aligned shards; returns their group."""
        return ShardGroup(self.hold(embed_fn, indices, GreedyShard.from_batches, CHUNK))

    def close(self) -> None:
        """Release resources (actors, memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def resolve_device(device: str) -> torch.device:
    """The torch device ``device`` names: ``auto`` → cuda when a GPU is visible, else cpu.  A
    :class:`~fishermask.errors.ParameterError` (a ValueError) for cuda without a GPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device='cuda': no GPU is visible; use device 'auto' (or 'cpu')")
    return torch.device(device)


__all__ = ["BatchFn", "ExecutionParams", "PoolExecutor", "resolve_device"]
