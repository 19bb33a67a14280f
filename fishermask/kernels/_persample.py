"""Per-layer, per-sample gradients from captured layer inputs and grad-outputs (private).

One forward pass with hooks records, for every module that owns a parameter of interest, its
inputs and its output. C vector-Jacobian products (one per class c, with grad-output
∂ log p_c/∂ logits = e_c − p per sample) give that module's grad-output for every sample at
once; since samples are independent in eval mode, the per-sample gradient of the module's own
parameters follows from (input, grad-output) of that sample alone:

* ``Linear``       ∂W[o, i] = Σ_t g[t, o] · a[t, i]              (t: extra leading dims)
* ``Conv2d``       ∂W[o, j] = Σ_l g[o, l] · unfold(a)[j, l]      (l: output positions)
* ``_BatchNorm``   ∂γ[c] = Σ_s g[c, s] · x̂[c, s],  ∂β[c] = Σ_s g[c, s]   (running statistics)
* anything else:   ``torch.func.vmap`` over samples of a ``torch.func.vjp`` of the module call
  with respect to its own (non-recursive) parameters: correct, slower.

The backward passes ask autograd only for the recorded module outputs, so no weight gradient
is ever formed and the backward stops at the earliest recorded module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHUNK_ELEMS = 1 << 23  # elements per temporary in the chunked paths (32 MB in float32)
CACHE_ELEMS = 1 << 27  # elements of class-independent factors kept per run (512 MB in float32)
DENSE_FACTOR = 16  # dense bmm for a masked block when (#rows · #cols) <= DENSE_FACTOR · #entries

@dataclass
class Call:
    """One call of a recorded module: its arguments, its output (a graph node that later
    in-place operations cannot touch) and the version counters of the tensor arguments."""

    name: str
    module: nn.Module
    args: tuple
    kwargs: dict
    out: Tensor
    versions: tuple
    budget: list  # elements left for cached factors in this run (shared by all calls)
    cache: dict = field(default_factory=dict)

    def inputs(self) -> tuple:
        for a, v in zip(self.args, self.versions):
            if isinstance(a, Tensor) and a._version != v:
                raise RuntimeError(
                    f"the input of {type(self.module).__name__} {self.name!r} was modified in "
                    "place after the module ran; per-sample gradients need the original input")
        return tuple(a.detach() if isinstance(a, Tensor) else a for a in self.args)


def _hook(records: dict, budget: list, name: str, module: nn.Module, args, kwargs, out):
    if not isinstance(out, Tensor):
        raise TypeError(f"{type(module).__name__} {name!r} returns {type(out).__name__}, "
                        "not a Tensor: per-sample gradients of its parameters are not supported")
    if not out.requires_grad:  # frozen parameters below: start the graph here
        out = out.detach().requires_grad_(True)
    versions = tuple(a._version if isinstance(a, Tensor) else None for a in args)
    records[name].append(Call(name, module, args, kwargs, out, versions, budget))
    return out.clone()  # in-place ops after the module (e.g. ReLU(inplace)) act on the clone


def class_vjps(model: nn.Module, inputs: Tensor, modules: list[str], sqrt_p: bool,
               skip_top: bool = False):
    """Forward ``inputs`` with the listed modules recorded, then yield, per backward pass,
    ``(cls, probs, records, grads)``: ``cls`` [B] is the class of each sample in this pass and
    ``grads[module][i]`` the grad-output of the i-th call of the module for the scalar
    Σ_n w_n·log p_{cls_n}(x_n), w_n = √p_{cls_n}(x_n) if ``sqrt_p`` else 1 (``None`` when the
    output does not reach the logits). C passes, class c in pass c; with ``skip_top``, C − 1
    passes that leave out each sample's most probable class (recover its row from
    Σ_c p_c ∇log p_c = 0). Call inside an eval-mode context."""
    records: dict[str, list[Call]] = {n: [] for n in modules}
    budget = [CACHE_ELEMS]
    handles = [model.get_submodule(n).register_forward_hook(partial(_hook, records, budget, n),
                                                            with_kwargs=True) for n in modules]
    try:
        with torch.enable_grad():
            logits = model(inputs)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise TypeError("model(inputs) must return logits of shape [B, C]")
    _check_uncalled(model, logits, [n for n in modules if not records[n]])
    probs = torch.softmax(logits.detach(), dim=1)
    targets = [call.out for n in modules for call in records[n]]
    B, C = logits.shape
    rows, top = torch.arange(B, device=probs.device), probs.argmax(1)
    passes = C - 1 if skip_top else C
    for c in range(passes):
        cls = c + (c >= top).long() if skip_top else torch.full_like(top, c)
        grads = {n: [None] * len(records[n]) for n in modules}
        if targets and logits.requires_grad:
            go = -probs.clone()
            go[rows, cls] += 1.0
            if sqrt_p:
                go *= probs[rows, cls].sqrt()[:, None]
            flat = torch.autograd.grad(logits, targets, go, retain_graph=c < passes - 1,
                                       allow_unused=True)
            it = iter(flat)
            grads = {n: [next(it) for _ in records[n]] for n in modules}
        yield cls, probs, records, grads


def _check_uncalled(model: nn.Module, logits: Tensor, uncalled: list[str]) -> None:
    """A module that owns parameters of interest but never ran: fine if its parameters are
    unused (zero gradient), an error if the graph uses them elsewhere (e.g. a parent reading
    ``child.weight`` directly), since the hooks would then miss their gradient."""
    wanted = {id(p): f"{n}.{k}" if n else k for n in uncalled
              for k, p in model.get_submodule(n).named_parameters(recurse=False)
              if p.requires_grad}
    if not wanted or logits.grad_fn is None:
        return
    seen, stack = set(), [logits.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None and id(var) in wanted:
            raise NotImplementedError(
                f"parameter {wanted[id(var)]!r} is used outside the forward of the module "
                "that owns it; per-sample gradients through module hooks cannot see it")
        stack.extend(f for f, _ in fn.next_functions)


# ----------------------------------------------------------------------------- closed forms
def _rows(x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Linear input/grad-output as [B, T, in] and [B, T, out]."""
    B = x.shape[0]
    return x.reshape(B, -1, x.shape[-1]), g.reshape(B, -1, g.shape[-1])


def _unfold(m: nn.Conv2d, x: Tensor, rows: Tensor | None = None) -> Tensor:
    """``F.unfold`` of the conv's input, [B, in·kh·kw, L] (only ``rows`` of it if given), as
    one gather from the padded input (faster than im2col on CPU)."""
    pad = m._reversed_padding_repeated_twice
    if any(pad):
        x = F.pad(x, pad, mode="constant" if m.padding_mode == "zeros" else m.padding_mode)
    (B, C, H, W), (kh, kw), (sh, sw), (dh, dw) = x.shape, m.kernel_size, m.stride, m.dilation
    if rows is None:
        rows = torch.arange(C * kh * kw, device=x.device)
    ho = torch.arange((H - dh * (kh - 1) - 1) // sh + 1, device=x.device) * (sh * W)
    wo = torch.arange((W - dw * (kw - 1) - 1) // sw + 1, device=x.device) * sw
    c, ki, kj = rows // (kh * kw), rows % (kh * kw) // kw, rows % kw
    base = c * (H * W) + ki * (dh * W) + kj * dw
    idx = base[:, None] + (ho[:, None] + wo[None, :]).reshape(1, -1)  # [rows, L]
    return x.reshape(B, -1).index_select(1, idx.reshape(-1)).view(B, rows.numel(), -1)


def _bn_xhat(m: nn.Module, x: Tensor, channels: Tensor | None = None) -> Tensor:
    B, Cn = x.shape[0], x.shape[1]
    x = x.reshape(B, Cn, -1)
    mean, var = m.running_mean, m.running_var
    if channels is not None:
        x, mean, var = x[:, channels], mean[channels], var[channels]
    return (x - mean[:, None].to(x.dtype)) * torch.rsqrt(var[:, None].to(x.dtype) + m.eps)


def _batch_slice(call: Call, lo: int, hi: int, B: int) -> tuple:
    return tuple(a[lo:hi] if isinstance(a, Tensor) and a.dim() and a.shape[0] == B else a
                 for a in call.inputs())


def _generic_full(call: Call, args: tuple, g: Tensor, locals_: list[str]) -> dict[str, Tensor]:
    m, B = call.module, g.shape[0]
    dims = tuple(0 if isinstance(a, Tensor) and a.dim() and a.shape[0] == B else None
                 for a in args)
    params = {k: p.detach() for k, p in m.named_parameters(recurse=False) if k in locals_}

    def one(args1, g1):
        def f(pd):
            a = tuple(t.unsqueeze(0) if d == 0 else t for t, d in zip(args1, dims))
            return torch.func.functional_call(m, pd, a, call.kwargs).squeeze(0)
        _, vjp_fn = torch.func.vjp(f, params)
        return vjp_fn(g1)[0]

    try:
        with torch.enable_grad():
            return torch.func.vmap(one, in_dims=(dims, 0))(args, g)
    except Exception as exc:  # noqa: BLE001 - re-raised with the module named
        raise NotImplementedError(
            f"per-sample gradients of {type(m).__name__} {call.name!r} are not supported "
            f"(torch.func fallback failed: {exc})") from exc


def _factor(call: Call, kind: str, lo: int, hi: int) -> Tensor:
    """The class-independent factor of the samples lo:hi: unfold(input) [b, in·kk, L] (conv)
    or the normalised input x̂ [b, C, S] (BatchNorm); the whole batch's is computed once and
    kept across classes while the run's cache budget lasts."""
    x = call.inputs()[0]
    make = (lambda t: _unfold(call.module, t)) if kind == "conv2d" else \
        (lambda t: _bn_xhat(call.module, t))
    if "factor" not in call.cache:
        need = x.numel() * (call.module.weight[0, 0].numel() if kind == "conv2d" else 1)
        call.cache["factor"] = None
        if need <= call.budget[0]:
            call.budget[0] -= need
            call.cache["factor"] = make(x)
    full = call.cache["factor"]
    return make(x[lo:hi]) if full is None else full[lo:hi]


def full_grads(kind: str, call: Call, g: Tensor, local: str, lo: int, hi: int,
               out: Tensor | None = None) -> Tensor:
    """Per-sample gradients [hi-lo, *param.shape] of parameter ``local`` of ``call.module`` for
    the samples lo:hi of the batch (a new tensor, or ``out`` when given and usable)."""
    m, B = call.module, g.shape[0]
    g = g[lo:hi]
    if kind == "linear":
        x, g = _rows(_batch_slice(call, lo, hi, B)[0], g)
        if local == "bias":
            return g.sum(1)
        return torch.bmm(g.transpose(1, 2), x, out=out)
    if kind == "conv2d":
        G = g.flatten(2)  # [b, out, L]
        if local == "bias":
            return G.sum(2)
        A = _factor(call, kind, lo, hi)
        b, gr = G.shape[0], m.groups
        if gr == 1:
            dst = None if out is None else out.view(b, G.shape[1], -1)
            W = torch.bmm(G, A.transpose(1, 2), out=dst)
        else:
            W = torch.einsum("bgol,bgjl->bgoj", G.view(b, gr, -1, G.shape[2]),
                             A.view(b, gr, -1, A.shape[2]))
        return W.view(b, *m.weight.shape)
    if kind == "bn":
        G = g.reshape(g.shape[0], g.shape[1], -1)
        return (G * _factor(call, kind, lo, hi)).sum(2) if local == "weight" else G.sum(2)
    return _generic_full(call, _batch_slice(call, lo, hi, B), g, [local])[local]


class SqSum:
    """Σ_n Σ_c (per-sample gradient of one parameter)², accumulated class by class.

    Conv weights with few output positions (L ≤ 2C − 1, e.g. the 4×4 last stage of a CIFAR
    ResNet) use the Gram form Σ_c (Σ_l G_c[o,l] A[j,l])² = Σ_{l≤l'} w K[o,l,l'] A[j,l] A[j,l'],
    K = Σ_c G_c G_cᵀ (w = 1 on the diagonal, 2 off it): one GEMM of inner size B·L(L+1)/2 at
    the end instead of C output-bound per-sample products of inner size L.
    """

    def __init__(self, kind: str, local: str, shape):
        self.kind, self.local, self.shape = kind, local, tuple(shape)
        self.acc = self.gram = self.call = self.use_gram = None

    def _gram_ok(self, pairs, classes: int) -> bool:
        call, g = pairs[0]
        if self.kind != "conv2d" or self.local != "weight" or len(pairs) != 1 \
                or call.module.groups != 1 or g[0, 0].numel() > 2 * classes - 1:
            return False
        need = g.numel() * g[0, 0].numel()
        if need > call.budget[0]:
            return False
        call.budget[0] -= need
        return True

    def add(self, calls: list[Call], gs: list, classes: int) -> None:
        pairs = [(c, g) for c, g in zip(calls, gs) if g is not None]
        if not pairs:
            return
        if self.use_gram is None:
            self.use_gram = self._gram_ok(pairs, classes)
        if self.use_gram:
            self.call, G = pairs[0][0], pairs[0][1].flatten(2)
            k = G.unsqueeze(3) * G.unsqueeze(2)  # [B, out, L, L]
            self.gram = k if self.gram is None else self.gram.add_(k)
            return
        part = self._direct(pairs)
        self.acc = part if self.acc is None else self.acc.add_(part)

    def _direct(self, pairs) -> Tensor:
        """Σ_n (per-sample gradient)² for one class, the calls summed before squaring."""
        kind, local, shape = self.kind, self.local, self.shape
        if kind == "linear" and local == "weight" and len(pairs) == 1:
            x, g = _rows(pairs[0][0].inputs()[0], pairs[0][1])
            if x.shape[1] == 1:  # Σ_n g_no² a_ni²: one matmul
                return g[:, 0].square().T @ x[:, 0].square()
        B = pairs[0][1].shape[0]
        step = max(1, CHUNK_ELEMS // max(1, math.prod(shape)))
        # one reused workspace: fresh multi-MB CPU allocations page-fault on every chunk
        buf = pairs[0][1].new_empty(min(step, B), *shape) if len(shape) > 1 else None
        acc = None
        for lo in range(0, B, step):
            hi = min(B, lo + step)
            full = None
            for c, g in pairs:
                dst = None if full is not None or buf is None else buf[: hi - lo]
                part = full_grads(kind, c, g, local, lo, hi, out=dst)
                full = part if full is None else full.add_(part)
            part = full.square_().sum(0)
            acc = part if acc is None else acc.add_(part)
        return acc

    def result(self) -> Tensor | None:
        if self.gram is None:
            return self.acc
        K = self.gram
        B, out, L, _ = K.shape
        li, lj = torch.triu_indices(L, L, device=K.device)
        Kp = K[:, :, li, lj] * torch.where(li == lj, 1.0, 2.0).to(K.dtype)  # [B, out, P]
        J = self.shape[1] * self.shape[2] * self.shape[3]
        acc = K.new_zeros(out, J)
        step = max(1, CHUNK_ELEMS // max(1, J * li.numel()))
        for lo in range(0, B, step):
            hi = min(B, lo + step)
            At = _factor(self.call, "conv2d", lo, hi).transpose(1, 2)  # [b, L, J]
            AA = (At[:, li] * At[:, lj]).reshape(-1, J)  # [b·P, J]
            acc.addmm_(Kp[lo:hi].permute(1, 0, 2).reshape(out, -1), AA)
        return acc.clamp_(min=0).view(self.shape)  # rounding can leave tiny negatives


class PairDot:
    """out[b, e] = Σ_l G[b, gi[e], l] · A[b, ai[e], l] for a class-independent A [B, na, L]
    and per-class G [B, ng, L]. The entries are planned once: a dense bmm on the touched rows
    when they fill enough of it, else per-entry dot products on gathered rows (A's gathered
    once while the budget lasts, G's per class in chunks)."""

    def __init__(self, gi: Tensor, ai: Tensor, A: Tensor, budget: list):
        self.m, (B, _, L) = gi.numel(), A.shape
        self.ug, self.gpos = torch.unique(gi, return_inverse=True)
        ua, self.apos = torch.unique(ai, return_inverse=True)
        self.dense = self.ug.numel() * ua.numel() <= DENSE_FACTOR * self.m
        self.gi, self.ai, self.A = gi, ai, A
        if self.dense:
            self.A = A.index_select(1, ua).transpose(1, 2)  # [B, L, nua]
        elif B * self.m * L <= budget[0]:
            budget[0] -= B * self.m * L
            self.A, self.ai = A.index_select(1, ai), None  # [B, m, L], pre-gathered

    def __call__(self, G: Tensor) -> Tensor:
        B, L = G.shape[0], G.shape[2]
        if self.m == 0:
            return G.new_zeros(B, 0)
        if self.dense:
            return torch.bmm(G.index_select(1, self.ug), self.A)[:, self.gpos, self.apos]
        out = G.new_empty(B, self.m)
        step = max(1, CHUNK_ELEMS // (B * L))
        for s in range(0, self.m, step):
            e = slice(s, s + step)
            A = self.A[:, e] if self.ai is None else self.A.index_select(1, self.ai[e])
            out[:, e] = torch.linalg.vecdot(G.index_select(1, self.gi[e]), A)
        return out


class MaskedBlock:
    """The masked entries ``idx`` (flat, sorted) of one parameter: per-call caches of the
    class-independent factors (selected unfold rows, normalised inputs), then, per class,
    the per-sample masked gradients [B, len(idx)]."""

    def __init__(self, kind: str, local: str, idx: Tensor):
        self.kind, self.local, self.idx = kind, local, idx
        self.cache: dict[int, object] = {}

    def _prepare(self, call: Call, i: int):
        m, x = call.module, call.inputs()[0]
        if self.kind == "conv2d" and self.local == "weight":
            in_g_kk = m.weight[0].numel()
            o = self.idx // in_g_kk
            row = (o // (m.out_channels // m.groups)) * in_g_kk + self.idx % in_g_kk
            urow, rpos = torch.unique(row, return_inverse=True)
            self.cache[i] = PairDot(o, rpos, _unfold(m, x, urow), call.budget)
        elif self.kind == "linear" and self.local == "weight":
            xr = x.reshape(x.shape[0], -1, x.shape[-1])
            o, i_ = self.idx // xr.shape[-1], self.idx % xr.shape[-1]
            self.cache[i] = (o, xr[:, 0, i_]) if xr.shape[1] == 1 else \
                PairDot(o, i_, xr.transpose(1, 2), call.budget)
        elif self.kind == "bn" and self.local == "weight":
            self.cache[i] = _bn_xhat(m, x, self.idx)
        else:
            self.cache[i] = None
        return self.cache[i]

    def __call__(self, call: Call, i: int, g: Tensor) -> Tensor:
        pre = self.cache[i] if i in self.cache else self._prepare(call, i)
        kind, local, idx, B = self.kind, self.local, self.idx, g.shape[0]
        if kind == "linear":
            if local == "bias":
                return g.reshape(B, -1, g.shape[-1]).sum(1)[:, idx]
            gr = g.reshape(B, -1, g.shape[-1])
            if isinstance(pre, tuple):  # one row per sample: an outer product
                return gr[:, 0, pre[0]] * pre[1]
            return pre(gr.transpose(1, 2))
        if kind == "conv2d":
            if local == "bias":
                return g.flatten(2).sum(2)[:, idx]
            return pre(g.flatten(2))
        if kind == "bn":
            G = g.reshape(B, g.shape[1], -1)[:, idx]
            return (G * pre).sum(2) if local == "weight" else G.sum(2)
        return full_grads(kind, call, g, local, 0, B).reshape(B, -1)[:, idx]
