"""BAIT and FisherMask's greedy parameters: the float32 default picks what float64 products pick,
fisher_classes: top with top_c = C is exact BAIT/FisherMask, and the top_c checks."""

import numpy as np
import pytest
import torch

from fishermask.errors import ParameterError
from fishermask.kernels.embeddings import FisherEmbeddings, restrict_top
from fishermask.models import build_model
from fishermask.strategies import build_strategy, select
from fishermask.strategies.fisher_greedy import LastLayerEmbedding
from tests.greedy_reference import brute_force


@pytest.fixture(scope="module")
def net_and_pool():
    torch.manual_seed(0)
    model = build_model("cnn_small", num_classes=4, in_channels=1).eval()
    x = torch.randn(80, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, x


@pytest.mark.parametrize("name,extra", [("bait", {}), ("fishermask", {"sparsity": 0.01})])
def test_the_defaults_pick_what_float64_products_pick(net_and_pool, name, extra):
    model, x = net_and_pool
    labeled = np.arange(0, 80, 9)
    common = dict(seed=0, device="cpu", lam=0.1, **extra)
    default = select(name, model, x, labeled, n=7, **common)
    f64 = select(name, model, x, labeled, n=7, compute_dtype="float64", **common)
    assert default.indices.tolist() == f64.indices.tolist()
    assert default.diagnostics["greedy_float64_resets"] == 0
    assert build_strategy(name, **extra).params.fisher_classes == "all"


@pytest.mark.parametrize("name,extra", [("bait", {}), ("fishermask", {"sparsity": 0.01})])
def test_top_c_equal_to_the_classes_is_the_exact_strategy(net_and_pool, name, extra):
    model, x = net_and_pool
    labeled = np.arange(0, 80, 9)
    common = dict(seed=0, device="cpu", lam=0.1, oversample=2, **extra)
    exact = select(name, model, x, labeled, n=6, **common)
    top = select(name, model, x, labeled, n=6, fisher_classes="top", top_c=4, **common)
    assert top.indices.tolist() == exact.indices.tolist()
    assert top.diagnostics["objective"] == pytest.approx(exact.diagnostics["objective"], rel=1e-5)


def test_top_c_bait_is_the_greedy_of_the_restricted_problem(net_and_pool):
    model, x = net_and_pool
    x, labeled = x[:30], np.arange(0, 30, 9)
    sel = select("bait", model, x, labeled, n=4, seed=0, device="cpu", lam=0.1,
                 fisher_classes="top", top_c=2)
    exact = select("bait", model, x, labeled, n=4, seed=0, device="cpu", lam=0.1)
    assert sel.diagnostics["memory_estimate_gb"] < exact.diagnostics["memory_estimate_gb"]
    with torch.no_grad():  # the restricted V by hand: (h, p) of every pool point, top 2 classes
        h = model.features(x).float()
        p = torch.softmax(model.classifier(h).float(), 1)
    v = restrict_top(FisherEmbeddings(h, p), 2).to_dense(torch.float64).numpy()
    assert v.shape[1] == 2
    unl = np.setdiff1d(np.arange(30), labeled)
    fisher = np.einsum("xck,xcj->kj", v, v) / len(v)
    expected = brute_force(v[unl], v[labeled], fisher, 4, 0.1, 2)[0]
    assert sel.indices.tolist() == unl[expected].tolist()
    emb = LastLayerEmbedding(4, h.shape[1], top_c=2)(model, x[:5])
    assert emb.num_rows == 2 and emb.top.shape == (5, 2) and emb.k == 4 * h.shape[1]


def test_top_c_checks(net_and_pool):
    model, x = net_and_pool
    with pytest.raises(ValueError, match="parameter 'top_c' of strategy 'bait': .*fisher_classes: "
                                         "top needs top_c"):
        build_strategy("bait", fisher_classes="top")
    with pytest.raises(ValueError, match="'top_c' .*top_c applies only with fisher_classes: top"):
        build_strategy("fishermask", top_c=3)
    with pytest.raises(ValueError, match="'top_c' .*greater than or equal to 1"):
        build_strategy("bait", fisher_classes="top", top_c=0)
    with pytest.raises(ValueError, match="'compute_dtype'"):
        build_strategy("bait", compute_dtype="float16")
    with pytest.raises(ParameterError, match=r"^top_c=5: the model has only 4 classes"):
        select("bait", model, x, [0, 1], n=2, fisher_classes="top", top_c=5, device="cpu")
