"""The driver's symmetric k×k matrices (M and A = M⁻¹) with their recent low-rank updates held
apart.

A greedy step changes M by ±Ṽ_sᵀṼ_s and A by −a S⁻¹ aᵀ: rank-C updates that each read and write
the whole k×k float64 matrix, while the step's other work on it is a few narrow products X y
(y k×C).  :class:`Updated` keeps

    X = X₀ + Σ_j W_j D_j W_jᵀ          (W_j k×C, D_j C×C symmetric)

and takes X y = X₀ y + Σ_j W_j (D_j (W_jᵀ y)); once the pending W_j hold ``limit`` columns they are
folded into X₀ by one rank-(Σ C) product.  The sum is the same float64 sum of outer products, in
another order; :attr:`Updated.dense` folds and returns X₀.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fishermask.kernels._threads import step_threads


def sym_mm(mat: Tensor, y: Tensor) -> Tensor:
    """mat @ y for a symmetric k×k ``mat`` and a narrow k×m ``y``, taken as (yᵀ mat)ᵀ: MKL runs
    the narrow product about twice as fast with the narrow matrix on the left.  A float64 product
    on one CPU thread goes through numpy's BLAS, which ran it 2-2.7× faster than torch's MKL here
    ([10, 1,400]×[1,400, 1,400]: 30 against 11 GFLOP/s); with several threads it stays in torch
    (numpy's BLAS threads and torch's OpenMP threads took turns spinning: 3.5× slower).
    :func:`~fishermask.kernels._threads.step_threads` keeps numpy's BLAS on torch's thread count."""
    if mat.dtype == torch.float64 and y.dtype == torch.float64 and mat.device.type == "cpu":
        return torch.from_numpy(y.detach().numpy().T @ mat.detach().numpy()).T
    return (y.T @ mat).T


def inverse(m: Tensor) -> Tensor:
    """M⁻¹ of a symmetric positive definite M (Cholesky), symmetrised, row-major."""
    with step_threads():  # LAPACK's blocked Cholesky: many short parallel regions
        a = torch.cholesky_inverse(torch.linalg.cholesky(m))
    # row-major: cholesky_inverse returns a column-major matrix, and a column-major A times the
    # transposed Ṽᵀ took a slow matmul path (20× slower at k = 2,560)
    return ((a + a.T) / 2).contiguous()


class Updated:
    """A symmetric matrix X₀ + Σ_j W_j D_j W_jᵀ (module docstring)."""

    def __init__(self, base: Tensor, limit: int = 128):
        self.base, self.limit = base, int(limit)
        self.w: Tensor | None = None   # [W_1, W_2, …], k × Σ C
        self.d: Tensor | None = None   # block-diag(D_1, D_2, …)
        self._low: Tensor | None = None  # X₀ in a lower precision (mm_low), until the next fold

    def mm(self, y: Tensor) -> Tensor:
        """X y = X₀ y + W (D (Wᵀ y))."""
        out = sym_mm(self.base, y)
        return out if self.w is None else out + self.w @ (self.d @ (self.w.T @ y))

    def mm_low(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        """X y with X₀ y taken in ``dtype`` (X₀ cast once per fold), returned in y's dtype: for
        products that feed float32 work anyway (reads half the bytes of the float64 X₀)."""
        if dtype == self.base.dtype:
            return self.mm(y)
        if self._low is None or self._low.dtype != dtype:
            self._low = self.base.to(dtype)
        out = sym_mm(self._low, y.to(dtype)).to(y.dtype)
        return out if self.w is None else out + self.w @ (self.d @ (self.w.T @ y))

    def add(self, w: Tensor, d: Tensor) -> None:
        """X ← X + W D Wᵀ (folded once the pending columns reach ``limit``)."""
        if self.w is None:
            self.w, self.d = w, d
        else:
            self.w, self.d = torch.cat([self.w, w], dim=1), torch.block_diag(self.d, d)
        if self.w.shape[1] >= self.limit:
            self.fold()

    def fold(self) -> None:
        """X₀ ← X₀ + W D Wᵀ, one rank-(Σ C) product."""
        if self.w is None:
            return
        self.base.addmm_(self.w @ self.d, self.w.T)
        self.w = self.d = self._low = None

    @property
    def dense(self) -> Tensor:
        """X₀ with every pending update folded in."""
        self.fold()
        return self.base


__all__ = ["Updated", "inverse", "sym_mm"]
