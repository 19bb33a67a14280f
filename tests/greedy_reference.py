"""Float64 brute-force greedy with explicit inverses, and small (ill-conditioned) test problems.

The reference knows nothing of the engine: M_S is summed from the dense V_x, every trial is an
np.linalg.solve of the k×k M, and the factored last layer is expanded by hand from (h, p).
"""

from __future__ import annotations

import numpy as np
import torch

from fishermask.kernels.embeddings import FisherEmbeddings


def dense_from_parts(h, p, r=None, prob_scaling=True) -> np.ndarray:
    """V [n, C, k] in float64 from the factored parts (h [n, d], p [n, C]) and a dense block r:
    row c of the factored block is √p_c (e_c − p) ⊗ h (without √p if not prob_scaling)."""
    parts = []
    if h is not None:
        h, p = np.asarray(h, np.float64), np.asarray(p, np.float64)
        n, c = p.shape
        coef = np.eye(c)[None] - p[:, None, :]
        if prob_scaling:
            coef = np.sqrt(p)[:, :, None] * coef
        parts.append(np.einsum("nab,nj->nabj", coef, h).reshape(n, c, -1))
    if r is not None:
        parts.append(np.asarray(r, np.float64))
    return np.concatenate(parts, axis=2)


def reference_dense(emb: FisherEmbeddings) -> np.ndarray:
    """The float64 V of an embedding, from its stored (possibly rounded) numbers."""
    f = lambda t: None if t is None else t.double().numpy()  # noqa: E731
    return dense_from_parts(f(emb.features), f(emb.probs), f(emb.dense), emb.prob_scaling)


def weights(num_labeled, n, weighting):
    w_l = 1.0 / (num_labeled + n)
    return w_l, (n / (num_labeled + n) if weighting == "bait" else w_l)


def objective(cands, lab, fisher, picks, lam, n, weighting="bait") -> float:
    """tr(M_S⁻¹ F) with M_S = λI + w_L Σ_L VᵀV + w_S Σ_S VᵀV (explicit solve)."""
    k = cands.shape[2]
    w_l, w_s = weights(len(lab), n, weighting)
    m = lam * np.eye(k) + w_l * np.einsum("xck,xcj->kj", lab, lab)
    sel = cands[list(picks)]
    m = m + w_s * np.einsum("xck,xcj->kj", sel, sel)
    f = np.diag(fisher) if fisher.ndim == 1 else fisher
    return float(np.trace(np.linalg.solve(m, f)))


def brute_force(cands, lab, fisher, n, lam, oversample=1, weighting="bait"):
    """The greedy on explicit objectives: min(r·n, U) additions then removals down to n, each the
    trial with the smallest tr(M⁻¹F) (ties → lowest index).  Returns (kept picks in order of
    addition, their objective, the smallest relative gap between best and second-best trial)."""
    num_u, _, k = cands.shape
    w_l, w_s = weights(len(lab), n, weighting)
    f = np.diag(fisher) if fisher.ndim == 1 else fisher
    m0 = lam * np.eye(k) + w_l * np.einsum("xck,xcj->kj", lab, lab)
    grams = w_s * np.einsum("xck,xcj->xkj", cands, cands)
    obj = lambda m: float(np.trace(np.linalg.solve(m, f)))  # noqa: E731
    picks, gaps = [], []

    def take(trials):
        trials = sorted(trials)
        if len(trials) > 1:
            gaps.append((trials[1][0] - trials[0][0]) / abs(trials[0][0]))
        return trials[0][1]

    m = m0.copy()
    for _ in range(min(oversample * n, num_u)):
        x = take([(obj(m + grams[x]), x) for x in range(num_u) if x not in picks])
        picks.append(x)
        m = m + grams[x]
    while len(picks) > n:
        s = take([(obj(m - grams[s]), s) for s in picks])
        picks.remove(s)
        m = m0 + grams[picks].sum(axis=0)
    return picks, obj(m), min(gaps, default=1.0)


def problem(seed, *, form="factored", num_u=36, num_l=3, c=3, d=5, k_dense=8, spread=4.0,
            conf=3.0, prob_scaling=True):
    """Random embeddings of U + L points: ``form`` "factored" (h, p), "dense" (the same
    last-layer rows stored densely) or "mixed" (h, p and a dense block D(p)·B_x, like the
    gradients of earlier layers).  Feature norms spread over e^±spread; logits scaled by
    ``conf`` (peaked softmax when large).  Returns (embeddings of all points, F over them)."""
    rng = np.random.default_rng(seed)
    n = num_u + num_l
    h = rng.standard_normal((n, d)) * np.exp(rng.uniform(-spread, spread, (n, 1)))
    logits = rng.standard_normal((n, c)) * conf * rng.uniform(0, 2, (n, 1))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    if form == "dense":
        emb = FisherEmbeddings(dense=t(dense_from_parts(h, p, None, prob_scaling)))
    elif form == "factored":
        emb = FisherEmbeddings(t(h), t(p), prob_scaling=prob_scaling)
    else:
        b = rng.standard_normal((n, c, k_dense)) * np.exp(rng.uniform(-spread, spread, (n, 1, 1)))
        coef = np.eye(c)[None] - p[:, None, :]
        if prob_scaling:
            coef = np.sqrt(p)[:, :, None] * coef
        emb = FisherEmbeddings(t(h), t(p), t(coef @ b), prob_scaling=prob_scaling)
    v = reference_dense(emb)
    return emb, np.einsum("xck,xcj->kj", v, v) / n
