"""Every strategy on a pool of precomputed features (a FeatureData on a .npy file), with the
built-in heads: BAIT on ``linear`` (whose last-layer Fisher is the whole model's) and FisherMask
on ``mlp`` against the float64 brute-force greedy, including hard problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fishermask.data import FeatureData
from fishermask.kernels.fisher import fisher_diagonal, top_k_mask
from fishermask.models import build_model
from fishermask.strategies import STRATEGIES, select
from tests.strategies.test_fisher_greedy_exact import N, _check, reference_embeddings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pool(folder, seed, n=40, d=5, spread=0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.exp(rng.uniform(-spread, spread, (n, 1)))
    np.save(folder / "x.npy", x.astype(np.float32))
    return FeatureData(folder / "x.npy", np.zeros(n, dtype=np.int64), ["a", "b", "c"])


def _head(name, seed, d=5, conf=1.0, **kw):
    torch.manual_seed(seed)
    model = build_model(name, 3, d, kw or None).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(conf)
        model.classifier.bias.mul_(conf)
    return model


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_on_a_features_pool(tmp_path, name):
    pool = _pool(tmp_path, 0, n=60, d=8)
    model = (_head("mlp", 0, d=8, hidden=(6,)) if name.startswith("fishermask")
             else _head("linear", 0, d=8))
    params = {"sparsity": 0.5} if name.startswith("fishermask") else {}
    sel = select(name, model, pool, [0, 1, 2], n=5, device="cpu", **params)
    assert len(set(sel.indices.tolist())) == 5 and not {0, 1, 2} & set(sel.indices.tolist())


@pytest.mark.parametrize("seed,conf,spread,lam,oversample,labeled", [
    (0, 1.0, 0.0, 1.0, 1, []),
    (1, 4.0, 2.0, 1e-3, 2, list(range(0, 40, 8))),
    (2, 20.0, 4.0, 1e-4, 2, []),        # hard: confident, norms over e^±4, tiny λ, removals
])
def test_bait_on_a_linear_head_matches_brute_force(tmp_path, seed, conf, spread, lam,
                                                   oversample, labeled):
    pool = _pool(tmp_path, seed, spread=spread)
    model = _head("linear", seed, conf=conf)
    labeled = np.asarray(labeled, dtype=np.int64)
    sel = select("bait", model, pool, labeled, n=N, lam=lam, oversample=oversample, device="cpu")
    mask = {"classifier.weight": torch.arange(model.classifier.weight.numel())}
    v = reference_embeddings(model, pool.inputs(), mask)  # autograd, sample by sample
    _check(sel, v, labeled, lam, N, oversample, "bait", False)


@pytest.mark.parametrize("seed,conf,spread,lam", [(3, 2.0, 1.0, 1e-2), (4, 10.0, 4.0, 1e-4)])
def test_fishermask_on_an_mlp_matches_brute_force(tmp_path, seed, conf, spread, lam):
    pool = _pool(tmp_path, seed, spread=spread)
    model = _head("mlp", seed, conf=conf, hidden=(4,))
    x = pool.inputs()
    sel = select("fishermask", model, pool, [], n=N, lam=lam, oversample=2, sparsity=0.9,
                 device="cpu")
    k = int(0.9 * sum(p.numel() for p in model.parameters()))
    mask = top_k_mask(fisher_diagonal(model, x), k, force=["classifier.weight"])
    assert {p["name"]: p["selected"] for p in sel.artifacts["mask_profile"]} == \
           {n: len(i) for n, i in mask.items()}  # across the MLP's layers
    v = reference_embeddings(model, x, mask)
    _check(sel, v, np.zeros(0, dtype=np.int64), lam, N, 2, "bait", False)
