"""The Fisher greedy of BAIT and FisherMask: choose S ⊂ U, |S| = n, to minimise tr(M_S⁻¹ F),

    M_S = λI + w_L Σ_{x∈L} V_xᵀV_x + w_S Σ_{x∈S} V_xᵀV_x,   w_L = 1/(|L|+n),
    w_S = n/(|L|+n) ("bait" weighting) or 1/(|L|+n) ("uniform").

Forward steps add argmax_x tr(Ṽ_x A F A Ṽ_xᵀ (I + Ṽ_x A Ṽ_xᵀ)⁻¹) (A = M⁻¹, Ṽ = √w_S V);
with ``oversample`` r, r·n forward steps are followed by (r−1)·n removals of
argmax_s tr(Ṽ_s A F A Ṽ_sᵀ (−I + Ṽ_s A Ṽ_sᵀ)⁻¹).  Ties go to the lowest candidate index.

Split of the work (docs/design.md, "The greedy engine"):

* the candidates live in :class:`~fishermask.kernels.greedy_shard.GreedyShard` s (embeddings once,
  C×C state P_x, Q_x per candidate, one streaming product per step);
* the :class:`GreedyDriver` keeps M itself exactly (float64 sums of outer products) and A = M⁻¹;
* **verified picks**: every step the winner's score is recomputed from M (a solve refined
  iteratively with A as preconditioner, a Cholesky solve as fallback; removals are scored with
  M − Ṽ_sᵀṼ_s, which stays ≥ λI, instead of the near-singular −I + P_s) and compared with the
  maintained one.  Past the tolerance A is rebuilt from M and P, Q from A; if the winner still
  disagrees its exact score replaces the maintained one and the step picks again.

:func:`run_greedy` is the one driver loop, for one in-process shard or many remote ones.
"""

from __future__ import annotations

import math
import numbers
import time

import torch
from torch import Tensor

from fishermask.errors import MemoryLimitError
from fishermask.kernels.embeddings import STORAGE_DTYPES, FisherEmbeddings, as_embeddings
from fishermask.kernels.greedy_shard import GreedyShard

WEIGHTINGS = ("bait", "uniform")
RTOL = 1e-7
"""Relative tolerance of the winner check (on the score; plus 1e-10 of the objective)."""


def check_options(lam, weighting: str) -> None:
    """Raise ValueError unless lam is a finite number > 0 and weighting is known."""
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid choices: {', '.join(WEIGHTINGS)}")


def weights(num_labeled: int, n: int, weighting: str) -> tuple[float, float]:
    """(w_L, w_S) for |L| = num_labeled and batch size n ≥ 1."""
    check_options(1.0, weighting)
    w_l = 1.0 / (num_labeled + n)
    return w_l, (n / (num_labeled + n) if weighting == "bait" else w_l)


def greedy_steps(num_candidates: int, n: int, oversample: int) -> tuple[int, int]:
    """(forward steps, backward steps): min(oversample·n, U) forward, then down to n."""
    forward = min(oversample * n, num_candidates)
    return forward, forward - n


def check_fisher(fisher, k: int) -> Tensor:
    if not isinstance(fisher, Tensor):
        fisher = torch.as_tensor(fisher)
    if fisher.dim() not in (1, 2) or fisher.shape[0] != k or (fisher.dim() == 2 and fisher.shape[1] != k):
        raise ValueError(f"fisher must have shape [k, k] or [k] with k={k} (the embeddings' k), "
                         f"got {tuple(fisher.shape)}")
    if not bool(torch.isfinite(fisher).all()):
        raise ValueError("fisher contains NaN or infinite values")
    return fisher.to(torch.float64)


def greedy_memory_gb(rows: int, row_bytes: int, num_classes: int, k: int,
                     fisher_target: str) -> float:
    """GB one process holds for the Fisher greedy: ``rows`` resident embeddings of ``row_bytes``
    each with their C×C state (P, Q in float64), and the driver's k×k float64 matrices (F, M, A and
    a work copy; k-vectors for a diagonal F)."""
    per_row = row_bytes + 2 * num_classes * num_classes * 8 + 16
    square = (4 * k * k * 8) if fisher_target == "dense" else (3 * k * k * 8)
    return (rows * per_row + square) / 1e9


def check_memory(need_gb: float, limit_gb: float, *, what: str, shards: int = 1) -> None:
    """Raise :class:`~fishermask.errors.MemoryLimitError` when ``need_gb`` exceeds ``limit_gb``."""
    if need_gb > limit_gb:
        raise MemoryLimitError(
            "{what} needs about {need:.1f} GB per process but {max_memory_gb} is {limit:g}. "
            "Lower {sparsity} (smaller mask k), use {fisher_target}=diag, spread the pool over "
            "more {shards} (now {now}), or raise {max_memory_gb} if the machine has the memory.",
            what=what, need=need_gb, limit=limit_gb, now=shards)


def _inverse(m: Tensor) -> Tensor:
    a = torch.cholesky_inverse(torch.linalg.cholesky(m))
    # row-major: cholesky_inverse returns a column-major matrix, and a column-major A times the
    # transposed Ṽᵀ took a slow matmul path (20× slower at k = 2,560)
    return ((a + a.T) / 2).contiguous()


class GreedyDriver:
    """The driver's state: M (exact), A = M⁻¹, F, the weights and the winner check."""

    def __init__(self, labeled: FisherEmbeddings | None, fisher: Tensor, n: int, *, lam: float,
                 weighting: str, k: int, device=None, block: int = 4096):
        check_options(lam, weighting)
        num_l = 0 if labeled is None else len(labeled)
        self.w_l, self.w_s = weights(num_l, n, weighting)
        self.root = math.sqrt(self.w_s)
        self.lam, self.k = float(lam), int(k)
        dev = device if device is not None else fisher.device
        self.fisher = fisher.to(device=dev, dtype=torch.float64)
        self.diagonal = self.fisher.dim() == 1
        self.m = torch.eye(k, dtype=torch.float64, device=dev) * self.lam
        for start in range(0, num_l, block):  # M₀ = λI + w_L Σ_L V_xᵀV_x, block by block
            self.m += self.w_l * labeled.rows(slice(start, start + block)).to(dev).gram()
        self.a = _inverse(self.m)
        self.objective = self._trace_af()
        self.stats = {"rebuilds": 0, "overrides": 0, "direct_solves": 0, "checks": 0}

    # ------------------------------------------------------------------ linear algebra
    def _f(self, y: Tensor) -> Tensor:
        return self.fisher[:, None] * y if self.diagonal else self.fisher @ y

    def _trace_af(self) -> float:
        """tr(A F) with the current A."""
        if self.diagonal:
            return float(self.a.diagonal() @ self.fisher)
        return float(torch.dot(self.a.reshape(-1), self.fisher.reshape(-1)))

    def _dense_row(self, row: FisherEmbeddings) -> Tensor:
        return self.root * row.to(self.m.device).to_dense(torch.float64)[0]         # Ṽ_s, [C, k]

    def _solve(self, v: Tensor, sign: int) -> Tensor:
        """y = (M + sign·ṼᵀṼ)⁻¹ Ṽᵀ for sign 0 (M itself) or −1 (M with s removed, ≥ λI):
        iterative refinement preconditioned by A (by A's removal update for sign −1), with a
        Cholesky solve when it does not converge."""
        rhs = v.T.contiguous()
        if sign == 0:
            pre = lambda r: self.a @ r  # noqa: E731
        else:
            a = self.a @ rhs
            s = v @ a
            s.diagonal().sub_(1.0)
            s_inv = torch.linalg.pinv(s)
            pre = lambda r: self.a @ r - a @ (s_inv @ (a.T @ r))  # noqa: E731
        op = lambda y: self.m @ y + sign * (rhs @ (v @ y))  # noqa: E731
        y = pre(rhs)
        last = math.inf
        for _ in range(10):
            dy = pre(rhs - op(y))
            y = y + dy
            change = float(dy.norm()) / max(float(y.norm()), 1e-300)
            if not math.isfinite(change):
                break
            if change <= 1e-13 or (change <= 1e-10 and change > 0.5 * last):
                return y  # converged, or stalled at rounding level
            last = change
        self.stats["direct_solves"] += 1
        mat = self.m if sign == 0 else self.m - rhs @ v
        return torch.cholesky_solve(rhs, torch.linalg.cholesky(mat))

    def evaluate(self, row: FisherEmbeddings, g: int, forward: bool) -> dict:
        """The candidate's exact score from M, and the update that adds/removes it.

        With y = (M_before_without_s)⁻¹ Ṽᵀ: adding s, y = M⁻¹Ṽᵀ and A' = A − y(I + Ṽy)⁻¹yᵀ;
        removing s, y = (M − ṼᵀṼ)⁻¹Ṽᵀ and A' = A + y(I + Ṽy)⁻¹yᵀ (both well conditioned).
        The score is ±tr((I + Ṽy)⁻¹ yᵀFy).
        """
        v = self._dense_row(row)
        y = self._solve(v, 0 if forward else -1)
        s = v @ y
        s.diagonal().add_(1.0)
        s_inv = torch.linalg.inv(s)
        s_inv = (s_inv + s_inv.T) / 2
        fy = self._f(y)
        k_mat = y.T @ fy
        score = float((s_inv * k_mat).sum())  # tr(S⁻¹ K), both symmetric
        sign = 1 if forward else -1
        return {"g": g, "sign": sign, "v": v, "y": y, "fy": fy, "score": sign * score,
                "s_inv": s_inv if forward else -s_inv, "k": (k_mat + k_mat.T) / 2}

    def check(self, ev: dict, maintained: float) -> bool:
        """Whether the maintained score agrees with the exact one."""
        self.stats["checks"] += 1
        tol = RTOL * abs(ev["score"]) + 1e-10 * abs(self.objective)
        return bool(abs(maintained - ev["score"]) <= tol)

    def rebuild(self) -> Tensor:
        """A ← M⁻¹ (fresh Cholesky); returns A for the shards' reset."""
        self.stats["rebuilds"] += 1
        self.a = _inverse(self.m)
        self.objective = self._trace_af()
        return self.a

    def final_objective(self) -> float:
        """tr(M⁻¹F) from a fresh factorisation of M: the running value (objective minus each
        step's score) and the updated A drift on ill-conditioned problems (3e-5 relative at
        λ = 1e-4), although every pick is verified."""
        a = _inverse(self.m)
        if self.diagonal:
            return float(a.diagonal() @ self.fisher)
        return float(torch.dot(a.reshape(-1), self.fisher.reshape(-1)))

    def accept(self, ev: dict):
        """Apply an evaluated step: M exactly, A ← A − a S⁻¹ aᵀ with a = y.  Returns the shards'
        update (g, sign, X = √w_S [a | A F a], S⁻¹, K = aᵀFa)."""
        y, s_inv = ev["y"], ev["s_inv"]
        b = self.a @ ev["fy"]                                              # A F a (A before)
        self.m.addmm_(ev["v"].T, ev["v"], alpha=float(ev["sign"]))
        self.a.addmm_(y @ s_inv, y.T, alpha=-1.0)
        self.objective -= ev["score"]
        x = self.root * torch.cat([y, b], dim=1)
        return ev["g"], ev["sign"], x, s_inv, ev["k"]


def _global_best(reports) -> tuple[float, int, FisherEmbeddings]:
    best = None
    for report in reports:
        if report is None:
            continue
        score, g, row = report
        if best is None or score > best[0] or (score == best[0] and g < best[1]):
            best = (score, g, row)
    if best is None:
        raise RuntimeError("no eligible candidate left in any shard")
    return best


class LocalShards:
    """A group of in-process shards with the ``call(method, *args)`` interface of remote ones."""

    def __init__(self, shards: list[GreedyShard]):
        self.shards = shards

    def call(self, method: str, *args) -> list:
        return [getattr(s, method)(*args) for s in self.shards]


def run_greedy(group, driver: GreedyDriver, num_candidates: int, n: int, oversample: int = 1):
    """Drive the shards of ``group`` (``group.call(method, *args)`` runs a GreedyShard method on
    every shard, results in shard order).  Returns (global indices kept, in the order they were
    added; diagnostics)."""
    t0 = time.perf_counter()
    n_fwd, n_bwd = greedy_steps(num_candidates, n, oversample)
    reports = group.call("reset", driver.a, True)
    order: list[int] = []
    pending = None
    for step in range(n_fwd + n_bwd):
        forward = step < n_fwd
        if pending is not None:
            reports = group.call("advance", pending, forward)
        rebuilt = False
        while True:
            score, g, row = _global_best(reports)
            ev = driver.evaluate(row, g, forward)
            if driver.check(ev, score):
                break
            if not rebuilt:
                rebuilt = True
                reports = group.call("reset", driver.rebuild(), forward)
            else:
                driver.stats["overrides"] += 1
                reports = group.call("override", g, ev["score"], forward)
        pending = driver.accept(ev)
        if forward:
            order.append(g)
        else:
            order.remove(g)
    info = dict(driver.stats, steps=n_fwd + n_bwd, seconds=time.perf_counter() - t0,
                objective=driver.final_objective() if order else float("nan"))
    return order, info


def fisher_greedy(candidates, labeled, fisher, n: int, *, lam: float = 1.0, oversample: int = 1,
                  weighting: str = "bait", storage_dtype=None, return_info: bool = False):
    """Greedily choose n of the candidates to minimise tr(M_S⁻¹ F) (see the module docstring).

    Args:
        candidates: raw embeddings V_x, a dense [U, C, k] tensor or a
            :class:`~fishermask.kernels.embeddings.FisherEmbeddings` (factored last layer).
        labeled: the labeled set's embeddings in the same form (L may be 0; ``None``: none).
        fisher: target F, dense [k, k] or its diagonal [k] (columns in the embeddings' order).
        n: batch size, 0 ≤ n ≤ U.
        lam: λ > 0.  oversample: r ≥ 1.  weighting: "bait" or "uniform".
        storage_dtype: dtype of the stored embeddings (default: as given; torch.bfloat16 or
            "bfloat16" halves memory); products run in float64.
        return_info: also return the diagnostics (steps, rebuilds, overrides, objective …).

    Returns:
        LongTensor[n] of indices into ``candidates`` in the order they were added.
    """
    cand = as_embeddings(candidates, "candidates")
    num_u, k = len(cand), cand.k
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if n > num_u:
        raise ValueError(f"cannot select n={n} points from {num_u} candidates")
    if isinstance(oversample, bool) or not isinstance(oversample, numbers.Integral) or oversample < 1:
        raise ValueError(f"oversample must be an integer >= 1, got {oversample!r}")
    check_options(lam, weighting)
    if storage_dtype is not None:
        storage_dtype = STORAGE_DTYPES.get(storage_dtype, storage_dtype)
        if storage_dtype not in STORAGE_DTYPES.values():
            raise ValueError(f"storage_dtype must be one of {', '.join(STORAGE_DTYPES)} (a name "
                             f"or the torch dtype), got {storage_dtype!r}")
    cand.check_finite("candidates")
    fisher = check_fisher(fisher, k)
    lab = None if labeled is None else as_embeddings(labeled, "labeled")
    if lab is not None:
        if (lab.num_classes, lab.k) != (cand.num_classes, k):
            raise ValueError(f"labeled has (C, k) = {(lab.num_classes, lab.k)} but the candidates "
                             f"have {(cand.num_classes, k)}")
        lab.check_finite("labeled")
        if len(lab) == 0:
            lab = None
    if n == 0:
        out = torch.zeros(0, dtype=torch.long)
        return (out, {"steps": 0}) if return_info else out
    if storage_dtype is not None:
        cand = cand.to(storage_dtype=storage_dtype)
        lab = None if lab is None else lab.to(storage_dtype=storage_dtype)
    driver = GreedyDriver(lab, fisher.to(cand.device), int(n), lam=lam, weighting=weighting, k=k,
                          device=cand.device)
    shard = GreedyShard(cand, 0, driver.fisher, driver.w_s)
    order, info = run_greedy(LocalShards([shard]), driver, num_u, int(n), int(oversample))
    out = torch.tensor(order, dtype=torch.long)
    return (out, info) if return_info else out


__all__ = ["GreedyDriver", "LocalShards", "WEIGHTINGS", "check_fisher", "check_memory",
           "check_options", "fisher_greedy", "greedy_memory_gb", "greedy_steps", "run_greedy",
           "weights"]
