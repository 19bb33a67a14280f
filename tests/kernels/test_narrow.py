"""The narrow product's compiled kernel (kernels/_narrow.py) against float64 brute force: both
dtypes, rows fewer than a tile, k below, at and above a multiple of the vector width, strided rows,
one to 64 columns; each row's bits independent of where it sits; the symmetric products of the
driver through it; and the compiled code kept on disk for the next process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fishermask.kernels import _llvm, _narrow
from fishermask.kernels._symmetric import sym_mm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _brute(r, x):
    """R X in float64, and the sum of |products| per entry (the scale of its rounding)."""
    return r.double() @ x.double(), r.double().abs() @ x.double().abs()


@pytest.mark.parametrize("dtype,eps", [(torch.float32, 2.0 ** -24), (torch.float64, 2.0 ** -53)])
@pytest.mark.parametrize("n,k,m", [(1, 1, 1), (3, 7, 2), (5, 8, 6), (13, 16, 20), (9, 33, 64),
                                   (100, 400, 20), (37, 1402, 10)])
def test_product_against_float64(dtype, eps, n, k, m):
    g = torch.Generator().manual_seed(n * 1000 + k)
    # rows whose norms spread over e^±4: a relative bound must hold row by row
    r = (torch.randn(n, k, generator=g, dtype=torch.float64)
         * torch.exp(torch.linspace(-4, 4, n, dtype=torch.float64))[:, None]).to(dtype)
    x = torch.randn(k, m, generator=g, dtype=torch.float64).to(dtype)
    assert _narrow.applies(r, x)
    out = _narrow.product(r, x)
    assert out.dtype == dtype and out.shape == (n, m)
    want, scale = _brute(r, x)
    # a sum of k products in any order: at most k·eps of the sum of their magnitudes
    assert bool(((out.double() - want).abs() <= (k + 2) * eps * scale).all())
    # a row's numbers do not depend on its position (tile or remainder, first row or not)
    for start in range(1, min(n, 6)):
        assert torch.equal(_narrow.product(r[start:], x), out[start:])


def test_strided_rows_and_a_strided_x():
    g = torch.Generator().manual_seed(5)
    big = torch.randn(23, 500, generator=g)
    r = big[:, 3:403]                                   # row stride 500, unit column stride
    x = torch.randn(20, 400, generator=g).T             # a transposed view
    assert _narrow.applies(r, x)
    want, scale = _brute(r, x)
    assert bool(((_narrow.product(r, x).double() - want).abs() <= 402 * 2.0 ** -24 * scale).all())
    assert not _narrow.applies(big.T, x[:, :5])          # columns not contiguous: torch's product


def test_where_it_does_not_apply(monkeypatch):
    r, x = torch.randn(8, 16), torch.randn(16, 4)
    assert not _narrow.applies(r, torch.randn(16, _narrow.MAX_COLUMNS + 1))
    assert not _narrow.applies(r.double(), x)           # mixed dtypes
    assert not _narrow.applies(r.half(), x.half())
    torch.set_num_threads(2)
    assert not _narrow.applies(r, x)                    # threaded BLAS there
    torch.set_num_threads(1)
    monkeypatch.setattr(_llvm, "available", lambda: False)
    assert not _narrow.applies(r, x)


def test_the_driver_products_through_it(monkeypatch):
    g = torch.Generator().manual_seed(6)
    a = torch.randn(300, 300, generator=g, dtype=torch.float64)
    a = a + a.T
    y = torch.randn(300, 10, generator=g, dtype=torch.float64)
    kernel = sym_mm(a, y)
    assert torch.equal(kernel, _narrow.product(a, y))
    monkeypatch.setattr(_llvm, "available", lambda: False)
    torch.testing.assert_close(sym_mm(a, y), kernel, rtol=1e-13, atol=1e-13)


def test_compiled_code_is_kept_on_disk_and_loaded_by_the_next_process(tmp_path):
    code = ("import torch; torch.set_num_threads(1); from fishermask.kernels import _narrow; "
            "g = torch.Generator().manual_seed(0); "
            "r, x = torch.randn(9, 37, generator=g), torch.randn(37, 7, generator=g); "
            "print(_narrow.product(r, x).double().sum().item().hex())")
    env = dict(os.environ, FISHERMASK_KERNEL_CACHE=str(tmp_path / "kernels"))
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr + runs[1].stderr
    kept = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert len(kept) == 2 and all(name.startswith("narrow-") for name in kept)  # tile 4, tile 1
    assert runs[0].stdout == runs[1].stdout        # the loaded code computes the same bits
