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

from fishermask.kernels import _narrow
from fishermask.kernels._threads import blas_threads, step_threads
from fishermask.machine import intel_cpu


_MKL_NARROW: list[bool] = []  # made on first use


def mkl_narrow() -> bool:
    """Whether torch's BLAS takes the driver's narrow float64 products on the CPU: where it is MKL
    on an Intel CPU.  MKL runs [10, k]×[k, k] in float64 1.5× (one thread) to 2× (two) as fast as
    numpy's OpenBLAS on an Intel Xeon, and 2–2.7× slower on a CPU of another vendor, where it does
    not take its fast code paths.  A property of the machine, so the same machine always takes the
    same path (the same bits)."""
    if not _MKL_NARROW:
        _MKL_NARROW.append(torch.backends.mkl.is_available() and intel_cpu())
    return _MKL_NARROW[0]


def sym_mm(mat: Tensor, y: Tensor) -> Tensor:
    """mat @ y for a symmetric k×k ``mat`` and a narrow k×m ``y``.  On one CPU thread, the compiled
    kernel of ``kernels/_narrow.py`` (it reads ``mat`` once, as a stream of rows).  Otherwise,
    where MKL takes the float64 product (:func:`mkl_narrow`) and for other dtypes and devices,
    torch's product: (yᵀ mat)ᵀ on one thread (about 10 % faster with the narrow matrix on the left), mat y
    on several (MKL parallelises it, 1.4× as fast).  Elsewhere a float64 product on the CPU goes
    through numpy's BLAS (30 against 11 GFLOP/s for [10, 1,400]×[1,400, 1,400] on one thread),
    whose threads :func:`~fishermask.kernels._threads.step_threads` keeps at one inside the steps
    (numpy's BLAS threads and torch's OpenMP threads took turns spinning: 3.5× slower)."""
    if _narrow.applies(mat, y) and (out := _narrow.product(mat, y)) is not None:
        return out
    if (mat.dtype == torch.float64 and y.dtype == torch.float64 and mat.device.type == "cpu"
            and not mkl_narrow()):
        return torch.from_numpy(y.detach().numpy().T @ mat.detach().numpy()).T
    if mat.device.type == "cpu" and torch.get_num_threads() > 1:
        return mat @ y
    return (y.T @ mat).T


def ata(x: Tensor, upper: bool = False) -> Tensor:
    """XᵀX of a tall [n, k] X (a block's Σ_x V_xᵀV_x).  On the CPU in float64 through BLAS's
    dsyrk (numpy's OpenBLAS, on torch's thread count): one triangle, half the flops of a general
    product (3.4× as fast as torch's product for [1,280, 4,440] here, 1.8× with the mirroring).
    ``upper``: only the upper triangle is valid (the lower may be zero), for sums mirrored once at
    the end (:func:`mirror_upper`).  Elsewhere torch's product (whole)."""
    if x.dtype == torch.float64 and x.device.type == "cpu" and x.dim() == 2 and x.shape[1] >= 64:
        from scipy.linalg import blas

        xn = x.detach().numpy()
        with blas_threads(torch.get_num_threads()):
            # a C-ordered X is a Fortran-ordered Xᵀ: dsyrk(trans=0) forms Xᵀ(Xᵀ)ᵀ (upper)
            out = torch.from_numpy(blas.dsyrk(1.0, xn.T, trans=0, lower=0))
        return out if upper else mirror_upper(out)
    return x.T @ x


def mirror_upper(t: Tensor) -> Tensor:
    """The symmetric matrix whose upper triangle is ``t``'s (its lower triangle is not read)."""
    out = torch.triu(t)
    out += torch.triu(t, 1).T
    return out


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
        self.w: Tensor | None = None   # [W_1, W_2, …], k × Σ C (a view of _wbuf)
        self.d: Tensor | None = None   # block-diag(D_1, D_2, …) (a view of _dbuf)
        self._wbuf: Tensor | None = None  # room for the pending columns, kept across folds
        self._dbuf: Tensor | None = None  # zero outside the pending blocks
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
        """X ← X + W D Wᵀ (folded once the pending columns reach ``limit``).  The pending W and D
        are written into buffers kept across folds instead of concatenated anew each step."""
        n, c = (0 if self.w is None else self.w.shape[1]), w.shape[1]
        buf = self._wbuf
        if buf is None or buf.shape[1] < n + c or buf.dtype != w.dtype or buf.device != w.device:
            cap = max(self.limit, n) + c
            self._wbuf = w.new_empty(w.shape[0], cap)
            self._dbuf = d.new_zeros(cap, cap)
            if n:
                self._wbuf[:, :n] = self.w
                self._dbuf[:n, :n] = self.d
        self._wbuf[:, n:n + c] = w
        self._dbuf[n:n + c, n:n + c] = d
        self.w, self.d = self._wbuf[:, :n + c], self._dbuf[:n + c, :n + c]
        if n + c >= self.limit:
            self.fold()

    def fold(self) -> None:
        """X₀ ← X₀ + W D Wᵀ, one rank-(Σ C) product."""
        if self.w is None:
            return
        self.base.addmm_(self.w @ self.d, self.w.T)
        self.d.zero_()  # the buffer is zero outside the pending blocks again
        self.w = self.d = self._low = None

    @property
    def dense(self) -> Tensor:
        """X₀ with every pending update folded in."""
        self.fold()
        return self.base


__all__ = ["Updated", "ata", "inverse", "mirror_upper", "mkl_narrow", "sym_mm"]
