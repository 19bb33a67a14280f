"""A dataset factory: small grey images of circles, squares and crosses, drawn from a seed.

The contract: called with the mapping ``data.args`` as keyword arguments, it returns
``(train, test)``, each a :class:`fishermask.data.ImageData` (uint8 images [N, C, H, W], int64
labels, the class names, and the per-channel mean/std that normalise the inputs).
"""

from __future__ import annotations

import numpy as np
import torch

from fishermask.data import ImageData

CLASSES = ("circle", "square", "cross")


def _draw(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
    r = rng.uniform(size * 0.15, size * 0.3)
    if kind == 0:
        shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    elif kind == 1:
        shape = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    else:
        shape = ((abs(yy - cy) <= r / 3) & (abs(xx - cx) <= r)) | \
                ((abs(xx - cx) <= r / 3) & (abs(yy - cy) <= r))
    img = shape * rng.uniform(150, 255) + rng.normal(0, 25, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def _split(n: int, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = rng.integers(0, len(CLASSES), n)
    images = np.stack([_draw(int(k), size, rng) for k in labels])[:, None]
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def shapes(n_train: int = 600, n_test: int = 300, size: int = 16, seed: int = 0):
    """``(train, test)``: ``n_train`` and ``n_test`` images of ``size``×``size`` pixels."""
    rng = np.random.default_rng(seed)
    (x_tr, y_tr), (x_te, y_te) = _split(n_train, size, rng), _split(n_test, size, rng)
    mean = float(x_tr.double().mean() / 255.0)
    std = float(x_tr.double().std() / 255.0)
    return (ImageData(x_tr, y_tr, list(CLASSES), (mean,), (std,)),
            ImageData(x_te, y_te, list(CLASSES), (mean,), (std,)))
