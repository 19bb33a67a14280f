"""The network's input from uint8 images: the train transform and the normalisation."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

CROP_PADDING = 4


def _random_crop_flip(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Vectorised per-sample RandomCrop(padding=4) + RandomHorizontalFlip on uint8 [B, C, H, W]."""
    b, c, h, w = x.shape
    p = CROP_PADDING
    padded = F.pad(x, (p, p, p, p))
    top = torch.randint(0, 2 * p + 1, (b,), generator=generator)
    left = torch.randint(0, 2 * p + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = (top[:, None] + torch.arange(h))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)


def normalized(x: torch.Tensor, mean, std, augment: bool = False,
               generator: Optional[torch.Generator] = None, device: Any = None) -> torch.Tensor:
    """uint8 images [B, C, H, W] as the network's float32 input: (x / 255 − mean) / std, after
    the train transform when ``augment`` (:meth:`ImageData.inputs`)."""
    if augment:
        x = _random_crop_flip(x, generator)
    if device is not None:
        x = x.to(device, non_blocking=True)
    x = x.float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)
