"""The strategy API: objects built once with checked parameters, ``.select`` every round, the
caller's model left as it was given, errors in the library's terms, and the README's example."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fishermask.errors import MemoryLimitError
from fishermask.strategies import (STRATEGIES, Badge, Bait, Entropy, FisherMask,
                                   FisherMaskAuthors, Margin, Strategy, select)
from tests.helpers import ToyNet

README = Path(__file__).resolve().parents[2] / "README.md"


def BNNet():
    """features + classifier with BatchNorm, so a train-mode forward would change buffers."""
    return ToyNet(6, 8, 3, act="relu", batchnorm=True)


@pytest.fixture
def pool():
    return torch.randn(40, 6, generator=torch.Generator().manual_seed(3))


def test_strategy_objects_check_their_parameters_once():
    s = FisherMask(sparsity=0.002)
    assert isinstance(s, Strategy) and s.params.sparsity == 0.002
    assert Bait(lam=0.01).params.lam == 0.01 and Margin().params.model_dump() == {}
    assert "sparsity=0.002" in repr(s)
    with pytest.raises(TypeError, match=r"strategy 'bait' has no parameter 'sparsity' "
                                        r"\('sparsity' is a parameter of fishermask"):
        Bait(sparsity=0.1)
    with pytest.raises(TypeError, match="strategy 'margin' has no parameter 'lam'"):
        Margin(lam=1.0)
    with pytest.raises(ValueError, match="parameter 'sparsity' of strategy 'fishermask'"):
        FisherMask(sparsity=-1)
    assert FisherMaskAuthors().params.prob_scaling is False  # the registry's classes
    assert {spec.cls for spec in STRATEGIES.values()} >= {FisherMask, FisherMaskAuthors, Bait}


@pytest.mark.parametrize("strategy", [Entropy(), Badge(), Bait(),
                                      FisherMask(sparsity=0.5, mask_samples=16)],
                         ids=["entropy", "badge", "bait", "fishermask"])
def test_model_is_left_as_it_was_given(strategy, pool):
    """A model in train mode keeps its mode flags and BatchNorm buffers (no train-mode forward)."""
    model = BNNet()
    model.train()
    model.body[1].eval()  # a mixed state must survive too
    flags = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sel = strategy.select(model, pool, [0, 1, 2, 3, 4], 4, seed=1, device="cpu")
    assert len(sel.indices) == 4
    assert [m.training for m in model.modules()] == flags
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "buffers or weights changed"
    assert next(model.parameters()).device.type == "cpu"


def test_object_and_one_call_forms_pick_the_same(pool):
    model = BNNet().eval()
    a = FisherMask(sparsity=0.5, mask_samples=16).select(model, pool, [0, 1], 5, seed=2,
                                                         device="cpu")
    b = select("fishermask", model, pool, [0, 1], 5, seed=2, device="cpu", sparsity=0.5,
               mask_samples=16)
    assert a.indices.tolist() == b.indices.tolist()
    again = FisherMask(sparsity=0.5, mask_samples=16)
    assert again.select(model, pool, [0, 1], 5, seed=3).indices.tolist() != [] \
        and np.array_equal(again.select(model, pool, [0, 1], 5, seed=2).indices, a.indices)


def test_memory_limit_is_one_error_type_in_library_terms(pool):
    with pytest.raises(MemoryLimitError) as err:
        Bait().select(BNNet(), pool, [0], 3, max_memory_gb=1e-9)
    msg = str(err.value)
    assert "max_memory_gb is 1e-09" in msg and "execution." not in msg and "strategy." not in msg


def test_readme_example_runs():
    """The README's "Use a strategy in your own loop" block, executed as it is."""
    text = README.read_text()
    section = text[text.index("### Use a strategy in your own loop"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "resnet18" in code and "model.fc" in code  # a torchvision network, no adapter
    scope: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), scope)
    labeled = scope["labeled"]
    assert len(labeled) == 8 + 2 * 4 and len(set(labeled)) == len(labeled)
    assert all(0 <= i < 40 for i in labeled)
