"""A network: any ``nn.Module`` whose output is the logits works.  This one calls its final
``nn.Linear`` ``head`` and has no ``features`` method: fishermask finds the head and takes the
penultimate features h(x) as that layer's input.

The contract: called with ``num_classes``, ``in_channels`` (when the callable names it) and the
mapping ``model.args`` as keyword arguments, it returns the ``nn.Module``.
"""

from __future__ import annotations

from torch import nn


class ShapeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.body(x))
