"""Small shared builders for tests: tiny configs on real data, and the toy networks that follow the
model protocol (``features(x)`` → the penultimate embedding, ``classifier``: the final nn.Linear)."""

from __future__ import annotations

import torch
from torch import nn

from fishermask.config import from_dict


def tiny_config(tmp_path, **sections):
    raw = {
        "experiment": "tiny",
        "seed": 0,
        "data": {"dataset": "digits", "class_counts": [12, 12, 12, 40]},
        "budget": {"initial": 8, "query": 6, "rounds": 2},
        "model": {"name": "cnn_small"},
        "train": {"max_epochs": 3, "batch_size": 16},
        "strategy": {"name": "random"},
        "tracking": {"checkpoint_dir": str(tmp_path / "ckpt")},
    }
    for key, val in sections.items():
        if isinstance(val, dict):
            raw.setdefault(key, {}).update(val)
        else:
            raw[key] = val
    return from_dict(raw)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "none": nn.Identity}


class ToyNet(nn.Module):
    """``features`` = a seeded linear body (+ BatchNorm1d with ``batchnorm``, + the activation
    ``act``), ``classifier`` = nn.Linear(d, c) scaled by ``conf`` (a large conf: a confident model
    with a peaked softmax)."""

    def __init__(self, d_in: int = 6, d: int = 5, c: int = 3, *, seed: int = 0,
                 act: str = "tanh", bias: bool = True, conf: float = 1.0,
                 batchnorm: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        layers = [nn.Linear(d_in, d)] + ([nn.BatchNorm1d(d)] if batchnorm else [])
        self.body = nn.Sequential(*layers, ACTIVATIONS[act]())
        self.classifier = nn.Linear(d, c, bias=bias)
        with torch.no_grad():
            self.classifier.weight.mul_(conf)
            if bias:
                self.classifier.bias.mul_(conf)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))
