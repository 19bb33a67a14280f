"""The forms of A for the shards' first P, Q: the eigen form (A = W Wᵀ, A F A = W diag(d) Wᵀ)
against explicit inverses, and when the driver uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fishermask.kernels import _forms as forms
from fishermask.kernels._driver import GreedyDriver
from fishermask.kernels._shard import GreedyShard
from fishermask.selection import fisher_greedy
from tests.greedy_reference import problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _driver(lam, num_l=8, spread=4.0, form="mixed", conf=8.0, seed=3):
    emb, fisher = problem(seed, form=form, num_u=40, num_l=num_l, spread=spread, conf=conf)
    lab = emb.rows(slice(40, None)) if num_l else None
    driver = GreedyDriver(lab, torch.tensor(fisher), 5, lam=lam, weighting="bait", k=emb.k)
    return emb.rows(slice(0, 40)), driver


@pytest.mark.parametrize("lam", [1.0, 1e-2, 1e-4])
@pytest.mark.parametrize("solver", [forms.eigen_form, forms.eigen_form_torch])
def test_eigen_form_reproduces_a_and_afa(lam, solver):
    _, driver = _driver(lam)
    m, f = driver.m, driver.fisher
    w, d = solver(m, f)
    a = torch.linalg.inv(m)
    afa = a @ f @ a
    torch.testing.assert_close(w @ w.T, a, rtol=1e-9, atol=1e-9 * float(a.abs().max()))
    torch.testing.assert_close(w @ torch.diag(d) @ w.T, afa, rtol=1e-9,
                               atol=1e-9 * float(afa.abs().max()))
    assert float(d.min()) > -1e-9 * float(d.max())  # F ⪰ 0


@pytest.mark.parametrize("form", ["factored", "dense", "mixed"])
@pytest.mark.parametrize("lam", [1.0, 1e-4])
def test_p_and_q_from_the_eigen_form_equal_those_from_a(form, lam):
    cand, driver = _driver(lam, form=form)
    shards = [GreedyShard(cand, 0, chunk=16) for _ in range(2)]
    for shard in shards:
        shard.start(driver.fisher, driver.w_s, torch.float64)
    best_a = shards[0].reset(driver.a, True)
    best_w = shards[1].reset(None, True, None, forms.eigen_form(driver.m, driver.fisher))
    for name in ("p", "q"):
        ref = getattr(shards[0], name)
        torch.testing.assert_close(getattr(shards[1], name), ref, rtol=1e-8,
                                   atol=1e-9 * float(ref.abs().max()))
    assert best_w[1] == best_a[1] and best_w[0] == pytest.approx(best_a[0], rel=1e-8)


def test_first_form_follows_the_rows_it_saves():
    cand, driver = _driver(1.0, num_l=8)  # |L|·C = 24 > k/2: no Woodbury form
    k = driver.k
    assert driver.low_rank is None
    assert driver.first_form(None) is None and driver.first_form(12 * k - 1) is None
    assert isinstance(driver.first_form(12 * k), forms.Eigen)
    few, few_driver = _driver(1.0, num_l=1)  # |L|·C = 3: the Woodbury form saves 3/k of one
    wood = few_driver.low_rank
    assert isinstance(wood, forms.Woodbury) and wood.u.shape[1] == 3
    assert few_driver.first_form(12 * k) is wood
    assert isinstance(few_driver.first_form(4 * k * k), forms.Eigen)
    diag = GreedyDriver(None, torch.diagonal(driver.fisher).clone(), 5, lam=1.0,
                        weighting="bait", k=k)
    assert diag.first_form(10 ** 9) is None  # Q from the V_x A that P needs anyway


def test_a_large_round_starts_from_the_eigen_form_and_picks_what_a_gives(monkeypatch):
    emb, fisher = problem(11, form="dense", num_u=400, num_l=4, c=4, d=6, spread=1.0, conf=2.0)
    cand, lab = emb.rows(slice(0, 400)), emb.rows(slice(400, None))
    calls = []
    solver = forms.eigen_form
    monkeypatch.setattr(forms, "eigen_form", lambda m, f: calls.append(1) or solver(m, f))
    auto, info = fisher_greedy(cand, lab, torch.tensor(fisher), 12, lam=0.1, oversample=2,
                               return_info=True)
    assert calls == [1]  # 400 candidates × 4 classes ≥ 12·k: the engine took the eigen form
    monkeypatch.setattr(forms, "EIGEN_ROWS", 10 ** 9)
    plain = fisher_greedy(cand, lab, torch.tensor(fisher), 12, lam=0.1, oversample=2)
    assert calls == [1] and auto.tolist() == plain.tolist() and info["float64_resets"] == 0
    assert np.isfinite(info["objective"])


def test_the_memory_estimate_counts_the_eigensolver_where_the_round_uses_it():
    from fishermask.kernels._driver import greedy_memory_gb

    k, c, row = 100, 10, 1000
    per_row = (row + 2 * c * c * 8 + 16) / 1e9
    below = greedy_memory_gb(119, row, c, k, "dense")  # 1,190 stacked rows < 12·k
    at = greedy_memory_gb(120, row, c, k, "dense")
    assert at - below == pytest.approx(per_row + 4 * 8 * k * k / 1e9)  # F, M copies + workspace
    assert greedy_memory_gb(120, row, c, k, "diag") - greedy_memory_gb(119, row, c, k, "diag") \
        == pytest.approx(per_row)
