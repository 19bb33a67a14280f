"""Pools of precomputed features: ``.npy`` files of [N, d] float32 or float16 rows, memory-mapped.

A :class:`FeatureData` is a *description* of rows of such a file (the file, which rows, their
labels), not the rows themselves: :meth:`FeatureData.inputs` reads the rows it is asked for, so a
process holds only the pages it touched, and a pickled FeatureData (what a Ray shard actor
receives) carries the file's path and the row index, never the data.  The driver of a run reads
the labels (N integers), the labeled rows (to train) and the test set; each shard reads the rows
of its own range.

``data.dataset: features`` with ``data.features``/``data.labels`` (and ``data.test_features``/
``data.test_labels``, else a stratified hold-out of ``data.test_fraction``) loads one
(:func:`load_features`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from fishermask.data.on_disk import OnDiskPool
from fishermask.data.readers import holdout
from fishermask.errors import DataError


def _open(path: str) -> np.ndarray:
    try:
        x = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"features file {path} cannot be read as .npy ({exc}); save the "
                        f"features with numpy.save(path, array)") from None
    if x.ndim != 2 or x.dtype not in (np.float32, np.float16):
        raise DataError(f"features file {path} holds a {x.dtype} array of shape {x.shape}; "
                        f"give float32 or float16 rows [N, d]")
    return x


class FeatureData(OnDiskPool):
    """Rows ``rows`` (default: every row, in file order) of the features file ``path``, with their
    task labels ``targets`` (int64, -1: not labeled) and the class names."""

    _CACHED = ("_x",)

    def __init__(self, path: str | Path, targets, classes: list[str],
                 rows: Optional[np.ndarray] = None):
        self.path = str(Path(path).expanduser().resolve())
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.int64)
        self.classes = list(classes)
        self._x: Optional[np.ndarray] = None
        n_file, self.dim = self.file_shape
        n = n_file if self.rows is None else len(self.rows)
        if self.rows is not None and len(self.rows) and (self.rows.min() < 0
                                                         or self.rows.max() >= n_file):
            raise DataError(f"features file {self.path}: row indices outside [0, {n_file})")
        if self.targets is not None and len(self.targets) != n:
            raise DataError(f"features file {self.path}: {n} rows but {len(self.targets)} labels")

    # ------------------------------------------------------------------ the file
    @property
    def x(self) -> np.ndarray:
        if self._x is None:
            self._x = _open(self.path)
        return self._x

    @property
    def file_shape(self) -> tuple[int, int]:
        return tuple(self.x.shape)  # type: ignore[return-value]

    # ------------------------------------------------------------------ the pool protocol
    def __len__(self) -> int:
        return self.file_shape[0] if self.rows is None else len(self.rows)

    def __repr__(self) -> str:
        return f"FeatureData(n={len(self)}, d={self.dim}, file={self.path})"

    @property
    def in_channels(self) -> int:
        """The feature dimension d (what a network for this pool takes as its input size)."""
        return int(self.dim)

    @property
    def image_shape(self) -> tuple[int]:
        return (int(self.dim),)

    def subset(self, idx, targets=None, classes: Optional[list[str]] = None) -> "FeatureData":
        """The rows ``idx`` (positions in this data), relabelled by ``targets``/``classes``."""
        idx = np.asarray(idx, dtype=np.int64)
        rows = idx if self.rows is None else self.rows[idx]
        t = self.targets[torch.from_numpy(idx)] if targets is None else targets
        return FeatureData(self.path, t, classes or self.classes, rows)

    def inputs(self, idx: Any = None, *, augment: bool = False,
               generator: Optional[torch.Generator] = None, device: Any = None) -> torch.Tensor:
        """Float32 [len(idx), d]: the rows ``idx`` read from the file (sorted, for locality).
        Features take no augmentation (``data.augment`` is refused for them)."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64).reshape(-1)
        rows = idx if self.rows is None else self.rows[idx]
        order = np.argsort(rows, kind="stable")
        block = np.empty((len(rows), self.dim), dtype=np.float32)
        block[order] = self.x[rows[order]]
        self._note_read(idx)
        out = torch.from_numpy(block)
        return out if device is None else out.to(device)


def _labels(path: str, n: int, what: str) -> np.ndarray:
    try:
        y = np.load(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{what} {path} cannot be read as .npy ({exc})") from None
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != n:
        raise DataError(f"{what} {path}: expected {n} integer labels [N], got a {y.dtype} array "
                        f"of shape {y.shape}")
    if len(y) and y.min() < 0:
        raise DataError(f"{what} {path}: labels must be >= 0 (class ids), found {int(y.min())}")
    return y.astype(np.int64)


def load_features(cfg, seed: int) -> tuple[FeatureData, FeatureData]:
    """(train, test) of a features pool: the files of ``cfg`` (``data.features``, ``data.labels``;
    ``data.test_features``/``data.test_labels`` or a stratified hold-out of
    ``data.test_fraction``).  Labels are read whole, features only mapped."""
    for key in ("features", "labels"):
        if not getattr(cfg, key) or not Path(getattr(cfg, key)).expanduser().is_file():
            raise DataError(f"data.{key}: {getattr(cfg, key)!r} is not a file; give the .npy "
                            f"file of the pool's {key} (data.dataset=features)")
    x = _open(str(Path(cfg.features).expanduser()))
    y = _labels(str(Path(cfg.labels).expanduser()), x.shape[0], "data.labels")
    classes = [str(c) for c in range(int(y.max()) + 1)] if len(y) else []
    if cfg.test_features:
        tx = _open(str(Path(cfg.test_features).expanduser()))
        if tx.shape[1] != x.shape[1]:
            raise DataError(f"data.test_features has d={tx.shape[1]} but data.features has "
                            f"d={x.shape[1]}")
        ty = _labels(str(Path(cfg.test_labels).expanduser()), tx.shape[0], "data.test_labels")
        classes = [str(c) for c in range(max(int(y.max()), int(ty.max())) + 1)]
        return (FeatureData(cfg.features, y, classes), FeatureData(cfg.test_features, ty, classes))
    tr, te = holdout(y, cfg.test_fraction, seed, f"features {cfg.features}")
    return (FeatureData(cfg.features, y[tr], classes, tr),
            FeatureData(cfg.features, y[te], classes, te))


__all__ = ["FeatureData", "load_features"]
