"""The driver's symmetric matrices with pending low-rank updates: products and folds equal the
dense matrix's."""

from __future__ import annotations

import pytest
import torch

from fishermask.kernels._symmetric import Updated, sym_mm


def test_pending_updates_act_like_the_dense_matrix():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(30, 30, generator=g, dtype=torch.float64)
    base = base @ base.T + torch.eye(30, dtype=torch.float64)
    x = Updated(base.clone(), limit=12)
    dense = base.clone()
    y = torch.randn(30, 4, generator=g, dtype=torch.float64)
    for step in range(5):  # 4 columns each: folds after the third
        w = torch.randn(30, 4, generator=g, dtype=torch.float64)
        d = torch.randn(4, 4, generator=g, dtype=torch.float64)
        d = (d + d.T) / 2
        x.add(w, d)
        dense += w @ d @ w.T
        torch.testing.assert_close(x.mm(y), dense @ y, rtol=1e-12, atol=1e-12)
        assert (x.w is None) == (step == 2)  # 12 pending columns: folded
    torch.testing.assert_close(x.dense, dense, rtol=1e-12, atol=1e-12)
    assert x.w is None and x.dense is x.base
    torch.testing.assert_close(sym_mm(dense, y), dense @ y, rtol=1e-12, atol=1e-12)


def test_a_low_precision_product_is_the_product_in_that_precision():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 40, generator=g, dtype=torch.float64)
    base = base @ base.T + torch.eye(40, dtype=torch.float64)
    x = Updated(base.clone(), limit=6)
    y = torch.randn(40, 3, generator=g, dtype=torch.float64)
    w = torch.randn(40, 3, generator=g, dtype=torch.float64)
    x.add(w, torch.eye(3, dtype=torch.float64))
    dense = base + w @ w.T
    low = x.mm_low(y, torch.float32)
    assert low.dtype == torch.float64 and x._low.dtype == torch.float32
    exact = dense @ y
    err = float((low - exact).abs().max() / exact.abs().max())
    assert 1e-12 < err < 1e-5  # float32 rounding of X₀ y, not more and not float64's
    assert torch.equal(x.mm_low(y, torch.float64), x.mm(y))
    x.add(w, torch.eye(3, dtype=torch.float64))  # 3 + 3 columns: folded, the cast is stale
    assert x._low is None
    dense = dense + w @ w.T
    torch.testing.assert_close(x.mm_low(y, torch.float32), dense @ y, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mkl", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_sym_mm_on_either_blas_and_thread_count(monkeypatch, mkl, threads):
    import fishermask.kernels._symmetric as sym

    g = torch.Generator().manual_seed(3)
    a = torch.randn(300, 300, generator=g, dtype=torch.float64)
    a = (a + a.T) / 2
    y = torch.randn(300, 10, generator=g, dtype=torch.float64)
    monkeypatch.setattr(sym, "_MKL_NARROW", [mkl])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = sym.sym_mm(a, y)
        out32 = sym.sym_mm(a.float(), y.float())
    finally:
        torch.set_num_threads(before)
    assert out.dtype == torch.float64 and out.shape == (300, 10)
    torch.testing.assert_close(out, a @ y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out32, (a @ y).float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(300, 130), (7, 200), (50, 10)])
def test_ata_is_the_gram_of_the_rows(shape):
    from fishermask.kernels._symmetric import ata

    g = torch.Generator().manual_seed(shape[0])
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * torch.logspace(-3, 3, shape[1],
                                                                                 dtype=torch.float64)
    out = ata(x)
    want = torch.einsum("nk,nj->kj", x, x)
    assert out.shape == (shape[1], shape[1]) and out.dtype == torch.float64
    assert torch.equal(out, out.T)  # mirrored exactly
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))
    torch.testing.assert_close(ata(x.float()), want.float(), rtol=1e-4,
                               atol=1e-5 * float(want.abs().max()))  # torch's product


def test_upper_grams_summed_then_mirrored_equal_the_whole_gram():
    from fishermask.kernels._symmetric import mirror_upper
    from fishermask.kernels.embeddings import as_embeddings

    g = torch.Generator().manual_seed(5)
    emb = as_embeddings(torch.randn(40, 3, 90, generator=g), "candidates")
    total = sum(emb.rows(slice(s, s + 16)).gram(upper=True) for s in range(0, 40, 16))
    whole = emb.gram()
    assert torch.equal(whole, whole.T)
    torch.testing.assert_close(mirror_upper(total), whole, rtol=1e-12, atol=1e-12)
    full = torch.randn(6, 6, generator=g, dtype=torch.float64)
    sym = mirror_upper(full)  # only the upper triangle is read
    assert torch.equal(sym, sym.T) and torch.equal(torch.triu(sym), torch.triu(full))
