"""Fisher embeddings in structured form: a factored last-layer block and a dense block.

A Fisher embedding V_x ∈ R^{C×k} (row c = √p_c · g_{x,c} restricted to k weights) is stored as

    V_x = [ D(p_x) ⊗ h_xᵀ  |  R_x ]

* the **factored block** (k_f = C·d columns, class-major: column c'·d + j ↔ W[c', j] of the
  classifier weight W ∈ R^{C×d}): since ∇_W log p_c = (e_c − p) h(x)ᵀ, its row c is
  D[c, :] ⊗ h with D(p) = diag(√p)(I − 1pᵀ) (``prob_scaling``) or I − 1pᵀ (without √p).
  Stored as h (d numbers) and p (C numbers) instead of C·C·d;
* the **dense block** R_x ∈ R^{C×k_d}: any other masked weights (FisherMask's mask outside the
  classifier weight), stored as is in the storage dtype (float32 or bfloat16).

Either block may be absent.  Every product is taken in a compute dtype (float64 by default) on the
fly, one row block at a time, so the big arrays exist once.  :func:`fishermask.kernels.fisher.last_layer_embeddings`
is ``to_dense()`` of an embedding with only the factored block.

**Top-c classes** (:func:`restrict_top`, DAL-Toolbox's "fast fishing"): V_x keeps only the rows of
its c most probable classes t_1 … t_c, reweighted by the renormalised probabilities
p̂_j = p_{t_j} / Σ_i p_{t_i}: row j = √p̂_j · g_{x,t_j}, so V_xᵀV_x = Σ_j p̂_j g g ᵀ is the Fisher of
the model's prediction restricted to those classes.  The factored block keeps (h, p) and the
classes ``top`` [n, c]: D_top[j, c'] = √p̂_j (δ_{t_j c'} − p_{c'}); the dense block keeps its c
rows.  V_x then has c rows (``num_rows``) and still k = C·d + k_d columns; with c = C it is the
full Fisher (its rows permuted).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
from torch import Tensor

from fishermask.kernels import _narrow
from fishermask.kernels._symmetric import ata

STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
STORAGE_BYTES = {"float32": 4, "bfloat16": 2, "float64": 8}


def row_bytes(num_classes: int, d: int, k_dense: int, factored: bool,
              storage_dtype: str = "float32", top_c: Optional[int] = None) -> int:
    """Bytes of one stored embedding row: the dense block (C·k_d values, or c·k_d with ``top_c``)
    and, when ``factored``, the last-layer block as h (d values) in the storage dtype plus p
    (C float32 values) and the c classes (int64)."""
    size = STORAGE_BYTES[storage_dtype]
    rows = num_classes if top_c is None else top_c
    factored_bytes = d * size + num_classes * 4 + (0 if top_c is None else 8 * top_c)
    return k_dense * rows * size + (factored_bytes if factored else 0)


def top_classes(probs: Tensor, c: int) -> Tensor:
    """The c most probable classes of each row, most probable first (ties: the lower class)."""
    return torch.sort(probs, dim=1, descending=True, stable=True).indices[:, :c]


def top_coefficients(probs: Tensor, top: Tensor, prob_scaling: bool = True) -> Tensor:
    """D_top(p) [n, c, C]: D[j, c'] = √p̂_j (δ_{t_j c'} − p_{c'}), p̂_j = p_{t_j} / Σ_i p_{t_i}
    (δ − p without √p̂)."""
    coef = torch.nn.functional.one_hot(top, probs.shape[1]).to(probs.dtype) - probs[:, None, :]
    if not prob_scaling:
        return coef
    p_top = probs.gather(1, top)
    return (p_top / p_top.sum(1, keepdim=True)).sqrt()[:, :, None] * coef


def factored_coefficients(probs: Tensor, prob_scaling: bool = True) -> Tensor:
    """D(p) [n, C, C]: D[c, c'] = √p_c (δ_cc' − p_c') (or δ_cc' − p_c' without √p)."""
    n, c = probs.shape
    eye = torch.eye(c, dtype=probs.dtype, device=probs.device)
    coef = eye[None] - probs[:, None, :]
    return probs.sqrt()[:, :, None] * coef if prob_scaling else coef


@dataclass(frozen=True)
class FisherEmbeddings:
    """n embeddings V_x = [D(p_x) ⊗ h_xᵀ | R_x] (see the module docstring).

    ``features`` h [n, d] and ``probs`` p [n, C] give the factored block (both or neither),
    ``dense`` R [n, C, k_d] the dense block.  Column order: factored block first, then dense.
    ``top`` [n, c] (with the factored block): its rows are the classes ``top`` only, reweighted
    (top-c, see the module docstring); the dense block then has c rows too.
    """

    features: Optional[Tensor] = None
    probs: Optional[Tensor] = None
    dense: Optional[Tensor] = None
    prob_scaling: bool = True
    top: Optional[Tensor] = None

    def __post_init__(self):
        if (self.features is None) != (self.probs is None):
            raise ValueError("features and probs come together (the factored block needs both)")
        if self.features is None and self.dense is None:
            raise ValueError("an embedding needs a factored block (features, probs) or a dense block")
        if self.features is not None:
            if self.features.dim() != 2 or self.probs.dim() != 2 \
                    or len(self.features) != len(self.probs):
                raise ValueError(f"expected features [n, d] and probs [n, C], got "
                                 f"{tuple(self.features.shape)} and {tuple(self.probs.shape)}")
        if self.dense is not None:
            if self.dense.dim() != 3:
                raise ValueError(f"dense must have shape [n, C, k], got {tuple(self.dense.shape)}")
            rows = None if self.probs is None else (self.probs if self.top is None else self.top).shape
            if rows is not None and (len(self.dense), self.dense.shape[1]) != tuple(rows):
                raise ValueError(f"dense {tuple(self.dense.shape)} does not match "
                                 f"{'probs' if self.top is None else 'top'} {tuple(rows)} in n "
                                 f"and rows")
        if self.top is not None and (self.probs is None or self.top.dim() != 2
                                     or len(self.top) != len(self.probs)
                                     or self.top.shape[1] > self.probs.shape[1]):
            raise ValueError("top [n, c] (c ≤ C) comes with the factored block's probs [n, C]")

    # ------------------------------------------------------------------ shape
    def __len__(self) -> int:
        return len(self.dense) if self.dense is not None else len(self.features)

    @property
    def num_classes(self) -> int:
        """C (the classifier's classes)."""
        return self.probs.shape[1] if self.probs is not None else self.dense.shape[1]

    @property
    def num_rows(self) -> int:
        """Rows of each V_x: C, or c with top-c classes."""
        if self.top is not None:
            return self.top.shape[1]
        return self.dense.shape[1] if self.dense is not None else self.probs.shape[1]

    @property
    def d(self) -> int:
        return 0 if self.features is None else self.features.shape[1]

    @property
    def k_factored(self) -> int:
        return self.num_classes * self.d

    @property
    def k_dense(self) -> int:
        return 0 if self.dense is None else self.dense.shape[2]

    @property
    def k(self) -> int:
        return self.k_factored + self.k_dense

    @property
    def device(self) -> torch.device:
        return (self.dense if self.dense is not None else self.features).device

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size()
                   for t in (self.features, self.probs, self.dense, self.top) if t is not None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dense(cls, v: Tensor) -> "FisherEmbeddings":
        return cls(dense=v)

    def _map(self, fn) -> "FisherEmbeddings":
        f = lambda t: None if t is None else fn(t)  # noqa: E731
        return replace(self, features=f(self.features), probs=f(self.probs), dense=f(self.dense),
                       top=f(self.top))

    def rows(self, index) -> "FisherEmbeddings":
        """The rows ``index`` (a slice, or an index tensor)."""
        return self._map(lambda t: t[index])

    def row_copy(self, i: int) -> "FisherEmbeddings":
        """Row ``i`` in tensors of its own on the CPU: a slice is a view of the whole storage,
        which pickling (a shard's report to the driver) would send whole."""
        return self._map(lambda t: t[i:i + 1].to("cpu", copy=True))

    def to(self, device=None, storage_dtype: Optional[torch.dtype] = None) -> "FisherEmbeddings":
        """Moved to ``device``; features and the dense block cast to ``storage_dtype`` (probs stay
        in float32 or better)."""
        def move(t: Tensor, is_probs: bool = False) -> Tensor:
            dt = t.dtype if storage_dtype is None else storage_dtype
            if is_probs:
                dt = torch.promote_types(dt, torch.float32)
            return t.to(device=device or t.device, dtype=dt)

        return replace(self, features=None if self.features is None else move(self.features),
                       probs=None if self.probs is None else move(self.probs, True),
                       dense=None if self.dense is None else move(self.dense),
                       top=None if self.top is None else self.top.to(device=device or self.top.device))

    @staticmethod
    def cat(parts: Sequence["FisherEmbeddings"]) -> "FisherEmbeddings":
        parts = list(parts)
        first = parts[0]
        cat = lambda name: None if getattr(first, name) is None else torch.cat(  # noqa: E731
            [getattr(p, name) for p in parts])
        return FisherEmbeddings(cat("features"), cat("probs"), cat("dense"), first.prob_scaling,
                                cat("top"))

    def empty_like(self) -> "FisherEmbeddings":
        return self.rows(slice(0, 0))

    def check_finite(self, name: str, block_elements: int = 1 << 22) -> None:
        """Raise ValueError on NaN or ±inf; block by block (torch.isfinite on the whole tensor
        makes temporaries of about 1.75× its bytes)."""
        for t in (self.features, self.probs, self.dense):
            if t is None or not t.numel():
                continue
            rows = max(1, block_elements // max(1, t[0].numel()))
            for start in range(0, len(t), rows):
                if not bool(torch.isfinite(t[start:start + rows]).all()):
                    raise ValueError(f"{name} contains NaN or infinite values")

    # ------------------------------------------------------------------ products
    def coefficients(self, dtype=torch.float64) -> Tensor:
        """D(p) of every row, [n, C, C] (D_top(p), [n, c, C], with top-c classes)."""
        if self.top is not None:
            return top_coefficients(self.probs.to(dtype), self.top, self.prob_scaling)
        return factored_coefficients(self.probs.to(dtype), self.prob_scaling)

    def to_dense(self, dtype=torch.float32) -> Tensor:
        """V as a dense [n, C, k] tensor (factored columns first)."""
        parts = []
        if self.features is not None:
            coef = self.coefficients(dtype)
            h = self.features.to(dtype)
            parts.append((coef[..., None] * h[:, None, None, :]).reshape(len(self), self.num_rows, -1))
        if self.dense is not None:
            parts.append(self.dense.to(dtype))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def matmul(self, x: Tensor, work: Optional[Tensor] = None) -> Tensor:
        """V_x X for every row: X [k, m] → [n, C, m], in X's dtype.

        Factored block: (D ⊗ hᵀ) X_f = D · T with T[c', μ] = Σ_j h_j X_f[c'·d + j, μ].
        Returns [n, rows, m] (rows = C, or c with top-c classes).
        ``work``: an optional flat buffer of X's dtype for the dense block's cast (no allocation
        per call).  For a narrow X (a greedy step's k×2C update) in float32 or float64 on one CPU
        thread the dense product is the compiled kernel of ``kernels/_narrow.py`` (1.3–1.4×
        BLAS); where it cannot run it is taken as (Xᵀ Rᵀ)ᵀ, which BLAS runs up to 1.4× as fast as
        R X for few columns on one thread; with several CPU threads R X is faster (MKL
        parallelises it, not the other).
        """
        n, c, dt = len(self), self.num_classes, x.dtype
        out = None
        if self.features is not None:
            d, m = self.d, x.shape[1]
            xf = x[: c * d].reshape(c, d, m).permute(1, 0, 2).reshape(d, c * m)
            t = (self.features.to(dt) @ xf).reshape(n, c, m)
            out = torch.bmm(self.coefficients(dt), t)
        if self.dense is not None:
            r = self.dense.reshape(n * self.num_rows, -1)
            if r.dtype != dt:
                if work is not None and work.numel() >= r.numel() and work.dtype == dt:
                    r = work[: r.numel()].view(r.shape).copy_(r)
                else:
                    r = r.to(dt)
            xd = x[self.k_factored:]
            narrow = _narrow.product(r, xd) if _narrow.applies(r, xd) else None
            if narrow is not None:  # one CPU thread: kernels/_narrow.py
                dense = narrow.reshape(n, self.num_rows, -1)
            elif xd.shape[1] <= 64 and (r.device.type != "cpu" or torch.get_num_threads() == 1):
                dense = (xd.T.contiguous() @ r.T).T.reshape(n, self.num_rows, -1)
            else:
                dense = (r @ xd).reshape(n, self.num_rows, -1)
            out = dense if out is None else out + dense
        return out

    def rowdot(self, z: Tensor) -> Tensor:
        """Z_x V_xᵀ for every row: Z [n, C', k] (one matrix per row) → [n, C', rows], in Z's
        dtype."""
        dt, c = z.dtype, self.num_classes
        out = None
        if self.features is not None:
            n, cz = z.shape[:2]
            zf = z[..., : self.k_factored].reshape(n, cz, c, self.d)
            t = torch.einsum("nacj,nj->nac", zf, self.features.to(dt))       # Σ_j Z[a, c'·d+j] h_j
            out = torch.bmm(t, self.coefficients(dt).transpose(1, 2))        # · D(p)ᵀ
        if self.dense is not None:
            dense = torch.bmm(z[..., self.k_factored:], self.dense.to(dt).transpose(1, 2))
            out = dense if out is None else out + dense
        return out

    def row_gram(self, dtype=torch.float64) -> Tensor:
        """V_x V_xᵀ for every row, [n, rows, rows]: (D Dᵀ)·|h|² on the factored block plus
        R_x R_xᵀ on the dense one (the blocks are different columns: no cross term)."""
        out = None
        if self.features is not None:
            coef = self.coefficients(dtype)
            h = self.features.to(dtype)
            out = torch.bmm(coef, coef.transpose(1, 2)) * (h * h).sum(1)[:, None, None]
        if self.dense is not None:
            r = self.dense.to(dtype)
            dense = torch.bmm(r, r.transpose(1, 2))
            out = dense if out is None else out + dense
        return out

    def gram(self, diagonal: bool = False, dtype=torch.float64, upper: bool = False) -> Tensor:
        """Σ_x V_xᵀV_x over the rows: dense [k, k], or its diagonal [k] (``diagonal=True``).
        ``upper``: only the upper triangle need be valid (a sum of these is made symmetric once,
        by :func:`~fishermask.kernels._symmetric.mirror_upper`); the dense-only block then skips
        the mirroring (:func:`~fishermask.kernels._symmetric.ata`).

        Factored block: Σ_x (D_xᵀD_x)[c', c''] h_x h_xᵀ; cross block Σ_x h_x ⊗ (D_xᵀR_x).
        """
        c, d, kf = self.num_classes, self.d, self.k_factored
        parts = []
        if self.features is not None:
            coef = self.coefficients(dtype)
            g = torch.bmm(coef.transpose(1, 2), coef)                       # D_xᵀD_x [n, C, C]
            h = self.features.to(dtype)
            if diagonal:
                parts.append(torch.einsum("nc,nj->cj", g.diagonal(dim1=1, dim2=2), h * h).reshape(-1))
            else:
                gh = (g.reshape(len(self), c * c, 1) * h[:, None, :]).reshape(len(self), -1)
                ff = (gh.T @ h).reshape(c, c, d, d).permute(0, 2, 1, 3).reshape(kf, kf)
        if self.dense is not None:
            r = self.dense.to(dtype)
            if diagonal:
                parts.append((r * r).sum(dim=(0, 1)))
            else:
                dd = ata(r.reshape(-1, r.shape[2]), upper=upper and self.features is None)
        if diagonal:
            return torch.cat(parts) if len(parts) > 1 else parts[0]
        if self.features is None:
            return dd
        if self.dense is None:
            return ff
        cross = torch.einsum("nj,nck->cjk", h, torch.bmm(coef.transpose(1, 2), r)).reshape(kf, -1)
        return torch.cat([torch.cat([ff, cross], 1), torch.cat([cross.T, dd], 1)], 0)


def restrict_top(emb: FisherEmbeddings, c: int, probs: Optional[Tensor] = None) -> FisherEmbeddings:
    """The embeddings with each V_x restricted to its c most probable classes (module docstring):
    the factored block gets ``top``, the dense block keeps rows t_1 … t_c, scaled by
    1/√(Σ_j p_{t_j}) (√p̂_j / √p_{t_j}) when ``prob_scaling``.  ``probs`` [n, C]: the
    probabilities when ``emb`` has no factored block (which stores them)."""
    p = emb.probs if emb.probs is not None else probs
    top = top_classes(p, c)
    dense = None
    if emb.dense is not None:
        idx = top.to(emb.dense.device)[:, :, None].expand(-1, -1, emb.k_dense)
        dense = emb.dense.gather(1, idx)
        if emb.prob_scaling:
            mass = p.to(torch.float64).gather(1, top).sum(1)
            dense = (dense.to(torch.float64) / mass.sqrt()[:, None, None]).to(emb.dense.dtype)
    if emb.features is None:
        return replace(emb, dense=dense)
    return replace(emb, dense=dense, top=top.to(emb.features.device))


def as_embeddings(v, name: str) -> FisherEmbeddings:
    """A FisherEmbeddings, or a dense [n, C, k] tensor-like wrapped as one (no copy for float32)."""
    if isinstance(v, FisherEmbeddings):
        return v
    if not isinstance(v, Tensor):
        v = torch.as_tensor(v)
    if v.is_complex():
        raise ValueError(f"{name} must be real, got dtype {v.dtype}")
    if not v.is_floating_point():
        v = v.to(torch.float32)
    if v.dim() != 3:
        raise ValueError(f"{name} must have shape [n, C, k], got {tuple(v.shape)}")
    return FisherEmbeddings(dense=v)


def cat_embeddings(parts: list, empty: "FisherEmbeddings | None" = None):
    """The non-empty ``parts`` concatenated (one part as it is; ``empty`` when none)."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return empty
    return parts[0] if len(parts) == 1 else FisherEmbeddings.cat(parts)


__all__ = ["FisherEmbeddings", "STORAGE_BYTES", "STORAGE_DTYPES", "as_embeddings",
           "cat_embeddings", "factored_coefficients", "restrict_top", "row_bytes", "top_classes",
           "top_coefficients"]
