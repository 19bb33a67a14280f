"""Top-c classes (DAL-Toolbox's "fast fishing"): each V_x restricted to its c most probable classes,
reweighted by the renormalised probabilities; with c = C the greedy picks what exact BAIT picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fishermask.kernels.embeddings import (FisherEmbeddings, restrict_top, row_bytes,
                                           top_classes)
from fishermask.selection import fisher_greedy
from tests.greedy_reference import brute_force, dense_from_parts, problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: threads only cost


def _parts(seed, n=9, c=5, d=4, k_dense=3):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64)
    p = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, 1)
    r = torch.randn(n, c, k_dense, generator=g, dtype=torch.float64)
    return h, p, r


@pytest.mark.parametrize("scaling", [True, False])
@pytest.mark.parametrize("c", [1, 2, 5])
def test_restricted_rows_are_the_top_classes_reweighted(scaling, c):
    h, p, r = _parts(3)
    full = FisherEmbeddings(h, p, r * (p.sqrt()[:, :, None] if scaling else 1),
                            prob_scaling=scaling)
    top = restrict_top(full, c)
    assert top.num_rows == c and top.num_classes == 5 and top.k == full.k
    v, vt = full.to_dense(torch.float64).numpy(), top.to_dense(torch.float64).numpy()
    pn = p.numpy()
    for x in range(len(p)):
        order = np.argsort(-pn[x], kind="stable")[:c]
        assert top.top[x].tolist() == order.tolist()
        mass = pn[x, order].sum()
        for j, cls in enumerate(order):  # row j = √p̂_j g_{x,t_j}: the full row c·√(p̂/p)
            scale = 1 / np.sqrt(mass) if scaling else 1.0
            np.testing.assert_allclose(vt[x, j], v[x, cls] * scale, rtol=1e-12, atol=1e-14)
    # the products of the structured form agree with the dense restricted V
    xmat = torch.randn(top.k, 6, dtype=torch.float64)
    np.testing.assert_allclose(top.matmul(xmat).numpy(), vt @ xmat.numpy(), rtol=1e-10)
    z = torch.randn(len(p), 2, top.k, dtype=torch.float64)
    np.testing.assert_allclose(top.rowdot(z).numpy(), z.numpy() @ vt.transpose(0, 2, 1),
                               rtol=1e-10, atol=1e-12)
    gram = np.einsum("xck,xcj->kj", vt, vt)
    np.testing.assert_allclose(top.gram().numpy(), gram, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(top.gram(diagonal=True).numpy(), np.diag(gram), rtol=1e-10,
                               atol=1e-12)
    assert top.rows(slice(2, 5)).top.tolist() == top.top[2:5].tolist()


def test_with_every_class_the_fisher_is_the_full_fisher():
    h, p, r = _parts(4)
    full = FisherEmbeddings(h, p, r * p.sqrt()[:, :, None])
    top = restrict_top(full, 5)
    np.testing.assert_allclose(top.gram().numpy(), full.gram().numpy(), rtol=1e-12, atol=1e-13)
    dense_only = restrict_top(FisherEmbeddings(dense=full.dense), 5, probs=p)
    assert dense_only.features is None and dense_only.num_rows == 5
    np.testing.assert_allclose(dense_only.gram().numpy(), FisherEmbeddings(dense=full.dense)
                               .gram().numpy(), rtol=1e-12, atol=1e-13)


def test_ties_keep_the_lower_class_and_bytes_count_the_rows():
    p = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.1, 0.4, 0.1, 0.4]])
    assert top_classes(p, 3).tolist() == [[0, 1, 2], [1, 3, 0]]
    assert row_bytes(100, 64, 50, True, "float32", top_c=5) == 50 * 5 * 4 + 64 * 4 + 400 + 40
    assert row_bytes(100, 64, 50, True) == 50 * 100 * 4 + 64 * 4 + 400
    with pytest.raises(ValueError, match=r"top \[n, c\] \(c ≤ C\)"):
        FisherEmbeddings(torch.ones(2, 3), p, top=torch.zeros(2, 5, dtype=torch.long))


def _restricted_problem(seed, form, c):
    """A problem's pool (U = 30, L = 3, C = 4) restricted to the top c classes, with F over it."""
    emb, _ = problem(seed, form=form, num_u=30, num_l=3, c=4, d=5, spread=1.0, conf=2.0)
    if form == "dense":  # a dense embedding has no probabilities: take the problem's own
        rng = np.random.default_rng(seed)
        probs = torch.softmax(torch.tensor(rng.standard_normal((33, 4))), 1).float()
        top = restrict_top(emb, c, probs=probs)
    else:
        top = restrict_top(emb, c)
    v = top.to_dense(torch.float64).numpy()
    return top, np.einsum("xck,xcj->kj", v, v) / len(v)


@pytest.mark.parametrize("form", ["factored", "mixed", "dense"])
def test_top_c_equal_to_c_picks_what_exact_bait_picks(form):
    emb, fisher = problem(7, form=form, num_u=30, num_l=3, c=4, d=5, spread=1.0, conf=2.0)
    top, _ = _restricted_problem(7, form, 4)  # every class: the rows permuted, p̂ = p
    assert top.num_rows == 4
    f = torch.tensor(fisher)
    v = dense_from_parts(*(None if t is None else t.double().numpy()
                           for t in (emb.features, emb.probs, emb.dense)))
    for oversample in (1, 2):
        exact = fisher_greedy(emb.rows(slice(0, 30)), emb.rows(slice(30, None)), f, 5, lam=0.1,
                              oversample=oversample)
        got = fisher_greedy(top.rows(slice(0, 30)), top.rows(slice(30, None)), f, 5, lam=0.1,
                            oversample=oversample)
        assert got.tolist() == exact.tolist()
        expected, _, gap = brute_force(v[:30], v[30:], fisher, 5, 0.1, oversample)
        assert exact.tolist() == expected and gap > 1e-6


@pytest.mark.parametrize("c", [1, 2])
def test_top_c_greedy_is_the_greedy_of_the_restricted_problem(c):
    top, fisher = _restricted_problem(11, "mixed", c)
    picks = fisher_greedy(top.rows(slice(0, 30)), top.rows(slice(30, None)),
                          torch.tensor(fisher), 5, lam=0.1, oversample=2)
    v = top.to_dense(torch.float64).numpy()
    assert v.shape[1] == c
    assert picks.tolist() == brute_force(v[:30], v[30:], fisher, 5, 0.1, 2)[0]
