"""select("bait") and select("fishermask") against a float64 brute-force greedy on reference
embeddings taken the slow way: torch.autograd, one sample and one class at a time."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from fishermask.kernels.fisher import fisher_diagonal, top_k_mask
from fishermask.strategies import select
from tests.greedy_reference import brute_force, objective
from tests.helpers import ToyNet

TOL = 1e-6
N = 6  # batch size


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: threads only cost


def Tiny(seed, d_in=5, d=4, c=3, tanh=True, bias=True, conf=1.0):
    """features: a fixed random linear (+ tanh) body; classifier: nn.Linear (scaled by ``conf``:
    a large conf makes a confident model with a peaked softmax)."""
    return ToyNet(d_in, d, c, seed=seed, act="tanh" if tanh else "none", bias=bias, conf=conf)


def reference_embeddings(model, x, mask, prob_scaling=True) -> np.ndarray:
    """V [N, C, k] in float64: row c = √p_c ∇_θ log p_c restricted to ``mask`` ({name: flat
    indices}), by autograd on a float64 copy of the model, one sample and one class at a time."""
    m64 = copy.deepcopy(model).double().eval()
    params = dict(m64.named_parameters())
    names = [name for name, idx in mask.items() if len(idx)]
    rows = []
    for i in range(len(x)):
        logp = torch.log_softmax(m64(x[i:i + 1].double()), dim=1)[0]
        sample = []
        for c in range(len(logp)):
            grads = torch.autograd.grad(logp[c], [params[n] for n in names], retain_graph=True)
            g = torch.cat([gr.flatten()[mask[n]] for gr, n in zip(grads, names)])
            sample.append(g * (logp[c].exp().sqrt() if prob_scaling else 1.0))
        rows.append(torch.stack(sample))
    return torch.stack(rows).detach().numpy()


def _pool(seed, n=40, d_in=5, spread=0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in)) * np.exp(rng.uniform(-spread, spread, (n, 1)))
    return torch.tensor(x, dtype=torch.float32)


def _check(sel, v, labeled, lam, n, oversample, weighting, diag):
    """The strategy's batch against the brute force on the reference embeddings."""
    num = len(v)
    unl = np.setdiff1d(np.arange(num), labeled)
    fisher = np.einsum("xck,xcj->kj", v, v) / num  # over the whole pool
    if diag:
        fisher = np.diag(fisher).copy()
    picks = np.searchsorted(unl, sel.indices)
    assert np.array_equal(unl[picks], sel.indices) and len(set(picks.tolist())) == n
    _, best, _ = brute_force(v[unl], v[labeled], fisher, n, lam, oversample, weighting)
    got = objective(v[unl], v[labeled], fisher, picks.tolist(), lam, n, weighting)
    assert (got - best) / best <= TOL, (got, best, sel.diagnostics)
    assert sel.diagnostics["objective"] == pytest.approx(got, rel=1e-5)
    return got, best


BAIT_CASES = [  # (model kwargs, input spread, labeled, lam, oversample, weighting, F)
    (dict(seed=0, tanh=False, bias=False, conf=6.0), 2.0, range(0, 40, 10), 1e-3, 2, "bait", False),
    (dict(seed=1, tanh=False, bias=False, conf=6.0), 2.0, [], 1e-4, 2, "bait", True),
    (dict(seed=2, tanh=True, bias=True, conf=1.0), 0.0, [], 1.0, 1, "bait", True),
    (dict(seed=3, tanh=True, bias=True, conf=3.0), 1.0, range(0, 40, 5), 1e-2, 1, "uniform", False),
    (dict(seed=4, tanh=False, bias=True, conf=4.0), 2.0, range(0, 40, 7), 1e-1, 2, "uniform", True),
    # hard: λ = 1e-4, feature norms over e^±4 (identity-like body): without the winner check the
    # engine's batch is 44× (resp. 3,300×) worse than the brute force's here
    (dict(seed=0, d=5, tanh=False, conf=3.0), 4.0, [], 1e-4, 2, "bait", False),
    (dict(seed=2, d=5, tanh=False, conf=20.0), 4.0, [], 1e-4, 2, "bait", False),
]


@pytest.mark.parametrize("model_kw,spread,labeled,lam,oversample,weighting,diag", BAIT_CASES)
def test_bait_matches_bruteforce(model_kw, spread, labeled, lam, oversample, weighting, diag):
    model = Tiny(**model_kw).eval()
    x = _pool(model_kw["seed"], d_in=model_kw.get("d_in", 5), spread=spread)
    labeled = np.asarray(list(labeled), dtype=np.int64)
    sel = select("bait", model, x, labeled, n=N, lam=lam, oversample=oversample,
                 weighting=weighting, fisher_target="diag" if diag else "dense", device="cpu")
    w = model.classifier.weight
    v = reference_embeddings(model, x, {"classifier.weight": torch.arange(w.numel())})
    _check(sel, v, labeled, lam, N, oversample, weighting, diag)


def _mask(model, x, sparsity, include_last_layer=True):
    """FisherMask's mask, recomputed with the public kernels (Fisher diagonal over the pool)."""
    diag = fisher_diagonal(model, x)
    k = math.floor(sparsity * sum(p.numel() for p in model.parameters()))
    return top_k_mask(diag, k, force=["classifier.weight"] if include_last_layer else [])


FM_CASES = [  # (strategy, params, model kwargs, input spread, labeled, lam, oversample,
    #            weighting, F)
    ("fishermask", dict(sparsity=1.0), dict(seed=10, conf=6.0), 1.0, range(0, 40, 10), 1e-3, 2,
     "bait", False),
    ("fishermask", dict(sparsity=0.7), dict(seed=11, conf=2.0), 1.0, [], 1e-1, 1, "bait", True),
    ("fishermask", dict(sparsity=0.6, include_last_layer=False), dict(seed=12, conf=3.0), 1.0,
     range(0, 40, 8), 1e-2, 2, "uniform", False),
    ("fishermask_authors", dict(sparsity=0.7), dict(seed=13, conf=4.0, bias=False), 1.0,
     range(0, 40, 6), 1e-4, 2, "bait", False),
    ("fishermask", dict(sparsity=0.8, prob_scaling=False), dict(seed=14, conf=1.0), 1.0, [3],
     1.0, 1, "uniform", True),
    # hard (norms over e^±4, λ = 1e-4): 0.24 (resp. 2,000×) worse without the winner check
    ("fishermask", dict(sparsity=1.0), dict(seed=3, d_in=4, d=4, tanh=False, conf=3.0), 4.0,
     range(0, 40, 10), 1e-4, 2, "bait", False),
    ("fishermask", dict(sparsity=1.0), dict(seed=17, d_in=4, d=4, tanh=False, conf=20.0), 4.0,
     range(0, 40, 10), 1e-4, 2, "bait", False),
]


@pytest.mark.parametrize("name,params,model_kw,spread,labeled,lam,oversample,weighting,diag",
                         FM_CASES)
def test_fishermask_matches_bruteforce(name, params, model_kw, spread, labeled, lam, oversample,
                                       weighting, diag):
    model = Tiny(**model_kw).eval()
    x = _pool(model_kw["seed"], d_in=model_kw.get("d_in", 5), spread=spread)
    labeled = np.asarray(list(labeled), dtype=np.int64)
    sel = select(name, model, x, labeled, n=N, lam=lam, oversample=oversample,
                 weighting=weighting, fisher_target="diag" if diag else "dense", device="cpu",
                 **params)
    mask = _mask(model, x, params["sparsity"], params.get("include_last_layer", True))
    profile = {p["name"]: p["selected"] for p in sel.artifacts["mask_profile"]}
    assert profile == {n: len(i) for n, i in mask.items()}  # the same mask, layer by layer
    scaling = params.get("prob_scaling", name != "fishermask_authors")
    v = reference_embeddings(model, x, mask, prob_scaling=scaling)
    assert v.shape[2] == sum(profile.values())
    _check(sel, v, labeled, lam, N, oversample, weighting, diag)
