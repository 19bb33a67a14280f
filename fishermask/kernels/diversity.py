"""Diversity kernels: k-center greedy and BADGE's k-means++ seeding (torch/numpy only).

Both run on candidates split into shards (:class:`KCenterShard`, :class:`BadgeShard`) that keep
their rows and O(rows) state where they were computed; a driver (:func:`kcenter_select`,
:func:`badge_select`) talks to them through a :class:`~fishermask.kernels._group.Resident`, one
call per pick, and holds nothing of size |pool|.  Neither forms a pool × pool or pool × batch
distance matrix, nor BADGE's C·d gradient embeddings: distances are computed block by block
(``rows`` candidates × ``chunk`` centers at a time).

**Sharding rule (bitwise determinism).**  Every per-candidate number is computed inside a block
of ``rows`` candidates whose boundaries are multiples of ``rows`` in the global candidate order,
and every sum over candidates adds per-block sums in global block order, so any number of shards
(boundaries on multiples of ``rows``) picks exactly what one shard picks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fishermask.kernels._checks import check_n
from fishermask.kernels._group import LocalResident, Resident
from fishermask.kernels._reduction import take_rows

ROWS = 2048
"""Candidates per block (block boundaries are multiples of ROWS in the global order)."""
CENTERS = 2048
"""Centers per distance block of k-center's initialisation (a block: ROWS × CENTERS float64)."""


def _sq_dists(x: Tensor, y: Tensor, x_sq: Tensor, y_sq: Tensor) -> Tensor:
    """‖x_i − y_j‖² = ‖x_i‖² + ‖y_j‖² − 2 x_i·y_j, clamped at 0 (float64)."""
    return (x_sq[:, None] + y_sq[None, :] - 2.0 * (x @ y.T)).clamp_min_(0.0)


def _best(reports: list):
    """The largest score of the shards' reports (ties: lowest global index)."""
    live = [r for r in reports if r is not None]
    return max(live, key=lambda r: (r[0], -r[1])) if live else None


class _BlockShard:
    """Candidates [offset, offset + m) in blocks of ``rows`` aligned on global multiples."""

    def __init__(self, m: int, offset: int, rows: int):
        if rows < 1 or offset < 0 or offset % rows:
            raise ValueError(f"offset ({offset}) must be a non-negative multiple of rows ({rows})")
        self.offset, self.size, self.rows = int(offset), int(m), int(rows)
        self.blocks = [(a, min(a + rows, m)) for a in range(0, m, rows)]
        self.chosen = torch.zeros(m, dtype=torch.bool)

    def __len__(self) -> int:
        return self.size

    def _f64(self, rows: Tensor, j: int) -> Tensor:
        """Block j of ``rows`` (this shard's candidates) in float64."""
        a, b = self.blocks[j]
        return rows[a:b].to(torch.float64)

    def _sq_norms(self, rows: Tensor) -> Tensor:
        """‖row‖² of every candidate (float64), block by block."""
        if not len(rows):
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([(x * x).sum(1) for x in (self._f64(rows, j)
                                                    for j in range(len(self.blocks)))])

    def _local(self, g: int):
        """The local row of global candidate ``g``, or None when another shard holds it."""
        i = g - self.offset
        return i if 0 <= i < self.size else None

    def _report(self, score: Tensor):
        """(score, global index, row payload) of the best unchosen candidate (ties: lowest)."""
        score = score.masked_fill(self.chosen, float("-inf"))
        if self.chosen.all():
            return None
        i = int(torch.argmax(score))
        return float(score[i]), self.offset + i, self._payload(i)

    def _payload(self, i: int):  # pragma: no cover - abstract
        """Row i's numbers the other shards need when it is picked: copies (a pickled view would
        carry its whole storage to the driver and back to every shard)."""
        raise NotImplementedError


class KCenterShard(_BlockShard):
    """k-center greedy's candidates z [m, d] (kept in their dtype), ‖z‖² and the squared
    distance to the nearest center, min_d (float64)."""

    def __init__(self, z: Tensor, offset: int, *, rows: int = ROWS):
        super().__init__(len(z), offset, rows)
        self.z = z
        self.z_sq = self._sq_norms(z)
        self.min_d = torch.full((len(z),), float("inf"), dtype=torch.float64)

    @classmethod
    def from_batches(cls, outputs: list, offset: int) -> "KCenterShard":
        """The shard of a resident computation's per-batch features (its ``make``)."""
        return cls(take_rows(outputs, "cpu"), offset)

    def _z64(self, j: int) -> Tensor:
        return self._f64(self.z, j)

    def _payload(self, i: int):
        return self.z[i].to(torch.float64, copy=True), self.z_sq[i:i + 1].clone()

    def add_centers(self, c: Tensor) -> None:
        """min_d ← min(min_d, min_c ‖z − c‖²) for a chunk of centers ``c`` (float64)."""
        c_sq = (c * c).sum(1)
        for j, (a, b) in enumerate(self.blocks):
            d = _sq_dists(self._z64(j), c, self.z_sq[a:b], c_sq).min(dim=1).values
            self.min_d[a:b] = torch.minimum(self.min_d[a:b], d)

    def block_sums(self) -> list[Tensor]:
        """Σ z over each block (float64), in block order."""
        return [self._z64(j).sum(0) for j in range(len(self.blocks))]

    def farthest_from(self, centre: Tensor):
        """The candidate farthest from ``centre`` (the first pick when there are no centers)."""
        return self._report(torch.cat([((self._z64(j) - centre) ** 2).sum(1)
                                       for j in range(len(self.blocks))]))

    def best(self):
        """The unchosen candidate farthest from its nearest center."""
        return self._report(self.min_d)

    def pick(self, g: int, payload) -> tuple:
        """Candidate ``g`` (its payload: z_g in float64 and ‖z_g‖²) becomes a center; the best."""
        z_g, z_sq_g = payload
        i = self._local(g)
        if i is not None:
            self.chosen[i] = True
        for j, (a, b) in enumerate(self.blocks):
            d = _sq_dists(self._z64(j), z_g[None], self.z_sq[a:b], z_sq_g)[:, 0]
            self.min_d[a:b] = torch.minimum(self.min_d[a:b], d)
        return self.best()


def kcenter_select(group: Resident, centers: Tensor, n: int, *, chunk: int = CENTERS) -> Tensor:
    """Greedy k-center (core-set) selection over the candidates of ``group`` (KCenterShards).

    With initial centers c ∈ ``centers`` (the labeled points' features), repeat ``n`` times:
    add argmax_{x ∈ candidates∖S} min_{c ∈ centers ∪ S} ‖z_x − z_c‖² (ties: lowest index).
    Without initial centers the first pick is the candidate farthest from the candidates' mean.
    Distances in float64, ``chunk`` centers at a time.  Returns positions in the candidate order.
    """
    C = centers.to(torch.float64)
    chunk = max(1, int(chunk))
    for start in range(0, len(C), chunk):
        group.run(KCenterShard.add_centers, C[start:start + chunk], changes=True)
    picks: list[int] = []
    if n > 0:
        if len(C):
            report = _best(group.run(KCenterShard.best))
        else:
            total = group.bounds[-1][1]
            centre = sum(s for part in group.run(KCenterShard.block_sums) for s in part) / total
            report = _best(group.run(KCenterShard.farthest_from, centre))
        while True:
            picks.append(report[1])
            if len(picks) == n:
                break
            report = _best(group.run(KCenterShard.pick, report[1], report[2], changes=True))
    return torch.tensor(picks, dtype=torch.long)


def kcenter_greedy(candidates: Tensor, centers: Tensor, n: int, *, chunk: int = CENTERS,
                   rows: int = ROWS) -> Tensor:
    """Greedy k-center on ``candidates`` in this process (:func:`kcenter_select`; candidates
    stay in their dtype, each block of ``rows`` is converted to float64 when it is used).

    Returns positions into ``candidates`` in pick order.
    """
    n = check_n(n, len(candidates))
    shards = [KCenterShard(candidates, 0, rows=rows)] if len(candidates) else []
    return kcenter_select(LocalResident(shards), centers, n, chunk=chunk)


def badge_embedding_factors(probs: Tensor) -> Tensor:
    """a_x = e_ŷ − p(x) with ŷ = argmax p (the hallucinated label); g_x = a_x ⊗ h_x."""
    a = -probs.to(torch.float64).clone()
    a[torch.arange(len(a)), probs.argmax(1)] += 1.0
    return a


class BadgeShard(_BlockShard):
    """BADGE's candidates: a = e_ŷ − p (float64), h (kept in its dtype), ‖g‖² = ‖a‖²‖h‖² and D²,
    the squared distance of g to the nearest chosen center (float64)."""

    def __init__(self, probs: Tensor, features: Tensor, offset: int, *, rows: int = ROWS):
        super().__init__(len(probs), offset, rows)
        self.a, self.h = badge_embedding_factors(probs), features
        self.y_hat = probs.argmax(1).to(torch.int32)
        self.g_sq = (self.a * self.a).sum(1) * self._sq_norms(features)
        self.D2 = torch.full((len(probs),), float("inf"), dtype=torch.float64)

    @classmethod
    def from_batches(cls, outputs: list, offset: int) -> "BadgeShard":
        """The shard of a resident computation's per-batch ``{"probs", "features"}``."""
        out = take_rows(outputs, "cpu")
        return cls(out["probs"], out["features"], offset)

    def _payload(self, i: int):
        return (self.a[i].clone(), self.h[i].to(torch.float64, copy=True),
                self.g_sq[i:i + 1].clone())

    def predicted(self, positions: list[int]) -> list[int]:
        """ŷ = argmax p of the candidates at ``positions`` that this shard holds."""
        local = [i for i in map(self._local, positions) if i is not None]
        return self.y_hat[local].tolist()

    def largest(self):
        """The candidate with the largest ‖g‖ (BADGE's first center)."""
        return self._report(self.g_sq)

    def _weights(self, j: int, uniform: bool) -> Tensor:
        a, b = self.blocks[j]
        if uniform:
            return (~self.chosen[a:b]).to(torch.float64)
        return self.D2[a:b].masked_fill(self.chosen[a:b], 0.0).clamp_min(0.0)

    def pick(self, g: int, payload) -> list[tuple[int, float, float]]:
        """Candidate ``g`` (payload: a_g, h_g in float64, ‖g_g‖²) becomes a center:
        D² ← min(D², ‖g_x − g_g‖²) with ‖g_x − g_g‖² = ‖g_x‖² + ‖g_g‖² − 2 (a_x·a_g)(h_x·h_g).
        Returns (global start, Σ D² of the unchosen, number unchosen) for each block."""
        a_g, h_g, g_sq_g = payload
        i = self._local(g)
        if i is not None:
            self.chosen[i] = True
        out = []
        for j, (a, b) in enumerate(self.blocks):
            d = self.g_sq[a:b] + g_sq_g - 2.0 * (self.a[a:b] @ a_g) * (self._f64(self.h, j) @ h_g)
            self.D2[a:b] = torch.minimum(self.D2[a:b], d.clamp_min(0.0))
            # the block's sum as draw() will add it up (the last running sum), bit for bit
            out.append((self.offset + a, float(torch.cumsum(self._weights(j, False), 0)[-1]),
                        float(b - a - int(self.chosen[a:b].sum()))))
        return out

    def draw(self, start: int, prefix: float, target: float, uniform: bool):
        """In the block starting at global ``start`` (when this shard holds it): the first
        candidate whose running weight prefix + Σ_{y ≤ x} w_y exceeds ``target``
        (w = D², or 1 when ``uniform``; chosen candidates weigh 0)."""
        i0 = self._local(start)
        if i0 is None:
            return None
        j = i0 // self.rows
        w = self._weights(j, uniform)
        hit = torch.nonzero(prefix + torch.cumsum(w, 0) > target)
        i = int(hit[0]) if len(hit) else int(torch.nonzero(w > 0)[-1])  # rounding at the end
        i += self.blocks[j][0]
        return None, self.offset + i, self._payload(i)


def badge_select(group: Resident, n: int, rng: np.random.Generator) -> Tensor:
    """BADGE: k-means++ seeding on g_x = (e_ŷ − p(x)) ⊗ h(x) over the candidates of ``group``
    (BadgeShards), never materialising g.

    The first center is the largest ‖g‖ (ties: lowest index); each next one is drawn ∝ D(x)²,
    D = distance to the nearest chosen center: u = ``rng.random()``, the first x (in candidate
    order) whose running sum Σ_{y ≤ x} D(y)² exceeds u · Σ D² (chosen points have D = 0; if
    Σ D² is 0 or not finite the draw is uniform over the rest).  The running sum adds per-block
    sums in block order (the module's sharding rule).  Returns positions in the candidate order.
    """
    picks: list[int] = []
    if n > 0:
        report = _best(group.run(BadgeShard.largest))
        while True:
            picks.append(report[1])
            if len(picks) == n:
                break
            blocks = [b for part in group.run(BadgeShard.pick, report[1], report[2],
                                              changes=True) for b in part]
            total = sum(s for _, s, _ in blocks)
            uniform = not np.isfinite(total) or total <= 0
            col = 2 if uniform else 1
            total = total if not uniform else sum(b[2] for b in blocks)
            target, prefix, chosen_block = float(rng.random()) * total, 0.0, None
            for block in blocks:
                if block[col] > 0:
                    chosen_block, before = block, prefix
                    if prefix + block[col] > target:
                        break
                prefix += block[col]
            report = next(r for r in group.run(BadgeShard.draw, chosen_block[0], before,
                                               target, uniform) if r is not None)
    return torch.tensor(picks, dtype=torch.long)


def badge_seeding(probs: Tensor, features: Tensor, n: int, rng: np.random.Generator, *,
                  rows: int = ROWS) -> Tensor:
    """BADGE's seeding (:func:`badge_select`) on ``probs`` [N, C] and ``features`` [N, d] in this
    process.  Returns positions into the rows of ``probs``/``features`` in pick order."""
    n = check_n(n, len(probs))
    shards = [BadgeShard(probs, features, 0, rows=rows)] if len(probs) else []
    return badge_select(LocalResident(shards), n, rng)
