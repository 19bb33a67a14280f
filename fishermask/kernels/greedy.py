"""The Fisher greedy of BAIT and FisherMask, as a public kernel: choose S ⊂ U, |S| = n, to
minimise tr(M_S⁻¹ F),

    M_S = λI + w_L Σ_{x∈L} V_xᵀV_x + w_S Σ_{x∈S} V_xᵀV_x,   w_L = 1/(|L|+n),
    w_S = n/(|L|+n) ("bait" weighting) or 1/(|L|+n) ("uniform").

Forward steps add argmax_x tr(Ṽ_x A F A Ṽ_xᵀ (I + Ṽ_x A Ṽ_xᵀ)⁻¹) (A = M⁻¹, Ṽ = √w_S V);
with ``oversample`` r, r·n forward steps are followed by (r−1)·n removals of
argmax_s tr(Ṽ_s A F A Ṽ_sᵀ (−I + Ṽ_s A Ṽ_sᵀ)⁻¹).  Ties go to the lowest candidate index.

:func:`fisher_greedy` checks its arguments and runs the engine (``kernels/_driver.py``, the
verified-pick driver; ``kernels/_shard.py``, the candidates' C×C state) on one in-process shard.
Its large products run in float32 by default (the C×C state, M and the verification in float64,
so the picks are the exact greedy's; ``compute_dtype="float64"`` runs them in float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fishermask.kernels._checks import check_count, check_n, check_options
from fishermask.kernels._driver import GreedyDriver, run_greedy
from fishermask.kernels._group import LocalShardGroup
from fishermask.kernels._shard import GreedyShard
from fishermask.kernels.embeddings import STORAGE_DTYPES, as_embeddings

COMPUTE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_fisher(fisher, k: int) -> Tensor:
    """F as a float64 tensor of shape [k, k] or [k]; ValueError otherwise (or non-finite)."""
    if not isinstance(fisher, Tensor):
        fisher = torch.as_tensor(fisher)
    if fisher.dim() not in (1, 2) or fisher.shape[0] != k or (fisher.dim() == 2 and fisher.shape[1] != k):
        raise ValueError(f"fisher must have shape [k, k] or [k] with k={k} (the embeddings' k), "
                         f"got {tuple(fisher.shape)}")
    if not bool(torch.isfinite(fisher).all()):
        raise ValueError("fisher contains NaN or infinite values")
    return fisher.to(torch.float64)


def fisher_greedy(candidates, labeled, fisher, n: int, *, lam: float = 1.0, oversample: int = 1,
                  weighting: str = "bait", storage_dtype=None, compute_dtype="float32",
                  return_info: bool = False):
    """Greedily choose n of the candidates to minimise tr(M_S⁻¹ F) (the module docstring).

    Args:
        candidates: raw embeddings V_x, a dense [U, C, k] tensor or a
            :class:`~fishermask.kernels.embeddings.FisherEmbeddings` (factored last layer).
        labeled: the labeled set's embeddings in the same form (L may be 0; ``None``: none).
        fisher: target F, dense [k, k] or its diagonal [k] (columns in the embeddings' order).
        n: batch size, 0 ≤ n ≤ U.
        lam: λ > 0.  oversample: r ≥ 1.  weighting: "bait" or "uniform".
        storage_dtype: dtype of the stored embeddings (default: as given; torch.bfloat16 or
            "bfloat16" halves memory).
        compute_dtype: dtype of the large products of the initialisation and the steps,
            "float32" (default) or "float64" (a name or the torch dtype); the C×C state, M, A and
            the verified picks are float64 either way.
        return_info: also return the diagnostics (steps, rebuilds, overrides, contenders scored
            exactly, float64 resets, objective …).

    Returns:
        LongTensor[n] of indices into ``candidates`` in the order they were added.
    """
    cand = as_embeddings(candidates, "candidates")
    num_u, k = len(cand), cand.k
    n = check_n(n, num_u)
    oversample = check_count("oversample", oversample, 1)
    check_options(lam, weighting)
    if storage_dtype is not None:
        storage_dtype = STORAGE_DTYPES.get(storage_dtype, storage_dtype)
        if storage_dtype not in STORAGE_DTYPES.values():
            raise ValueError(f"storage_dtype must be one of {', '.join(STORAGE_DTYPES)} (a name "
                             f"or the torch dtype), got {storage_dtype!r}")
    compute = COMPUTE_DTYPES.get(compute_dtype, compute_dtype)
    if compute not in COMPUTE_DTYPES.values():
        raise ValueError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)} (a name or "
                         f"the torch dtype), got {compute_dtype!r}")
    cand.check_finite("candidates")
    fisher = check_fisher(fisher, k)
    lab = None if labeled is None else as_embeddings(labeled, "labeled")
    if lab is not None:
        if (lab.num_rows, lab.k) != (cand.num_rows, k):
            raise ValueError(f"labeled has (C, k) = {(lab.num_rows, lab.k)} but the candidates "
                             f"have {(cand.num_rows, k)}")
        lab.check_finite("labeled")
        if len(lab) == 0:
            lab = None
    if n == 0:
        out = torch.zeros(0, dtype=torch.long)
        return (out, {"steps": 0}) if return_info else out
    if storage_dtype is not None:
        cand = cand.to(storage_dtype=storage_dtype)
        lab = None if lab is None else lab.to(storage_dtype=storage_dtype)
    driver = GreedyDriver(lab, fisher.to(cand.device), n, lam=lam, weighting=weighting, k=k,
                          device=cand.device, compute_dtype=compute)
    group = LocalShardGroup([GreedyShard(cand, 0)])
    group.start(driver.fisher, driver.w_s, driver.compute_dtype)
    order, info = run_greedy(group, driver, num_u, n, oversample, objective=return_info)
    out = torch.tensor(order, dtype=torch.long)
    return (out, info) if return_info else out


__all__ = ["COMPUTE_DTYPES", "check_fisher", "fisher_greedy"]
