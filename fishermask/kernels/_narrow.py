"""R X for a tall float32 R [N, k] and a narrow X [k, m] (m ≤ 64) on one CPU thread: a greedy
step's product of the stored embeddings with its k×2C update.

    (R X)[r, j] = Σ_κ R[r, κ] X[κ, j]

Every BLAS we tried runs this shape at 55–85 GFLOP/s on one core of an AVX-512 Xeon, against
150–180 for a square product: a general routine first copies the tall operand into its blocked
layout, and with only m columns there is too little work per copied byte.  This kernel reads R
once, where it lies: 4 rows at a time, 16 consecutive κ of each row in one vector register, and for
each of m columns (in groups of 5) one vector accumulator per row (fused multiply-adds with the
matching 16 entries of column j of X, kept transposed and zero-padded to a multiple of 16); a
masked load takes the last k mod 16 entries of a row, and each accumulator's 16 lanes are summed
once at the end.  The next 4 rows are prefetched while these are worked on.  1.3× the BLAS
product at k = 400 and 1.4× at k = 1,402 here (``benchmarks/bench_greedy.py``).

It is written as LLVM IR and compiled for this CPU once per process and column count
(``kernels/_llvm.py``).  Each row's
numbers go through the same operations in the same order whatever its position, block or shard,
so any sharding computes the same bits.  Where llvmlite is missing or the compilation fails the
caller keeps torch's product (:func:`available`).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from fishermask.kernels import _llvm

TILE = 4
"""Rows per pass of the main loop (the remainder rows go one at a time, the same operations)."""

GROUP = 5
"""Columns whose accumulators are held together (TILE·GROUP = 20 of the 32 vector registers)."""

MAX_COLUMNS = 64
"""The widest X the kernel takes (wider products are BLAS's strength)."""

_TYPES = {torch.float32: ("float", 16, "f32", 4), torch.float64: ("double", 8, "f64", 8)}
"""dtype → (LLVM scalar type, lanes per 512-bit vector, intrinsic suffix, bytes)."""


def _ir(m: int, tile: int, dtype=torch.float32) -> str:
    """The LLVM IR of ``narrow(x, tiles, k, ldx, wt, k16, out, ldo)``: rows [0, tiles·tile) of x
    (row stride ldx) times the m columns whose transposes are the rows of wt (row stride
    k16 = w·(⌊k/w⌋ + 1) for w lanes per vector, zero beyond k), written to out (row stride ldo)."""
    sc, w, sfx, size = _TYPES[dtype]
    vec, vt = f"<{w} x {sc}>", f"v{w}{sfx}"
    lines = [
        f"declare {vec} @llvm.fma.{vt}({vec}, {vec}, {vec})",
        f"declare {vec} @llvm.masked.load.{vt}.p0(ptr, i32, <{w} x i1>, {vec})",
        f"declare {sc} @llvm.vector.reduce.fadd.{vt}({sc}, {vec})",
        "declare void @llvm.prefetch.p0(ptr, i32, i32, i32)",
        "define void @narrow(ptr noalias %x, i64 %tiles, i64 %k, i64 %ldx, ptr noalias %wt, "
        "i64 %k16, ptr noalias %out, i64 %ldo) {",
        "entry:",
        f"  %nfull = udiv i64 %k, {w}",
        f"  %toff = mul i64 %nfull, {w}",
        f"  %rem = urem i64 %k, {w}",
        *_llvm.splat("rems", "i64", "%rem", w),
        f"  %mask = icmp ult <{w} x i64> <" + ", ".join(f"i64 {i}" for i in range(w)) + ">, %rems",
        f"  %ahead = mul i64 %ldx, {tile}",
        "  %any = icmp ugt i64 %tiles, 0",
        "  br i1 %any, label %tile, label %done",
        "tile:",
        "  %t = phi i64 [0, %entry], [%t.next, %last]",
        f"  %r0 = mul i64 %t, {tile}",
    ]
    add = lines.append
    rows = range(tile)
    for r in rows:
        if r:
            add(f"  %r{r} = add i64 %r0, {r}")
        add(f"  %xo{r} = mul i64 %r{r}, %ldx")
        add(f"  %xp{r} = getelementptr {sc}, ptr %x, i64 %xo{r}")
        add(f"  %oo{r} = mul i64 %r{r}, %ldo")
    before = "tile"
    for gi, c0 in enumerate(range(0, m, GROUP)):
        before = _group_ir(lines.append, gi, c0, min(GROUP, m - c0), before, tile, dtype)
    lines += ["  br label %last",
              "last:",
              "  %t.next = add i64 %t, 1",
              "  %again = icmp ult i64 %t.next, %tiles",
              "  br i1 %again, label %tile, label %done",
              "done:",
              "  ret void",
              "}"]
    return "\n".join(lines)


def _group_ir(add, gi: int, c0: int, width: int, before: str, tile: int, dtype) -> str:
    """The IR of columns [c0, c0 + width) for a tile of rows (entered from block ``before``):
    the loop over full vectors, the masked tail, each accumulator's lanes summed and stored.
    Returns the name of the block it ends in."""
    sc, w, sfx, size = _TYPES[dtype]
    vec, vt = f"<{w} x {sc}>", f"v{w}{sfx}"
    g, cols, rows = f"g{gi}", range(width), range(tile)

    def phis(tag, loop_tag):
        """%{g}.{tag}{r}.{j}: zero on entry from ``before``, the loop's results from the loop."""
        for r in rows:
            for j in cols:
                add(f"  %{g}.{tag}{r}.{j} = phi {vec} [zeroinitializer, %{before}], "
                    f"[%{g}.{loop_tag}{r}.{j}, %{g}.loop]")

    def fmas(tag, off, acc, masked, prefetch):
        """Each row's vector at ``off`` (masked: the tail, nothing past the row read) times each
        column's, added to %{g}.{acc}{r}.{j}; the sums are %{g}.{tag}{r}.{j}."""
        for r in rows:
            add(f"  %{g}.{tag}xa{r} = getelementptr {sc}, ptr %xp{r}, i64 {off}")
            if masked:
                add(f"  %{g}.{tag}x{r} = call {vec} @llvm.masked.load.{vt}.p0(ptr %{g}.{tag}xa{r}, "
                    f"i32 {size}, <{w} x i1> %mask, {vec} zeroinitializer)")
            else:
                add(f"  %{g}.{tag}x{r} = load {vec}, ptr %{g}.{tag}xa{r}, align {size}")
            if prefetch:  # the next tile's row, while this one is worked on
                add(f"  %{g}.pf{r} = getelementptr {sc}, ptr %{g}.{tag}xa{r}, i64 %ahead")
                add(f"  call void @llvm.prefetch.p0(ptr %{g}.pf{r}, i32 0, i32 2, i32 1)")
        for j in cols:
            add(f"  %{g}.{tag}wa{j} = getelementptr {sc}, ptr %{g}.w{j}, i64 {off}")
            add(f"  %{g}.{tag}y{j} = load {vec}, ptr %{g}.{tag}wa{j}, align {size}")
            for r in rows:
                add(f"  %{g}.{tag}{r}.{j} = call {vec} @llvm.fma.{vt}({vec} %{g}.{tag}x{r}, "
                    f"{vec} %{g}.{tag}y{j}, {vec} %{g}.{acc}{r}.{j})")

    for j in cols:  # column c0 + j of X: row c0 + j of wt
        add(f"  %{g}.wo{j} = mul i64 {c0 + j}, %k16")
        add(f"  %{g}.w{j} = getelementptr {sc}, ptr %wt, i64 %{g}.wo{j}")
    add(f"  %{g}.full = icmp ugt i64 %nfull, 0")
    add(f"  br i1 %{g}.full, label %{g}.loop, label %{g}.tail")
    # the full vectors of each row
    add(f"{g}.loop:")
    add(f"  %{g}.v = phi i64 [0, %{before}], [%{g}.vn, %{g}.loop]")
    phis("a", "b")
    add(f"  %{g}.off = mul i64 %{g}.v, {w}")
    fmas("b", f"%{g}.off", "a", masked=False, prefetch=gi == 0)
    add(f"  %{g}.vn = add i64 %{g}.v, 1")
    add(f"  %{g}.more = icmp ult i64 %{g}.vn, %nfull")
    add(f"  br i1 %{g}.more, label %{g}.loop, label %{g}.tail")
    # the last k mod w entries, then each accumulator's lanes summed
    add(f"{g}.tail:")
    phis("c", "b")
    fmas("d", "%toff", "c", masked=True, prefetch=False)
    for j in cols:
        for r in rows:
            add(f"  %{g}.s{r}.{j} = call reassoc {sc} @llvm.vector.reduce.fadd.{vt}("
                f"{sc} -0.0, {vec} %{g}.d{r}.{j})")
            add(f"  %{g}.oi{r}.{j} = add i64 %oo{r}, {c0 + j}")
            add(f"  %{g}.op{r}.{j} = getelementptr {sc}, ptr %out, i64 %{g}.oi{r}.{j}")
            add(f"  store {sc} %{g}.s{r}.{j}, ptr %{g}.op{r}.{j}, align {size}")
    add(f"  br label %{g}.end")
    add(f"{g}.end:")
    return f"{g}.end"


def _compile(m: int, tile: int, dtype):
    """The compiled ``narrow`` for m columns of ``dtype`` and ``tile`` rows per pass."""
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    return _llvm.compile_ir(("narrow", m, tile, dtype), lambda: _ir(m, tile, dtype), "narrow",
                            (ptr, i64, i64, i64, ptr, i64, ptr, i64))


def available() -> bool:
    """Whether the kernel can run here (``kernels/_llvm.py``)."""
    return _llvm.available()


def applies(r: Tensor, x: Tensor) -> bool:
    """Whether :func:`product` takes R X: CPU tensors of one dtype, float32 or float64, R with
    unit column stride, X with at most MAX_COLUMNS columns, the kernel available, and one torch
    thread (on two, MKL's threaded product was as fast as the kernel split over two threads:
    these products are bound by memory bandwidth there)."""
    return (available() and r.device.type == "cpu" and r.dtype in _TYPES and x.dtype == r.dtype
            and r.dim() == 2 and r.shape[1] > 0 and (r.stride(1) == 1 or r.shape[1] == 1)
            and 0 < x.shape[1] <= MAX_COLUMNS and torch.get_num_threads() == 1)


def product(r: Tensor, x: Tensor) -> Tensor | None:
    """R X as a new [N, m] tensor of R's dtype, or None where the kernel could not be compiled
    here (the caller then takes torch's product).  Check :func:`applies` first."""
    n, k = r.shape
    m, dt = x.shape[1], r.dtype
    main, single = _compile(m, TILE, dt), _compile(m, 1, dt)
    if main is None or single is None:
        return None
    lanes = _TYPES[dt][1]
    kw = lanes * (k // lanes + 1)  # room for the tail's vector even when it divides k (zeros)
    wt = torch.zeros(m, kw, dtype=dt)
    wt[:, :k] = x.T
    out = torch.empty(n, m, dtype=dt)
    if n:
        ldx = r.stride(0) if n > 1 else k
        tiles = n // TILE
        main(r.data_ptr(), tiles, k, ldx, wt.data_ptr(), kw, out.data_ptr(), m)
        done = tiles * TILE
        if done < n:
            single(r[done:].data_ptr(), n - done, k, ldx, wt.data_ptr(), kw,
                   out[done:].data_ptr(), m)
    return out


__all__ = ["MAX_COLUMNS", "applies", "available", "product"]
