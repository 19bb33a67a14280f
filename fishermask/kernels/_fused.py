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
vectors, unrolled for the round's C and compiled once per process (``kernels/_llvm.py``; 2.5× the
numba loop for C = 10); otherwise, or without llvmlite, a numba loop over ``LANES`` candidates
side by side.  Both read P's lower triangle only; the vector form writes it to both triangles
(P is symmetric; the loop updates each triangle by the same amount).
"""

from __future__ import annotations

import ctypes
import importlib.util
import math

import numpy as np
import torch
from torch import Tensor

from fishermask.kernels import _llvm
from fishermask.kernels._llvm import splat

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


def _lanes_ir(c: int, gt_double: bool) -> str:
    """IR of ``fused(gt, n, g0, g1, g2, p, q, scores)``: the forward step's C×C work (module
    docstring) for n candidates, 8 at a time in the lanes of <8 x double> vectors, unrolled for
    C = c; ``gt`` (strides g0, g1, g2 in elements) of float64 (``gt_double``) or float32."""
    v8d, v8f, v8i = "<8 x double>", "<8 x float>", "<8 x i64>"
    out = [
        f"declare {v8f} @llvm.masked.gather.v8f32.v8p0(<8 x ptr>, i32, <8 x i1>, {v8f})",
        f"declare {v8d} @llvm.masked.gather.v8f64.v8p0(<8 x ptr>, i32, <8 x i1>, {v8d})",
        f"declare void @llvm.masked.scatter.v8f64.v8p0({v8d}, <8 x ptr>, i32, <8 x i1>)",
        f"declare {v8d} @llvm.sqrt.v8f64({v8d})",
        "define void @fused(ptr noalias %gt, i64 %n, i64 %g0, i64 %g1, i64 %g2, ptr noalias %p, "
        "ptr noalias %q, ptr noalias %sc) {",
        "entry:",
        "  %any = icmp sgt i64 %n, 0",
        "  br i1 %any, label %group, label %done",
        "group:",
        "  %x0 = phi i64 [0, %entry], [%x0n, %group]",
    ]
    add = out.append
    out += splat("x0s", "i64", "%x0", 8) + splat("ns", "i64", "%n", 8) + splat("g0s", "i64", "%g0", 8)
    lanes = ", ".join(f"i64 {v}" for v in range(8))
    add(f"  %idx = add {v8i} %x0s, <{lanes}>")
    add(f"  %mask = icmp slt {v8i} %idx, %ns")
    add(f"  %gb = mul {v8i} %idx, %g0s")
    add(f"  %pb = mul {v8i} %idx, <{', '.join([f'i64 {c * c}'] * 8)}>")
    zero, one = "zeroinitializer", "<" + ", ".join(["double 1.0"] * 8) + ">"
    two = "<" + ", ".join(["double 2.0"] * 8) + ">"
    nan = "<" + ", ".join(["double 0x7FF8000000000000"] * 8) + ">"

    def const(k):
        return "<" + ", ".join([f"i64 {k}"] * 8) + ">"

    def gather(name, base, offset, target):
        ty = v8f if target == "gt" and not gt_double else v8d
        ptr_type, align = ("float", 4) if ty == v8f else ("double", 8)
        if isinstance(offset, tuple):  # (i, m) of gt: i·g1 + m·g2, a scalar computed at run time
            add(f"  %{name}.r = mul i64 %g1, {offset[0]}")
            add(f"  %{name}.c = mul i64 %g2, {offset[1]}")
            add(f"  %{name}.s = add i64 %{name}.r, %{name}.c")
            out.extend(splat(f"{name}.v", "i64", f"%{name}.s", 8))
            add(f"  %{name}.o = add {v8i} %{base}, %{name}.v")
        else:
            add(f"  %{name}.o = add {v8i} %{base}, {const(offset)}")
        add(f"  %{name}.p = getelementptr {ptr_type}, ptr %{target}, {v8i} %{name}.o")
        suffix = "v8f32" if ty == v8f else "v8f64"
        add(f"  %{name}{'.f' if ty == v8f else ''} = call {ty} @llvm.masked.gather.{suffix}.v8p0(<8 x ptr> %{name}.p, i32 {align}, <8 x i1> %mask, {ty} zeroinitializer)")
        if ty == v8f:  # float32 products, the C×C work in float64
            add(f"  %{name} = fpext {v8f} %{name}.f to {v8d}")

    for i in range(c):
        for m in range(c):
            gather(f"g{i}_{m}", "gb", (i, m), "gt")
            gather(f"t{i}_{m}", "gb", (i, c + m), "gt")
    for i in range(c):
        for j in range(i + 1):
            gather(f"p{i}_{j}", "pb", i * c + j, "p")
        for j in range(c):
            gather(f"q{i}_{j}", "pb", i * c + j, "q")

    def dot(name, pairs, start=zero, sub=False):
        """%name = start ± Σ a·b over pairs, in order (fmul then fadd/fsub: no contraction)."""
        acc = start
        for k, (a, b) in enumerate(pairs):
            add(f"  %{name}.m{k} = fmul {v8d} %{a}, %{b}")
            add(f"  %{name}.a{k} = {'fsub' if sub else 'fadd'} {v8d} {acc}, %{name}.m{k}")
            acc = f"%{name}.a{k}"
        return acc

    for i in range(c):  # P ← P − G Gᵀ (lower triangle), Q ← Q + 2 G Tᵀ
        for j in range(i + 1):
            acc = dot(f"gg{i}_{j}", [(f"g{i}_{m}", f"g{j}_{m}") for m in range(c)])
            add(f"  %pn{i}_{j} = fsub {v8d} %p{i}_{j}, {acc}")
        for j in range(c):
            acc = dot(f"gt{i}_{j}", [(f"g{i}_{m}", f"t{j}_{m}") for m in range(c)])
            add(f"  %gt{i}_{j}.2 = fmul {v8d} {two}, {acc}")
            add(f"  %qn{i}_{j} = fadd {v8d} %q{i}_{j}, %gt{i}_{j}.2")
    ok = f"<{', '.join(['i1 true'] * 8)}>"
    for j in range(c):  # I + P = L Lᵀ
        add(f"  %dd{j}.0 = fadd {v8d} %pn{j}_{j}, {one}")
        acc = dot(f"dd{j}", [(f"s{j}_{k}", f"s{j}_{k}") for k in range(j)], f"%dd{j}.0", sub=True)
        add(f"  %good{j} = fcmp ogt {v8d} {acc}, {zero}")
        add(f"  %ok{j} = and <8 x i1> {ok}, %good{j}")
        ok = f"%ok{j}"
        add(f"  %ddsel{j} = select <8 x i1> %good{j}, {v8d} {acc}, {v8d} {one}")
        add(f"  %s{j}_{j} = call {v8d} @llvm.sqrt.v8f64({v8d} %ddsel{j})")
        for i in range(j + 1, c):
            acc = dot(f"l{i}_{j}", [(f"s{i}_{k}", f"s{j}_{k}") for k in range(j)], f"%pn{i}_{j}", sub=True)
            add(f"  %s{i}_{j} = fdiv {v8d} {acc}, %s{j}_{j}")
    for j in range(c):  # W = L⁻¹
        add(f"  %w{j}_{j} = fdiv {v8d} {one}, %s{j}_{j}")
        for i in range(j + 1, c):
            acc = dot(f"wi{i}_{j}", [(f"s{i}_{k}", f"w{k}_{j}") for k in range(j, i)], zero, sub=True)
            add(f"  %w{i}_{j} = fdiv {v8d} {acc}, %s{i}_{i}")
    total = zero  # tr(W Q Wᵀ) = Σ_{k, j≤k} (W Q)_kj W_kj
    for k in range(c):
        for j in range(k + 1):
            acc = dot(f"wq{k}_{j}", [(f"w{k}_{m}", f"qn{m}_{j}") for m in range(k + 1)])
            add(f"  %tr{k}_{j}.m = fmul {v8d} {acc}, %w{k}_{j}")
            add(f"  %tr{k}_{j} = fadd {v8d} {total}, %tr{k}_{j}.m")
            total = f"%tr{k}_{j}"
    add(f"  %score = select <8 x i1> {ok}, {v8d} {total}, {v8d} {nan}")

    def scatter(value, base, offset, target):
        name = f"st{target}{offset}"
        add(f"  %{name}.o = add {v8i} %{base}, {const(offset)}")
        add(f"  %{name}.p = getelementptr double, ptr %{target}, {v8i} %{name}.o")
        add(f"  call void @llvm.masked.scatter.v8f64.v8p0({v8d} {value}, <8 x ptr> %{name}.p, i32 8, <8 x i1> %mask)")

    for i in range(c):
        for j in range(c):
            scatter(f"%pn{max(i, j)}_{min(i, j)}", "pb", i * c + j, "p")
            scatter(f"%qn{i}_{j}", "pb", i * c + j, "q")
    scatter("%score", "idx", 0, "sc")
    out += ["  %x0n = add i64 %x0, 8",
            "  %more = icmp slt i64 %x0n, %n",
            "  br i1 %more, label %group, label %done",
            "done:",
            "  ret void",
            "}"]
    return "\n".join(out)


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
    return _llvm.compile_ir(("fused", c, double), lambda: _lanes_ir(c, double), "fused",
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
