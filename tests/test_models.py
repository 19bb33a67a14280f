"""Networks (models.py): built-ins, a torchvision network by import path (num_classes passed, first
convolution adapted), a local state dict (model.weights) and a frozen body (model.freeze)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fishermask.data import load_experiment_data
from fishermask.errors import ConfigError
from fishermask.kernels.head import find_head
from fishermask.models import (ModelParams, adapt_first_conv, build_model, model_from_params,
                               reinit_parameters)
from fishermask.training import TrainParams, train_model
from tests.helpers import tiny_config


def test_builtins_and_a_torchvision_builder():
    assert build_model("cnn_small", 4, 1)(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    net = build_model("torchvision.models:resnet18", 5, 1)
    assert net.conv1.in_channels == 1 and net.conv1.out_channels == 64 and net.fc.out_features == 5
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 5)


def test_adapt_first_conv_finds_the_first_in_registration_order():
    seq = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, groups=1)),
                              torch.nn.Conv2d(4, 4, 1))
    adapt_first_conv(seq, 1)
    assert seq[0][0].in_channels == 1 and seq[1].in_channels == 4


def test_weights_load_and_mismatches_are_named(tmp_path):
    src = build_model("cnn_small", 4, 1)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    got = model_from_params(ModelParams(name="cnn_small", weights=str(tmp_path / "w.pt")), 4, 1)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(),
                                                 got.state_dict().values()))
    with pytest.raises(ConfigError, match="is not a file"):
        model_from_params(ModelParams(weights=str(tmp_path / "none.pt")), 4, 1)
    with pytest.raises(ConfigError, match="does not fit the model"):
        model_from_params(ModelParams(weights=str(tmp_path / "w.pt")), 7, 1)  # 7 classes


def test_frozen_features_train_only_the_final_layer(tmp_path):
    data = load_experiment_data(tiny_config(tmp_path).data, 0)
    model = model_from_params(ModelParams(name="cnn_small", freeze="features"), 4, 1)
    head = find_head(model)[1]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
           ["classifier.weight", "classifier.bias"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reinit_parameters(model, "all")  # the body keeps its weights and statistics
    train_model(model, data.pool, np.arange(40), TrainParams(epochs=3, batch_size=8),
                augment=False, device=torch.device("cpu"), generator=torch.Generator())
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"classifier.weight", "classifier.bias"}
    assert head.weight.requires_grad
