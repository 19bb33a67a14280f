"""``fishermask.strategies.select()`` checks its arguments the same way for every strategy, before
any work: a TypeError or ValueError whose message names the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fishermask.strategies import STRATEGIES, select
from tests.helpers import ToyNet

N = 30


class NoHead(nn.Module):
    """Its final nn.Linear is called ``out``: found only when named."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(x)


class Softmaxed(ToyNet):
    """Returns probabilities, not the logits of its final nn.Linear."""

    def forward(self, x):
        return torch.softmax(super().forward(x), 1)


def _pool(bad=None):
    x = torch.randn(N, 6, generator=torch.Generator().manual_seed(0))
    if bad is not None:
        x[7, 2] = bad
    return x


def _nan_weights():
    m = ToyNet()
    with torch.no_grad():
        m.body[0].weight[0, 0] = float("nan")
    return m


_OWN = {name: set(spec.params.model_fields) for name, spec in STRATEGIES.items()}
_ALL = set().union(*_OWN.values())

# (case id, changes to the call, exception type, text the message must hold)
CASES = [
    ("labeled-out-of-range", {"labeled": [0, N]}, ValueError, f"labeled: indices [{N}] are out of range"),
    ("labeled-negative", {"labeled": [-1, 2]}, ValueError, "labeled: negative pool indices [-1]"),
    ("labeled-duplicated", {"labeled": [1, 1, 2]}, ValueError, "labeled: duplicated indices [1]"),
    ("labeled-not-integer", {"labeled": [0.5]}, TypeError, "labeled must hold integer pool indices"),
    ("labeled-2d", {"labeled": [[0, 1]]}, TypeError, "labeled must be a 1-D sequence"),
    ("pool-nan", {"pool": _pool(float("nan"))}, ValueError, "pool: 1 of 30 inputs contain NaN or infinite values (first at index 7)"),
    ("pool-inf", {"pool": _pool(float("-inf"))}, ValueError, "pool: 1 of 30 inputs contain NaN or infinite"),
    ("pool-empty", {"pool": torch.zeros(0, 6)}, ValueError, "pool is empty"),
    ("pool-not-a-tensor", {"pool": [[0.0] * 6] * N}, TypeError, "pool must be a tensor"),
    ("model-nan-weights", {"model": _nan_weights()}, ValueError, "model: parameter body.0.weight has NaN"),
    ("model-without-head", {"model": NoHead()}, TypeError, "model: NoHead has no final nn.Linear at classifier, fc, head"),
    ("model-head-misnamed", {"classifier": "body.1"}, TypeError, "'body.1' is a Tanh without an nn.Linear"),
    ("model-head-not-there", {"classifier": "fc"}, TypeError, "model: ToyNet has no attribute 'fc'"),
    ("model-output-not-logits", {"model": Softmaxed()}, TypeError, "its output is not the output of its final nn.Linear 'classifier'"),
    ("model-not-a-module", {"model": lambda x: x}, TypeError, "model must be a torch.nn.Module"),
    ("n-zero", {"n": 0}, ValueError, "n must be a positive integer, got 0"),
    ("n-negative", {"n": -2}, ValueError, "n must be a positive integer, got -2"),
    ("n-float", {"n": 2.5}, TypeError, "n must be a positive integer, got 2.5"),
    ("n-bool", {"n": True}, TypeError, "n must be a positive integer, got True"),
    ("n-too-many", {"n": N - 1}, ValueError, "n: cannot pick n=29 points, the pool has only 28 unlabeled"),
    ("batch-size-zero", {"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
    ("batch-size-negative", {"batch_size": -8}, ValueError, "batch_size must be a positive integer"),
    ("unknown-param", {"sparsty": 0.01}, TypeError, "has no parameter 'sparsty' (no strategy takes a parameter 'sparsty')"),
]


def _cases():
    for name in STRATEGIES:
        for case, change, exc, text in CASES:
            yield pytest.param(name, change, exc, text, id=f"{name}-{case}")
        other = sorted(_ALL - _OWN[name])
        if other:  # a parameter of other strategies: say which take it
            takers = ", ".join(s for s in STRATEGIES if other[0] in _OWN[s])
            yield pytest.param(name, {other[0]: 1}, TypeError,
                               f"has no parameter '{other[0]}' ('{other[0]}' is a parameter of "
                               f"{takers})", id=f"{name}-other-strategy-param")
        if _OWN[name]:  # a bad value of its own parameter: named, a ValueError
            yield pytest.param(name, {"lam": -1.0} if "lam" in _OWN[name] else {}, ValueError,
                               f"parameter 'lam' of strategy '{name}'", id=f"{name}-bad-value")


@pytest.mark.parametrize("name, change, exc, text", list(_cases()))
def test_select_rejects_bad_arguments_naming_them(name, change, exc, text):
    call = {"model": ToyNet().eval(), "pool": _pool(), "labeled": [0, 1], "n": 3,
            "device": "cpu"}
    call.update(change)
    with pytest.raises(exc) as err:
        select(name, call.pop("model"), call.pop("pool"), call.pop("labeled"), call.pop("n"),
               **call)
    assert text in str(err.value)
    if "parameter '" in text:  # and what the strategy does take
        assert f"'{name}' takes" in str(err.value) or "of strategy" in str(err.value)


def test_unknown_strategy_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown strategy 'fishmask'; valid strategies: random"):
        select("fishmask", ToyNet(), _pool(), [0], 2)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_select_takes_the_protocol_minimum_and_numpy_inputs(name):
    """A model with just features + classifier, numpy inputs and numpy integer arguments."""
    params = {"sparsity": 0.5} if name.startswith("fishermask") else {}
    sel = select(name, ToyNet().eval(), _pool().numpy(), np.array([0, 5], dtype=np.int32),
                 np.int64(4), batch_size=np.int64(7), device="cpu", **params)
    assert len(set(sel.indices.tolist())) == 4 and not {0, 5} & set(sel.indices.tolist())
