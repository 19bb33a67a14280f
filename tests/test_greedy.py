"""Greedy engine (fishermask.selection / greedy_state) against explicit float64 brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fishermask.selection import (
    CHUNK,
    GreedyState,
    drive_greedy,
    fisher_greedy,
    greedy_init,
    shard_bounds,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matrices: OpenMP threading only adds overhead (and stalls badly on a shared 2-core box).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_problem(seed, U=30, C=3, k=12, L=2, diag=False):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 2.0, size=(U + L, 1, 1))
    V = rng.standard_normal((U + L, C, k)) / np.sqrt(k) * scale
    F = np.einsum("xck,xcj->kj", V, V) / len(V)
    if diag:
        F = np.diag(F).copy()
    return V[:U], V[U:], F


def brute_force(cands, lab, F, n, lam=1.0, oversample=1, weighting="bait"):
    """Greedy on tr(M⁻¹F) with an explicit np.linalg.inv for every trial; returns (picks, min gap)."""
    U, C, k = cands.shape
    L = len(lab)
    w_l = 1.0 / (L + n)
    w_s = n / (L + n) if weighting == "bait" else w_l
    Fd = np.diag(F) if F.ndim == 1 else F
    M0 = lam * np.eye(k) + w_l * sum((v.T @ v for v in lab), np.zeros((k, k)))
    G = [w_s * v.T @ v for v in cands]

    def obj(S):
        return np.trace(np.linalg.inv(M0 + sum((G[s] for s in S), np.zeros((k, k)))) @ Fd)

    S, gaps = [], []
    n_fwd = min(oversample * n, U)

    def take(vals):  # smallest objective, ties → lowest index
        vals = sorted(vals)
        if len(vals) > 1:
            gaps.append((vals[1][0] - vals[0][0]) / abs(vals[0][0]))
        return vals[0][1]

    for _ in range(n_fwd):
        S.append(take([(obj(S + [x]), x) for x in range(U) if x not in S]))
    for _ in range(n_fwd - n):
        S.remove(take([(obj([q for q in S if q != s]), s) for s in S]))
    return S, min(gaps, default=1.0)


def run(cands, lab, F, n, **kw):
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return fisher_greedy(t(cands), t(lab), torch.tensor(F), n, **kw).tolist()


# (seed, k, L, n, diag F, oversample, weighting, lam)
CASES = [
    (0, 8, 0, 1, False, 1, "bait", 1.0),
    (1, 12, 0, 5, True, 1, "bait", 1.0),
    (2, 20, 0, 6, False, 2, "uniform", 0.01),
    (3, 16, 1, 4, False, 1, "bait", 0.1),
    (4, 20, 2, 3, True, 2, "bait", 0.1),
    (5, 10, 3, 6, False, 2, "uniform", 1.0),
    (6, 18, 5, 5, False, 1, "uniform", 0.01),
    (7, 14, 4, 2, True, 1, "uniform", 1.0),
    (8, 9, 5, 6, True, 2, "bait", 0.01),
    (9, 20, 1, 6, False, 2, "bait", 1.0),
    (10, 8, 5, 4, False, 1, "bait", 0.01),
    (11, 15, 2, 6, True, 2, "uniform", 0.1),
]


@pytest.mark.parametrize("seed,k,L,n,diag,r,weighting,lam", CASES)
def test_matches_bruteforce(seed, k, L, n, diag, r, weighting, lam):
    cands, lab, F = make_problem(seed, k=k, L=L, diag=diag)
    expected, gap = brute_force(cands, lab, F, n, lam, r, weighting)
    assert gap > 1e-5, "test problem has a near-tie; pick another seed"
    assert run(cands, lab, F, n, lam=lam, oversample=r, weighting=weighting) == expected


def test_oversample_clamped_to_pool_and_n_equals_U():
    cands, lab, F = make_problem(20, U=10, k=12, L=1)
    expected, gap = brute_force(cands, lab, F, 6, 0.1, 2)  # 12 > 10 forward steps → clamp to 10
    assert gap > 1e-5
    assert run(cands, lab, F, 6, lam=0.1, oversample=2) == expected
    picks = run(cands, lab, F, 10, lam=0.1)
    assert sorted(picks) == list(range(10))
    assert picks == brute_force(cands, lab, F, 10, 0.1)[0]


def test_diagonal_vector_equals_dense_diagonal_matrix():
    cands, lab, f = make_problem(21, U=60, k=16, L=3, diag=True)
    assert run(cands, lab, f, 8, oversample=2) == run(cands, lab, np.diag(f), 8, oversample=2)


def test_ties_go_to_lowest_index():
    torch.manual_seed(0)
    U, C, k = 300, 3, 16  # spans three chunks
    same = torch.randn(C, k).expand(U, C, k).clone()
    assert fisher_greedy(same, None, torch.eye(k), 5).tolist() == [0, 1, 2, 3, 4]
    # backward ties: forward takes 0..9, the removals take 0..4 (lowest first)
    assert fisher_greedy(same, None, torch.eye(k), 5, oversample=2).tolist() == [5, 6, 7, 8, 9]
    cands = torch.randn(U, C, k) / 4
    cands[290] = cands[200] * 8
    cands[150] = cands[290]
    cands[200] = cands[290]
    assert fisher_greedy(cands, None, torch.eye(k), 3)[0].item() == 150


def test_score_is_the_decrease_of_the_trace():
    cands, lab, F = make_problem(22, U=25, k=14, L=2)
    n, lam = 4, 0.3
    init = greedy_init(torch.tensor(lab), torch.tensor(F), n, lam=lam)
    state = GreedyState(torch.tensor(cands), 0, init)
    k = F.shape[0]
    M = lam * np.eye(k) + init.w_l * np.einsum("xck,xcj->kj", lab, lab)
    vt = cands * math.sqrt(init.w_s)
    tr = lambda m: np.trace(np.linalg.inv(m) @ F)  # noqa: E731
    for step in range(3):
        scores = state.forward_scores().numpy()
        for x in range(len(cands)):
            if state.selected[x]:
                assert scores[x] == -np.inf
            else:
                want = tr(M) - tr(M + vt[x].T @ vt[x])
                assert scores[x] == pytest.approx(want, rel=1e-4, abs=1e-6 * tr(M))
        _, g = state.best_forward()
        v, z, w = state.rows(g)
        state.mark(g, True)
        state.apply(v, z, w, +1)
        M = M + vt[g].T @ vt[g]
    back = state.backward_scores().numpy()
    for s in state.selected_indices.tolist():
        want = tr(M) - tr(M - vt[s].T @ vt[s])
        assert back[s] <= 0 and back[s] == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("lam,bound", [(1.0, 5e-5), (0.01, 3e-3)])
def test_drift_of_maintained_rows(lam, bound):
    U, C, k, steps = 400, 4, 64, 200
    cands, lab, F = make_problem(23, U=U, C=C, k=k, L=10)
    init = greedy_init(torch.tensor(lab), torch.tensor(F), steps, lam=lam)
    state = GreedyState(torch.tensor(cands, dtype=torch.float32), 0, init)
    for _ in range(steps):
        _, g = state.best_forward()
        v, z, w = state.rows(g)
        state.mark(g, True)
        state.apply(v, z, w, +1)
    vt = torch.tensor(cands) * math.sqrt(init.w_s)
    sel = state.selected_indices
    M = lam * torch.eye(k, dtype=torch.float64) + init.w_l * torch.einsum(
        "xck,xcj->kj", torch.tensor(lab), torch.tensor(lab)) + torch.einsum(
        "xck,xcj->kj", vt[sel], vt[sel])
    z_ref = vt @ torch.linalg.inv(M)
    w_ref = z_ref @ torch.tensor(F)
    rel = lambda a, b: ((a.double() - b).flatten(1).norm(dim=1)  # noqa: E731
                        / b.flatten(1).norm(dim=1)).max().item()
    s_ref = torch.linalg.solve(torch.eye(C, dtype=torch.float64) + z_ref @ vt.transpose(1, 2),
                               w_ref @ z_ref.transpose(1, 2)).diagonal(dim1=1, dim2=2).sum(-1)
    s_got = state._scores  # forward scores of every row, computed in the last apply
    errs = (rel(state.z, z_ref), rel(state.w, w_ref),
            ((s_got - s_ref).abs() / s_ref.abs()).max().item())
    print(f"\nlam={lam}: max relative error after {steps} steps: "
          f"Z {errs[0]:.2e}, W {errs[1]:.2e}, score {errs[2]:.2e}")
    assert max(errs) < bound


@pytest.mark.parametrize("L,k", [(2, 20), (5, 8)])
def test_woodbury_and_direct_init_agree(L, k):
    cands, lab, F = make_problem(24, U=60, k=k, L=L)
    c, lab_t, F_t = torch.tensor(cands, dtype=torch.float32), torch.tensor(lab), torch.tensor(F)
    inits = [greedy_init(lab_t, F_t, 6, lam=0.1, method=m) for m in ("direct", "woodbury")]
    assert greedy_init(lab_t, F_t, 6, lam=0.1).method == ("woodbury" if L * 3 < k else "direct")
    states = [GreedyState(c, 0, i) for i in inits]
    torch.testing.assert_close(states[0].z, states[1].z, rtol=1e-5, atol=1e-6)
    picks = [drive_greedy([s], 6, 2).tolist() for s in states]
    assert picks[0] == picks[1] == run(cands, lab, F, 6, lam=0.1, oversample=2)


def shard_driver(shards, n, oversample):
    """Independent tiny driver: global best = max score, ties to the lowest global index."""
    total = sum(s.size for s in shards)
    n_fwd = min(oversample * n, total)
    order, scores = [], []
    for step in range(n_fwd + (n_fwd - n)):
        fwd = step < n_fwd
        reports = [(s.best_forward() if fwd else s.best_backward(), s) for s in shards]
        (score, g), owner = max(((r, s) for r, s in reports if r is not None),
                                key=lambda t: (t[0][0], -t[0][1]))
        v, z, w = owner.rows(g)
        owner.mark(g, fwd)
        order.append(g) if fwd else order.remove(g)
        scores.append(score)
        for s in shards:
            s.apply(v, z, w, 1 if fwd else -1)
    return order, scores


@pytest.mark.parametrize("diag", [False, True])
def test_sharded_states_pick_exactly_what_one_state_picks(diag):
    U, n, r = 3 * CHUNK + 50, 12, 2
    cands, lab, F = make_problem(25, U=U, k=16, L=3, diag=diag)
    c = torch.tensor(cands, dtype=torch.float32)
    init = greedy_init(torch.tensor(lab), torch.tensor(F), n, lam=0.05)
    expected = fisher_greedy(c, torch.tensor(lab), torch.tensor(F), n, lam=0.05, oversample=r)
    ref_order, ref_scores = shard_driver([GreedyState(c, 0, init)], n, r)
    assert ref_order == expected.tolist()
    for bounds in ([(0, 2 * CHUNK), (2 * CHUNK, U)], shard_bounds(U, 3)):
        assert all(a % CHUNK == 0 for a, _ in bounds) and bounds[-1][1] == U
        shards = [GreedyState(c[a:b], a, init) for a, b in bounds]
        order, scores = shard_driver(shards, n, r)
        assert order == expected.tolist()
        assert scores == ref_scores  # bitwise


def test_shard_bounds_and_alignment():
    assert shard_bounds(1000, 3, 128) == [(0, 384), (384, 768), (768, 1000)]
    assert shard_bounds(100, 3, 128) == [(0, 100), (100, 100), (100, 100)]
    _, _, F = make_problem(0, U=1, k=4)
    init = greedy_init(None, torch.tensor(F), 1, num_classes=3)
    with pytest.raises(ValueError, match="multiple of chunk"):
        GreedyState(torch.zeros(5, 3, 4), 10, init)
    empty = GreedyState(torch.zeros(0, 3, 4), CHUNK, init)
    assert empty.best_forward() is None and empty.best_backward() is None
    with pytest.raises(ValueError, match=r"\(C, k\)"):
        GreedyState(torch.zeros(5, 2, 4), 0, init)


def test_state_protocol_errors():
    cands, lab, F = make_problem(28, U=20, k=8, L=1)
    init = greedy_init(torch.tensor(lab), torch.tensor(F), 3)
    state = GreedyState(torch.tensor(cands[:10]), CHUNK, init)
    assert state.owns(CHUNK + 9) and not state.owns(9)
    with pytest.raises(IndexError, match="not in this shard"):
        state.rows(3)
    with pytest.raises(IndexError, match="not in this shard"):
        state.mark(CHUNK + 10, True)
    _, g = state.best_forward()
    v, z, w = state.rows(g)
    with pytest.raises(ValueError, match="sign must be"):
        state.apply(v, z, w, 0)
    state.mark(g, True)
    state.apply(v, z, w, +1)
    assert state.selected_indices.tolist() == [g]
    state.mark(g, False)
    state.apply(v, z, w, -1)
    with pytest.raises(RuntimeError, match="after a removal"):
        state.best_forward()


def test_edge_cases():
    cands, lab, F = make_problem(26, U=12, k=8, L=0)
    assert fisher_greedy(torch.tensor(cands), None, torch.tensor(F), 0).dtype == torch.long
    assert fisher_greedy(torch.tensor(cands), torch.tensor(lab), F, 0).numel() == 0
    np_picks = fisher_greedy(cands, lab, F, 3).tolist()  # numpy inputs and L = 0
    assert np_picks == brute_force(cands, lab, F, 3)[0]
    assert fisher_greedy(cands, None, F, 3).tolist() == np_picks


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=13), "cannot select n=13 points from 12"),
    (dict(n=-1), "n must be a non-negative integer"),
    (dict(n=2.5), "n must be a non-negative integer"),
    (dict(lam=0.0), "lam must be a finite number > 0"),
    (dict(lam=-1.0), "lam must be a finite number > 0"),
    (dict(lam=float("nan")), "lam must be a finite number > 0"),
    (dict(oversample=0), "oversample must be an integer >= 1"),
    (dict(weighting="equal"), "unknown weighting 'equal'; valid choices: bait, uniform"),
    (dict(candidates=np.zeros((12, 3))), r"candidates must have shape \[U, C, k\]"),
    (dict(labeled=np.zeros((2, 4, 8))), "labeled has C=4 classes but the candidates have C=3"),
    (dict(labeled=np.zeros((2, 3, 9))), "labeled has k=9 but fisher has k=8"),
    (dict(labeled=np.zeros((2, 24))), r"labeled must have shape \[L, C, k\]"),
    (dict(fisher=np.eye(9)), "fisher has k=9 but the candidates have k=8"),
    (dict(fisher=np.zeros((8, 7))), r"dense fisher must be square"),
    (dict(fisher=np.zeros((2, 8, 8))), r"fisher must have shape \[k, k\] or \[k\]"),
    (dict(fisher=np.full(8, np.nan)), "fisher contains NaN"),
])
def test_errors(kwargs, match):
    cands, lab, F = make_problem(27, U=12, k=8, L=2)
    args = dict(candidates=cands, labeled=lab, fisher=F, n=3)
    args.update(kwargs)
    pos = [args.pop(key) for key in ("candidates", "labeled", "fisher", "n")]
    with pytest.raises(ValueError, match=match):
        fisher_greedy(*pos, **args)
