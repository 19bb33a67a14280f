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
