"""The greedy engine's driver: the Fisher greedy of BAIT and FisherMask chooses S ⊂ U, |S| = n,
to minimise tr(M_S⁻¹ F),

    M_S = λI + w_L Σ_{x∈L} V_xᵀV_x + w_S Σ_{x∈S} V_xᵀV_x,   w_L = 1/(|L|+n),
    w_S = n/(|L|+n) ("bait" weighting) or 1/(|L|+n) ("uniform").

Forward steps add argmax_x tr(Ṽ_x A F A Ṽ_xᵀ (I + Ṽ_x A Ṽ_xᵀ)⁻¹) (A = M⁻¹, Ṽ = √w_S V);
with ``oversample`` r, r·n forward steps are followed by (r−1)·n removals of
argmax_s tr(Ṽ_s A F A Ṽ_sᵀ (−I + Ṽ_s A Ṽ_sᵀ)⁻¹).  Ties go to the lowest candidate index.

Split of the work (docs/design.md, "The greedy engine"):

* the candidates live in :class:`~fishermask.kernels._shard.GreedyShard` s (embeddings once,
  C×C state P_x, Q_x per candidate, one streaming product per step), reached through a
  :class:`~fishermask.kernels._group.ShardGroup`;
* the :class:`GreedyDriver` keeps M itself exactly (float64 sums of outer products) and A = M⁻¹;
* **verified picks**: every step the winner's score is recomputed from M (a solve refined
  iteratively with A as preconditioner, a Cholesky solve as fallback; removals are scored with
  M − Ṽ_sᵀṼ_s, which stays ≥ λI, instead of the near-singular −I + P_s) and compared with the
  maintained one.  Past the tolerance A is rebuilt from M and P, Q from A; if the winner still
  disagrees its exact score replaces the maintained one and the step picks again.
* **float32 products** (``compute_dtype=torch.float32``): the shards' large products run in float32
  (their C×C state stays float64), so a maintained score carries float32 rounding.  The check's
  tolerance is then RTOL32, and every other candidate whose maintained score comes within a
  margin of the winner's exact score is scored exactly too (its maintained score checked the same
  way); the best exact score wins, ties to the lowest index.  The margin is 8× the largest
  relative error the checks measured since the last reset, at least ``MARGIN_FLOOR`` (1e-6).  A
  check that still fails right after a rebuild switches the round to float64 products (RTOL).
  The backward phase (removals, on the selected rows only) always runs in float64 products.

:func:`run_greedy` is the one driver loop, for one in-process shard or many remote ones.  The
public entry point is :func:`fishermask.kernels.greedy.fisher_greedy`.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from fishermask.errors import MemoryLimitError
from fishermask.kernels._forms import EIGEN_ROWS, Eigen, first_form, woodbury_form
from fishermask.kernels._group import ShardGroup
from fishermask.kernels._symmetric import Updated, inverse, mirror_upper, sym_mm
from fishermask.kernels._threads import BusyProbe, step_threads
from fishermask.kernels.embeddings import FisherEmbeddings

RTOL = 1e-7
"""Relative tolerance of the winner check (on the score; plus 1e-10 of the objective)."""

RTOL32 = 1e-4
"""The check's relative tolerance when the shards' products run in float32."""

MARGIN_FLOOR = {torch.float64: 1e-10, torch.float32: 1e-6}
"""The smallest relative margin (per product dtype) within which other candidates are scored
exactly; the margin grows to 8× the largest relative error the checks measured since the last
reset (see :meth:`GreedyDriver.margin`)."""


def weights(num_labeled: int, n: int, weighting: str) -> tuple[float, float]:
    """(w_L, w_S) for |L| = num_labeled and batch size n ≥ 1."""
    w_l = 1.0 / (num_labeled + n)
    return w_l, (n / (num_labeled + n) if weighting == "bait" else w_l)


def greedy_steps(num_candidates: int, n: int, oversample: int) -> tuple[int, int]:
    """(forward steps, backward steps): min(oversample·n, U) forward, then down to n."""
    forward = min(oversample * n, num_candidates)
    return forward, forward - n


def greedy_memory_gb(rows: int, row_bytes: int, num_classes: int, k: int,
                     fisher_target: str) -> float:
    """GB one process holds for the Fisher greedy: ``rows`` resident embeddings of ``row_bytes``
    each with their C×C state (P, Q in float64; ``num_classes`` = c with top-c classes), and the
    driver's k×k float64 matrices (F, M, A, a work copy, and the sample-space U with the labeled
    rows, together at most one more; k-vectors for a diagonal F) and A's float32 copy; where the
    round starts from A's eigen form (``kernels/_forms.py``), the eigensolver's copies of F and M
    and its workspace for a moment, four more."""
    per_row = row_bytes + 2 * num_classes * num_classes * 8 + 16
    dense = fisher_target == "dense"
    eigen = dense and rows * num_classes >= EIGEN_ROWS * k
    square = (((5 + 4 * eigen) if dense else 3) * 8 + 4) * k * k
    return (rows * per_row + square) / 1e9


def check_memory(need_gb: float, limit_gb: float, *, what: str, shards: int = 1) -> None:
    """Raise :class:`~fishermask.errors.MemoryLimitError` when ``need_gb`` exceeds ``limit_gb``."""
    if need_gb > limit_gb:
        raise MemoryLimitError(
            "{what} needs about {need:.1f} GB per process but {max_memory_gb} is {limit:g}. "
            "Lower {sparsity} (smaller mask k), use {fisher_target}=diag, keep fewer classes per "
            "sample ({fisher_classes}=top with a small {top_c}: c×c instead of C×C state), "
            "spread the pool over more {shards} (now {now}), or raise {max_memory_gb} if the "
            "machine has the memory.",
            what=what, need=need_gb, limit=limit_gb, now=shards)


class GreedyDriver:
    """The driver's state: M (exact), A = M⁻¹, F, the weights and the winner check."""

    def __init__(self, labeled: FisherEmbeddings | None, fisher: Tensor, n: int, *, lam: float,
                 weighting: str, k: int, device=None, block: int = 4096,
                 compute_dtype=torch.float64):
        num_l = 0 if labeled is None else len(labeled)
        self.w_l, self.w_s = weights(num_l, n, weighting)
        self.root = math.sqrt(self.w_s)
        self.lam, self.k = float(lam), int(k)
        dev = device if device is not None else fisher.device
        self.fisher = fisher.to(device=dev, dtype=torch.float64)
        self.diagonal = self.fisher.dim() == 1
        m = torch.eye(k, dtype=torch.float64, device=dev) * self.lam
        for start in range(0, num_l, block):  # M₀ = λI + w_L Σ_L V_xᵀV_x, block by block
            m += self.w_l * labeled.rows(slice(start, start + block)).to(dev).gram(upper=True)
        m = mirror_upper(m)  # the blocks' sums are valid in their upper triangle
        # M and A with the steps' rank-C updates held apart until 128 columns are pending
        # (kernels/_symmetric.py): a step reads the k×k matrices four times instead of nine
        self._m, self._a = Updated(m), Updated(inverse(m))
        self.low_rank = None if self.diagonal else woodbury_form(labeled, self.w_l, self.lam,
                                                                 self.k, dev)
        self.objective = self._trace_af()
        self.compute_dtype = compute_dtype  # of the shards' large products (float64 once switched)
        self.resolve_contenders = compute_dtype != torch.float64  # started in float32
        self.err_max = 0.0  # largest relative error of a checked maintained score since a reset
        self.stats = {"rebuilds": 0, "overrides": 0, "direct_solves": 0, "checks": 0,
                      "contenders": 0, "float64_resets": 0}

    def first_form(self, stacked_rows: int | None):
        """The form of A for the shards' first P, Q (``kernels/_forms.py``): the eigen form where
        it saves more than the eigensolver costs on the largest shard's ``stacked_rows``
        (candidates × C), else A = λ⁻¹(I − U Uᵀ) where few rows are labeled, else None."""
        return first_form(self.m, self.fisher, self.low_rank, stacked_rows)

    @property
    def m(self) -> Tensor:
        """M, dense (its pending updates folded in)."""
        return self._m.dense

    @property
    def a(self) -> Tensor:
        """A, dense (its pending updates folded in)."""
        return self._a.dense

    # ------------------------------------------------------------------ linear algebra
    def _f(self, y: Tensor) -> Tensor:
        return self.fisher[:, None] * y if self.diagonal else sym_mm(self.fisher, y)

    def _trace_af(self) -> float:
        """tr(A F) with the current A."""
        if self.diagonal:
            return float(self.a.diagonal() @ self.fisher)
        return float(torch.dot(self.a.reshape(-1), self.fisher.reshape(-1)))

    def dense_row(self, row: FisherEmbeddings) -> Tensor:
        return self.root * row.to(self.fisher.device).to_dense(torch.float64)[0]    # Ṽ_s, [C, k]

    def _solve(self, v: Tensor, sign: int) -> Tensor:
        """y = (M + sign·ṼᵀṼ)⁻¹ Ṽᵀ for sign 0 (M itself) or −1 (M with s removed, ≥ λI):
        iterative refinement preconditioned by A (by A's removal update for sign −1), with a
        Cholesky solve when it does not converge.  It stops as soon as the residual r bounds the
        error below 1e-13 (‖y − y*‖ ≤ ‖r‖/λ), which with an accurate A is before any correction:
        one product with A and one with M."""
        rhs = v.T.contiguous()
        if sign == 0:
            pre = self._a.mm
        else:
            a = self._a.mm(rhs)
            s = v @ a
            s.diagonal().sub_(1.0)
            s_inv = torch.linalg.pinv(s)
            pre = lambda r: self._a.mm(r) - a @ (s_inv @ (a.T @ r))  # noqa: E731
        op = lambda y: self._m.mm(y) + sign * (rhs @ (v @ y))  # noqa: E731
        y = pre(rhs)
        last, floor = math.inf, 1e-13 * self.lam
        for _ in range(10):
            r = rhs - op(y)
            if float(r.norm()) <= floor * float(y.norm()):
                return y  # the matrix is ≥ λI: ‖y − y*‖ ≤ ‖r‖/λ ≤ 1e-13‖y‖, no correction needed
            dy = pre(r)
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
        v = self.dense_row(row)
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

    def tolerance(self, score: float) -> float:
        """How far a maintained score may be from the exact ``score``."""
        rtol = RTOL if self.compute_dtype == torch.float64 else RTOL32
        return rtol * abs(score) + 1e-10 * abs(self.objective)

    def check(self, ev: dict, maintained: float) -> bool:
        """Whether the maintained score agrees with the exact one (and the largest relative
        error measured since the last reset)."""
        self.stats["checks"] += 1
        err = abs(maintained - ev["score"])
        if math.isfinite(err):
            self.err_max = max(self.err_max, err / max(abs(ev["score"]), 1e-300))
        return bool(err <= self.tolerance(ev["score"]))

    def margin(self, ev: dict) -> float | None:
        """How far below the winner's exact score e another candidate's maintained score must be
        to be passed over without an exact score: 2·(max(floor, 8·err_max)·|e| + 1e-10·tr(AF))
        (``MARGIN_FLOOR``); None for a round run in float64 products from the start, which
        compares maintained scores only."""
        if not self.resolve_contenders:
            return None
        rel = max(MARGIN_FLOOR[self.compute_dtype], 8 * self.err_max)
        return 2 * (rel * abs(ev["score"]) + 1e-10 * abs(self.objective))

    def switch_to_float64(self) -> None:
        """The shards' products run in float64 from now on."""
        self.compute_dtype = torch.float64
        self.err_max = 0.0

    def to_float64(self) -> Tensor:
        """Switch the round to float64 products after a failed check; returns A (rebuilt) for
        the shards' reset."""
        self.stats["float64_resets"] += 1
        self.switch_to_float64()
        return self.rebuild()

    def rebuild(self) -> Tensor:
        """A ← M⁻¹ (fresh Cholesky); returns A for the shards' reset."""
        self.stats["rebuilds"] += 1
        self.err_max = 0.0
        self._a = Updated(inverse(self.m))
        self.objective = self._trace_af()
        return self.a

    def final_objective(self) -> float:
        """tr(M⁻¹F) from a fresh factorisation of M: the running value (objective minus each
        step's score) and the updated A drift on ill-conditioned problems (3e-5 relative at
        λ = 1e-4), although every pick is verified."""
        a = inverse(self.m)
        if self.diagonal:
            return float(a.diagonal() @ self.fisher)
        return float(torch.dot(a.reshape(-1), self.fisher.reshape(-1)))

    def accept(self, ev: dict):
        """Apply an evaluated step: M exactly, A ← A − a S⁻¹ aᵀ with a = y.  Returns the shards'
        update (g, sign, X = √w_S [a L | A F a L], K' = Lᵀ (aᵀFa) L) with S⁻¹ = sign·L Lᵀ (a
        Cholesky factor: ±S⁻¹ is positive definite for an addition and a removal alike)."""
        y, s_inv = ev["y"], ev["s_inv"]
        # A F a (A before): it only enters the shards' products, so in their dtype
        b = self._a.mm_low(ev["fy"], self.compute_dtype)
        eye = torch.eye(len(s_inv), dtype=s_inv.dtype, device=s_inv.device)
        self._m.add(ev["v"].T, float(ev["sign"]) * eye)
        self._a.add(y, -s_inv)
        self.objective -= ev["score"]
        low = torch.linalg.cholesky(ev["sign"] * s_inv)
        x = self.root * torch.cat([y @ low, b @ low], dim=1)
        return ev["g"], ev["sign"], x, low.T @ ev["k"] @ low


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


def _key(v: Tensor) -> bytes:
    return v.cpu().numpy().tobytes()


def _contenders(group: ShardGroup, driver: GreedyDriver, reports, ev: dict, forward: bool):
    """With float32 products: score exactly every candidate whose maintained score is within the
    margin of the winner's exact score.  Returns (the best exact evaluation, ties → lowest index;
    the evaluation of a candidate whose maintained score failed the check, or None)."""
    margin = driver.margin(ev)
    if margin is None:
        return ev, None
    threshold = ev["score"] - margin
    others = [r.runner_up if r[1] == ev["g"] else r[0] for r in reports if r is not None]
    if not any(x >= threshold for x in others):  # one round trip: the reports tell
        return ev, None
    best, seen = ev, {_key(ev["v"]): ev}
    for score, g, row in group.contenders(threshold, forward):
        if g == ev["g"]:
            continue
        key = _key(driver.dense_row(row))
        if key in seen:  # the same embedding: the same exact score
            other = dict(seen[key], g=g)
        else:
            other = seen[key] = driver.evaluate(row, g, forward)
            driver.stats["contenders"] += 1
        if not driver.check(other, score):
            return ev, other
        if other["score"] > best["score"] or (other["score"] == best["score"] and g < best["g"]):
            best = other
    return best, None


def _verified_pick(group: ShardGroup, driver: GreedyDriver, reports, forward: bool):
    """The step's winner, verified (module docstring); returns (its evaluation, the reports)."""
    rebuilt = False
    while True:
        score, g, row = _global_best(reports)
        ev = driver.evaluate(row, g, forward)
        bad = ev
        if driver.check(ev, score):
            ev, bad = _contenders(group, driver, reports, ev, forward)
            if bad is None:
                return ev, reports
        if not rebuilt:
            rebuilt = True
            reports = group.reset(driver.rebuild(), forward)
        elif driver.compute_dtype != torch.float64:
            reports = group.reset(driver.to_float64(), forward, torch.float64)
        else:
            driver.stats["overrides"] += 1
            reports = group.override(bad["g"], bad["score"], forward)


def run_greedy(group: ShardGroup, driver: GreedyDriver, num_candidates: int, n: int,
               oversample: int = 1, objective: bool = True):
    """Drive the shards of ``group`` (one round trip per step, more only to re-score contenders
    or after a failed check).  Returns (global indices kept, in the order they were added;
    diagnostics).  ``objective``: put tr(M_S⁻¹F) of the picks, from a fresh factorisation of M
    (a k³ cost the picks do not need), in the diagnostics; None there otherwise."""
    t0 = time.perf_counter()
    n_fwd, n_bwd = greedy_steps(num_candidates, n, oversample)
    probe = BusyProbe()  # the other processes' CPU use while the initialisation runs
    form = driver.first_form(group.stacked_rows)
    reports = group.reset(None if isinstance(form, Eigen) else driver.a, True, None, form)
    with step_threads(probe.others()):
        order = _steps(group, driver, reports, n_fwd, n_bwd)
    info = dict(driver.stats, steps=n_fwd + n_bwd, seconds=time.perf_counter() - t0,
                objective=(driver.final_objective() if order else float("nan")) if objective
                else None)
    return order, info


def _steps(group: ShardGroup, driver: GreedyDriver, reports, n_fwd: int, n_bwd: int) -> list:
    """The forward then backward steps; the kept global indices in the order they were added."""
    order: list[int] = []
    pending = None
    for step in range(n_fwd + n_bwd):
        forward = step < n_fwd
        if pending is not None:
            reports = group.advance(pending, forward)
        if not forward and driver.compute_dtype != torch.float64:
            # the removals in float64 products, on the selected rows only: −I + P_s is nearly
            # singular where s alone covers a direction, and it would amplify float32 rounding
            driver.switch_to_float64()
            reports = group.reset(driver.a, False, torch.float64)
        ev, reports = _verified_pick(group, driver, reports, forward)
        pending = driver.accept(ev)
        if forward:
            order.append(ev["g"])
        else:
            order.remove(ev["g"])
    return order


__all__ = ["GreedyDriver", "MARGIN_FLOOR", "RTOL", "RTOL32", "check_memory", "greedy_memory_gb",
           "greedy_steps", "run_greedy", "weights"]
