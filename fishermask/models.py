"""Networks: ``resnet18`` (torchvision, CIFAR stem), ``resnet18_narrow`` (the authors' net), ``cnn_small``.

Every model maps ``[B, C_in, H, W]`` float inputs to logits ``[B, C]`` and exposes
``features(x) -> [B, d]`` (the penultimate embedding h(x)) and ``classifier`` (the final
``nn.Linear`` whose weight is W in BAIT's last-layer Fisher).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from fishermask._compat import import_torchvision


class _Net(nn.Module):
    """Base: ``forward = classifier(features(x))``."""

    classifier: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    @property
    def classifier_weight_name(self) -> str:
        """Name in ``named_parameters()`` of the classifier's weight matrix W (C x d)."""
        for name, p in self.named_parameters():
            if p is self.classifier.weight:
                return name
        raise RuntimeError("classifier weight not found among the parameters")


class ResNet18(_Net):
    """torchvision ResNet-18 with a 3x3 stride-1 stem and no max-pool (11.2M parameters)."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        tv = import_torchvision()
        net = tv.models.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.layer1, net.layer2,
                                  net.layer3, net.layer4, net.avgpool, nn.Flatten())
        self.classifier = net.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Narrow(_Net):
    """CIFAR ResNet-18 with widths 16/32/64/128 and a bias-free classifier (about 0.70M
    parameters): the network the FisherMask and BADGE/BAIT public code actually trained."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        widths = (16, 32, 64, 128)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(_BasicBlock(cin, w, stride), _BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.classifier = nn.Linear(128, num_classes, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class CNNSmall(_Net):
    """A ~100k-parameter CNN for CPU runs on 8x8 (digits) and 28x28 (FashionMNIST) inputs."""

    def __init__(self, num_classes: int, in_channels: int = 1):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(in_channels, 32), *block(32, 64), nn.MaxPool2d(2),
            *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


MODELS: dict[str, Callable[..., _Net]] = {
    "resnet18": ResNet18,
    "resnet18_narrow": ResNet18Narrow,
    "cnn_small": CNNSmall,
}


def build_model(name: str, num_classes: int, in_channels: int) -> _Net:
    """Build a model by registry name (see :data:`MODELS`)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)


def reinit_parameters(model: nn.Module, mode: str = "conv_linear") -> None:
    """Re-initialise a model in place: ``conv_linear`` (Conv2d/Linear ``reset_parameters``, as the
    authors' code: BatchNorm is kept), ``all`` (every module with ``reset_parameters``, BatchNorm
    statistics included) or ``none``."""
    if mode == "none":
        return
    for m in model.modules():
        if mode == "all" or isinstance(m, (nn.Conv2d, nn.Linear)):
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
        if mode == "all" and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


class ModelParams(BaseModel):
    """Which network (``model:``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    name: Literal["resnet18", "resnet18_narrow", "cnn_small"] = "cnn_small"
