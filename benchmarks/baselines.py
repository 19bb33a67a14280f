"""The greedy benchmarks' two baselines: forward steps of the Fisher greedy that recompute every
candidate's score at every step, in float32 (what the public codes run).

``public``: the algorithm of badge's BAIT ``select`` (github JordanAsh/badge,
``query_strategies/bait_sampling.py``) as it runs it: every step, for all candidates at once,
innerInv = (I + Ṽ A Ṽᵀ)⁻¹ and tr(Ṽ A F A Ṽᵀ innerInv), the matrix chains evaluated left to right
(four [U·C, k]×[k, k] GEMMs: 8·U·C·k² flops), then the argmax over the unchosen candidates and the
Woodbury update A ← A − A vᵀ(I + v A vᵀ)⁻¹ v A.  Its first A is the float32 inverse of
M₀ = λI + w_L Σ_L VᵀV, and Ṽ = √w_S V, as badge does.

``recompute``: the cleverest per-step recompute: A F A once per step (4k³ flops), then V A and
V·AFA for all candidates (4·U·C·k²), tr((I + P)⁻¹ Q) from the two C×C products.
"""

from __future__ import annotations

import math
import time

import torch


def _start(cands, lab, fisher, lam: float, n: int):
    """A₀ = M₀⁻¹, Ṽ and F in float32 (badge's select: ``currentInv``, ``xt_``, ``fisher``)."""
    num_l, k = len(lab), cands.shape[2]
    w_l, w_s = 1.0 / (num_l + n), n / (num_l + n)
    flat = lab.reshape(-1, k).float()
    m0 = lam * torch.eye(k) + w_l * (flat.T @ flat)
    return torch.inverse(m0), cands.float() * math.sqrt(w_s), fisher.float()


def _woodbury(a, x, eye):
    """A − A xᵀ (I + x A xᵀ)⁻¹ x A for one candidate x [1, C, k] (badge's update)."""
    inner = torch.inverse(eye + x @ a @ x.transpose(1, 2))
    return (a - a @ x.transpose(1, 2) @ inner @ x @ a)[0]


def public_scores(vt, a, fisher, eye):
    """badge's scores: tr(Ṽ A F A Ṽᵀ (I + Ṽ A Ṽᵀ)⁻¹), every candidate at once."""
    inner = torch.inverse(eye + vt @ a @ vt.transpose(1, 2))
    big = torch.isinf(inner)  # badge clamps infinities to ±float32 max
    inner[big] = torch.sign(inner[big]) * torch.finfo(torch.float32).max
    return torch.diagonal(vt @ a @ fisher @ a @ vt.transpose(1, 2) @ inner, dim1=-2,
                          dim2=-1).sum(-1)


def recompute_scores(vt, a, fisher, eye):
    """tr((I + P)⁻¹ Q) with P = Ṽ A Ṽᵀ, Q = Ṽ (A F A) Ṽᵀ, A F A formed once."""
    afa = a @ fisher @ a
    vtt = vt.transpose(1, 2)
    p = (vt @ a) @ vtt
    q = (vt @ afa) @ vtt
    return torch.linalg.solve(eye + p, q).diagonal(dim1=-2, dim2=-1).sum(-1)


def run(scores_fn, cands, lab, fisher, *, lam: float, n: int, steps: int) -> dict:
    """``steps`` forward steps with ``scores_fn``; seconds of the set-up, of a step on average and
    of each step (``step_times``)."""
    t0, c0 = time.perf_counter(), time.process_time()
    a, vt, f = _start(cands, lab, fisher, lam, n)
    eye = torch.eye(cands.shape[1])
    chosen = torch.zeros(len(vt), dtype=torch.bool)
    t1, c1 = time.perf_counter(), time.process_time()
    picks, times = [], []
    for _ in range(steps):
        ts = time.perf_counter()
        scores = scores_fn(vt, a, f, eye)
        scores[chosen] = float("-inf")
        best = int(torch.argmax(scores))
        chosen[best] = True
        picks.append(best)
        a = _woodbury(a, vt[best: best + 1], eye)
        times.append(time.perf_counter() - ts)
    t2, c2 = time.perf_counter(), time.process_time()
    return dict(init_s=t1 - t0, init_cpu=c1 - c0, step_s=(t2 - t1) / steps,
                step_cpu=(c2 - c1) / steps, step_times=times, steps=steps, picks=picks)


METHODS = {"public": public_scores, "recompute": recompute_scores}
