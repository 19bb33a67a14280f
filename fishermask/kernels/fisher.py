"""Fisher kernels: Fisher diagonal, top-k mask, masked embeddings, BAIT's last-layer embedding.

Notation (``docs/design.md`` §2, the paper's): a model f_θ with C classes and softmax probabilities p_c(x);
the score vector g_{x,c} = ∇_θ log p_c(x). Gradients are always taken with the model in eval
mode (BatchNorm uses its running statistics); each kernel restores every module's previous
mode on exit and never touches ``.grad``.

Cost: one forward pass plus C vector-Jacobian products per batch (C − 1 for the embeddings:
since Σ_c p_c g_{x,c} = 0, the row of each sample's most probable class follows from the
others). The VJPs only ask autograd for the outputs of the modules that own parameters of
interest; per-sample gradients then come in closed form from each module's recorded input and
grad-output (``_persample``), restricted to the masked entries for the embeddings. Nothing is
ever done per (sample, class).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from fishermask.kernels import _persample as ps

__all__ = ["fisher_diagonal", "top_k_mask", "masked_embeddings", "last_layer_embeddings",
           "last_layer_embeddings_from"]


_BN_FORWARD = nn.modules.batchnorm._BatchNorm.forward


def _module_kind(module: nn.Module, name: str) -> str:
    """``linear``, ``conv2d``, ``bn`` (closed forms) or ``generic`` (torch.func)."""
    forward = type(module).forward
    if forward is nn.Linear.forward:
        return "linear"
    if forward is nn.Conv2d.forward:
        return "conv2d"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training or module.running_mean is None:
            raise NotImplementedError(
                f"{type(module).__name__} {name!r} normalises with batch statistics "
                "(track_running_stats=False): per-sample gradients are not defined; "
                "use running statistics")
        if forward is _BN_FORWARD:
            return "bn"
    return "generic"


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode; restore each module's own previous mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _owners(model: nn.Module, names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Group parameter names by the module that owns them: ``{module: [(local, full), ...]}``
    in ``named_parameters()`` order."""
    aliases: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(n)
    params = dict(model.named_parameters())
    out: dict[str, list[tuple[str, str]]] = {}
    for full in names:
        if len(aliases[id(params[full])]) > 1:
            raise NotImplementedError(
                f"parameter {full!r} is shared by several modules "
                f"({', '.join(aliases[id(params[full])])}); per-sample gradients of tied "
                "parameters are not supported")
        mod, _, local = full.rpartition(".")
        out.setdefault(mod, []).append((local, full))
    return out


def fisher_diagonal(model: nn.Module, inputs: Tensor) -> dict[str, Tensor]:
    """Diagonal of the model Fisher over ``inputs``, for every trainable parameter.

        f_j = (1/B) Σ_{n<B} Σ_c p_c(x_n) · (g_{x_n,c})_j²,   g_{x,c} = ∇_θ log p_c(x),

    the exact expectation over classes (no label sampling). Parameters with
    ``requires_grad=False`` are left out. Returns ``{name: tensor shaped like the parameter}`` in
    ``model.named_parameters()`` order (the model's dtype). Sums over several batches are
    ``B·fisher_diagonal``; the mask only needs the ranking.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    B = inputs.shape[0]
    if B == 0:
        raise ValueError("fisher_diagonal needs at least one input")
    groups = _owners(model, [n for n, _ in named])
    params = dict(named)
    out: dict[str, Tensor] = {}
    with _eval_mode(model):
        sums = {}
        for mod, plist in groups.items():
            kind = _module_kind(model.get_submodule(mod), mod)
            for local, full in plist:
                sums[full] = ps.SqSum(kind, local, params[full].shape)
        for _, probs, records, grads in ps.class_vjps(model, inputs, list(groups), sqrt_p=True):
            for mod, plist in groups.items():
                for _, full in plist:
                    sums[full].add(records[mod], grads[mod], classes=probs.shape[1])
        for n, p in named:
            total = sums[n].result()
            out[n] = (torch.zeros_like(p) if total is None else
                      total.reshape(p.shape).to(p.dtype).div_(B))
    return out


def top_k_mask(diag: Mapping[str, Tensor], k: int, *,
               force: Sequence[str] = ()) -> dict[str, Tensor]:
    """The k entries with the largest Fisher diagonal: M = top-k of f over all parameters.

    Flat position = the dict's key order (``model.named_parameters()`` order), then ascending
    flat index within a tensor; ties are broken by the lower flat position. Parameters named in
    ``force`` are entirely in the mask and the remaining k − Σ|forced| entries are the global top
    of the other parameters (the paper's "last layer always included"). Returns
    ``{name: sorted LongTensor of flat indices}`` for every name of ``diag`` (possibly empty), in
    ``diag``'s order. Raises ``ValueError`` if k is out of range or the forced entries do not
    fit in k.
    """
    names = list(diag)
    force = list(dict.fromkeys(force))
    unknown = [n for n in force if n not in diag]
    if unknown:
        raise ValueError(f"forced parameters {unknown} are not in the Fisher diagonal "
                         f"(known: {names})")
    sizes = {n: diag[n].numel() for n in names}
    total = sum(sizes.values())
    if isinstance(k, bool) or int(k) != k or not 0 <= k <= total:
        raise ValueError(f"k must be an integer in [0, {total}] (the number of parameters), "
                         f"got {k!r}")
    k = int(k)
    n_forced = sum(sizes[n] for n in force)
    if n_forced > k:
        raise ValueError(
            f"the mask size k={k} is smaller than the {n_forced} entries of the forced "
            f"parameters {force}: increase the sparsity (k = floor(sparsity * |theta|)) or "
            "stop forcing the last layer (include_last_layer=false)")
    device = diag[names[0]].device if names else torch.device("cpu")
    free = [n for n in names if n not in force]
    rest = k - n_forced
    chosen = torch.empty(0, dtype=torch.long, device=device)
    if rest > 0:
        vals = torch.cat([diag[n].detach().reshape(-1).to(device, torch.float64) for n in free])
        if torch.isnan(vals).any():
            raise ValueError("the Fisher diagonal contains NaN")
        kth = torch.topk(vals, rest, sorted=True).values[-1]
        above = torch.nonzero(vals > kth).flatten()
        ties = torch.nonzero(vals == kth).flatten()[: rest - above.numel()]
        chosen = torch.cat([above, ties])
    out: dict[str, Tensor] = {}
    offset = 0
    for n in names:
        if n in force:
            out[n] = torch.arange(sizes[n], device=device)
            continue
        sel = chosen[(chosen >= offset) & (chosen < offset + sizes[n])] - offset
        out[n] = torch.sort(sel).values
        offset += sizes[n]
    return out


def _check_mask(model: nn.Module, mask: Mapping[str, Tensor]) -> list[tuple[str, Tensor]]:
    params = dict(model.named_parameters())
    missing = [n for n in mask if n not in params]
    if missing:
        raise ValueError(f"mask parameters {missing} are not parameters of the model "
                         f"({type(model).__name__})")
    out = []
    for n, p in params.items():  # column order: named_parameters(), then ascending index
        if n not in mask:
            continue
        idx = torch.as_tensor(mask[n], device=p.device).reshape(-1)
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
            raise ValueError(f"mask[{n!r}] must hold integer flat indices, got {idx.dtype}")
        idx = torch.sort(idx.long()).values
        if idx.numel() and (idx[0] < 0 or idx[-1] >= p.numel()):
            raise ValueError(f"mask[{n!r}] has indices outside [0, {p.numel()})")
        out.append((n, idx))
    return out


def masked_embeddings(model: nn.Module, inputs: Tensor, mask: Mapping[str, Tensor], *,
                      prob_scaling: bool = True) -> Tensor:
    """Per-sample Fisher embeddings on a parameter mask M: V_x ∈ R^{C×k} with

        row c of V_x = √p_c(x) · g_{x,c}[M]   (``prob_scaling``; paper, BAIT)
                     =          g_{x,c}[M]   (``prob_scaling=False``; the authors' code)

    so that V_xᵀV_x = Σ_c p_c g_{x,c}[M] g_{x,c}[M]ᵀ is the model Fisher at x on M. ``mask`` is
    ``{parameter name: flat indices}`` (as from :func:`top_k_mask`); the k columns follow
    ``model.named_parameters()`` order, then ascending flat index. Frozen parameters may be
    masked too. Returns ``[B, C, k]`` in float32 (float64 for a float64 model). Cost: one
    forward, C − 1 VJPs down to the earliest masked layer (the most probable class's row is
    −Σ_{c≠t} (p_c/p_t)^{1/2 or 1} row_c), per-sample work only on masked entries.
    """
    entries = _check_mask(model, mask)
    B = inputs.shape[0]
    entries_nz = [(n, idx) for n, idx in entries if idx.numel()]
    offsets, k = {}, 0
    for n, idx in entries:
        offsets[n] = k
        k += idx.numel()
    groups = _owners(model, [n for n, _ in entries_nz])
    idx_of = dict(entries_nz)
    out = None
    with _eval_mode(model):
        blocks = {}
        for mod, params in groups.items():
            kind = _module_kind(model.get_submodule(mod), mod)
            blocks[mod] = [(ps.MaskedBlock(kind, local, idx_of[full]), offsets[full])
                           for local, full in params]
        probs, rows = None, torch.arange(B, device=inputs.device)
        vjps = ps.class_vjps(model, inputs, list(groups), sqrt_p=prob_scaling, skip_top=True)
        for cls, probs, records, grads in vjps:
            if out is None:
                out = torch.zeros(B, probs.shape[1], k, dtype=_out_dtype(probs.dtype),
                                  device=probs.device)
            for mod, mblocks in blocks.items():
                for i, (call, g) in enumerate(zip(records[mod], grads[mod])):
                    if g is None:
                        continue
                    for block, off in mblocks:
                        out[rows, cls, off:off + block.idx.numel()] += block(call, i, g)
        if out is None:  # nothing masked, or a single class (log p = 0): no backward ran
            with torch.no_grad():
                logits = model(inputs)
            return torch.zeros(B, logits.shape[1], k, dtype=_out_dtype(logits.dtype),
                               device=logits.device)
    # the skipped (most probable) class t: Σ_c p_c g_c = 0 gives, for rows √p_c·g_c or g_c,
    # row_t = −Σ_{c≠t} (p_c/p_t)^e row_c with e = 1/2 or 1; p_t ≥ 1/C keeps it well conditioned
    top = probs.argmax(1)
    coef = (probs / probs[rows, top][:, None]).to(out.dtype)
    coef = coef.sqrt() if prob_scaling else coef
    coef[rows, top] = 0.0
    out[rows, top] = -torch.einsum("bc,bck->bk", coef, out)
    return out


def _out_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def last_layer_embeddings(model: nn.Module, inputs: Tensor) -> Tensor:
    """BAIT's embedding V_x ∈ R^{C×C·d} of ``inputs`` [B, ...]: the masked embedding on the
    classifier weight W (C×d) in closed form (:func:`last_layer_embeddings_from` of the model's
    features h(x) and probabilities p(x), one forward pass in eval mode, no autograd).  Takes
    the model and inputs like :func:`masked_embeddings`; returns ``[B, C, C·d]``."""
    with _eval_mode(model), torch.no_grad():
        h = model.features(inputs)
        p = torch.softmax(model.classifier(h), dim=1)
    return last_layer_embeddings_from(h, p)


def last_layer_embeddings_from(features: Tensor, probs: Tensor) -> Tensor:
    """BAIT's embedding, the masked embedding on the classifier weight W (C×d), closed form:

        row c of V_x = √p_c(x) · ((e_c − p(x)) ⊗ h(x)),   column c'·d + j ↔ W[c', j],

    with h = ``features`` [B, d] the penultimate features and p = ``probs`` [B, C]. Since
    ∇_W log p_c = (e_c − p) hᵀ, V_xᵀV_x = Σ_c p_c g g^T is the last-layer Fisher at x. No
    autograd. Returns [B, C, C·d].
    """
    if features.dim() != 2 or probs.dim() != 2 or features.shape[0] != probs.shape[0]:
        raise ValueError(f"expected features [B, d] and probs [B, C], got "
                         f"{tuple(features.shape)} and {tuple(probs.shape)}")
    dtype = torch.promote_types(features.dtype, probs.dtype)
    h, p = features.to(dtype), probs.to(dtype)
    B, C = p.shape
    eye = torch.eye(C, dtype=dtype, device=p.device)
    coef = p.sqrt()[:, :, None] * (eye[None] - p[:, None, :])  # [B, c, c']
    return (coef[..., None] * h[:, None, None, :]).reshape(B, C, C * h.shape[1])
