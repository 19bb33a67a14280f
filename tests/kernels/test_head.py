"""The network's final nn.Linear and the features that feed it (kernels/head.py): found at
classifier, fc, head or a named attribute path, inside containers too, without an adapter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fishermask.kernels.head import (check_head_output, features_logits, find_head,
                                     head_weight_name)
from tests.helpers import ToyNet


class Wrapped(nn.Module):
    """timm-like: ``head`` is a container whose last nn.Linear is the classifier."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(5, 4), nn.Identity())

    def forward(self, x):
        return self.head(self.body(x))


class Deep(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 5), nn.Tanh())
        self.out = nn.ModuleDict({"cls": nn.Linear(5, 3)})

    def forward(self, x):
        return self.out["cls"](self.trunk(x))


def test_found_by_name_in_containers_and_by_path():
    assert find_head(ToyNet())[0] == "classifier"
    path, lin = find_head(Wrapped())
    assert path == "head.1" and lin.out_features == 4
    deep = Deep()
    assert find_head(deep, "out.cls")[0] == "out.cls"
    assert head_weight_name(deep, find_head(deep, "out.cls")[1]) == "out.cls.weight"
    with pytest.raises(TypeError, match="weight is not among model.named_parameters"):
        head_weight_name(deep, nn.Linear(5, 3))
    with pytest.raises(TypeError, match="has no final nn.Linear at classifier, fc, head"):
        find_head(Deep())
    with pytest.raises(TypeError, match="has no attribute 'out.nope'"):
        find_head(Deep(), "out.nope")


def test_features_are_the_heads_input_from_the_models_own_forward():
    model = Wrapped().eval()
    x = torch.randn(7, 6)
    h, logits = features_logits(model, x, find_head(model)[1])
    assert torch.equal(h, model.body(x)) and torch.equal(logits, model(x))
    assert torch.allclose(logits, model.head[1](h))


def test_the_output_must_be_the_heads_logits():
    toy = ToyNet().eval()
    check_head_output(toy, torch.randn(3, 6), find_head(toy)[1], "classifier")

    class Scaled(ToyNet):
        def forward(self, x):
            return 2 * super().forward(x)

    model = Scaled().eval()
    with pytest.raises(TypeError, match="not the output of its final nn.Linear 'classifier'"):
        check_head_output(model, torch.randn(3, 6), find_head(model)[1], "classifier")
    other = nn.Linear(5, 3)
    with pytest.raises(TypeError, match="does not call 'x'"):
        check_head_output(ToyNet().eval(), torch.randn(3, 6), other, "x")
