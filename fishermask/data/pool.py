"""Datasets and imbalance settings, held in memory as uint8 tensors (no maths, Ray or MLflow).

``load_experiment_data(cfg.data, seed)``: the pool is drawn per class (seeded, without
replacement) from the train split and stored in a seeded random order (a pool of features: in
the file's order, so that each shard's range is one part of the file); the test set is the test
split restricted to the kept classes; task labels are 0.. in the order of the kept class ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from fishermask.data import readers as datasets
from fishermask.data.features import FeatureData, load_features
from fishermask.data.files import ImageFiles, load_image_files
from fishermask.data.params import SETTINGS, DataParams, resolve_dataset
from fishermask.data.transforms import normalized
from fishermask.errors import ConfigError, DataError, FishermaskError

@dataclass(repr=False)
class ImageData:
    """Images of one split in memory: ``images`` uint8 [N, C, H, W], ``targets`` int64 [N]."""

    images: torch.Tensor
    targets: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        self.targets = torch.as_tensor(self.targets, dtype=torch.int64)
        if self.targets.shape != (self.images.shape[0],):
            raise ValueError(f"targets must be [N={self.images.shape[0]}], got {tuple(self.targets.shape)}")
        if not len(self.mean) == len(self.std) == self.images.shape[1]:
            raise ValueError("mean and std need one value per channel")
        self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"ImageData(n={len(self)}, shape={self.image_shape}, classes={self.classes}, "
                f"counts={self.class_counts().tolist()})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def class_counts(self, idx: Any = None) -> np.ndarray:
        """Number of items per task class (of ``idx``, default all) as int64 [num_classes]; items
        without a label (a negative target) are not counted."""
        t = (self.targets if idx is None else self.targets[_as_index(idx)]).numpy()
        return np.bincount(t[t >= 0], minlength=self.num_classes).astype(np.int64)

    def subset(self, idx: Any, targets: Optional[torch.Tensor] = None,
               classes: Optional[list[str]] = None) -> "ImageData":
        """The items ``idx``, relabelled by ``targets`` and ``classes`` when given."""
        i = _as_index(idx)
        return ImageData(self.images[i], self.targets[i] if targets is None else targets,
                         list(self.classes if classes is None else classes), self.mean, self.std)

    def inputs(self, idx: Any = None, *, augment: bool = False,
               generator: Optional[torch.Generator] = None, device: Any = None) -> torch.Tensor:
        """Float32 [len(idx), C, H, W]: pixels / 255, normalised with ``mean``/``std``.

        ``augment=True`` applies the train transform per sample: RandomCrop(H, W, padding=4, zero
        fill) then RandomHorizontalFlip(0.5), drawn from ``generator`` (torch's global RNG when
        None), so the output is a deterministic function of the generator's state.  Without
        augmentation nothing random happens.  ``idx`` may be indices, a bool mask, a slice or None
        (all).  ``device`` moves the uint8 batch before the float conversion.
        """
        x = self.images if idx is None else self.images[_as_index(idx)]
        return normalized(x, self.mean, self.std, augment, generator, device)


@dataclass(repr=False)
class ExperimentData:
    pool: "ImageData | ImageFiles | FeatureData"  # the (imbalanced) pool, in a seeded random order
    test: "ImageData | ImageFiles | FeatureData"  # test split restricted to the kept classes
    pool_source_index: np.ndarray    # index of each pool item in the train split (as loaded)
    class_ids: list[int]             # original dataset class ids kept, in task order

    def __repr__(self) -> str:
        return f"ExperimentData(class_ids={self.class_ids}, pool={self.pool!r}, test={self.test!r})"


def _as_index(idx: Any):
    if isinstance(idx, slice):
        return idx
    if isinstance(idx, torch.Tensor):
        idx = idx.detach().cpu().numpy()
    arr = np.atleast_1d(np.asarray(idx))
    if arr.dtype == bool:
        arr = np.flatnonzero(arr)
    return torch.from_numpy(arr.astype(np.int64, copy=False))


def initial_labeled(pool: ImageData, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pool indices drawn uniformly without replacement, sorted (int64)."""
    if n < 0 or n > len(pool):
        raise ConfigError(f"budget.initial={n} labels asked for a pool of {len(pool)} images; use 0 <= "
                          f"budget.initial <= {len(pool)} or a larger pool (data.setting / data.class_counts)")
    return np.sort(rng.choice(len(pool), size=n, replace=False)).astype(np.int64)


BUILTIN_LOADERS = {"digits": datasets.load_digits, "fashion_mnist": datasets.load_fashion_mnist,
                   "cifar10": datasets.load_cifar10, "image_folder": datasets.load_image_folder}


def _splits(cfg: DataParams, seed: int):
    """(train, test) of a built-in (ImageData, or FeatureData for ``features``) or of a dataset
    factory."""
    plugin = resolve_dataset(cfg.dataset)
    if cfg.dataset == "features":
        return load_features(cfg, seed)
    if cfg.dataset == "image_folder" and not cfg.in_memory:
        return load_image_files(cfg, seed)
    if plugin.source == "builtin":
        (tr_x, tr_y), (te_x, te_y), classes, mean, std = BUILTIN_LOADERS[cfg.dataset](cfg, seed)
        return (ImageData(tr_x, torch.as_tensor(np.asarray(tr_y, dtype=np.int64)), list(classes),
                          mean, std),
                ImageData(te_x, torch.as_tensor(np.asarray(te_y, dtype=np.int64)), list(classes),
                          mean, std))
    try:
        out = plugin.obj(**cfg.args)
    except FishermaskError:
        raise
    except Exception as exc:
        raise DataError(f"data.dataset: the factory {plugin.path} failed: {type(exc).__name__}: "
                        f"{str(exc)[:300]}") from None
    if not (isinstance(out, tuple) and len(out) == 2
            and all(isinstance(d, POOL_TYPES) for d in out)):
        raise DataError(f"data.dataset: the factory {plugin.path} must return (train, test), each "
                        f"a fishermask.data.ImageData, ImageFiles or FeatureData; it returned "
                        f"{_kinds(out)}")
    train, test = out
    if list(train.classes) != list(test.classes):
        raise DataError(f"data.dataset: {plugin.path}'s train and test splits name different "
                        f"classes ({train.classes} and {test.classes}); give both the same list")
    return train, test


POOL_TYPES = (ImageData, ImageFiles, FeatureData)


def _kinds(out: Any) -> str:
    if isinstance(out, tuple):
        return f"a tuple of {', '.join(type(d).__name__ for d in out)}"
    return f"a {type(out).__name__}"


def load_experiment_data(cfg: DataParams, seed: int) -> ExperimentData:
    """Load ``cfg.dataset``, apply the imbalance setting and return pool + test set (seeded)."""
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    train, test = _splits(cfg, seed)
    tr_y, te_y, classes = train.targets.numpy(), test.targets.numpy(), list(train.classes)
    available = np.bincount(tr_y, minlength=len(classes))
    counts, key = available.tolist(), "the whole train split"
    if cfg.setting is not None or cfg.class_counts is not None:
        counts = SETTINGS[cfg.setting] if cfg.setting is not None else list(cfg.class_counts)
        key = f"data.setting={cfg.setting}" if cfg.setting is not None else "data.class_counts"
    if len(counts) > len(classes):
        raise ConfigError(f"{key} needs {len(counts)} classes but dataset '{cfg.dataset}' has only "
                          f"{len(classes)}; use data.class_counts with at most {len(classes)} entries")
    short = [(i, n, int(available[i])) for i, n in enumerate(counts) if n > available[i]]
    if short:
        detail = "; ".join(f"class {i} ('{classes[i]}') asks for {n} but the train split has {a}"
                           for i, n, a in short)
        raise ConfigError(f"{key}: not enough '{cfg.dataset}' train images: {detail}. Lower the "
                          f"counts with data.class_counts (per-class pool sizes) or use a larger dataset")
    kept = [i for i, n in enumerate(counts) if n > 0]
    if len(kept) < 2:
        raise ConfigError(f"{key}: the pool has images of {len(kept)} class(es) "
                          f"{[classes[c] for c in kept]}; active learning needs at least 2 "
                          f"(accuracy on one class is trivially 1.0). Give at least two positive "
                          f"entries in data.class_counts")
    rng = np.random.default_rng(seed)
    drawn = [rng.choice(np.flatnonzero(tr_y == c), size=counts[c], replace=False) for c in kept]
    source = np.concatenate(drawn).astype(np.int64)
    source = source[rng.permutation(len(source))]
    if isinstance(train, FeatureData):  # rows stay in file order: a shard reads one part of it
        source = np.sort(source)
    remap = np.full(len(classes), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    test_idx = np.flatnonzero(np.isin(te_y, kept))
    if len(test_idx) == 0:
        raise DataError(f"the '{cfg.dataset}' test split has no images of the kept classes "
                        f"{[classes[c] for c in kept]}; add test images for them")
    names = [classes[c] for c in kept]
    pool = train.subset(source, torch.from_numpy(remap[tr_y[source]]), names)
    test = test.subset(test_idx, torch.from_numpy(remap[te_y[test_idx]]), names)
    return ExperimentData(pool=pool, test=test, pool_source_index=source, class_ids=kept)
