"""Training (Adam, until a target train accuracy or for fixed epochs) and evaluation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from fishermask.errors import Terminated, TrainingDiverged


class TrainParams(BaseModel):
    """How a round trains the model (``train:``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    target_accuracy: Optional[float] = Field(0.99, gt=0, le=1)
    max_epochs: int = Field(100, ge=1)
    epochs: Optional[int] = Field(None, ge=1, description="fixed epochs; overrides target_accuracy")
    grad_clamp: Optional[float] = Field(None, gt=0, description="element-wise gradient clamp")
    weight_decay: float = Field(0.0, ge=0)
    reinit: Literal["conv_linear", "all", "none"] = "conv_linear"
    eval_batch_size: int = Field(512, ge=1)
    bn_recalibrate: bool = Field(False, description="after training, set every BatchNorm's "
                                 "running statistics to their plain average over the labeled set")


@dataclass
class TrainResult:
    epochs: int
    train_accuracy: float
    seconds: float


def frozen_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """When some parameters are frozen (``model.freeze: features``): the modules without a
    trainable parameter in their subtree, the fixed body.  Empty when everything trains."""
    if all(p.requires_grad for p in model.parameters()):
        return []
    return [m for m in model.modules() if not any(p.requires_grad for p in m.parameters())]


def _train_mode(model: torch.nn.Module) -> None:
    """Train mode, except for the frozen body (its BatchNorm statistics and dropout stay fixed)."""
    model.train()
    for m in frozen_modules(model):
        m.eval()


def train_model(model: torch.nn.Module, data, indices: np.ndarray, cfg: TrainParams, *,
                augment: bool, device: torch.device, generator: torch.Generator) -> TrainResult:
    """Train ``model`` on ``data`` rows ``indices``.

    A fresh Adam(lr, weight_decay) per call; each epoch visits the rows in an order drawn from
    ``generator`` (augmentations too), clamps every gradient element to ±``grad_clamp`` when set,
    and stops after ``epochs`` epochs if given, else once the epoch's running train accuracy
    reaches ``target_accuracy`` (or ``max_epochs``).  With ``bn_recalibrate`` the BatchNorm
    running statistics are then recomputed over the rows (:func:`recalibrate_batchnorm`).  Frozen
    parameters (``requires_grad=False``) do not train, and the modules they make up stay in eval
    mode (:func:`frozen_modules`).
    """
    t0 = time.perf_counter()
    _train_mode(model.to(device))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    max_epochs = cfg.epochs or cfg.max_epochs
    acc, epoch = 0.0, 0
    for epoch in range(1, max_epochs + 1):
        order = indices[torch.randperm(n, generator=generator).numpy()]
        correct = seen = 0
        for start in range(0, n, cfg.batch_size):
            Terminated.check()  # a SIGTERM whose exception the garbage collector swallowed
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2 and n > 1:  # BatchNorm cannot train on a single sample
                continue
            x = data.inputs(idx, augment=augment, generator=generator).to(device)
            y = data.targets[torch.as_tensor(idx)].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged: the loss is {loss.detach().item()} in epoch {epoch} "
                    f"(train.lr={cfg.lr:g}); lower train.lr or set train.grad_clamp (e.g. 1.0)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clamp:
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad.clamp_(-cfg.grad_clamp, cfg.grad_clamp)
            opt.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        acc = correct / max(seen, 1)
        if cfg.epochs is None and cfg.target_accuracy is not None and acc >= cfg.target_accuracy:
            break
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise TrainingDiverged(f"training diverged: the weights are not finite after epoch {epoch} "
                               f"(train.lr={cfg.lr:g}); lower train.lr or set train.grad_clamp")
    if cfg.bn_recalibrate:
        recalibrate_batchnorm(model, data, indices, device=device, batch_size=cfg.eval_batch_size)
    model.eval()
    return TrainResult(epochs=epoch, train_accuracy=acc, seconds=time.perf_counter() - t0)


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, data, indices: np.ndarray, *,
                          device: torch.device = torch.device("cpu"), batch_size: int = 256) -> None:
    """Replace every BatchNorm layer's running statistics by their plain average over the rows
    ``indices`` of ``data`` (train-mode forward passes, no gradient step): μ = mean_x E[h(x)],
    σ² = mean_x Var[h(x)] over the batches, instead of the momentum average of training."""
    frozen = {id(m) for m in frozen_modules(model)}
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
           and id(m) not in frozen]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    _train_mode(model.to(device))
    indices = np.asarray(indices, dtype=np.int64)
    for start in range(0, len(indices), batch_size):
        model(data.inputs(indices[start:start + batch_size]).to(device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, *, device: torch.device, batch_size: int = 512) -> dict:
    """Accuracy, balanced accuracy (mean per-class recall) and per-class accuracy on ``data``."""
    model.to(device).eval()
    preds = []
    for start in range(0, len(data), batch_size):
        idx = np.arange(start, min(start + batch_size, len(data)))
        preds.append(model(data.inputs(idx).to(device)).argmax(1).cpu())
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    y = data.targets
    C = data.num_classes
    per_class = []
    for c in range(C):
        sel = y == c
        per_class.append(float((pred[sel] == c).float().mean()) if sel.any() else float("nan"))
    valid = [a for a in per_class if a == a]
    return {"accuracy": float((pred == y).float().mean()) if len(y) else float("nan"),
            "balanced_accuracy": float(np.mean(valid)) if valid else float("nan"),
            "per_class_accuracy": per_class}
