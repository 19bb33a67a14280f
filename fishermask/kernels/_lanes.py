"""The LLVM IR of a forward step's C×C work with 8 candidates in the lanes of ``<8 x double>``
vectors, unrolled for one C (``kernels/_fused.py`` compiles and calls it; the formulas are in
its docstring).

``fused(gt, n, g0, g1, g2, p, q, scores)``: for candidates x < n, 8 at a time (the last group
masked), the lanes gather [G | T] (``gt``, element strides g0, g1, g2; float32 widened to float64,
or float64), the lower triangle of P and all of Q (contiguous [n, C, C] float64), and compute,
lane by lane, exactly the operations of the numba loop in the same order, as separate multiplies
and adds (no fused multiply-add): P − G Gᵀ, Q + 2 G Tᵀ, the Cholesky factor L of I + P (a lane
whose pivot is not > 0 is marked and goes on with pivot 1), W = L⁻¹ and tr(W Q Wᵀ), NaN for a
marked lane.  P is scattered to both triangles, Q and the scores as computed.
"""

from __future__ import annotations

from fishermask.kernels._llvm import splat

V8D, V8F, V8I = "<8 x double>", "<8 x float>", "<8 x i64>"
ZERO = "zeroinitializer"


def _vector(value: str, kind: str = "double") -> str:
    return "<" + ", ".join([f"{kind} {value}"] * 8) + ">"


ONE, TWO, NAN = _vector("1.0"), _vector("2.0"), _vector("0x7FF8000000000000")


class _Emitter:
    """The IR's lines, and the operations that emit them for a kernel unrolled for C = c."""

    def __init__(self, c: int, gt_double: bool):
        self.c, self.gt_double, self.lines = c, gt_double, []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def gather(self, name: str, base: str, offset, target: str) -> None:
        """%name: the 8 lanes' entry at ``offset`` (an int, or (i, m) of gt: i·g1 + m·g2) past
        their row ``base`` of ``target``, widened to double."""
        single = target == "gt" and not self.gt_double
        ty, ptr_type, align = (V8F, "float", 4) if single else (V8D, "double", 8)
        if isinstance(offset, tuple):
            self.add(f"  %{name}.r = mul i64 %g1, {offset[0]}",
                     f"  %{name}.c = mul i64 %g2, {offset[1]}",
                     f"  %{name}.s = add i64 %{name}.r, %{name}.c",
                     *splat(f"{name}.v", "i64", f"%{name}.s", 8),
                     f"  %{name}.o = add {V8I} %{base}, %{name}.v")
        else:
            self.add(f"  %{name}.o = add {V8I} %{base}, {_vector(offset, 'i64')}")
        raw = f"%{name}.f" if single else f"%{name}"
        self.add(f"  %{name}.p = getelementptr {ptr_type}, ptr %{target}, {V8I} %{name}.o",
                 f"  {raw} = call {ty} @llvm.masked.gather.{'v8f32' if single else 'v8f64'}.v8p0("
                 f"<8 x ptr> %{name}.p, i32 {align}, <8 x i1> %mask, {ty} {ZERO})")
        if single:
            self.add(f"  %{name} = fpext {V8F} {raw} to {V8D}")

    def scatter(self, value: str, base: str, offset: int, target: str) -> None:
        name = f"st{target}{offset}"
        self.add(f"  %{name}.o = add {V8I} %{base}, {_vector(offset, 'i64')}",
                 f"  %{name}.p = getelementptr double, ptr %{target}, {V8I} %{name}.o",
                 f"  call void @llvm.masked.scatter.v8f64.v8p0({V8D} {value}, "
                 f"<8 x ptr> %{name}.p, i32 8, <8 x i1> %mask)")

    def dot(self, name: str, pairs, start: str = ZERO, sub: bool = False) -> str:
        """start ± Σ a·b over ``pairs`` in order (fmul, then fadd or fsub); its IR name."""
        acc = start
        for k, (a, b) in enumerate(pairs):
            self.add(f"  %{name}.m{k} = fmul {V8D} %{a}, %{b}",
                     f"  %{name}.a{k} = {'fsub' if sub else 'fadd'} {V8D} {acc}, %{name}.m{k}")
            acc = f"%{name}.a{k}"
        return acc


def _head(e: _Emitter) -> None:
    """Declarations, the loop over groups of 8 candidates, their lanes and mask, and the gathers
    of G (g), T (t), P's lower triangle (p) and Q (q)."""
    c = e.c
    e.add(f"declare {V8F} @llvm.masked.gather.v8f32.v8p0(<8 x ptr>, i32, <8 x i1>, {V8F})",
          f"declare {V8D} @llvm.masked.gather.v8f64.v8p0(<8 x ptr>, i32, <8 x i1>, {V8D})",
          f"declare void @llvm.masked.scatter.v8f64.v8p0({V8D}, <8 x ptr>, i32, <8 x i1>)",
          f"declare {V8D} @llvm.sqrt.v8f64({V8D})",
          "define void @fused(ptr noalias %gt, i64 %n, i64 %g0, i64 %g1, i64 %g2, "
          "ptr noalias %p, ptr noalias %q, ptr noalias %sc) {",
          "entry:",
          "  %any = icmp sgt i64 %n, 0",
          "  br i1 %any, label %group, label %done",
          "group:",
          "  %x0 = phi i64 [0, %entry], [%x0n, %group]",
          *splat("x0s", "i64", "%x0", 8), *splat("ns", "i64", "%n", 8),
          *splat("g0s", "i64", "%g0", 8),
          f"  %idx = add {V8I} %x0s, <{', '.join(f'i64 {v}' for v in range(8))}>",
          f"  %mask = icmp slt {V8I} %idx, %ns",
          f"  %gb = mul {V8I} %idx, %g0s",
          f"  %pb = mul {V8I} %idx, {_vector(c * c, 'i64')}")
    for i in range(c):
        for m in range(c):
            e.gather(f"g{i}_{m}", "gb", (i, m), "gt")
            e.gather(f"t{i}_{m}", "gb", (i, c + m), "gt")
    for i in range(c):
        for j in range(i + 1):
            e.gather(f"p{i}_{j}", "pb", i * c + j, "p")
        for j in range(c):
            e.gather(f"q{i}_{j}", "pb", i * c + j, "q")


def _update_and_factor(e: _Emitter) -> str:
    """P ← P − G Gᵀ (pn, lower triangle), Q ← Q + 2 G Tᵀ (qn), I + P = L Lᵀ (s) and W = L⁻¹ (w);
    returns the IR name of the lanes' "factored" mask."""
    c = e.c
    for i in range(c):
        for j in range(i + 1):
            acc = e.dot(f"gg{i}_{j}", [(f"g{i}_{m}", f"g{j}_{m}") for m in range(c)])
            e.add(f"  %pn{i}_{j} = fsub {V8D} %p{i}_{j}, {acc}")
        for j in range(c):
            acc = e.dot(f"gt{i}_{j}", [(f"g{i}_{m}", f"t{j}_{m}") for m in range(c)])
            e.add(f"  %gt{i}_{j}.2 = fmul {V8D} {TWO}, {acc}",
                  f"  %qn{i}_{j} = fadd {V8D} %q{i}_{j}, %gt{i}_{j}.2")
    ok = _vector("true", "i1")
    for j in range(c):
        e.add(f"  %dd{j}.0 = fadd {V8D} %pn{j}_{j}, {ONE}")
        acc = e.dot(f"dd{j}", [(f"s{j}_{k}", f"s{j}_{k}") for k in range(j)], f"%dd{j}.0", True)
        e.add(f"  %good{j} = fcmp ogt {V8D} {acc}, {ZERO}",
              f"  %ok{j} = and <8 x i1> {ok}, %good{j}",
              f"  %ddsel{j} = select <8 x i1> %good{j}, {V8D} {acc}, {V8D} {ONE}",
              f"  %s{j}_{j} = call {V8D} @llvm.sqrt.v8f64({V8D} %ddsel{j})")
        ok = f"%ok{j}"
        for i in range(j + 1, c):
            acc = e.dot(f"l{i}_{j}", [(f"s{i}_{k}", f"s{j}_{k}") for k in range(j)],
                        f"%pn{i}_{j}", True)
            e.add(f"  %s{i}_{j} = fdiv {V8D} {acc}, %s{j}_{j}")
    for j in range(c):
        e.add(f"  %w{j}_{j} = fdiv {V8D} {ONE}, %s{j}_{j}")
        for i in range(j + 1, c):
            acc = e.dot(f"wi{i}_{j}", [(f"s{i}_{k}", f"w{k}_{j}") for k in range(j, i)], ZERO, True)
            e.add(f"  %w{i}_{j} = fdiv {V8D} {acc}, %s{i}_{i}")
    return ok


def _score_and_store(e: _Emitter, ok: str) -> None:
    """tr(W Q Wᵀ) = Σ_{k, j≤k} (W Q)_kj W_kj (NaN where not factored); P, Q and the scores
    scattered back; the loop's end."""
    c, total = e.c, ZERO
    for k in range(c):
        for j in range(k + 1):
            acc = e.dot(f"wq{k}_{j}", [(f"w{k}_{m}", f"qn{m}_{j}") for m in range(k + 1)])
            e.add(f"  %tr{k}_{j}.m = fmul {V8D} {acc}, %w{k}_{j}",
                  f"  %tr{k}_{j} = fadd {V8D} {total}, %tr{k}_{j}.m")
            total = f"%tr{k}_{j}"
    e.add(f"  %score = select <8 x i1> {ok}, {V8D} {total}, {V8D} {NAN}")
    for i in range(c):
        for j in range(c):
            e.scatter(f"%pn{max(i, j)}_{min(i, j)}", "pb", i * c + j, "p")
            e.scatter(f"%qn{i}_{j}", "pb", i * c + j, "q")
    e.scatter("%score", "idx", 0, "sc")
    e.add("  %x0n = add i64 %x0, 8",
          "  %more = icmp slt i64 %x0n, %n",
          "  br i1 %more, label %group, label %done",
          "done:",
          "  ret void",
          "}")


def lanes_ir(c: int, gt_double: bool) -> str:
    """The IR of ``fused`` (module docstring) unrolled for C = c; ``gt`` of float64
    (``gt_double``) or float32."""
    e = _Emitter(c, gt_double)
    _head(e)
    _score_and_store(e, _update_and_factor(e))
    return "\n".join(e.lines)


__all__ = ["lanes_ir"]
