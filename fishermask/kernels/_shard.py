"""One shard of the greedy's candidates: their embeddings (stored once) and C×C state each.

The objective is tr(M_S⁻¹ F), M_S = λI + w_L Σ_L V_xᵀV_x + w_S Σ_S V_xᵀV_x.  With A = M⁻¹ and
Ṽ_x = √w_S V_x, every candidate keeps only (float64)

    P_x = Ṽ_x A Ṽ_xᵀ,   Q_x = Ṽ_x A F A Ṽ_xᵀ,   score(x) = tr((±I + P_x)⁻¹ Q_x)

(+I: the decrease of tr(AF) when x is added; −I: when a selected x is removed, ≤ 0).  After the
driver adds (+) or removes (−) a point s, with a = A Ṽ_sᵀ, b = A F a, S = ±I + Ṽ_s a,
K = aᵀFa and [g | h] = Ṽ_x [a | b], every candidate's state becomes

    P_x ← P_x − g S⁻¹ gᵀ,   Q_x ← Q_x − g S⁻¹ hᵀ − h S⁻¹ gᵀ + g S⁻¹ K S⁻¹ gᵀ,

one streaming product of the stored embeddings with a k×2C matrix per step (O(C²·k) flops per
candidate), block by block; the driver sends the update with S⁻¹'s Cholesky factor folded in
(:meth:`GreedyShard.apply`), so that the C×C work is two batched products per block.  In the
backward phase only selected rows are kept current (it looks at nothing else).

**Precision.**  The large products (V_x A, V_x A F A or (V_x A) F, V_x W, and V_x X) run in the
shard's ``compute_dtype``: float32 (what :func:`~fishermask.kernels.greedy.fisher_greedy` and the
strategies use) or float64.  So do the small products that turn a step's [G | H] (themselves
float32 numbers) into its C×C update, G Gᵀ and G Tᵀ; the state P, Q they are added to, the scores
and everything in the driver are float64.  The driver keeps M exactly and verifies every pick
(``kernels/_driver.py``), so float32 changes the speed, not the picks.  On the CPU a forward step's
C×C work (the update and the scores) runs as one compiled loop over the candidates
(``kernels/_fused.py``), which accumulates G Gᵀ and G Tᵀ in float64.  The first P, Q come from
one of A's forms (``kernels/_forms.py``): with the eigen form, Z = V_x W gives P = w_S Z Zᵀ and
Q = w_S Z diag(d) Zᵀ (one product per candidate).  From A itself, Q is formed as Z F Zᵀ with
Z = V_x A (the Z already formed for P) when F is diagonal or the embeddings have no factored block,
and as V_x (A F A) V_xᵀ otherwise (the factored block's product with a k×k matrix costs d·k per row
instead of C·k, so forming A F A once is cheaper).

**Sharding rule (bitwise determinism).**  Every per-candidate number is computed inside a block of
``chunk`` rows whose boundaries are multiples of ``chunk`` in *global* index, so it does not depend
on which other candidates share the shard: ``offset`` is a multiple of ``chunk`` and every shard but
the last has a multiple of ``chunk`` rows (:func:`shard_bounds`).  Then any sharding picks exactly
what one shard picks (same chunk, device type, dtypes and BLAS threading).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fishermask.kernels import _fused
from fishermask.kernels._forms import Eigen
from fishermask.kernels._reduction import FISHER_BLOCK, take_rows, tree_cover, tree_nodes
from fishermask.kernels.embeddings import FisherEmbeddings

CHUNK = 256
"""Rows per processing block; block boundaries are multiples of CHUNK in global index."""


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


class Best(tuple):
    """A shard's report: the 3-tuple (maintained score, global index, embedding row) of its best
    eligible candidate, with ``runner_up``, the shard's second-best eligible maintained score
    (−inf when there is none): the driver uses it to know, without another round trip, whether
    any other candidate comes within the verification margin of the winner's exact score."""

    runner_up: float

    def __new__(cls, score: float, g: int, row, runner_up: float = float("-inf")):
        out = tuple.__new__(cls, (score, g, row))
        out.runner_up = float(runner_up)
        return out

    def __reduce__(self):
        return (Best, (self[0], self[1], self[2], self.runner_up))


def trace_solve(s: Tensor, q: Tensor, positive: bool = False) -> Tensor:
    """tr(S⁻¹ Q) for batches of C×C matrices (float64); −inf where S is singular.
    ``positive``: S is positive definite (a forward step's I + P), so S⁻¹ is taken whole and
    tr(S⁻¹ Q) = Σᵢⱼ (S⁻¹)ᵢⱼ Qⱼᵢ (a third faster than a solve for C = 10)."""
    if positive:
        inv, info = torch.linalg.inv_ex(s)
        out = (inv * q.transpose(-2, -1)).sum((-2, -1))
    else:
        sol, info = torch.linalg.solve_ex(s, q)
        out = sol.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.where(info == 0, out, torch.full_like(out, float("-inf")))


class GreedyShard:
    """The candidates [offset, offset + m) of one greedy run: their embeddings, kept where they
    were computed, and the greedy's state on them (see the module docstring).

    The operations, driven through a :class:`~fishermask.kernels._group.ShardGroup` (any number of
    shards): :meth:`gram_nodes` (this shard's part of Σ V_xᵀV_x), :meth:`start` (the round's F and
    w_S), ``reset(A, forward)`` builds P, Q from A; ``advance(update, forward)`` applies the last
    winner's update and reports ``(score, global index, embedding row)`` of the best local
    candidate (or None); ``override(g, score, forward)`` replaces one maintained score by an exact
    one.
    """

    def __init__(self, emb: FisherEmbeddings, offset: int, *, chunk: int = CHUNK):
        if chunk < 1 or offset < 0 or offset % chunk:
            raise ValueError(f"offset ({offset}) must be a non-negative multiple of chunk ({chunk})")
        self.emb, self.offset, self.size, self.chunk = emb, int(offset), len(emb), int(chunk)
        self.device = emb.device
        self._views = None

    @classmethod
    def from_batches(cls, outputs: list, offset: int) -> "GreedyShard":
        """The shard of a resident computation's per-batch embeddings ``outputs`` (its ``make``)."""
        return cls(take_rows(outputs), offset)

    def __len__(self) -> int:
        return self.size

    def nbytes(self) -> int:
        return self.emb.nbytes()

    # ------------------------------------------------------------------ target Fisher
    def gram_nodes(self, n_leaves: int, diagonal: bool) -> dict:
        """Tree nodes of Σ V_xᵀV_x over this shard's leaves (FISHER_BLOCK rows each; ``offset`` is
        a multiple of FISHER_BLOCK) in the tree over ``n_leaves`` leaves; dense sums are valid in
        their upper triangle only (the caller mirrors the total once: ``mirror_upper``)."""
        first = self.offset // FISHER_BLOCK
        last = -(-(self.offset + self.size) // FISHER_BLOCK) if self.size else first
        leaves = (self.emb.rows(slice(start, start + FISHER_BLOCK)).gram(diagonal, upper=True)
                  for start in range(0, self.size, FISHER_BLOCK))
        return tree_nodes(tree_cover(first, last, n_leaves), n_leaves, leaves)

    # ------------------------------------------------------------------ greedy state
    def start(self, fisher: Tensor, w_s: float, compute_dtype=torch.float64) -> int:
        """The round's target F, weight w_S and the dtype of the large products; zero state (a
        :meth:`reset` fills it).  The state P, Q and the scores are float64 in any case.
        Returns the shard's stacked rows (candidates × C), what its products stream."""
        self.fisher = fisher.to(device=self.device, dtype=torch.float64)
        self.root_w = float(w_s) ** 0.5
        c = self.emb.num_rows
        self.p = torch.zeros(self.size, c, c, dtype=torch.float64, device=self.device)
        self.q = torch.zeros_like(self.p)
        self.selected = torch.zeros(self.size, dtype=torch.bool, device=self.device)
        self.scores = torch.full((self.size,), float("-inf"), dtype=torch.float64,
                                 device=self.device)
        self.sign = 1
        self._reverse = False  # the direction of the last pass over the blocks (apply)
        self._eye = torch.eye(c, dtype=torch.float64, device=self.device)
        self.removing = False  # in the backward phase only selected rows are current
        self._set_dtype(compute_dtype)
        return self.size * c

    def _set_dtype(self, compute_dtype) -> None:
        """The dtype of the large products, F in it, and a work buffer for the dense block."""
        self.dtype = compute_dtype
        self._fisher_c = self.fisher.to(compute_dtype)
        emb, c = self.emb, self.emb.num_rows
        cast = emb.dense is not None and emb.dense.dtype != compute_dtype
        # one chunk's dense block in the compute dtype, reused by every product (no allocation)
        self._work = (torch.empty(min(self.chunk, self.size) * c * emb.k_dense, dtype=compute_dtype,
                                  device=self.device) if cast and self.size else None)

    # ------------------------------------------------------------------ helpers
    def _blocks(self, only_selected: bool, reverse: bool = False):
        """(local row index or slice, embedding rows) per chunk-aligned block (last block first
        with ``reverse``)."""
        if self._views is None:  # each block's slice and embedding rows (views), made once
            self._views = [(sl, self.emb.rows(sl)) for sl in
                           (slice(start, min(start + self.chunk, self.size))
                            for start in range(0, self.size, self.chunk))]
        for sl, rows in (reversed(self._views) if reverse else self._views):
            if only_selected:
                idx = torch.nonzero(self.selected[sl]).flatten()
                if idx.numel():
                    idx = idx + sl.start
                    yield idx, self.emb.rows(idx)
            else:
                yield sl, rows

    def _local(self, g: int) -> int:
        i = int(g) - self.offset
        if not 0 <= i < self.size:
            raise IndexError(f"global index {g} is not in this shard [{self.offset}, "
                             f"{self.offset + self.size})")
        return i

    def owns(self, g: int) -> bool:
        return 0 <= int(g) - self.offset < self.size

    def _score_rows(self, idx) -> None:
        s = self.p[idx] + self._eye * float(self.sign)
        self.scores[idx] = trace_solve(s, self.q[idx], positive=self.sign > 0)

    def _rescore(self) -> None:
        self.scores.fill_(float("-inf"))
        for idx, _ in self._blocks(self.removing):
            self._score_rows(idx)

    # ------------------------------------------------------------------ protocol
    def reset(self, a_mat: Optional[Tensor], forward: bool, compute_dtype=None,
              form=None) -> Best | None:
        """P_x = Ṽ_x A Ṽ_xᵀ and Q_x = Ṽ_x A F A Ṽ_xᵀ from A (all rows, or only the selected ones
        once removals started), then the best candidate of direction ``forward``.
        ``compute_dtype``: switch the large products to this dtype first (None: keep it).
        ``form`` (``kernels/_forms.py``): None (A itself); ``Eigen(W, d)``, A = W Wᵀ and
        A F A = W diag(d) Wᵀ, so that one product Z = V_x W gives P_x = w_S Z Zᵀ and
        Q_x = w_S Z diag(d) Zᵀ (``a_mat`` may then be None); ``Woodbury(λ, U)``,
        A = λ⁻¹(I − U Uᵀ) with U k×m, m < k: where Q is formed from A F A (it then needs no
        V_x A), P_x = (w_S/λ)(V_xV_xᵀ − (V_xU)(V_xU)ᵀ) costs C·k·m flops per row instead of C·k²."""
        if compute_dtype is not None and compute_dtype != self.dtype:
            self._set_dtype(compute_dtype)
        if isinstance(form, Eigen):
            self._reset_eigen(form)
        else:
            self._reset_plain(a_mat.to(device=self.device, dtype=self.dtype), form)
        self._reverse = False
        self.sign = 1 if forward else -1
        self._rescore()
        return self.best(forward)

    def _reset_eigen(self, form: Eigen) -> None:
        w_mat = form.w.to(device=self.device, dtype=self.dtype)
        d = form.d.to(device=self.device, dtype=self.dtype)
        w, f64 = self.root_w ** 2, torch.float64
        for idx, rows in self._blocks(self.removing):
            z = rows.matmul(w_mat, self._work)                                 # V_x W
            zt = z.transpose(1, 2)
            self.p[idx] = w * torch.bmm(z, zt).to(f64)
            self.q[idx] = w * torch.bmm(z * d, zt).to(f64)

    def _reset_plain(self, a_mat: Tensor, low_rank) -> None:
        f, w, f64 = self._fisher_c, self.root_w ** 2, torch.float64
        via_z = f.dim() == 1 or self.emb.features is None
        afa = None
        if not via_z:  # A F A once, then Q_x like P_x: d·k flops per row on the factored block
            afa = a_mat @ f @ a_mat
            afa = ((afa + afa.T) / 2).contiguous()
        if via_z or low_rank is None:
            low_rank = None
        else:
            lam, u = float(low_rank.lam), low_rank.u.to(device=self.device, dtype=self.dtype)
        for idx, rows in self._blocks(self.removing):
            if low_rank is not None:                                           # Woodbury
                y = rows.matmul(u, self._work)                                 # V_x U
                vv = rows.row_gram(self.dtype) - torch.bmm(y, y.transpose(1, 2))
                self.p[idx] = (w / lam) * vv.to(f64)
            else:
                z = rows.matmul(a_mat, self._work)                             # V_x A
                self.p[idx] = w * rows.rowdot(z).to(f64)                       # Ṽ_x A Ṽ_xᵀ
            if via_z:                                                          # (V_x A) F (V_x A)ᵀ
                zf = z * f if f.dim() == 1 else (z.reshape(-1, z.shape[2]) @ f).view(z.shape)
                self.q[idx] = w * torch.bmm(zf, z.transpose(1, 2)).to(f64)
            else:
                self.q[idx] = w * rows.rowdot(rows.matmul(afa, self._work)).to(f64)

    def advance(self, update, forward: bool):
        """Apply ``update`` (None, or (g, sign, X, K') from the driver) and report the best.
        From the first backward step on only the selected rows are kept current."""
        if forward and self.removing:
            raise RuntimeError("forward scores are unavailable after a removal step")
        self.removing = self.removing or not forward
        if update is not None:
            self.apply(*update)
        want = 1 if forward else -1
        if want != self.sign:
            self.sign = want
            self._rescore()
        return self.best(forward)

    def apply(self, g: int, sign: int, x: Tensor, k_mat: Tensor) -> None:
        """Add (sign σ = +1) or remove (−1) the winner g: mark it, update P, Q and the scores.

        With S⁻¹ = σ L Lᵀ, X = √w_S [a L | b L] and K' = Lᵀ K L from the driver, g S⁻¹ gᵀ = σ G Gᵀ
        (G = V_x a L √w_S) and the update of the module docstring is P ← P − σ G Gᵀ,
        Q ← Q + W + Wᵀ with W = G Tᵀ, T = G K'/2 − σ H.  T is linear in V_x, so one product
        [G | T] = V_x [X_a | X_a K'/2 − σ X_b] gives both, and one batched product
        G [Gᵀ | Tᵀ] gives G Gᵀ and G Tᵀ (both in the compute dtype, added to the float64 P, Q).
        Q only enters the scores as tr(S⁻¹ Q) with a symmetric S⁻¹, which equals tr(S⁻¹ (Q + 2W))
        as well as tr(S⁻¹ (Q + W + Wᵀ)): Q is updated by 2W and kept up to an antisymmetric part
        that no score sees (one pass over Q instead of two).
        The blocks are visited in alternate directions from one step to the next, so that the
        embeddings a step read last are still in the CPU's cache when the next step starts."""
        self.mark(g, sign)
        self.sign = sign
        dev, dt, f64 = self.device, self.dtype, torch.float64
        c = k_mat.shape[0]
        x = x.to(device=dev, dtype=f64)
        x_a = x[:, :c]
        x = torch.cat([x_a, x_a @ (k_mat.to(device=dev, dtype=f64) / 2) - sign * x[:, c:]], dim=1)
        # column-major, so that the blocks' products, which take it transposed on one thread,
        # find it contiguous that way (no copy per block)
        x = x.to(dt).T.contiguous().T
        self.scores.fill_(float("-inf"))
        self._reverse = not self._reverse
        fused = sign > 0 and not self.removing and self.device.type == "cpu" and _fused.available()
        for idx, rows in self._blocks(self.removing, self._reverse):
            gt = rows.matmul(x, self._work)                                    # [G | T], [n, C, 2C]
            if fused:  # the C×C update and the scores in one compiled loop (kernels/_fused.py)
                _fused.forward_update(gt, self.p[idx], self.q[idx], self.scores[idx])
                continue
            n = gt.shape[0]
            # [Gᵀ | Tᵀ] per row: [n, C, 2C] with [m, (h, i)] = (G, T)[h][i, m]
            y = gt.view(n, c, 2, c).permute(0, 3, 2, 1).reshape(n, c, 2 * c)
            out = torch.bmm(y[:, :, :c].transpose(1, 2), y)                   # [G Gᵀ | G Tᵀ]
            self._add_rows(self.p, idx, out[:, :, :c], -sign)
            self._add_rows(self.q, idx, out[:, :, c:], 2)                     # Q + 2W (see above)
            self._score_rows(idx)
        if fused:
            self._rescore_failed(slice(0, self.size))

    def _rescore_failed(self, sl: slice) -> None:
        """Score by a general solve the rows whose I + P the compiled loop could not factor."""
        failed = torch.nonzero(torch.isnan(self.scores[sl])).flatten()
        if failed.numel():
            rows = failed + sl.start
            self.scores[rows] = trace_solve(self.p[rows] + self._eye, self.q[rows])

    @staticmethod
    def _add_rows(state: Tensor, idx, delta: Tensor, alpha: int) -> None:
        """state[idx] += alpha · delta (float64 state, delta in the compute dtype)."""
        if isinstance(idx, slice):
            state[idx].add_(delta, alpha=alpha)
        else:
            state[idx] = state[idx].add_(delta, alpha=alpha)

    def _eligible_scores(self, forward: bool):
        """(maintained scores with −inf where a candidate is not eligible, the eligible mask), or
        None when no candidate is eligible."""
        eligible = ~self.selected if forward else self.selected
        if not bool(eligible.any()):
            return None
        return torch.where(eligible, self.scores, torch.full_like(self.scores, float("-inf"))), \
            eligible

    def best(self, forward: bool) -> Best | None:
        """(score, global index, embedding row) of the best eligible candidate, ties → lowest
        index, with the runner-up's score (:class:`Best`).  None when no candidate is eligible."""
        found = self._eligible_scores(forward)
        if found is None:
            return None
        scores, eligible = found
        top = scores.max()
        hits = torch.nonzero((scores == top) & eligible).flatten()
        if not hits.numel():  # every eligible score is NaN
            hits = torch.nonzero(eligible).flatten()
        i = int(hits[0])
        rest = scores.clone()
        rest[i] = float("-inf")
        return Best(float(top), self.offset + i, self.emb.row_copy(i), float(rest.max()))

    def contenders(self, threshold: float, forward: bool) -> list:
        """(maintained score, global index, embedding row) of every eligible candidate whose
        maintained score is ≥ ``threshold``, in index order."""
        found = self._eligible_scores(forward)
        if found is None:
            return []
        scores, eligible = found
        idx = torch.nonzero((scores >= threshold) & eligible).flatten().tolist()
        return [(float(scores[i]), self.offset + i, self.emb.row_copy(i)) for i in idx]

    def mark(self, g: int, sign: int) -> None:
        """Mark g as added (sign +1) or removed (−1) without updating P, Q (a reset follows)."""
        if self.owns(g):
            self.selected[self._local(g)] = sign > 0
        if sign < 0:
            self.removing = True

    def override(self, g: int, score: float, forward: bool):
        """Replace the maintained score of candidate g (if here) by ``score``; report the best."""
        if self.owns(g):
            self.scores[self._local(g)] = float(score)
        return self.best(forward)

    @property
    def selected_indices(self) -> Tensor:
        return torch.nonzero(self.selected).flatten() + self.offset


__all__ = ["Best", "CHUNK", "GreedyShard", "shard_bounds", "trace_solve"]
