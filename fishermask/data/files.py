"""An image folder read when used (``data.dataset: image_folder`` with ``data.in_memory: false``).

An :class:`ImageFiles` is a description of image files (the folder, the relative paths, their
labels, the size and channels they are decoded to, the normalisation): :meth:`ImageFiles.inputs`
decodes the files it is asked for, so no process holds the pool's pixels, and a pickled copy (what
a Ray shard actor receives) carries the paths, never the images.  The driver of a run decodes the
labeled images (to train) and the test set; each shard decodes the files of its own range.

The normalisation constants are the train split's per-channel mean and standard deviation over
a seeded sample of at most ``STATS_SAMPLE`` train images (every image when there are fewer, and
then the inputs equal those of ``in_memory: true``).  Grey or colour is decided on that sample
too: the folder is read as grey when every sampled image is grey.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from fishermask.data.on_disk import OnDiskPool
from fishermask.data.readers import decode_images, image_stats, is_gray, scan_folder
from fishermask.data.transforms import normalized
from fishermask.errors import DataError

STATS_SAMPLE = 2000


class ImageFiles(OnDiskPool):
    """The image files ``paths`` (absolute; ``root``, the folder, names them in messages) with their task labels ``targets`` and
    class names, decoded when used to ``size``×``size``, grey (``gray``) or RGB, and normalised
    with ``mean``/``std`` (the pool protocol of :class:`~fishermask.data.ImageData`)."""

    def __init__(self, root: str | Path, paths: list[str], targets, classes: list[str],
                 size: int, gray: bool, mean, std):
        self.root = str(Path(root).expanduser().resolve())
        self.paths = list(paths)
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.int64)
        self.classes, self.size, self.gray = list(classes), int(size), bool(gray)
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        if self.targets is not None and len(self.targets) != len(self.paths):
            raise DataError(f"image_folder {self.root}: {len(self.paths)} images but "
                            f"{len(self.targets)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ImageFiles(n={len(self)}, shape={self.image_shape}, folder={self.root})"

    @property
    def in_channels(self) -> int:
        return 1 if self.gray else 3

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.size, self.size)

    def subset(self, idx, targets=None, classes: Optional[list[str]] = None) -> "ImageFiles":
        """The images ``idx`` (positions in this data), relabelled by ``targets``/``classes``."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        t = self.targets[torch.from_numpy(idx)] if targets is None else targets
        return ImageFiles(self.root, [self.paths[i] for i in idx], t, classes or self.classes,
                          self.size, self.gray, self.mean, self.std)

    def images(self, idx: Any = None) -> torch.Tensor:
        """uint8 [len(idx), C, H, W]: the files ``idx`` decoded."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64).reshape(-1)
        x = decode_images(Path(self.root), [self.paths[i] for i in idx], self.size, self.gray)
        self._note_read(idx)
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

    def inputs(self, idx: Any = None, *, augment: bool = False,
               generator: Optional[torch.Generator] = None, device: Any = None) -> torch.Tensor:
        """Float32 [len(idx), C, H, W], as :meth:`ImageData.inputs` (the same transform and
        normalisation) of the files ``idx``, decoded now."""
        return normalized(self.images(idx), self.mean, self.std, augment, generator, device)


def sample_stats(root: Path, paths: list[str], size: int, seed: int):
    """(gray, mean, std) of a seeded sample of at most ``STATS_SAMPLE`` of the files ``paths``
    (every file when there are fewer): what :class:`ImageFiles` decodes them with."""
    rng = np.random.default_rng(seed)
    pick = (np.arange(len(paths)) if len(paths) <= STATS_SAMPLE
            else np.sort(rng.choice(len(paths), STATS_SAMPLE, replace=False)))
    files = [paths[i] for i in pick]
    try:
        gray = is_gray(files)
    except (OSError, SyntaxError, ValueError):
        gray = False  # decode_images names the unreadable file
    x = torch.from_numpy(decode_images(root, files, size, gray)).permute(0, 3, 1, 2)
    return (gray, *image_stats(x))


def load_image_files(cfg, seed: int) -> tuple[ImageFiles, ImageFiles]:
    """(train, test) of an image folder as :class:`ImageFiles` (the split of
    ``data.in_memory: true``); decodes only the statistics' sample of the train split."""
    root, classes, paths, y, tr, te = scan_folder(cfg, seed)
    absolute = [os.path.abspath(p) for p in paths]  # the same files from any process
    gray, mean, std = sample_stats(root, [absolute[i] for i in tr], cfg.image_size, seed)

    def split(ix: np.ndarray) -> ImageFiles:
        return ImageFiles(root, [absolute[i] for i in ix], y[ix], classes, cfg.image_size, gray,
                          mean, std)
    return split(tr), split(te)


__all__ = ["ImageFiles", "STATS_SAMPLE", "load_image_files", "sample_stats"]
