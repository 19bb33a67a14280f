"""Sharded state of the low-rank Fisher greedy engine (DESIGN.md §2 "Greedy", §4).

The objective is tr(M_S⁻¹ F) with M_S = λI + w_L Σ_L V_xᵀV_x + w_S Σ_S V_xᵀV_x.  With A = M⁻¹ and
Ṽ_x = √w_S · V_x, every candidate keeps Z_x = Ṽ_x A and W_x = Z_x F (C×k each, float32).  Then

    score(x) = tr(W_x Z_xᵀ (±I + Z_x Ṽ_xᵀ)⁻¹)                 (+I: add x, −I: remove x)

and adding (sign +1) or removing (sign −1) a point s with S_s = ±I + Z_s Ṽ_sᵀ changes every row by

    Z_x ← Z_x − (Ṽ_x Z_sᵀ) S_s⁻¹ Z_s,    W_x ← W_x − (Ṽ_x Z_sᵀ) S_s⁻¹ W_s,

O(C²·k) per candidate and step.  C×C solves run in float64; big arrays are stored in float32.  With a
diagonal F, W_x = Z_x·diag(F) column-wise and is never stored.

:func:`greedy_init` computes what every shard needs (weights, and A₀ = M₀⁻¹ or the Woodbury factors
of M₀); :class:`GreedyState` holds one contiguous shard of candidates.  ``fishermask.selection``
drives one state over all candidates; a distributed driver drives one state per actor.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

import torch
from torch import Tensor

CHUNK = 128
"""Rows per processing chunk.  Chunk boundaries are multiples of CHUNK in *global* index."""

WEIGHTINGS = ("bait", "uniform")
INIT_METHODS = ("auto", "direct", "woodbury")

__all__ = ["CHUNK", "WEIGHTINGS", "GreedyInit", "GreedyState", "greedy_init", "shard_bounds"]


def _as_float_tensor(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.is_complex():
        raise ValueError(f"{name} must be real, got dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.to(torch.float32)
    return x


def _check_finite(x: Tensor, name: str) -> None:
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_options(lam, weighting: str) -> None:
    """Raise ValueError unless lam is a finite number > 0 and weighting is known."""
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid choices: {', '.join(WEIGHTINGS)}")


def weights(num_labeled: int, n: int, weighting: str) -> tuple[float, float]:
    """(w_L, w_S) of DESIGN §2 for |L| = num_labeled and batch size n ≥ 1."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid choices: {', '.join(WEIGHTINGS)}")
    w_l = 1.0 / (num_labeled + n)
    w_s = n / (num_labeled + n) if weighting == "bait" else w_l
    return w_l, w_s


@dataclass(frozen=True)
class GreedyInit:
    """Everything a shard needs besides its candidates (small: O(k²) or O(|L|·C·k); picklable).

    ``method`` is "direct" (``a0`` = A₀ = M₀⁻¹, k×k) or "woodbury" (``basis`` B = √w_L·[V_ℓ rows],
    |L|·C×k, and ``gram_chol`` = chol(λI + BBᵀ), so A₀ = (I − Bᵀ(λI + BBᵀ)⁻¹B)/λ is never formed).
    ``fisher`` is float64, [k, k] (dense) or [k] (diagonal).
    """

    lam: float
    w_l: float
    w_s: float
    num_labeled: int
    num_classes: int
    dim: int
    fisher: Tensor
    method: str
    a0: Tensor | None = None
    basis: Tensor | None = None
    gram_chol: Tensor | None = None

    @property
    def diagonal(self) -> bool:
        return self.fisher.dim() == 1

    def to(self, device) -> "GreedyInit":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, fisher=move(self.fisher), a0=move(self.a0), basis=move(self.basis),
                       gram_chol=move(self.gram_chol))

    def initial_z(self, vt: Tensor) -> Tensor:
        """Z = Ṽ A₀ for Ṽ of shape [m, C, k] (float64 in, float64 out)."""
        m, c, k = vt.shape
        flat = vt.reshape(m * c, k)
        if self.method == "direct":
            z = flat @ self.a0
        elif self.basis is None:  # no labeled points: A₀ = I/λ
            z = flat / self.lam
        else:
            coef = torch.cholesky_solve((flat @ self.basis.T).T, self.gram_chol).T
            z = (flat - coef @ self.basis) / self.lam
        return z.reshape(m, c, k)

    def times_fisher(self, z: Tensor) -> Tensor:
        """Z F for Z of shape [..., k]."""
        return z * self.fisher if self.diagonal else z @ self.fisher


def greedy_init(labeled, fisher, n: int, *, lam: float = 1.0, weighting: str = "bait",
                method: str = "auto", num_classes: int | None = None, dim: int | None = None,
                device=None) -> GreedyInit:
    """Validate the labeled set, F and the options, and build the :class:`GreedyInit`.

    ``labeled`` is the raw [L, C, k] tensor (L may be 0; ``None`` means no labeled points), ``n``
    (≥ 1) the batch size that sets the weights.  ``method="auto"`` uses Woodbury in sample space when
    |L|·C < k and a direct k×k inverse otherwise.  ``num_classes``/``dim`` are checked against the
    labeled tensor and F when given (they are required when ``labeled`` is None).
    """
    if method not in INIT_METHODS:
        raise ValueError(f"unknown init method {method!r}; valid choices: {', '.join(INIT_METHODS)}")
    check_options(lam, weighting)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1 to set the weights, got {n!r}")
    fisher = _as_float_tensor(fisher, "fisher")
    if fisher.dim() not in (1, 2):
        raise ValueError(f"fisher must have shape [k, k] or [k], got {tuple(fisher.shape)}")
    k = fisher.shape[0]
    if fisher.dim() == 2 and fisher.shape[1] != k:
        raise ValueError(f"dense fisher must be square [k, k], got {tuple(fisher.shape)}")
    if dim is not None and dim != k:
        raise ValueError(f"fisher has k={k} but the candidates have k={dim}")
    if labeled is None:
        if num_classes is None:
            raise ValueError("num_classes is required when labeled is None")
        labeled = torch.zeros(0, num_classes, k)
    labeled = _as_float_tensor(labeled, "labeled")
    if labeled.dim() != 3:
        raise ValueError(f"labeled must have shape [L, C, k], got {tuple(labeled.shape)}")
    num_l, c, kl = labeled.shape
    if kl != k:
        raise ValueError(f"labeled has k={kl} but fisher has k={k}")
    if num_classes is not None and c != num_classes:
        raise ValueError(f"labeled has C={c} classes but the candidates have C={num_classes}")
    _check_finite(labeled, "labeled")
    _check_finite(fisher, "fisher")
    w_l, w_s = weights(num_l, int(n), weighting)
    if device is None:
        device = fisher.device
    f64 = fisher.to(device=device, dtype=torch.float64)
    basis = (labeled.to(device=device, dtype=torch.float64).reshape(num_l * c, k) * math.sqrt(w_l))
    if method == "auto":
        method = "woodbury" if num_l * c < k else "direct"
    common = dict(lam=float(lam), w_l=w_l, w_s=w_s, num_labeled=num_l, num_classes=c, dim=k,
                  fisher=f64, method=method)
    if method == "direct":
        m0 = basis.T @ basis
        m0.diagonal().add_(float(lam))
        a0 = torch.cholesky_inverse(torch.linalg.cholesky(m0))
        return GreedyInit(**common, a0=(a0 + a0.T) / 2)
    if num_l == 0:
        return GreedyInit(**common)
    gram = basis @ basis.T
    gram.diagonal().add_(float(lam))
    return GreedyInit(**common, basis=basis, gram_chol=torch.linalg.cholesky(gram))


def shard_bounds(total: int, shards: int, chunk: int = CHUNK) -> list[tuple[int, int]]:
    """Split range(total) into ``shards`` contiguous [start, stop) ranges whose boundaries are
    multiples of ``chunk`` (the last stop is ``total``); chunks are spread as evenly as possible and
    trailing ranges may be empty when there are fewer chunks than shards."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    n_chunks = -(-total // chunk)
    base, extra = divmod(n_chunks, shards)
    bounds, start = [], 0
    for i in range(shards):
        stop = min(total, start + (base + (i < extra)) * chunk)
        bounds.append((start, stop))
        start = stop
    return bounds


class GreedyState:
    """One contiguous shard [offset, offset + m) of the candidates of a greedy run.

    Holds Ṽ = √w_S·V, Z = Ṽ A, W = Z F (float32, [m, C, k]; no W for a diagonal F), the selected
    flags and the latest scores.  Protocol per step (any number of shards, one driver):

    1. every shard reports ``best_forward()`` (or ``best_backward()``): ``(score, global_index)``
       or ``None``; the driver takes the largest score, ties to the lowest global index;
    2. the owner gives ``rows(g)`` = (Ṽ_g, Z_g, W_g) and ``mark(g, True/False)``;
    3. every shard runs ``apply(v, z, w, +1/-1)`` with those rows.

    **Sharding rule (bitwise determinism):** every per-candidate number is computed inside a chunk of
    ``chunk`` rows whose boundaries are multiples of ``chunk`` in *global* index, so it never depends
    on which other candidates share the shard.  Hence ``offset`` must be a multiple of ``chunk`` and
    every shard but the last must have a length that is a multiple of ``chunk`` (see
    :func:`shard_bounds`); then a run over any such sharding picks exactly what the one-shard run
    picks, provided all shards use the same ``chunk``, device type, dtype and BLAS threading.

    After a removal (``apply(..., -1)``) only the rows of selected candidates are kept current, as
    the backward phase never looks at the others; ``best_forward`` then raises.
    """

    def __init__(self, candidates, offset: int, init: GreedyInit, *, chunk: int = CHUNK):
        candidates = _as_float_tensor(candidates, "candidates")
        if candidates.dim() != 3:
            raise ValueError(f"candidates must have shape [U, C, k], got {tuple(candidates.shape)}")
        m, c, k = candidates.shape
        if (c, k) != (init.num_classes, init.dim):
            raise ValueError(f"candidates have (C, k) = {(c, k)} but the init was built for "
                             f"{(init.num_classes, init.dim)}")
        if chunk < 1 or offset < 0 or offset % chunk:
            raise ValueError(f"offset ({offset}) must be a non-negative multiple of chunk ({chunk})")
        self.offset, self.size, self.chunk = int(offset), m, int(chunk)
        self.device = candidates.device
        self.init = init.to(self.device)
        self.diagonal = self.init.diagonal
        self._f32 = self.init.fisher.to(torch.float32) if self.diagonal else None
        self.selected = torch.zeros(m, dtype=torch.bool, device=self.device)
        # Per candidate one [Ṽ_x; W_x] block (2C×k) so that S_x and T_x come from one batched
        # product Z_x [Ṽ_x; W_x]ᵀ; with a diagonal F only Ṽ_x is stored (W_x = Z_x·diag F).
        rows = c if self.diagonal else 2 * c
        self.vw = torch.empty(m, rows, k, dtype=torch.float32, device=self.device)
        self.vt = self.vw[:, :c]
        self.w = None if self.diagonal else self.vw[:, c:]
        self.z = torch.empty(m, c, k, dtype=torch.float32, device=self.device)
        root = math.sqrt(self.init.w_s)
        for sl in self._chunks():
            vt = (candidates[sl].to(torch.float64) * root).to(torch.float32)
            self.vt[sl] = vt
            z = self.init.initial_z(vt.to(torch.float64))
            self.z[sl] = z
            if self.w is not None:
                self.w[sl] = self.init.times_fisher(z)
        self._scores = torch.full((m,), float("nan"), dtype=torch.float64, device=self.device)
        self._score_sign = 0  # 0: stale, +1: forward scores of all rows, -1: removal scores of selected
        self._forward_stale = False

    # ----------------------------------------------------------------------------------- helpers
    def _chunks(self):
        for start in range(0, self.size, self.chunk):
            yield slice(start, min(start + self.chunk, self.size))

    def _local(self, global_index: int) -> int:
        i = int(global_index) - self.offset
        if not 0 <= i < self.size:
            raise IndexError(f"global index {global_index} is not in this shard "
                             f"[{self.offset}, {self.offset + self.size})")
        return i

    def owns(self, global_index: int) -> bool:
        return 0 <= int(global_index) - self.offset < self.size

    def _chunk_scores(self, z: Tensor, vw: Tensor, sign: int) -> Tensor:
        """tr(S⁻¹ T) with S = sign·I + Z Ṽᵀ and T = Z Wᵀ (= (W Zᵀ)ᵀ, same trace) per row of a block
        (z: [m, C, k], vw: the matching [m, C or 2C, k] rows); float64 solves."""
        c = z.shape[1]
        if self.diagonal:
            st = torch.bmm(z, torch.cat([vw, z * self._f32], 1).transpose(1, 2))
        else:
            st = torch.bmm(z, vw.transpose(1, 2))                      # [S − sign·I | T], [m, C, 2C]
        st = st.to(torch.float64)
        s_mat, t_mat = st[..., :c], st[..., c:]
        s_mat.diagonal(dim1=1, dim2=2).add_(float(sign))
        sol, _ = torch.linalg.solve_ex(s_mat, t_mat)
        return sol.diagonal(dim1=1, dim2=2).sum(-1)

    def _rows_for(self, sl: slice, sign: int):
        """Local row indices of chunk ``sl`` that a step of direction ``sign`` touches."""
        if sign > 0:
            return sl
        idx = torch.nonzero(self.selected[sl]).flatten()
        return idx + sl.start if idx.numel() else None

    def _refresh_scores(self, sign: int) -> None:
        self._scores.fill_(float("nan"))
        for sl in self._chunks():
            idx = self._rows_for(sl, sign)
            if idx is not None:
                self._scores[idx] = self._chunk_scores(self.z[idx], self.vw[idx], sign)
        self._finish_scores(sign)

    def _finish_scores(self, sign: int) -> None:
        self._scores.nan_to_num_(nan=float("-inf"), posinf=float("-inf"), neginf=float("-inf"))
        self._score_sign = sign

    # ------------------------------------------------------------------------------- public API
    def forward_scores(self) -> Tensor:
        """Scores of adding each local candidate (float64 [m]; −inf where already selected)."""
        if self._forward_stale:
            raise RuntimeError("forward scores are unavailable after a removal step")
        if self._score_sign != 1:
            self._refresh_scores(1)
        return torch.where(self.selected, float("-inf"), self._scores)

    def backward_scores(self) -> Tensor:
        """Scores (≤ 0) of removing each local candidate (float64 [m]; −inf where unselected)."""
        if self._score_sign != -1:
            self._refresh_scores(-1)
        return torch.where(self.selected, self._scores, float("-inf"))

    def _best(self, scores: Tensor, eligible: Tensor):
        if not bool(eligible.any()):
            return None
        scores = torch.where(eligible, scores, float("-inf"))
        best = scores.max()
        i = int(torch.nonzero((scores == best) & eligible)[0])  # lowest index among the maxima
        return float(best), self.offset + i

    def best_forward(self) -> tuple[float, int] | None:
        """(score, global index) of the best unselected candidate here; ties → lowest index."""
        return self._best(self.forward_scores(), ~self.selected)

    def best_backward(self) -> tuple[float, int] | None:
        """(score, global index) of the selected candidate whose removal hurts least."""
        return self._best(self.backward_scores(), self.selected)

    def rows(self, global_index: int) -> tuple[Tensor, Tensor, Tensor]:
        """Copies of (Ṽ, Z, W) of one candidate of this shard, each float32 [C, k]."""
        i = self._local(global_index)
        z = self.z[i].clone()
        w = z * self._f32 if self.w is None else self.w[i].clone()
        return self.vt[i].clone(), z, w

    def mark(self, global_index: int, selected: bool) -> None:
        """Set the selected flag of one candidate of this shard."""
        self.selected[self._local(global_index)] = bool(selected)

    @property
    def selected_indices(self) -> Tensor:
        return torch.nonzero(self.selected).flatten() + self.offset

    def apply(self, v_s: Tensor, z_s: Tensor, w_s: Tensor, sign: int) -> None:
        """Add (sign=+1) or remove (sign=−1) the point with rows (Ṽ_s, Z_s, W_s) from M: update Z, W
        of every row (after a removal: of selected rows only) and their scores of direction sign.

        Uses P_x = Z_x Ṽ_sᵀ (= Ṽ_x A Ṽ_sᵀ = Ṽ_x Z_sᵀ, A symmetric): then Z_x ← Z_x (I − Ṽ_sᵀ S_s⁻¹ Z_s)
        is multiplicative, so the float32 error of Z_x shrinks with A instead of staying absolute.
        """
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, got {sign!r}")
        if sign < 0:
            self._forward_stale = True
        dev = self.device
        v32 = v_s.to(device=dev, dtype=torch.float32)
        z64 = z_s.to(device=dev, dtype=torch.float32).to(torch.float64)
        s_mat = z64 @ v32.to(torch.float64).T                            # sign·I + Z_s Ṽ_sᵀ
        s_mat.diagonal().add_(float(sign))
        y = torch.linalg.solve(s_mat, z64).to(torch.float32)            # S_s⁻¹ Z_s
        x = None if self.w is None else torch.linalg.solve(
            s_mat, w_s.to(device=dev, dtype=torch.float64)).to(torch.float32)  # S_s⁻¹ W_s
        self._scores.fill_(float("nan"))
        c, v_t = self.init.num_classes, v32.T
        for sl in self._chunks():
            idx = self._rows_for(sl, sign)
            if idx is None:
                continue
            gather = sign < 0  # removal: only the selected rows, gathered into copies
            z = self.z[idx] if gather else self.z[sl]
            vw = self.vw[idx] if gather else self.vw[sl]
            m = z.shape[0]
            p = torch.bmm(z, v_t.expand(m, -1, -1))                         # Z_x Ṽ_sᵀ, [m, C, C]
            z.baddbmm_(p, y.expand(m, -1, -1), alpha=-1.0)
            if x is not None:
                vw[:, c:].baddbmm_(p, x.expand(m, -1, -1), alpha=-1.0)
            if gather:
                self.z[idx] = z
                if x is not None:
                    self.vw[idx] = vw
            self._scores[idx] = self._chunk_scores(z, vw, sign)
        self._finish_scores(sign)
