"""Small shared builders for tests: tiny configs on real data, and the toy networks that follow the
model protocol (``features(x)`` → the penultimate embedding, ``classifier``: the final nn.Linear)."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import torch
from torch import nn

from fishermask.config import from_dict


def with_batchnorm_statistics(model: nn.Module) -> nn.Module:
    """``model`` with non-trivial BatchNorm2d running statistics (uniform means in ±0.2,
    variances in [0.5, 1.5], from torch's global RNG), so that eval mode is not the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


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


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fishermask-example"


def copy_example(folder: Path) -> Path:
    """The example plug-in package copied into ``folder`` (a module next to a config file, not
    installed); returns ``folder``."""
    shutil.copytree(EXAMPLE / "fishermask_example", folder / "fishermask_example")
    return folder


def install_example(folder: Path) -> Path:
    """The example plug-in package as an installed distribution in ``folder``: the package and a
    ``*.dist-info`` with its entry points (what ``pip install`` writes), found by importlib.metadata
    once ``folder`` is on the path; returns ``folder``."""
    copy_example(folder)
    info = folder / "fishermask_example-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fishermask-example\n"
                                   "Version: 0.1.0\n")
    (info / "top_level.txt").write_text("fishermask_example\n")
    groups = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["entry-points"]
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in groups.items()))
    return folder
