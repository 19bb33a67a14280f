"""The greedy benchmarks' floors: this machine's GEMM rates (float32, float64) and memory bandwidth,
measured in the calling process with its torch threads, and the flop and byte counts of the engine
and of the two per-step-recompute baselines on a dense [U, C, k] pool.

A floor is a count over a rate: the compute floor of a phase is its float32 flops over the float32
GEMM rate plus its float64 flops over the float64 rate; the bandwidth floor is the bytes it must
move (read + write) over the copy bandwidth.  The GEMM rate is the best of a few [2560, k]×[k, k]
products (the shape of the initialisation's chunks), so a phase made of narrower products or small
batched ones cannot reach it.
"""

from __future__ import annotations

import time

import torch


def gemm_rate(dtype: torch.dtype, k: int, rows: int = 2560, reps: int = 3) -> float:
    """FLOP/s of the best of ``reps`` [rows, k]×[k, k] products in ``dtype``."""
    a = torch.randn(rows, k, dtype=dtype)
    b = torch.randn(k, k, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * rows * k * k / best


def bandwidth(gb: float = 0.5, reps: int = 3) -> float:
    """Bytes/s of a float32 copy of ``gb`` GB, counted as read + write (best of ``reps``)."""
    n = int(gb * 1e9 / 4)
    src, dst = torch.ones(n), torch.empty(n)
    dst.copy_(src)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * n * 4 / best


def machine(k: int) -> dict:
    """The rates the floors use, measured now: float32 and float64 GEMM FLOP/s, bytes/s."""
    return {"r32": gemm_rate(torch.float32, k), "r64": gemm_rate(torch.float64, k),
            "bw": bandwidth()}


def engine_counts(U: int, L: int, C: int, k: int, lowrank: bool = False,
                  eigen: bool = False) -> dict:
    """Flops (float32, float64) and bytes of the engine's initialisation and of one forward step
    on a dense pool, float32 products.

    Init: P = V_x A V_xᵀ (V A: 2UCk², ·Vᵀ: 2UC²k; with ``lowrank``, A = λ⁻¹(I − W Wᵀ), W k×LC:
    2UCk·LC + 2UC²(k + LC)) and Q = (V_x A) F (V_x A)ᵀ (2UCk² + 2UC²k), float32; with ``eigen``
    (A = W Wᵀ, AFA = W diag(d) Wᵀ) instead Z = V W (2UCk²), Z Zᵀ and Z d Zᵀ (4UC²k), float32, and
    the generalized eigensolver (about 7k³, float64); M₀ = λI + w_L Σ_L VᵀV (2LCk²) and its
    inverse (about k³), float64.  Step: the shards' V_x [a | AFa] (4UC²k) and the C×C update's
    products (6UC³), float32; the C×C accumulation, inverse and score (about 5UC³, float64); the
    driver's refined solve, F y, A F y and the rank-C updates of A and M (about 14k²C, float64).
    """
    m = L * C
    if eigen:
        init_f32, init_f64 = 2 * U * C * k * k + 4 * U * C * C * k, 7 * k ** 3
    else:
        p_flops = (2 * U * C * k * m + 2 * U * C * C * (k + m)) if lowrank else (
            2 * U * C * k * k + 2 * U * C * C * k)
        init_f32, init_f64 = p_flops + 2 * U * C * k * k + 2 * U * C * C * k, 0
    init = {"f32": init_f32,
            "f64": init_f64 + 2 * L * C * k * k + k ** 3,
            "bytes": (1 if eigen else 2) * U * C * k * 4 + 2 * U * C * C * 8 + 6 * k * k * 8}
    step = {"f32": 4 * U * C * C * k + 6 * U * C ** 3,
            "f64": 5 * U * C ** 3 + 14 * k * k * C,
            "bytes": U * C * k * 4 + 4 * U * C * C * 8 + 8 * k * k * 8}
    return {"init": init, "step": step}


def structured_step_counts(U: int, C: int, d: int, k_dense: int) -> dict:
    """Flops and bytes of one forward step on factored embeddings (h, p) with a dense block of
    k_dense columns (BAIT: 0), float32 products: h [U, d] times the update's factored rows
    (2·U·d·C·2C), D(p) times that (2·U·C·C·2C), the dense block (2·U·C·k_d·2C) and the C×C
    update's products (6UC³); about 5UC³ of C×C work and 14k²C in the driver (float64),
    k = C·d + k_d."""
    k = C * d + k_dense
    return {"f32": 2 * U * 2 * C * (d * C + C * C + C * k_dense) + 6 * U * C ** 3,
            "f64": 5 * U * C ** 3 + 14 * k * k * C,
            "bytes": U * (4 * d + 4 * C + 4 * C * k_dense) + 4 * U * C * C * 8 + 8 * k * k * 8}


def public_counts(U: int, L: int, C: int, k: int) -> dict:
    """badge's BAIT ``select`` (float32), one forward step: V A for (I + V A Vᵀ)⁻¹ and again for
    V A F A Vᵀ, then ·F and ·A: four [UC, k]×[k, k] GEMMs, 8UCk² flops, plus 4UC²k (the ·Vᵀ
    products), about 3UC³ (inverse, ·innerInv) and 4k²C (the Woodbury update of A).  Init: M₀
    and its inverse."""
    init = {"f32": 2 * L * C * k * k + k ** 3, "f64": 0, "bytes": 4 * k * k * 4}
    step = {"f32": 8 * U * C * k * k + 4 * U * C * C * k + 3 * U * C ** 3 + 4 * k * k * C,
            "f64": 0, "bytes": 9 * U * C * k * 4 + 4 * k * k * 4}
    return {"init": init, "step": step}


def recompute_counts(U: int, L: int, C: int, k: int) -> dict:
    """The cleverest per-step recompute (float32): A F A once per step (4k³), then V A and V·AFA
    (4UCk²), their ·Vᵀ (4UC²k), C×C solves (about 3UC³) and the Woodbury update (4k²C)."""
    init = {"f32": 2 * L * C * k * k + k ** 3, "f64": 0, "bytes": 4 * k * k * 4}
    step = {"f32": 4 * k ** 3 + 4 * U * C * k * k + 4 * U * C * C * k + 3 * U * C ** 3
            + 4 * k * k * C,
            "f64": 0, "bytes": 6 * U * C * k * 4 + 6 * k * k * 4}
    return {"init": init, "step": step}


def floors(counts: dict, rates: dict) -> dict:
    """{phase: (compute floor s, bandwidth floor s)} for the phases of ``counts``."""
    return {phase: (c["f32"] / rates["r32"] + c["f64"] / rates["r64"], c["bytes"] / rates["bw"])
            for phase, c in counts.items()}
