"""Fisher kernels against brute force: one ``torch.autograd.grad`` of log p_c(x_n) per (n, c).

Comparisons run in float64 (model and inputs), where the vectorised kernels and the loops agree
to rounding (rtol 1e-9, atol 1e-12 relative to the largest entry); float32 checks (batch
independence) use rtol 1e-5, atol 1e-6.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fishermask.kernels.fisher import (fisher_diagonal, last_layer_embeddings,
                                       last_layer_embeddings_from, masked_embeddings, top_k_mask)
from fishermask.models import build_model

TOL64 = dict(rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small problems: one thread is as fast and far steadier on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Tiny(nn.Module):
    """Linear + Conv2d (bias, stride, dilation, groups, reflect padding) + BatchNorm2d, a 1×1
    conv called twice, a Linear over extra leading dims, in-place ReLUs and a LayerNorm (the
    torch.func path)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, bias=True)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, groups=2, padding_mode="reflect")
        self.bn2 = nn.BatchNorm2d(6)
        self.mix = nn.Conv2d(6, 6, 1)
        self.tok = nn.Linear(6, 5)
        self.norm = nn.LayerNorm(5)
        self.classifier = nn.Linear(5, num_classes)

    def features(self, x):
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        h = F.relu(self.bn2(self.conv2(h)), inplace=True)
        h = self.mix(F.relu(self.mix(h)))
        t = self.norm(self.tok(h.flatten(2).transpose(1, 2)))  # [B, HW, 5]
        return F.relu(t).mean(1)

    def forward(self, x):
        return self.classifier(self.features(x))

    classifier_weight_name = "classifier.weight"


def _randomise_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.3)
            m.bias.data.normal_(0, 0.3)
    return model.eval()


def brute_force(model: nn.Module, x: torch.Tensor):
    """G[n, c] = ∇_θ log p_c(x_n) flattened in named_parameters() order, one call per (n, c)."""
    model.eval()
    params = [p for _, p in model.named_parameters()]
    logp = torch.log_softmax(model(x), dim=1)
    B, C = logp.shape
    G = torch.zeros(B, C, sum(p.numel() for p in params), dtype=x.dtype)
    for n in range(B):
        for c in range(C):
            gs = torch.autograd.grad(logp[n, c], params, retain_graph=True, allow_unused=True)
            G[n, c] = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                 for g, p in zip(gs, params)])
    return G, logp.exp().detach()


def _columns(model: nn.Module, mask: dict) -> torch.Tensor:
    cols, off = [], 0
    for n, p in model.named_parameters():
        if n in mask:
            cols.append(torch.sort(mask[n]).values + off)
        off += p.numel()
    return torch.cat(cols)


def _random_mask(model: nn.Module, seed: int, frac: float = 0.2) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = {}
    for i, (n, p) in enumerate(model.named_parameters()):
        if i % 5 == 3:
            continue  # some parameters absent from the mask
        size = int(torch.randint(0, max(1, int(frac * p.numel())) + 1, (1,), generator=g))
        mask[n] = torch.randperm(p.numel(), generator=g)[:size]
    return mask


def _check_diag(model, x, G, p):
    ref = (p[..., None] * G.square()).sum(1).mean(0)
    got = fisher_diagonal(model, x)
    assert list(got) == [n for n, _ in model.named_parameters()]
    for n, q in model.named_parameters():
        assert got[n].shape == q.shape
    flat = torch.cat([t.reshape(-1) for t in got.values()])
    torch.testing.assert_close(flat, ref, rtol=1e-9, atol=1e-12 * ref.abs().max().item())


def _check_masked(model, x, G, p, mask, prob_scaling):
    V = masked_embeddings(model, x, mask, prob_scaling=prob_scaling)
    ref = G[:, :, _columns(model, mask)]
    if prob_scaling:
        ref = ref * p.sqrt()[..., None]
    assert V.shape == ref.shape and V.dtype == torch.float64
    torch.testing.assert_close(V, ref, rtol=1e-9, atol=1e-12 * ref.abs().max().item())


def _case(seed: int, make_model, x_shape: tuple):
    torch.manual_seed(seed)
    model = _randomise_bn(make_model().double())
    x = torch.randn(*x_shape, dtype=torch.float64)
    return (model, x, *brute_force(model, x))


@pytest.fixture(scope="module")
def cnn():
    return _case(0, lambda: build_model("cnn_small", 4, 1), (3, 1, 8, 8))


@pytest.fixture(scope="module")
def tiny():
    return _case(1, lambda: Tiny(3), (3, 2, 6, 6))


@pytest.fixture(scope="module")
def narrow():
    return _case(2, lambda: build_model("resnet18_narrow", 10, 3), (2, 3, 16, 16))


@pytest.mark.parametrize("case", ["cnn", "tiny", "narrow"])
def test_fisher_diagonal_matches_brute_force(case, request):
    _check_diag(*request.getfixturevalue(case))


def test_fisher_diagonal_gram_form(narrow, monkeypatch):
    """On 16×16 inputs the last stages have L ≤ 2C − 1 output positions: the Gram form runs
    there (and the per-class form elsewhere); both must match brute force."""
    from fishermask.kernels import _persample as ps

    used = []
    orig = ps.SqSum._gram_ok
    monkeypatch.setattr(ps.SqSum, "_gram_ok",
                        lambda self, pairs, c: used.append(orig(self, pairs, c)) or used[-1])
    _check_diag(*narrow)
    assert any(used) and not all(used)


@pytest.mark.parametrize("prob_scaling", [True, False])
@pytest.mark.parametrize("case", ["cnn", "tiny", "narrow"])
def test_masked_embeddings_match_brute_force(case, prob_scaling, request):
    model, x, G, p = request.getfixturevalue(case)
    mask = _random_mask(model, seed=len(case), frac=0.2 if case != "narrow" else 0.01)
    kinds = {type(model.get_submodule(n.rpartition(".")[0])) for n, i in mask.items() if i.numel()}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.Linear} <= kinds
    _check_masked(model, x, G, p, mask, prob_scaling)


def test_masked_embeddings_dense_and_edge_masks(tiny):
    model, x, G, p = tiny
    full = {n: torch.arange(q.numel()) for n, q in model.named_parameters()}
    _check_masked(model, x, G, p, full, True)  # dense paths everywhere
    reordered = dict(reversed(list(full.items())))  # column order ignores the dict's order
    _check_masked(model, x, G, p, {n: i.flip(0) for n, i in reordered.items()}, False)
    empty = masked_embeddings(model, x, {n: torch.empty(0, dtype=torch.long) for n in full})
    assert empty.shape == (3, 3, 0)
    for classes in (1, 2):  # one class: log p = 0; two: a single backward pass
        lin = nn.Sequential(nn.Flatten(), nn.Linear(72, classes)).double()
        G2, p2 = brute_force(lin, x)
        _check_masked(lin, x, G2, p2, {"1.weight": torch.arange(0, 72 * classes, 5)}, True)


@pytest.mark.parametrize("case", ["cnn", "narrow"])  # classifier with and without bias
def test_last_layer_embeddings(case, request):
    model, x, G, p = request.getfixturevalue(case)
    W = next(n for n, p in model.named_parameters() if p is model.classifier.weight)
    with torch.no_grad():
        h, probs = model.features(x), torch.softmax(model(x), dim=1)
    V = last_layer_embeddings_from(h, probs)
    torch.testing.assert_close(last_layer_embeddings(model, x), V, **TOL64)  # (model, inputs)
    C, d = probs.shape[1], h.shape[1]
    assert V.shape == (x.shape[0], C, C * d)
    torch.testing.assert_close(V, masked_embeddings(model, x, {W: torch.arange(C * d)}), **TOL64)
    g = G[:, :, _columns(model, {W: torch.arange(C * d)})]  # brute-force last-layer scores
    fisher = torch.einsum("nc,nci,ncj->nij", p, g, g)
    torch.testing.assert_close(V.transpose(1, 2) @ V, fisher, **TOL64)


def test_top_k_mask_ties_force_and_errors():
    diag = {"a": torch.tensor([1.0, 3.0, 3.0]), "b": torch.tensor([[3.0, 0.0], [5.0, 3.0]]),
            "w": torch.tensor([0.0, 0.0])}
    m = top_k_mask(diag, 3)
    assert list(m) == ["a", "b", "w"]  # every name, diag's order
    assert m["a"].tolist() == [1, 2] and m["b"].tolist() == [2] and m["w"].tolist() == []
    assert all(t.dtype == torch.long for t in m.values())
    m = top_k_mask(diag, 4)  # three more 3.0's: the lowest flat position wins
    assert (m["a"].tolist(), m["b"].tolist()) == ([1, 2], [0, 2])
    m = top_k_mask(diag, 4, force=["w"])
    assert (m["a"].tolist(), m["b"].tolist(), m["w"].tolist()) == ([1], [2], [0, 1])
    assert sum(t.numel() for t in top_k_mask(diag, 9).values()) == 9
    assert all(t.numel() == 0 for t in top_k_mask(diag, 0).values())
    assert top_k_mask(diag, 2, force=["w"])["w"].tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"k=1 .*2 entries.*sparsity"):
        top_k_mask(diag, 1, force=["w"])
    with pytest.raises(ValueError, match="k=0"):
        top_k_mask(diag, 0, force=["w"])
    for bad in (-1, 10, 2.5):
        with pytest.raises(ValueError, match="k must be"):
            top_k_mask(diag, bad)
    with pytest.raises(ValueError, match="not in the Fisher diagonal"):
        top_k_mask(diag, 3, force=["nope"])


def test_modes_restored_and_no_grad_left():
    torch.manual_seed(3)
    model = build_model("cnn_small", 3, 1)
    model.train()
    model.body[1].eval()  # a mixed mode must come back as it was
    modes = [m.training for m in model.modules()]
    stats = [b.clone() for b in model.buffers()]
    x = torch.randn(4, 1, 8, 8)
    fisher_diagonal(model, x)
    masked_embeddings(model, x, {"body.0.weight": torch.arange(5)})
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))


def test_batch_independence_float32():
    torch.manual_seed(4)
    model = _randomise_bn(build_model("cnn_small", 5, 1))
    x = torch.randn(5, 1, 8, 8)
    mask = _random_mask(model, seed=7)
    V = masked_embeddings(model, x, mask)
    assert V.dtype == torch.float32
    for n in (0, 3):
        torch.testing.assert_close(V[n:n + 1], masked_embeddings(model, x[n:n + 1], mask),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(V[n:n + 1], masked_embeddings(model, x[[n, 4, 1]], mask)[:1],
                                   rtol=1e-5, atol=1e-6)


def test_frozen_parameters(cnn):
    model, x, G, p = cnn
    frozen = _randomise_bn(build_model("cnn_small", 4, 1).double())
    frozen.load_state_dict(model.state_dict())
    for q in frozen.parameters():
        q.requires_grad_(False)
    frozen.classifier.weight.requires_grad_(True)
    assert list(fisher_diagonal(frozen, x)) == ["classifier.weight"]
    _check_masked(frozen, x, G, p, _random_mask(frozen, seed=11), True)


def test_errors():
    model = build_model("cnn_small", 3, 1)
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="not parameters of the model"):
        masked_embeddings(model, x, {"nope.weight": torch.arange(3)})
    with pytest.raises(ValueError, match="outside"):
        masked_embeddings(model, x, {"body.0.weight": torch.tensor([10 ** 6])})
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False),
                       nn.Flatten(), nn.LazyLinear(3))
    bn(x)
    with pytest.raises(NotImplementedError, match="BatchNorm2d"):
        fisher_diagonal(bn, x)

    class Sneaky(nn.Module):  # uses a child's weight outside the child's forward
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 3)

        def forward(self, x):
            return x.flatten(1) @ self.lin.weight.T

    with pytest.raises(NotImplementedError, match="outside the forward"):
        fisher_diagonal(Sneaky(), x)
