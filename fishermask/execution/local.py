"""In-process executor: the whole pool in this process, batches on one device.

The implementation is the strategies' own in-process executor
(:class:`~fishermask.strategies.inprocess.InProcessExecutor`); here it takes the executor
interface that the loop talks to.
"""

from __future__ import annotations

from fishermask.execution.base import PoolExecutor
from fishermask.strategies.inprocess import InProcessExecutor


class LocalExecutor(InProcessExecutor, PoolExecutor):
    """The in-process :class:`~fishermask.execution.base.PoolExecutor`."""


__all__ = ["LocalExecutor"]
