"""Baseline strategies on toy data, with brute-force checks of k-center and BADGE's distances."""

import numpy as np
import pytest
import torch

from fishermask.strategies import STRATEGIES, select
from tests.helpers import ToyNet
from tests.kernels.test_diversity import brute_kcenter


@pytest.fixture
def toy():
    g = torch.Generator().manual_seed(1)
    return ToyNet().eval(), torch.randn(60, 6, generator=g)


def _probs(model, x):
    with torch.no_grad():
        return torch.softmax(model(x), 1).double()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_returns_valid_unlabeled_indices(name, toy):
    model, x = toy
    labeled = np.arange(0, 60, 6)
    params = {"sparsity": 0.5} if name.startswith("fishermask") else {}
    sel = select(name, model, x, labeled, n=7, seed=0, device="cpu", **params)
    assert len(sel.indices) == 7 and len(set(sel.indices.tolist())) == 7
    assert not set(sel.indices.tolist()) & set(labeled.tolist())
    assert sel.diagnostics["seconds"] >= 0
    again = select(name, model, x, labeled, n=7, seed=0, device="cpu", **params)
    assert np.array_equal(sel.indices, again.indices)  # deterministic for a seed


def test_uncertainty_strategies_match_brute_force(toy):
    model, x = toy
    labeled = np.array([0, 1, 2])
    unl = np.arange(3, 60)
    p = _probs(model, x)[unl]
    ent = -(p * p.log()).sum(1)
    top2 = p.topk(2, 1).values
    expect = {
        "entropy": unl[np.argsort(-ent.numpy(), kind="stable")[:5]],
        "margin": unl[np.argsort((top2[:, 0] - top2[:, 1]).numpy(), kind="stable")[:5]],
        "least_confidence": unl[np.argsort(top2[:, 0].numpy(), kind="stable")[:5]],
    }
    for name, want in expect.items():
        got = select(name, model, x, labeled, n=5, device="cpu").indices
        assert np.array_equal(got, want), name


def test_ties_go_to_lowest_index():
    model = ToyNet().eval()
    x = torch.zeros(10, 6)  # every point identical: every score ties
    for name in ("entropy", "margin", "least_confidence"):
        assert select(name, model, x, [0], n=3, device="cpu").indices.tolist() == [1, 2, 3]


def test_random_is_seeded_and_uniform_without_replacement(toy):
    model, x = toy
    a = select("random", model, x, [0], n=20, seed=1).indices
    b = select("random", model, x, [0], n=20, seed=2).indices
    assert not np.array_equal(a, b) and 0 not in a


def test_kcenter_strategy_uses_labeled_as_centers(toy):
    model, x = toy
    labeled = np.array([5, 9, 40])
    unl = np.setdiff1d(np.arange(60), labeled)
    with torch.no_grad():
        f = model.features(x)
    want = unl[brute_kcenter(f[unl], f[labeled], 6)]
    assert np.array_equal(select("kcenter", model, x, labeled, n=6).indices, want)


def test_select_rejects_too_many(toy):
    model, x = toy
    with pytest.raises(ValueError, match="cannot pick"):
        select("entropy", model, x, np.arange(55), n=6)
