"""The forms in which the driver hands A = M⁻¹ to the shards for the round's first P and Q.

A shard's initialisation streams its embeddings through products with k×k matrices, C·k² flops
per candidate each: P_x = Ṽ_x A Ṽ_xᵀ needs V_x A, and Q_x = Ṽ_x A F A Ṽ_xᵀ another one with a dense
F ((V_x A) F, or V_x (A F A)).  Two forms of A cut that down:

* :class:`Eigen`: the generalized symmetric eigenproblem F w = d M w gives W (k×k) with
  Wᵀ M W = I and Wᵀ F W = diag(d), so that

      A = W Wᵀ,   A F A = W diag(d) Wᵀ,   P_x = w_S Z Zᵀ,  Q_x = w_S Z diag(d) Zᵀ  (Z = V_x W):

  one product per candidate instead of two, for a k³ factorisation in the driver (about the
  cost of the product on 12·k stacked rows, measured on one CPU thread at k = 400 and 1,400).
* :class:`Woodbury`: with few labeled rows (m = |L|·C ≤ k/2) A = λ⁻¹(I − U Uᵀ), U k×m, and
  P_x = (w_S/λ)(V_xV_xᵀ − (V_xU)(V_xU)ᵀ) costs C·k·m flops per candidate instead of C·k².

:func:`first_form` picks the cheaper for the sizes at hand.  A diagonal F needs neither: Q_x is
then (V_x A) F (V_x A)ᵀ from the V_x A that P_x needs anyway.  Resets after a failed check use A
itself (the plain form), which does not depend on the eigensolver's accuracy.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import scipy.linalg
import torch
from torch import Tensor

from fishermask.kernels._threads import blas_threads
from fishermask.kernels.embeddings import FisherEmbeddings

EIGEN_ROWS = 12
"""The eigensolver costs about as much as one product on EIGEN_ROWS·k stacked rows (C rows per
candidate); the eigen form is used where the product it saves streams at least that many."""


class Woodbury(NamedTuple):
    """A = λ⁻¹(I − U Uᵀ), U k×m."""
    lam: float
    u: Tensor


class Eigen(NamedTuple):
    """A = W Wᵀ and A F A = W diag(d) Wᵀ."""
    w: Tensor
    d: Tensor


def woodbury_form(labeled: Optional[FisherEmbeddings], w_l: float, lam: float, k: int,
                  device) -> Optional[Woodbury]:
    """A₀ = λ⁻¹(I − U Uᵀ) of M₀ = λI + w_L Σ_L V_xᵀV_x when m = |L|·C ≤ k/2 (Woodbury in sample
    space: W = √w_L V_Lᵀ k×m, λI_m + WᵀW = R Rᵀ, U = W R⁻ᵀ); None otherwise."""
    if labeled is None or 2 * len(labeled) * labeled.num_rows > k:
        return None
    rows = math.sqrt(w_l) * labeled.to(device).to_dense(torch.float64).reshape(-1, k)  # Wᵀ, m×k
    gram = rows @ rows.T
    gram.diagonal().add_(lam)
    low = torch.linalg.cholesky(gram)
    return Woodbury(lam, torch.linalg.solve_triangular(low, rows, upper=False).T.contiguous())


def eigen_form(m: Tensor, fisher: Tensor) -> Eigen:
    """W and d of F w = d M w (Wᵀ M W = I, Wᵀ F W = diag(d)), float64.  On the CPU one LAPACK
    call (divide and conquer, on torch's thread count); elsewhere through M = L Lᵀ,
    L⁻¹ F L⁻ᵀ = E diag(d) Eᵀ and W = L⁻ᵀ E."""
    if m.device.type == "cpu":
        with blas_threads(torch.get_num_threads()):
            d, w = scipy.linalg.eigh(fisher.numpy(), m.numpy(), driver="gvd")
        return Eigen(torch.from_numpy(w), torch.from_numpy(d))
    return eigen_form_torch(m, fisher)


def eigen_form_torch(m: Tensor, fisher: Tensor) -> Eigen:
    """:func:`eigen_form` in torch's linear algebra (any device)."""
    low = torch.linalg.cholesky(m)
    half = torch.linalg.solve_triangular(low, fisher, upper=False)            # L⁻¹ F
    g = torch.linalg.solve_triangular(low, half.T, upper=False)               # L⁻¹ F L⁻ᵀ
    d, e = torch.linalg.eigh((g + g.T) / 2)
    return Eigen(torch.linalg.solve_triangular(low.T, e, upper=True), d)


def first_form(m: Tensor, fisher: Tensor, woodbury: Optional[Woodbury],
               stacked_rows: Optional[int]):
    """The form of the round's first A: :class:`Eigen` where the product it saves (all of one, or
    the share m/k of one the Woodbury form saves) streams at least EIGEN_ROWS·k of the largest
    shard's ``stacked_rows`` (candidates × C; None: unknown, no eigen form), else ``woodbury``
    (which may be None: A itself).  F diagonal: ``woodbury`` is not used either."""
    if fisher.dim() == 1:
        return None
    k = fisher.shape[0]
    saved = 1.0 if woodbury is None else woodbury.u.shape[1] / k
    if stacked_rows is not None and saved * stacked_rows >= EIGEN_ROWS * k:
        return eigen_form(m, fisher)
    return woodbury


__all__ = ["EIGEN_ROWS", "Eigen", "Woodbury", "eigen_form", "eigen_form_torch", "first_form",
           "woodbury_form"]
