"""Baseline strategies on toy data, with brute-force checks of k-center and BADGE's distances."""

import numpy as np
import pytest
import torch
from torch import nn

from fishermask.kernels import diversity
from fishermask.strategies import STRATEGIES, select


class ToyNet(nn.Module):
    """A tiny classifier with the fishermask model protocol (features + classifier)."""

    def __init__(self, d_in=6, d=5, C=3):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(d_in, d), nn.Tanh())
        self.classifier = nn.Linear(d, C)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))

    @property
    def classifier_weight_name(self):
        return "classifier.weight"


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


def brute_kcenter(cand, centers, n):
    cand, centers = cand.double(), centers.double()
    picks = []
    for step in range(n):
        pts = torch.cat([centers, cand[picks]]) if picks else centers
        if len(pts) == 0:
            d = ((cand - cand.mean(0)) ** 2).sum(1)
        else:
            d = torch.cdist(cand, pts).pow(2).min(1).values
        d[picks] = -1
        picks.append(int(torch.argmax(d)))
    return picks


@pytest.mark.parametrize("n_centers,chunk", [(0, 4), (1, 4), (7, 3), (30, 1000)])
def test_kcenter_equals_brute_force(n_centers, chunk):
    g = torch.Generator().manual_seed(n_centers)
    cand, centers = torch.randn(50, 4, generator=g), torch.randn(n_centers, 4, generator=g)
    got = diversity.kcenter_greedy(cand, centers, 12, chunk=chunk).tolist()
    assert got == brute_kcenter(cand, centers, 12)


def test_kcenter_strategy_uses_labeled_as_centers(toy):
    model, x = toy
    labeled = np.array([5, 9, 40])
    unl = np.setdiff1d(np.arange(60), labeled)
    with torch.no_grad():
        f = model.features(x)
    want = unl[brute_kcenter(f[unl], f[labeled], 6)]
    assert np.array_equal(select("kcenter", model, x, labeled, n=6).indices, want)


def test_badge_factorised_distances_equal_materialised():
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(40, 4, generator=g), 1)
    h = torch.randn(40, 7, generator=g)
    a = diversity.badge_embedding_factors(p)
    G = torch.stack([torch.kron(a[i], h[i].double()) for i in range(40)])  # brute g_x
    yhat = p.argmax(1)
    assert torch.allclose(a[torch.arange(40), yhat], 1 - p[torch.arange(40), yhat].double())
    # first pick = largest ‖g‖; replay the k-means++ draws with the same RNG on brute distances
    picks = diversity.badge_seeding(p, h, 8, np.random.default_rng(5)).tolist()
    rng = np.random.default_rng(5)
    want = [int(torch.argmax((G * G).sum(1)))]
    D2 = ((G - G[want[0]]) ** 2).sum(1)
    for _ in range(7):
        w = D2.clone()
        w[want] = 0
        i = int(rng.choice(40, p=(w / w.sum()).numpy()))
        want.append(i)
        D2 = torch.minimum(D2, ((G - G[i]) ** 2).sum(1))
    assert picks == want


def test_badge_duplicates_fall_back_to_uniform():
    p = torch.full((6, 3), 1 / 3)
    h = torch.ones(6, 2)
    picks = diversity.badge_seeding(p, h, 6, np.random.default_rng(0)).tolist()
    assert sorted(picks) == list(range(6))


def test_select_rejects_too_many(toy):
    model, x = toy
    with pytest.raises(ValueError, match="cannot pick"):
        select("entropy", model, x, np.arange(55), n=6)
