"""The network's final ``nn.Linear`` (its head) and the penultimate features h(x) that feed it.

Any ``nn.Module`` whose output is the logits works: the head is the module at an attribute path
(``model.classifier: layer4.fc``), else the first of ``classifier``, ``fc`` or ``head`` the model
has; a container there (``Sequential(Dropout, Linear)``, timm's ``ClassifierHead``) gives its last
``nn.Linear``.  h(x) is the head's input, taken with a forward pre-hook during the model's own
forward pass (no copy of the network, no adapter):

    logits = W h(x) + b,   W = head.weight ∈ R^{C×d}.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

HEAD_NAMES = ("classifier", "fc", "head")


def _at(model: nn.Module, path: str):
    obj = model
    for part in path.split("."):
        if not hasattr(obj, part):
            raise TypeError(f"model: {type(model).__name__} has no attribute {path!r} (at "
                            f"{part!r}); name the final nn.Linear by its attribute path, e.g. "
                            f"fc or head.fc")
        obj = getattr(obj, part)
    return obj


def _last_linear(module: nn.Module) -> Optional[tuple[str, nn.Linear]]:
    if isinstance(module, nn.Linear):
        return "", module
    last = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            last = (name, sub)
    return last


def find_head(model: nn.Module, path: Optional[str] = None) -> tuple[str, nn.Linear]:
    """``(attribute path, the final nn.Linear)`` of ``model``: at ``path`` if given, else at the
    first of ``classifier``, ``fc``, ``head``; a container there gives its last ``nn.Linear``.
    A TypeError says what to name otherwise."""
    candidates = [path] if path else [n for n in HEAD_NAMES if hasattr(model, n)]
    for name in candidates:
        obj = _at(model, name)
        found = _last_linear(obj) if isinstance(obj, nn.Module) else None
        if found is not None:
            sub, linear = found
            return (f"{name}.{sub}" if sub else name), linear
        if path:
            raise TypeError(f"model: {name!r} is a {type(obj).__name__} without an nn.Linear; "
                            f"name the final nn.Linear (the layer whose output is the logits)")
    raise TypeError(f"model: {type(model).__name__} has no final nn.Linear at "
                    f"{', '.join(HEAD_NAMES)}; name it by its attribute path (model.classifier in "
                    f"a config, classifier= in Strategy.select), e.g. 'head.fc'")


def head_weight_name(model: nn.Module, head: nn.Linear) -> str:
    """The name in ``model.named_parameters()`` of the head's weight W."""
    for name, p in model.named_parameters():
        if p is head.weight:
            return name
    raise TypeError("model: the final nn.Linear's weight is not among model.named_parameters()")


def features_logits(model: nn.Module, x: Tensor, head: nn.Linear) -> tuple[Tensor, Tensor]:
    """h(x) [B, d] (the head's input) and the logits [B, C] (the model's output) from one forward
    pass of ``model``."""
    seen: dict[str, Tensor] = {}

    def grab(module, args):
        seen["h"] = args[0]

    handle = head.register_forward_pre_hook(grab)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if "h" not in seen:
        raise TypeError("model: its forward did not call the final nn.Linear it names; give the "
                        "layer whose output is the logits")
    h = seen["h"]
    if h.dim() != 2:
        raise TypeError(f"model: the final nn.Linear's input has shape {tuple(h.shape)}, not "
                        f"[B, d]; name the classifier applied to one feature vector per sample")
    return h, logits


def check_head_output(model: nn.Module, x: Tensor, head: nn.Linear, name: str) -> None:
    """The model's output must be exactly the head's output (the logits), [B, C]."""
    seen: dict[str, Tensor] = {}
    handle = head.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        handle.remove()
    if "out" not in seen:
        raise TypeError(f"model: its forward does not call {name!r}; name the final nn.Linear")
    if not isinstance(out, Tensor) or out.shape != seen["out"].shape \
            or not torch.equal(out, seen["out"]):
        raise TypeError(f"model: its output is not the output of its final nn.Linear {name!r}; "
                        f"the model must return the logits of that layer (no softmax or other "
                        f"layer after it)")


__all__ = ["HEAD_NAMES", "check_head_output", "features_logits", "find_head", "head_weight_name"]
