"""k-center greedy and BADGE's k-means++ seeding against brute force (explicit distances,
materialised gradient embeddings), and their argument checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fishermask.kernels import diversity
from fishermask.kernels._group import LocalResident


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


@pytest.mark.parametrize("n_centers", [0, 9])
def test_kcenter_in_small_blocks_equals_brute_force_and_holds_no_pool_by_batch_matrix(
        n_centers, monkeypatch):
    """Blocks of 5 candidates × 3 centers: every distance matrix the kernel forms has at most 15
    entries."""
    g = torch.Generator().manual_seed(10 + n_centers)
    cand, centers = torch.randn(50, 4, generator=g), torch.randn(n_centers, 4, generator=g)
    sizes = []
    sq = diversity._sq_dists
    monkeypatch.setattr(diversity, "_sq_dists",
                        lambda x, y, *a: sizes.append(len(x) * len(y)) or sq(x, y, *a))
    got = diversity.kcenter_greedy(cand.float(), centers, 12, chunk=3, rows=5).tolist()
    assert got == brute_kcenter(cand.float(), centers, 12)
    assert sizes and max(sizes) <= 15


SPLITS = [[(0, 50)], [(0, 8), (8, 50)], [(0, 16), (16, 24), (24, 50)], [(0, 48), (48, 50)]]


@pytest.mark.parametrize("n_centers", [0, 6])
def test_kcenter_on_any_shards_picks_what_one_shard_picks(n_centers):
    """Shards on multiples of the block size (4 rows): the same picks, in the same order, with
    near-ties (rows repeated up to rounding) and points duplicated across shards."""
    g = torch.Generator().manual_seed(20 + n_centers)
    cand = torch.randn(50, 3, generator=g)
    cand[30:40] = cand[0:10] + 1e-12 * torch.randn(10, 3, generator=g)  # near-duplicates
    cand[45] = cand[2]  # an exact duplicate in another shard
    centers = torch.randn(n_centers, 3, generator=g)
    picks = []
    for bounds in SPLITS:
        group = LocalResident([diversity.KCenterShard(cand[a:b], a, rows=4) for a, b in bounds])
        picks.append(diversity.kcenter_select(group, centers, 30, chunk=4).tolist())
    assert all(p == picks[0] for p in picks)
    assert picks[0] == brute_kcenter(cand, centers, 30)


@pytest.mark.parametrize("case", ["random", "duplicates", "confident"])
def test_badge_on_any_shards_picks_what_one_shard_picks(case):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(50, 4, generator=g) * (30.0 if case == "confident" else 1.0)
    p, h = torch.softmax(logits, 1), torch.randn(50, 5, generator=g)
    if case == "duplicates":  # D² = 0 for all once a few are chosen: the uniform fallback
        p, h = torch.full((50, 4), 0.25), torch.ones(50, 5)
    picks = []
    for bounds in SPLITS:
        group = LocalResident([diversity.BadgeShard(p[a:b], h[a:b], a, rows=4)
                               for a, b in bounds])
        picks.append(diversity.badge_select(group, 25, np.random.default_rng(3)).tolist())
    assert all(q == picks[0] for q in picks)
    assert len(set(picks[0])) == 25


@pytest.mark.parametrize("n_centers", [0, 5])
def test_kcenter_with_norms_spread_over_six_decades_equals_exact_distances(n_centers):
    """Rows scaled by 10^[-3, 3]: the factorised ‖x‖² + ‖y‖² − 2x·y (float64, blocks of 4 over
    3 shards) picks what exact differences pick."""
    g = torch.Generator().manual_seed(30 + n_centers)
    scale = 10.0 ** (6 * torch.rand(60, 1, generator=g) - 3)
    cand = (torch.randn(60, 5, generator=g) * scale).double()
    centers = torch.randn(n_centers, 5, generator=g).double()
    group = LocalResident([diversity.KCenterShard(cand[a:b], a, rows=4)
                           for a, b in [(0, 20), (20, 44), (44, 60)]])
    got = diversity.kcenter_select(group, centers, 25, chunk=2).tolist()
    picks = []
    for _ in range(25):  # exact: explicit differences, no expansion
        pts = torch.cat([centers, cand[picks]])
        d = (((cand[:, None] - pts[None]) ** 2).sum(-1).min(1).values if len(pts)
             else ((cand - cand.mean(0)) ** 2).sum(1))
        d[picks] = -1
        picks.append(int(torch.argmax(d)))
    assert got == picks


def test_a_shards_report_carries_its_row_not_the_shards_storage():
    """What a shard sends the driver (and the driver every shard) at each pick is a few numbers:
    a pickled view would carry the whole shard."""
    g = torch.Generator().manual_seed(0)
    x, p = torch.randn(20_000, 8, generator=g), torch.softmax(torch.randn(20_000, 4, generator=g), 1)
    k, b = diversity.KCenterShard(x, 0), diversity.BadgeShard(p, x, 0)
    k.add_centers(x[:3].double())
    reports = [k.best(), k.pick(5, k.best()[2]), b.largest(), b.draw(0, 0.0, 0.5, True)]
    b.pick(7, b.largest()[2])
    assert max(len(pickle.dumps(r)) for r in reports) < 2_000


def test_shards_must_start_on_a_block_boundary():
    with pytest.raises(ValueError, match="offset \\(6\\) must be a non-negative multiple of rows \\(4\\)"):
        diversity.KCenterShard(torch.randn(5, 2), 6, rows=4)


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
        # the first point whose running sum of D² exceeds u · Σ D², u uniform on [0, 1)
        i = int(np.searchsorted(np.cumsum(w.numpy()), rng.random() * w.sum().item(), side="right"))
        want.append(i)
        D2 = torch.minimum(D2, ((G - G[i]) ** 2).sum(1))
    assert picks == want


def test_badge_duplicates_fall_back_to_uniform():
    p = torch.full((6, 3), 1 / 3)
    h = torch.ones(6, 2)
    picks = diversity.badge_seeding(p, h, 6, np.random.default_rng(0)).tolist()
    assert sorted(picks) == list(range(6))


@pytest.mark.parametrize("n,exc,text", [(-1, ValueError, "n must be a non-negative integer, got -1"),
                                        (2.0, TypeError, "n must be a non-negative integer, got 2.0"),
                                        (11, ValueError, "cannot select n=11 points from 10")])
def test_bad_n_is_named(n, exc, text):
    x, p = torch.randn(10, 3), torch.full((10, 2), 0.5)
    with pytest.raises(exc, match=text):
        diversity.kcenter_greedy(x, x[:0], n)
    with pytest.raises(exc, match=text):
        diversity.badge_seeding(p, x, n, np.random.default_rng(0))


def test_zero_picks():
    x = torch.randn(10, 3)
    assert diversity.kcenter_greedy(x, x[:2], 0).tolist() == []
    assert diversity.badge_seeding(torch.full((10, 2), 0.5), x, 0, np.random.default_rng(0)).tolist() == []
