"""The compiled forward step (kernels/_fused.py), both forms, against float64 brute force, its
fallback for a matrix it cannot factor, the vector kernel computing the numba loop's bits, and the
engine picking the same with either form and without."""

from __future__ import annotations

import pytest
import torch

from fishermask.kernels import _fused, _llvm, fisher_greedy
from fishermask.kernels._shard import GreedyShard
from fishermask.kernels.embeddings import as_embeddings
from tests.greedy_reference import problem


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(params=["vector", "numba"])
def form(request, monkeypatch):
    """Each compiled form of the step: the LLVM vector kernel, and numba's loop (llvmlite off)."""
    if request.param == "numba":
        monkeypatch.setattr(_llvm, "available", lambda: False)
    else:
        assert _llvm.available()
    return request.param


def _state(n, c, seed, spread):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, c, 3 * c, generator=g, dtype=torch.float64)
    scale = torch.logspace(-spread, spread, n, dtype=torch.float64)[:, None, None]
    p = a @ a.transpose(1, 2) * scale                            # P ≥ 0, norms over 10^±spread
    b = torch.randn(n, c, c, generator=g, dtype=torch.float64)
    q = b @ b.transpose(1, 2) * scale
    return p, q, g


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("strided", [False, True])
def test_forward_update_against_brute_force(dtype, strided, form):
    n, c = 37, 10
    p, q, g = _state(n, c, 1, spread=4)
    gt = torch.randn(n, c, 2 * c, generator=g, dtype=torch.float64)
    gt *= torch.logspace(-2, 2, n, dtype=torch.float64)[:, None, None]
    gt = gt.to(dtype)
    if strided:  # the layout of the one-thread product, a transposed [2C, n·C] result
        gt = gt.reshape(n * c, 2 * c).T.contiguous().T.reshape(n, c, 2 * c)
        assert not gt.is_contiguous()
    g64, t64 = gt[..., :c].double(), gt[..., c:].double()
    p += g64 @ g64.transpose(1, 2)          # so that P − G Gᵀ ≥ 0, as after a real step
    want_p = p - g64 @ g64.transpose(1, 2)
    want_q = q + 2 * g64 @ t64.transpose(1, 2)
    s = want_p + torch.eye(c, dtype=torch.float64)
    want = torch.stack([torch.trace(torch.linalg.inv(si) @ qi) for si, qi in zip(s, want_q)])
    scores = torch.empty(n, dtype=torch.float64)
    _fused.forward_update(gt, p, q, scores)
    torch.testing.assert_close(p, want_p, rtol=1e-12, atol=1e-12 * float(want_p.abs().max()))
    torch.testing.assert_close(q, want_q, rtol=1e-12, atol=1e-12 * float(want_q.abs().max()))
    torch.testing.assert_close(scores, want, rtol=1e-9, atol=0)


def test_a_matrix_it_cannot_factor_is_scored_by_a_general_solve(form):
    n, c = 6, 4
    emb = as_embeddings(torch.randn(n, c, 5, dtype=torch.float64), "candidates")
    shard = GreedyShard(emb, 0)
    shard.start(torch.eye(5, dtype=torch.float64), 1.0)
    p, q, _ = _state(n, c, 2, spread=1)
    p[3] = -3.0 * torch.eye(c, dtype=torch.float64)             # I + P = −2I: no Cholesky factor
    scores = torch.empty(n, dtype=torch.float64)
    _fused.forward_update(torch.zeros(n, c, 2 * c), p, q, scores)
    assert torch.isnan(scores[3]) and torch.isfinite(scores[[0, 1, 2, 4, 5]]).all()
    shard.p.copy_(p)
    shard.q.copy_(q)
    shard.scores.copy_(scores)
    shard._rescore_failed(slice(0, n))
    want = torch.trace(torch.linalg.inv(p[3] + torch.eye(c, dtype=torch.float64)) @ q[3])
    assert float(shard.scores[3]) == pytest.approx(float(want), rel=1e-12)
    assert torch.equal(shard.scores[[0, 1, 2, 4, 5]], scores[[0, 1, 2, 4, 5]])


@pytest.mark.parametrize("c", [1, 3, 10, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_vector_kernel_computes_the_bits_of_the_numba_loop(c, dtype, monkeypatch):
    n = 8 * 5 + 3  # a last group of 3 candidates in 8 lanes
    p, q, g = _state(n, c, 3, spread=3)
    gt = (torch.randn(n, c, 2 * c, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    g64 = gt[..., :c].double()
    p += g64 @ g64.transpose(1, 2)
    p[7] = -3.0 * torch.eye(c, dtype=torch.float64)               # NaN in both
    p = (p + p.transpose(1, 2)) / 2                               # exactly symmetric
    results = []
    for vector in (True, False):
        if not vector:
            monkeypatch.setattr(_llvm, "available", lambda: False)
        pp, qq, scores = p.clone(), q.clone(), torch.full((n,), 5.0, dtype=torch.float64)
        _fused.forward_update(gt, pp, qq, scores)
        results.append((pp, qq, scores.nan_to_num(-1.0)))
    assert bool(torch.isnan(scores[7])) and bool(torch.isfinite(scores[:7]).all())
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("oversample", [1, 2])
def test_the_engine_picks_the_same_with_and_without_the_compiled_step(monkeypatch, oversample):
    # λ = 1e-3, norms over e^±3, peaked softmax: a hard problem for the maintained scores
    emb, fisher = problem(5, form="mixed", num_u=300, num_l=3, spread=3.0, conf=6.0)
    args = (emb.rows(slice(0, 300)), emb.rows(slice(300, None)), torch.tensor(fisher), 12)
    kw = dict(lam=1e-3, oversample=oversample)
    with_fused, info = fisher_greedy(*args, **kw, return_info=True)
    monkeypatch.setattr(_llvm, "available", lambda: False)   # numba's loop
    with_numba = fisher_greedy(*args, **kw)
    monkeypatch.setattr(_fused, "available", lambda: False)
    without = fisher_greedy(*args, **kw)
    assert with_fused.tolist() == with_numba.tolist() == without.tolist()
    assert info["steps"] == 12 * (2 * oversample - 1)
