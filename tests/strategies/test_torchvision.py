"""Every strategy on a torchvision network as torchvision builds it (final layer ``fc``, no
adapter), and FisherMask's embeddings on it against autograd one sample and one class at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fishermask.kernels.fisher import top_k_mask
from fishermask.kernels.head import find_head, head_weight_name
from fishermask.models import build_model
from fishermask.strategies import STRATEGIES, select
from fishermask.strategies.fisher_greedy import MaskedEmbedding
from tests.strategies.test_fisher_greedy_exact import reference_embeddings
from tests.helpers import with_batchnorm_statistics

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def resnet():
    """torchvision's resnet18 by import path, for 3 classes and 1 input channel (its first
    convolution adapted), with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = with_batchnorm_statistics(build_model("torchvision.models:resnet18", 3, 1).eval())
    x = torch.randn(24, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    return model, x


def test_built_by_import_path_with_fc_and_one_channel(resnet):
    model, x = resnet
    assert model.conv1.in_channels == 1 and model.fc.out_features == 3
    assert find_head(model)[0] == "fc" and model(x).shape == (24, 3)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_runs_without_an_adapter(resnet, name):
    model, x = resnet
    params = ({"sparsity": 3e-4, "mask_samples": 8, "fisher_target": "diag"}
              if name.startswith("fishermask") else {})
    sel = select(name, model, x, [0, 5, 9], n=4, device="cpu", batch_size=8, **params)
    assert len(set(sel.indices.tolist())) == 4 and not {0, 5, 9} & set(sel.indices.tolist())


def test_fishermask_embeddings_match_autograd_per_sample_and_class(resnet):
    model, x = resnet
    params = dict(model.named_parameters())
    # a mask over a convolution, a BatchNorm, and the whole classifier (kept factored)
    diag = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(2))
            for n, p in params.items() if n in ("layer4.1.conv2.weight", "bn1.weight",
                                                "fc.weight", "fc.bias")}
    mask = top_k_mask(diag, 3 * 512 + 40, force=["fc.weight"])
    fc = head_weight_name(model, find_head(model)[1])
    for scaling in (True, False):
        embed = MaskedEmbedding(mask, 3, scaling, fc, 512)
        assert embed.factored and embed.k_dense == 40
        got = embed(model, x[:5]).to_dense(torch.float64).numpy()
        # the embedding's columns: the factored classifier block first, then the dense block in
        # named_parameters() order
        order = {"fc.weight": mask["fc.weight"]}
        order.update({n: i for n, i in mask.items() if n != "fc.weight"})
        want = reference_embeddings(model, x[:5], order, prob_scaling=scaling)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6 * np.abs(want).max())
