"""Networks: the built-ins ``resnet18`` (torchvision, CIFAR stem), ``resnet18_narrow`` (the
authors' net), ``cnn_small``, and ``linear`` and ``mlp`` for pools of features, and any network a user names (``model.name``: an import path
``package.module:attribute`` or an installed plug-in's name).

**The network contract.** ``model.name`` names a callable (a class or a function) that is called
with ``num_classes``, ``in_channels`` and the mapping ``model.args`` and returns an ``nn.Module``
whose output is the logits ``[B, C]``.  A callable that takes no ``in_channels`` (torchvision's
``resnet50``, say) is called without it, and the network's first ``nn.Conv2d`` is replaced by one
with ``in_channels`` inputs when they differ.  The final ``nn.Linear`` (the classifier whose weight
is W in BAIT's last-layer Fisher) is found at ``model.classifier`` or at ``classifier``, ``fc`` or
``head`` (:func:`fishermask.kernels.head.find_head`); no adapter is needed.  ``model.weights``
loads a local state dict; ``model.freeze: features`` trains only that final layer.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from fishermask._compat import import_torchvision
from fishermask.errors import ConfigError
from fishermask.kernels.head import find_head
from fishermask.plugins import Plugin, PluginError, resolve


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


class Linear(_Net):
    """One ``nn.Linear`` on a features pool's rows (``in_channels`` = the feature dimension d):
    BAIT's last-layer Fisher is then the exact Fisher of the whole model."""

    def __init__(self, num_classes: int, in_channels: int):
        super().__init__()
        self.classifier = nn.Linear(in_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class MLP(_Net):
    """Hidden ``nn.Linear`` + ReLU layers (``model.hidden``, default [256]), then the classifier:
    a small head on a features pool; FisherMask masks across its layers."""

    def __init__(self, num_classes: int, in_channels: int, hidden: tuple[int, ...] = (256,)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": ResNet18,
    "resnet18_narrow": ResNet18Narrow,
    "cnn_small": CNNSmall,
    "linear": Linear,
    "mlp": MLP,
}


def takes(fn: Callable, name: str) -> bool:
    """Whether ``fn`` names the keyword argument ``name`` in its signature (``**kwargs`` does not
    count: torchvision's builders take them and pass them to a class that refuses it)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == name and p.kind is not p.VAR_POSITIONAL for p in params)


def model_kwargs(factory: Callable, num_classes: int, in_channels: int,
                 args: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The keyword arguments the network factory is called with (``in_channels`` only when it
    names it)."""
    kw = {"num_classes": num_classes, **(args or {})}
    if takes(factory, "in_channels"):
        kw["in_channels"] = in_channels
    return kw


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first ``nn.Conv2d`` (in registration order) by one with ``in_channels`` inputs
    (same outputs, kernel, stride, padding, dilation and bias) when its input channels differ."""
    for path, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            if conv.in_channels != in_channels:
                parent_path, _, attr = path.rpartition(".")
                parent = model.get_submodule(parent_path) if parent_path else model
                groups = conv.groups if in_channels % conv.groups == 0 else 1
                setattr(parent, attr, nn.Conv2d(
                    in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, groups, conv.bias is not None, conv.padding_mode))
            return


def resolve_model(name: str) -> Plugin:
    """The network factory ``model.name`` names (a built-in of :data:`MODELS`, an import path or
    an installed entry point of ``fishermask.models``), checked callable."""
    plugin = resolve("models", name, "model.name", MODELS)
    if not callable(plugin.obj):
        raise PluginError(f"model.name: {name!r} is a {type(plugin.obj).__name__}, not a "
                          f"callable that builds an nn.Module")
    return plugin


def build_model(name: str, num_classes: int, in_channels: int,
                args: Optional[dict[str, Any]] = None) -> nn.Module:
    """The network ``name`` (:func:`resolve_model`) for ``num_classes`` classes and
    ``in_channels`` input channels, called with ``args`` too."""
    factory = resolve_model(name).obj
    kw = model_kwargs(factory, num_classes, in_channels, args)
    model = factory(**kw)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model.name: {name!r} returned a {type(model).__name__}, not a "
                        f"torch.nn.Module")
    if "in_channels" not in kw:
        adapt_first_conv(model, in_channels)
    return model


def model_from_params(params: "ModelParams", num_classes: int, in_channels: int) -> nn.Module:
    """The configured network: built (:func:`build_model`), its ``weights`` loaded, its body
    frozen with ``freeze: features``."""
    args = dict(params.args, **({"hidden": tuple(params.hidden)} if params.name == "mlp" else {}))
    model = build_model(params.name, num_classes, in_channels, args)
    if params.weights:
        load_weights(model, params.weights)
    if params.freeze == "features":
        freeze_features(model, find_head(model, params.classifier)[1])
    return model


def freeze_features(model: nn.Module, head: nn.Linear) -> None:
    """Train only the final layer (``model.freeze: features``): every other parameter is
    frozen (``requires_grad=False``)."""
    keep = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


def load_weights(model: nn.Module, path: str) -> None:
    """Load a local state dict (``model.weights``): a file of ``torch.save(model.state_dict())``
    (or a checkpoint holding one under ``state_dict``).  Every tensor must fit the network."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.weights: {file} is not a file; give a state dict saved with "
                          f"torch.save(model.state_dict(), path)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"model.weights: {file} cannot be read as a state dict "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (the network's: {tuple(own[k].shape)})"
              for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ConfigError(f"model.weights: {file} does not fit the model: "
                          + "; ".join(f"{what} {items[:3]}" for what, items in
                                      (("missing", missing), ("unexpected", unexpected),
                                       ("other shapes", shapes)) if items)
                          + " (another network, or num_classes/in_channels differ)")
    model.load_state_dict(state, strict=False)


def reinit_parameters(model: nn.Module, mode: str = "conv_linear") -> None:
    """Re-initialise a model in place: ``conv_linear`` (Conv2d/Linear ``reset_parameters``, as the
    authors' code: BatchNorm is kept), ``all`` (every module with ``reset_parameters``, BatchNorm
    statistics included) or ``none``.  Modules whose parameters are all frozen (``model.freeze``)
    are left as they are."""
    if mode == "none":
        return
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            continue  # frozen: part of the fixed body
        if mode == "all" or isinstance(m, (nn.Conv2d, nn.Linear)):
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
        if mode == "all" and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


class ModelParams(BaseModel):
    """Which network (``model:``): a built-in name, an import path or an installed plug-in's name
    (``name``), its extra arguments (``args``), where its final nn.Linear is (``classifier``, an
    attribute path; default: classifier, fc or head), a state dict to start from (``weights``)
    and whether only the final layer trains (``freeze: features``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    name: str = "cnn_small"
    args: dict[str, Any] = Field(default_factory=dict)
    classifier: Optional[str] = None
    weights: Optional[str] = None
    freeze: Literal["none", "features"] = "none"
    hidden: list[int] = Field(default_factory=lambda: [256],
                              description="mlp: the hidden layers' widths")

    @field_validator("hidden")
    @classmethod
    def _widths(cls, v):
        if any(w < 1 for w in v):
            raise ValueError("model.hidden: give positive layer widths, e.g. [256]")
        return v

    @model_validator(mode="after")
    def _network_binds(self):
        plugin = resolve_model(self.name)
        if plugin.source == "builtin" and self.args:
            raise ConfigError(f"model.args is for plug-in networks; the built-in {self.name!r} "
                              f"takes only num_classes and in_channels")
        try:
            inspect.signature(plugin.obj).bind(**model_kwargs(plugin.obj, 2, 3, self.args))
        except TypeError as exc:
            raise PluginError(f"model.args: the network {plugin.path} cannot be called with "
                              f"num_classes and {self.args or 'no other arguments'}: {exc}") from None
        except ValueError:  # no signature to check
            pass
        return self
