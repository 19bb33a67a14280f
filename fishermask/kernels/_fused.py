"""A forward step's per-candidate C×C work in one compiled loop over the candidates.

For each candidate x of a block, from [G | T] = V_x [X_a | X_a K'/2 − X_b] (the block's product,
in the compute dtype) it forms, in float64,

    P_x ← P_x − G Gᵀ,   Q_x ← Q_x + 2 G Tᵀ,   S = I + P_x = L Lᵀ,   W = L⁻¹,
    score(x) = tr(S⁻¹ Q_x) = tr(W Q_x Wᵀ) = Σ_{k, j≤k} (W Q_x)_kj W_kj

(S⁻¹ = Wᵀ W; W is lower triangular).  The same numbers as the batched torch path up to rounding,
with the products of G and T accumulated in float64 instead of the compute dtype.  It replaces a
batched product, two state updates and a batched LAPACK inverse per block (whose cost is about
1 µs per 10×10 matrix) by about 4·C³ flops per candidate.  A candidate whose S is not
numerically positive definite gets NaN, which the shard re-scores with a general solve.  Only for
CPU tensors and the forward phase (S = −I + P of a removal is indefinite); everything is per
candidate, so a sharded run computes the same bits as one shard.

Two compiled forms, the same operations in the same order (no fused multiply-add), so the same
bits: for C ≤ ``MAX_UNROLLED``, LLVM IR with 8 candidates in the lanes of ``<8 x double>``
vectors, unrolled for the round's C (``kernels/_lanes.py``) and compiled once per process
(``kernels/_llvm.py``; 2.5× the numba loop for C = 10); otherwise, or without llvmlite, a numba
loop over ``LANES`` candidates side by side.  Both read P's lower triangle only; the vector form
writes it to both triangles (P is symmetric; the loop updates each triangle by the same amount).
"""

from __future__ import annotations

import ctypes
import importlib.util
import math

import numpy as np
import torch
from torch import Tensor

from fishermask.kernels import _llvm
from fishermask.kernels._lanes import lanes_ir

_compiled = None
_AVAILABLE = importlib.util.find_spec("numba") is not None


def available() -> bool:
    """Whether a compiled loop can run here: the vector kernel (llvmlite, compiled on the first
    step of a process) or numba's loop (compiled or loaded from numba's on-disk cache)."""
    return _AVAILABLE or _llvm.available()


LANES = 16
"""Candidates a pass of the compiled loop works on together (see :func:`_forward_update`)."""


def _forward_update(gt, p, q, scores, lanes):  # pragma: no cover - runs compiled
    # ``lanes`` candidates at a time, their numbers side by side (the lane index innermost), so
    # that every operation is a loop over the lanes that the compiler turns into vector
    # instructions: 1.2-1.3x the speed of one candidate at a time.  Each lane does exactly the
    # operations, in the same order, that one candidate alone would (a padded lane repeats the
    # last candidate and is not written back), so the numbers are the same bits as a loop over
    # single candidates.  ``lanes`` is an argument, not a constant: with a constant trip count
    # the compiler unrolls the short loops instead of vectorising them.
    n, c = p.shape[0], p.shape[1]
    g = np.empty((c, c, lanes))
    t = np.empty((c, c, lanes))
    pl = np.empty((c, c, lanes))
    ql = np.empty((c, c, lanes))
    s = np.empty((c, c, lanes))
    w = np.empty((c, c, lanes))
    acc = np.empty(lanes)
    dd = np.empty(lanes)
    ok = np.empty(lanes)
    total = np.empty(lanes)
    for x0 in range(0, n, lanes):
        for v in range(lanes):
            x = min(x0 + v, n - 1)
            for i in range(c):
                for m in range(c):
                    g[i, m, v] = gt[x, i, m]
                    t[i, m, v] = gt[x, i, c + m]
                    pl[i, m, v] = p[x, i, m]
                    ql[i, m, v] = q[x, i, m]
        for i in range(c):
            for j in range(i + 1):  # G Gᵀ is symmetric: its lower triangle, mirrored
                acc[:] = 0.0
                for m in range(c):
                    for v in range(lanes):
                        acc[v] += g[i, m, v] * g[j, m, v]
                for v in range(lanes):
                    pl[i, j, v] -= acc[v]
                if j != i:
                    for v in range(lanes):
                        pl[j, i, v] -= acc[v]
            for j in range(c):
                acc[:] = 0.0
                for m in range(c):
                    for v in range(lanes):
                        acc[v] += g[i, m, v] * t[j, m, v]
                for v in range(lanes):
                    ql[i, j, v] += 2.0 * acc[v]
        # S = I + P = L Lᵀ (lower triangle of s); a lane whose pivot is not > 0 is marked and
        # goes on with pivot 1 (its numbers are not used)
        ok[:] = 1.0
        for j in range(c):
            for v in range(lanes):
                dd[v] = pl[j, j, v] + 1.0
            for k in range(j):
                for v in range(lanes):
                    dd[v] -= s[j, k, v] * s[j, k, v]
            for v in range(lanes):
                good = dd[v] > 0.0
                ok[v] = ok[v] if good else 0.0
                dd[v] = math.sqrt(dd[v] if good else 1.0)
                s[j, j, v] = dd[v]
            for i in range(j + 1, c):
                for v in range(lanes):
                    acc[v] = pl[i, j, v]
                for k in range(j):
                    for v in range(lanes):
                        acc[v] -= s[i, k, v] * s[j, k, v]
                for v in range(lanes):
                    s[i, j, v] = acc[v] / dd[v]
        # W = L⁻¹ (lower triangular), column by column
        for j in range(c):
            for v in range(lanes):
                w[j, j, v] = 1.0 / s[j, j, v]
            for i in range(j + 1, c):
                acc[:] = 0.0
                for k in range(j, i):
                    for v in range(lanes):
                        acc[v] -= s[i, k, v] * w[k, j, v]
                for v in range(lanes):
                    w[i, j, v] = acc[v] / s[i, i, v]
        total[:] = 0.0
        for k in range(c):
            for j in range(k + 1):
                acc[:] = 0.0
                for m in range(k + 1):
                    for v in range(lanes):
                        acc[v] += w[k, m, v] * ql[m, j, v]
                for v in range(lanes):
                    total[v] += acc[v] * w[k, j, v]
        for v in range(min(lanes, n - x0)):
            x = x0 + v
            for i in range(c):
                for m in range(c):
                    p[x, i, m] = pl[i, m, v]
                    q[x, i, m] = ql[i, m, v]
            scores[x] = total[v] if ok[v] > 0.0 else np.nan


MAX_UNROLLED = 16
"""The largest C for which the step is compiled as unrolled vector code (its size grows as C³)."""


def _vector_kernel(gt: Tensor, p: Tensor, q: Tensor, scores: Tensor):
    """The compiled vector kernel for these arguments, or None where it does not apply (no
    llvmlite, C above MAX_UNROLLED, state or scores not contiguous)."""
    c = p.shape[1]
    if not (_llvm.available() and c <= MAX_UNROLLED and p.is_contiguous() and q.is_contiguous()
            and scores.is_contiguous() and gt.dtype in (torch.float32, torch.float64)):
        return None
    double = gt.dtype == torch.float64
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    return _llvm.compile_ir(("fused", c, double), lambda: lanes_ir(c, double), "fused",
                            (ptr, i64, i64, i64, i64, ptr, ptr, ptr))


def forward_update(gt: Tensor, p: Tensor, q: Tensor, scores: Tensor) -> None:
    """In place: P, Q of a block's candidates updated from [G | T] (``gt`` [n, C, 2C], any
    strides, float32 or float64) and their forward scores written to ``scores`` ([n] float64;
    NaN where I + P is not numerically positive definite).  ``p``, ``q``: [n, C, C] float64 views
    of the shard's state (CPU); the vector kernel where it applies, else numba's loop."""
    kernel = _vector_kernel(gt, p, q, scores)
    if kernel is not None:
        if len(p):
            kernel(gt.data_ptr(), len(p), *gt.stride(), p.data_ptr(), q.data_ptr(),
                   scores.data_ptr())
        return
    global _compiled
    if _compiled is None:
        import numba  # a few tenths of a second: only where a greedy step runs

        _compiled = numba.njit(cache=True, nogil=True, error_model="numpy")(_forward_update)
    with torch.no_grad():
        _compiled(gt.numpy(), p.numpy(), q.numpy(), scores.numpy(), LANES)


__all__ = ["available", "forward_update"]
