"""What the pools that stay on disk share (a features file, image files read when used).

Such a pool is a *description* of its items (files, rows, labels): a pickled copy (what a Ray
shard actor receives) carries no data, and each process reads only the items it is asked for,
counting them (``read_rows``, ``read_span``: the shard tests check that a shard read only its
own range).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch


class OnDiskPool:
    """Mixin of :class:`~fishermask.data.FeatureData` and :class:`~fishermask.data.ImageFiles`:
    ``targets`` (int64, -1: not labeled), ``classes``, the read counters and pickling without
    the process's open files (``_CACHED`` attributes)."""

    _CACHED: tuple[str, ...] = ()
    targets: Optional[torch.Tensor]
    classes: list[str]
    read_rows: int = 0                               # items read by this process
    read_span: Optional[tuple[int, int]] = None      # the smallest and largest index read

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in self._CACHED:
            state[key] = None  # a description: the receiving process opens the files itself
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def for_shards(self):
        """The same items without the labels: what a shard actor needs to read inputs."""
        out = type(self).__new__(type(self))
        out.__setstate__({**self.__getstate__(), "targets": None, "read_rows": 0,
                          "read_span": None})
        return out

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self, idx: Any = None) -> np.ndarray:
        """Number of items per task class (of ``idx``, default all); unlabeled items (-1) are
        not counted."""
        t = (self.targets if idx is None else self.targets[torch.as_tensor(idx)]).numpy()
        return np.bincount(t[t >= 0], minlength=self.num_classes).astype(np.int64)

    def _note_read(self, idx: np.ndarray) -> None:
        if len(idx):
            self.read_rows += len(idx)
            lo, hi = int(idx.min()), int(idx.max())
            span = self.read_span
            self.read_span = (lo, hi) if span is None else (min(lo, span[0]), max(hi, span[1]))
