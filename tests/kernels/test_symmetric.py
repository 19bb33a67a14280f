"""The driver's symmetric matrices with pending low-rank updates: products and folds equal the
dense matrix's."""

from __future__ import annotations

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
