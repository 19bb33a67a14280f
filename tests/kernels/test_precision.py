"""The greedy with float32 products (fisher_greedy's default): the same picks as with float64
products, identical for any sharding, near-ties settled by exact scores, and the switch to float64
products where float32 cannot hold the check."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fishermask.kernels._driver import GreedyDriver, run_greedy
from fishermask.kernels._group import LocalShardGroup
from fishermask.kernels._shard import Best, GreedyShard, shard_bounds
from fishermask.kernels.embeddings import FisherEmbeddings
from fishermask.selection import fisher_greedy
from tests.greedy_reference import brute_force, objective, problem, reference_dense

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: threads only cost


def _moderate(seed):
    """A moderately conditioned problem (λ ≥ 0.01, norms over e^±1): float32 products hold."""
    form = ("factored", "dense", "mixed")[seed % 3]
    emb, fisher = problem(seed, form=form, num_u=60, num_l=4, c=4, d=6, spread=1.0, conf=2.0)
    if seed % 4 == 1:
        fisher = np.diag(fisher).copy()
    return emb.rows(slice(0, 60)), emb.rows(slice(60, None)), torch.tensor(fisher), form


@pytest.mark.parametrize("seed", range(24))
def test_float32_products_pick_what_float64_products_pick(seed):
    cand, lab, fisher, _ = _moderate(seed)
    kw = dict(lam=(1.0, 0.1, 0.01)[seed % 3], oversample=1 + seed % 2, return_info=True)
    p32, info32 = fisher_greedy(cand, lab, fisher, 8, **kw)  # the default: float32 products
    p64, info64 = fisher_greedy(cand, lab, fisher, 8, compute_dtype="float64", **kw)
    assert p32.tolist() == p64.tolist()
    assert info32["objective"] == pytest.approx(info64["objective"], rel=1e-12)
    assert info32["float64_resets"] == 0  # float32 products held throughout (with rebuilds)
    assert info64["contenders"] == 0  # a float64 round compares maintained scores only


def _run(cand, lab, fisher, bounds, n, oversample, compute_dtype, chunk=8):
    driver = GreedyDriver(lab, fisher, n, lam=0.05, weighting="bait", k=cand.k,
                          compute_dtype=compute_dtype)
    shards = [GreedyShard(cand.rows(slice(a, b)), a, chunk=chunk) for a, b in bounds]
    group = LocalShardGroup(shards)
    group.start(driver.fisher, driver.w_s, driver.compute_dtype)
    order, info = run_greedy(group, driver, bounds[-1][1], n, oversample)
    return order, info, shards


@pytest.mark.parametrize("oversample,hard", [(1, False), (2, False), (2, True)])
def test_sharded_float32_runs_pick_exactly_what_one_shard_picks(oversample, hard):
    num_u, chunk = 45, 8
    kw = dict(spread=4.0, conf=8.0) if hard else dict(spread=1.0, conf=2.0)
    emb, fisher = problem(5, form="mixed", num_u=num_u, num_l=3, **kw)
    cand, lab, f = emb.rows(slice(0, num_u)), emb.rows(slice(num_u, None)), torch.tensor(fisher)
    one, info1, _ = _run(cand, lab, f, [(0, num_u)], 6, oversample, torch.float32)
    for shards in (2, 3, 7):
        bounds = [(a, b) for a, b in shard_bounds(num_u, shards, chunk) if a < b]
        order, info, _ = _run(cand, lab, f, bounds, 6, oversample, torch.float32)
        assert order == one
        assert {k: info[k] for k in ("rebuilds", "overrides", "checks", "contenders",
                                     "float64_resets")} == \
               {k: info1[k] for k in ("rebuilds", "overrides", "checks", "contenders",
                                      "float64_resets")}
    v = reference_dense(emb)
    best = brute_force(v[:num_u], v[num_u:], fisher, 6, 0.05, oversample)[1]
    got = objective(v[:num_u], v[num_u:], fisher, one, 0.05, 6)
    assert (got - best) / best <= 1e-6


def test_the_backward_phase_runs_in_float64_products_on_the_selected_rows():
    cand, lab, fisher, _ = _moderate(3)
    order, info, shards = _run(cand, lab, fisher, [(0, 60)], 5, 2, torch.float32)
    assert shards[0].dtype == torch.float64 and shards[0].removing
    assert info["float64_resets"] == 0  # the planned switch is not a fallback
    assert order == _run(cand, lab, fisher, [(0, 60)], 5, 2, torch.float64)[0]


def test_near_ties_are_settled_by_exact_scores():
    # 20 rows, each twice: the copy scaled by 1 + 1e-9 (float64 storage).  The float32 products
    # cannot tell the two apart; the exact scores can, and the brute force's picks come out
    torch.manual_seed(1)
    base = torch.randn(20, 3, 16, dtype=torch.float64) / 4
    scale = 1 + 1e-9 * torch.sign(torch.randn(20, 1, 1, dtype=torch.float64))
    order = torch.randperm(40)
    cands = torch.cat([base, base * scale])[order]
    f = torch.eye(16, dtype=torch.float64)
    expected, _, gap = brute_force(cands.numpy(), np.zeros((0, 3, 16)), f.numpy(), 6, 1.0)
    assert 0 < gap < 1e-7  # a tie to float32, not to float64
    picks, info = fisher_greedy(cands, None, f, 6, return_info=True)
    assert picks.tolist() == expected and info["contenders"] > 0
    # exact copies: the lowest index of the copies wins, as in the brute force
    same = torch.cat([base, base])[order]
    expected = brute_force(same.numpy(), np.zeros((0, 3, 16)), f.numpy(), 6, 1.0)[0]
    assert fisher_greedy(same, None, f, 6).tolist() == expected


def test_a_problem_float32_cannot_hold_switches_to_float64_and_stays_exact():
    emb, fisher = problem(3, form="factored", num_u=36, num_l=3, spread=4.0, conf=8.0)
    cand, lab = emb.rows(slice(0, 36)), emb.rows(slice(36, None))
    picks, info = fisher_greedy(cand, lab, torch.tensor(fisher), 6, lam=1e-4, oversample=2,
                                return_info=True)
    assert info["float64_resets"] == 1 and info["rebuilds"] >= 2
    v = reference_dense(emb)
    _, best, _ = brute_force(v[:36], v[36:], fisher, 6, 1e-4, 2)
    got = objective(v[:36], v[36:], fisher, picks.tolist(), 1e-4, 6)
    assert (got - best) / best <= 1e-6


def test_float32_and_float64_shards_keep_float64_state():
    emb, fisher = problem(8, form="mixed", num_u=20, num_l=0)
    shard = GreedyShard(emb.to(storage_dtype=torch.bfloat16), 0, chunk=8)
    shard.start(torch.tensor(fisher), 0.5, torch.float32)
    assert shard.p.dtype == shard.q.dtype == shard.scores.dtype == torch.float64
    driver = GreedyDriver(None, torch.tensor(fisher), 4, lam=0.3, weighting="bait", k=emb.k)
    best32 = shard.reset(driver.a, True)
    p32 = shard.p.clone()
    best64 = shard.reset(driver.a, True, torch.float64)
    assert shard.dtype == torch.float64 and best32[1] == best64[1]
    scale = float(shard.p.abs().max())
    assert 0 < float((p32 - shard.p).abs().max()) <= 1e-5 * scale  # float32 rounding, no more


def test_reports_carry_the_runner_up_and_survive_pickling():
    emb, fisher = problem(9, form="dense", num_u=12, num_l=0)
    shard = GreedyShard(emb, 0, chunk=8)
    shard.start(torch.tensor(fisher), 0.5)
    driver = GreedyDriver(None, torch.tensor(fisher), 3, lam=1.0, weighting="bait", k=emb.k)
    best = shard.reset(driver.a, True)
    assert isinstance(best, Best) and len(best) == 3
    order = torch.sort(shard.scores, descending=True).values
    assert best[0] == float(order[0]) and best.runner_up == float(order[1])
    again = pickle.loads(pickle.dumps(best))
    assert again[:2] == best[:2] and again.runner_up == best.runner_up
    near = shard.contenders(float(order[2]), True)
    assert [g for _, g, _ in near] == sorted(g for _, g, _ in near) and len(near) == 3
    single = GreedyShard(emb.rows(slice(0, 1)), 0)
    single.start(torch.tensor(fisher), 0.5)
    assert single.reset(driver.a, True).runner_up == float("-inf")


def test_compute_dtype_errors():
    cands = FisherEmbeddings(dense=torch.randn(5, 2, 4))
    for bad in ("float16", torch.bfloat16, "half"):
        with pytest.raises(ValueError, match="compute_dtype must be one of float32, float64"):
            fisher_greedy(cands, None, torch.eye(4), 2, compute_dtype=bad)
    assert fisher_greedy(cands, None, torch.eye(4), 2, compute_dtype=torch.float64).tolist() == \
        fisher_greedy(cands, None, torch.eye(4), 2, compute_dtype="float32").tolist()


@pytest.mark.parametrize("form", ["factored", "mixed"])
def test_the_first_p_in_sample_space_when_few_points_are_labeled(form):
    # |L|·C = 6 ≤ k/2: A₀ = λ⁻¹(I − U Uᵀ), and P costs C·k·|L|·C per candidate instead of C·k²
    emb, fisher = problem(12, form=form, num_u=40, num_l=2, spread=1.0, conf=2.0)
    cand, lab = emb.rows(slice(0, 40)), emb.rows(slice(40, None))
    driver = GreedyDriver(lab, torch.tensor(fisher), 5, lam=0.2, weighting="bait", k=emb.k)
    lam, u = driver.low_rank
    assert u.shape == (emb.k, 6) and lam == 0.2
    eye = torch.eye(emb.k, dtype=torch.float64)
    torch.testing.assert_close((eye - u @ u.T) / lam, driver.a, rtol=1e-10, atol=1e-12)
    shards = [GreedyShard(cand, 0, chunk=16), GreedyShard(cand, 0, chunk=16)]
    for shard in shards:
        shard.start(driver.fisher, driver.w_s)
    shards[0].reset(driver.a, True)
    shards[1].reset(driver.a, True, None, driver.low_rank)
    torch.testing.assert_close(shards[1].p, shards[0].p, rtol=1e-9, atol=1e-12)
    assert torch.equal(shards[1].q, shards[0].q)
    none = GreedyDriver(emb.rows(slice(0, 20)), torch.tensor(fisher), 5, lam=0.2,
                        weighting="bait", k=emb.k)
    assert none.low_rank is None  # |L|·C = 60 > k/2
    diag = GreedyDriver(lab, torch.tensor(np.diag(fisher).copy()), 5, lam=0.2, weighting="bait",
                        k=emb.k)
    assert diag.low_rank is None  # a diagonal F forms Q from V_x A, which P then reuses
