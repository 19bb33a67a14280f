"""BAIT and FisherMask strategies end to end on a small real network."""

import numpy as np
import pytest
import torch

from fishermask.errors import FishermaskError, MemoryLimitError, ParameterError
from fishermask.models import build_model
from fishermask.strategies import select
from tests.helpers import with_batchnorm_statistics


@pytest.fixture(scope="module")
def net_and_pool():
    torch.manual_seed(0)
    model = with_batchnorm_statistics(build_model("cnn_small", num_classes=4, in_channels=1).eval())
    x = torch.randn(80, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, x


@pytest.mark.parametrize("oversample,weighting,lam", [(1, "bait", 1.0), (2, "uniform", 0.1)])
def test_fishermask_with_classifier_mask_picks_what_bait_picks(net_and_pool, oversample,
                                                               weighting, lam):
    model, x = net_and_pool
    n_params = sum(p.numel() for p in model.parameters())
    C_d = model.classifier.weight.numel()
    sparsity = (C_d + 0.5) / n_params  # k = ⌊sparsity·|θ|⌋ = C·d: exactly the classifier's weights
    labeled = np.arange(0, 80, 8)
    common = dict(lam=lam, oversample=oversample, weighting=weighting, seed=0, device="cpu")
    fm = select("fishermask", model, x, labeled, n=6, sparsity=sparsity, **common)
    bait = select("bait", model, x, labeled, n=6, **common)
    assert fm.artifacts["mask_profile"][-2]["name"] == "classifier.weight"
    assert fm.artifacts["mask_profile"][-2]["fraction"] == 1.0
    assert sum(p["selected"] for p in fm.artifacts["mask_profile"]) == C_d
    assert fm.indices.tolist() == bait.indices.tolist()


def test_fishermask_diagnostics_and_profile(net_and_pool):
    model, x = net_and_pool
    sel = select("fishermask", model, x, [0, 1, 2, 3], n=5, sparsity=0.01, device="cpu")
    prof = sel.artifacts["mask_profile"]
    names = [n for n, _ in model.named_parameters()]
    assert [p["name"] for p in prof] == names
    k = int(0.01 * sum(p.numel() for p in model.parameters()))
    assert sum(p["selected"] for p in prof) == k
    for key in ("phase_mask_seconds", "phase_gradients_seconds", "phase_fisher_seconds",
                "phase_greedy_seconds"):
        assert sel.metrics[key] >= 0


def test_authors_preset_differs_only_where_documented(net_and_pool):
    model, x = net_and_pool
    a = select("fishermask_authors", model, x, [0, 1], n=5, sparsity=0.01, device="cpu")
    b = select("fishermask", model, x, [0, 1], n=5, sparsity=0.01, device="cpu",
               prob_scaling=False, mask_subset="first")
    assert a.indices.tolist() == b.indices.tolist()


def test_sparsity_too_small_for_classifier_is_a_parameter_error(net_and_pool):
    """In the library's terms (a ValueError naming the parameter); the loop says the config key."""
    model, x = net_and_pool
    with pytest.raises(ParameterError, match=r"^sparsity=0.001: the mask size k=") as err:
        select("fishermask", model, x, [0], n=2, sparsity=0.001)
    assert isinstance(err.value, ValueError) and "strategy." not in str(err.value)


def test_memory_limit_fails_early_naming_the_knobs(net_and_pool):
    model, x = net_and_pool
    with pytest.raises(FishermaskError) as err:
        select("fishermask", model, x, [0], n=2, sparsity=0.05, max_memory_gb=1e-4)
    msg = str(err.value)
    assert isinstance(err.value, MemoryLimitError)
    assert "max_memory_gb is 0.0001" in msg and "Lower sparsity" in msg and "more shards" in msg
    assert "strategy." not in msg and "execution." not in msg  # library terms, not config keys
    keyed = err.value.in_terms_of({"max_memory_gb": "execution.max_memory_gb",
                                   "sparsity": "strategy.sparsity", "shards": "execution.shards"})
    assert "execution.max_memory_gb is 0.0001" in keyed and "strategy.sparsity" in keyed
