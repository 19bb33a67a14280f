"""The greedy's parts: GreedyShard's maintained scores against explicit traces, the driver's exact
scores, sharded runs picking bitwise what one shard picks, and the shard protocol's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fishermask.kernels import fisher_greedy
from fishermask.kernels._driver import GreedyDriver, run_greedy
from fishermask.kernels._group import LocalShardGroup
from fishermask.kernels._shard import CHUNK, GreedyShard, shard_bounds
from tests.greedy_reference import objective, problem, reference_dense


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: threads only cost


def _started(emb, offset, fisher, w_s, chunk=CHUNK) -> GreedyShard:
    shard = GreedyShard(emb, offset, chunk=chunk)
    shard.start(fisher, w_s)
    return shard


def _setup(seed, *, form="mixed", num_u=25, num_l=2, n=4, lam=0.3, diag=False, spread=1.0,
           conf=2.0, weighting="bait", chunk=8):
    emb, fisher = problem(seed, form=form, num_u=num_u, num_l=num_l, spread=spread, conf=conf)
    if diag:
        fisher = np.diag(fisher).copy()
    cand, lab = emb.rows(slice(0, num_u)), emb.rows(slice(num_u, None))
    driver = GreedyDriver(lab if num_l else None, torch.tensor(fisher), n, lam=lam,
                          weighting=weighting, k=emb.k)
    shard = _started(cand, 0, driver.fisher, driver.w_s, chunk)
    v = reference_dense(emb)
    m0 = lam * np.eye(emb.k) + driver.w_l * np.einsum("xck,xcj->kj", v[num_u:], v[num_u:])
    return driver, shard, v[:num_u] * np.sqrt(driver.w_s), m0, fisher


@pytest.mark.parametrize("form,diag", [("factored", False), ("dense", True), ("mixed", False),
                                       ("mixed", True)])
def test_maintained_scores_are_the_decrease_of_the_trace(form, diag):
    driver, shard, vt, m, fisher = _setup(22, form=form, diag=diag)
    f = np.diag(fisher) if diag else fisher
    tr = lambda mat: np.trace(np.linalg.solve(mat, f))  # noqa: E731
    report = shard.reset(driver.a, True)
    picked = []
    for step in range(4):  # three additions, then one removal
        forward = step < 3
        scores = shard.scores.numpy()
        rows = [x for x in range(len(vt)) if (x in picked) != forward]
        a = np.linalg.inv(m)
        for x in rows:  # P_x = Ṽ_x A Ṽ_xᵀ; Q_x kept up to an antisymmetric part
            p_x, q_x = shard.p[x].numpy(), shard.q[x].numpy()
            want_p, want_q = vt[x] @ a @ vt[x].T, vt[x] @ a @ f @ a @ vt[x].T
            np.testing.assert_allclose(p_x, want_p, rtol=1e-9, atol=1e-12 * np.abs(want_p).max())
            np.testing.assert_allclose((q_x + q_x.T) / 2, want_q, rtol=1e-9,
                                       atol=1e-12 * np.abs(want_q).max())
            change = vt[x].T @ vt[x]
            want = tr(m) - tr(m + change if forward else m - change)
            assert scores[x] == pytest.approx(want, rel=1e-9, abs=1e-12 * tr(m))
            if not forward:
                assert scores[x] <= 0
        score, g, row = report
        assert score == max(scores[x] for x in rows) and g in rows
        ev = driver.evaluate(row, g, forward)  # the exact score from M itself
        assert ev["score"] == pytest.approx(score, rel=1e-9) and driver.check(ev, score)
        update = driver.accept(ev)
        change = vt[g].T @ vt[g]
        m = m + change if forward else m - change
        picked.append(g) if forward else picked.remove(g)
        assert driver.objective == pytest.approx(tr(m), rel=1e-9)
        np.testing.assert_allclose(driver.m.numpy(), m, rtol=1e-12, atol=1e-12 * np.abs(m).max())
        report = shard.advance(update, step + 1 < 3)
    assert sorted(shard.selected_indices.tolist()) == sorted(picked)
    removal = shard.scores.numpy()[picked]
    assert (removal <= 0).all()


class RecordingDriver(GreedyDriver):
    """A GreedyDriver that records the sign and exact score of every accepted step."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.accepted = []

    def accept(self, ev):
        self.accepted.append((ev["sign"], ev["score"]))
        return super().accept(ev)


def test_removal_scores_are_not_positive_on_a_hard_problem():
    # λ = 1e-4, norms over e^±4, peaked softmax: −I + P_s is nearly singular here.
    emb, fisher = problem(3, form="factored", num_u=36, num_l=0, spread=4.0, conf=8.0)
    driver = RecordingDriver(None, torch.tensor(fisher), 6, lam=1e-4, weighting="bait", k=emb.k)
    shard = _started(emb, 0, driver.fisher, driver.w_s, 8)
    order, info = run_greedy(LocalShardGroup([shard]), driver, 36, 6, oversample=2)
    assert info["rebuilds"] > 0
    signs = [s for s, _ in driver.accepted]
    assert signs == [1] * 12 + [-1] * 6
    assert all(score >= 0 for s, score in driver.accepted if s > 0)
    assert all(score <= 0 for s, score in driver.accepted if s < 0)
    # the maintained removal scores of the kept points, once the last removal is applied
    shard.advance((order[0], -1, *driver.accept(driver.evaluate(
        emb.rows(slice(order[0], order[0] + 1)), order[0], False))[2:]), False)
    kept = order[1:]
    assert (shard.scores[kept] <= 0).all()
    v = reference_dense(emb)
    assert info["objective"] == pytest.approx(objective(v, v[:0], fisher, order, 1e-4, 6), rel=1e-8)


def _sharded_run(seed, bounds, *, n, oversample, chunk, diag=False, lam=0.05, **kw):
    emb, fisher = problem(seed, form="mixed", num_u=bounds[-1][1], num_l=3, **kw)
    if diag:
        fisher = np.diag(fisher).copy()
    num_u = bounds[-1][1]
    cand, lab = emb.rows(slice(0, num_u)), emb.rows(slice(num_u, None))
    driver = GreedyDriver(lab, torch.tensor(fisher), n, lam=lam, weighting="bait", k=emb.k)
    shards = [_started(cand.rows(slice(a, b)), a, driver.fisher, driver.w_s, chunk)
              for a, b in bounds]
    trace = []

    class Recording(LocalShardGroup):  # every report the driver sees, in order
        def _record(self, method, out):
            trace.append((method, [None if r is None else r[:2] for r in out if r is not None]))
            return out

        def reset(self, *args):
            return self._record("reset", super().reset(*args))

        def advance(self, *args):
            return self._record("advance", super().advance(*args))

        def override(self, *args):
            return self._record("override", super().override(*args))

    order, info = run_greedy(Recording(shards), driver, num_u, n, oversample)
    v = reference_dense(emb)
    obj = objective(v[:num_u], v[num_u:], fisher, order, lam, n)
    return order, info, trace, obj


@pytest.mark.parametrize("oversample,diag,hard", [(1, False, False), (2, False, False),
                                                  (2, True, False), (2, False, True)])
def test_sharded_runs_pick_exactly_what_one_shard_picks(oversample, diag, hard):
    num_u, chunk, n = 45, 8, 6
    kw = dict(lam=1e-4, spread=4.0, conf=8.0) if hard else dict(spread=1.0, conf=2.0)
    one, info1, trace1, obj = _sharded_run(5, [(0, num_u)], n=n, oversample=oversample,
                                           chunk=chunk, diag=diag, **kw)
    merged = lambda tr: [(m, max(r, key=lambda t: (t[0], -t[1])) if r else None)  # noqa: E731
                         for m, r in tr]
    for shards in (2, 3, 4, 7):
        # empty trailing ranges (7 shards, 6 chunks) hold no shard, as in the executors
        bounds = [(a, b) for a, b in shard_bounds(num_u, shards, chunk) if a < b]
        assert all(a % chunk == 0 for a, _ in bounds) and bounds[-1][1] == num_u
        order, info, trace, obj_s = _sharded_run(5, bounds, n=n, oversample=oversample,
                                                 chunk=chunk, diag=diag, **kw)
        assert order == one  # bitwise the same walk: same picks, same order
        assert merged(trace) == merged(trace1)  # the global best of every call, scores bitwise
        assert {k: info[k] for k in ("rebuilds", "overrides", "checks", "steps")} == \
               {k: info1[k] for k in ("rebuilds", "overrides", "checks", "steps")}
        assert obj_s == obj
    if hard:
        assert info1["rebuilds"] > 0  # the rebuild path is sharded deterministically too


def test_shard_bounds():
    assert shard_bounds(1000, 3, 128) == [(0, 384), (384, 768), (768, 1000)]
    assert shard_bounds(100, 3, 128) == [(0, 100), (100, 100), (100, 100)]
    assert shard_bounds(20, 4, 8) == [(0, 8), (8, 16), (16, 20), (20, 20)]
    assert shard_bounds(0, 2) == [(0, 0), (0, 0)]
    assert shard_bounds(3 * CHUNK + 1, 2) == [(0, 2 * CHUNK), (2 * CHUNK, 3 * CHUNK + 1)]
    with pytest.raises(ValueError, match="shards must be >= 1, got 0"):
        shard_bounds(10, 0)


def test_shard_offset_and_chunk_errors():
    emb, fisher = problem(28, form="factored", num_u=10, num_l=0)
    f = torch.tensor(fisher)
    for offset, chunk in ((10, 8), (-8, 8), (0, 0), (CHUNK // 2, CHUNK)):
        with pytest.raises(ValueError, match=rf"offset \({offset}\) must be a non-negative "
                                             rf"multiple of chunk \({chunk}\)"):
            GreedyShard(emb, offset, chunk=chunk)
    shard = _started(emb, CHUNK, f, 1.0)  # default chunk
    assert shard.chunk == CHUNK and shard.owns(CHUNK + 9) and not shard.owns(9)
    assert not shard.owns(CHUNK + 10)
    empty = _started(emb.empty_like(), 16, f, 1.0, chunk=8)
    driver = GreedyDriver(None, f, 3, lam=1.0, weighting="bait", k=emb.k)
    assert empty.reset(driver.a, True) is None and empty.best(False) is None


def test_shard_protocol_errors():
    driver, shard, *_ = _setup(29, num_u=12, n=2)
    score, g, row = shard.reset(driver.a, True)
    assert shard.override(g + 100, 0.0, True)[1] == g  # not owned: ignored
    best = shard.override(g, -1.0, True)  # an exact score replaces the maintained one
    assert best[1] != g and shard.scores[g] == -1.0
    shard.override(g, score, True)
    update = driver.accept(driver.evaluate(row, g, True))
    _, s, row_s = shard.advance(update, False)
    assert s == g
    shard.advance(driver.accept(driver.evaluate(row_s, s, False)), False)
    with pytest.raises(RuntimeError, match="forward scores are unavailable after a removal step"):
        shard.advance(None, True)
    fresh = LocalShardGroup([_started(shard.emb, 0, driver.fisher, driver.w_s, 8)])
    with pytest.raises(RuntimeError, match="no eligible candidate left in any shard"):
        run_greedy(fresh, GreedyDriver(None, driver.fisher, 13, lam=1.0, weighting="bait",
                                       k=driver.k), 13, 13)


def test_diagnostics():
    emb, fisher = problem(30, form="mixed", num_u=30, num_l=2, spread=1.0, conf=2.0)
    picks, info = fisher_greedy(emb.rows(slice(0, 30)), emb.rows(slice(30, None)),
                                torch.tensor(fisher), 5, lam=0.1, oversample=2, return_info=True)
    assert info["steps"] == 15 and info["checks"] >= 15 and info["seconds"] > 0
    assert info["rebuilds"] == info["overrides"] == 0  # a well-conditioned problem needs none
    v = reference_dense(emb)
    want = objective(v[:30], v[30:], fisher, picks.tolist(), 0.1, 5)
    assert info["objective"] == pytest.approx(want, rel=1e-10)


def test_a_report_sends_its_row_not_the_shards_storage():
    """A report crosses to the driver pickled: the winner's row must not drag along the shard's
    whole embedding storage (a slice is a view of it)."""
    import pickle

    driver, shard, *_ = _setup(5, num_u=2000, n=2)
    best = shard.reset(driver.a, True)
    whole = len(pickle.dumps(shard.emb))
    assert len(pickle.dumps(best)) < whole / 50
    assert len(pickle.dumps(shard.contenders(float("-inf"), True)[0])) < whole / 50
    row = best[2]
    ref = shard.emb.rows(slice(best[1], best[1] + 1))
    for got, want in ((row.features, ref.features), (row.probs, ref.probs), (row.dense, ref.dense)):
        assert (got is None) == (want is None) and (got is None or torch.equal(got, want))


def test_trace_solve_against_explicit_inverses():
    from fishermask.kernels._shard import trace_solve

    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 5, 9, generator=g, dtype=torch.float64)
    s = a @ a.transpose(1, 2) * torch.logspace(-4, 4, 6, dtype=torch.float64)[:, None, None]
    s.diagonal(dim1=1, dim2=2).add_(1.0)                     # I + P, P ≥ 0 over a wide spread
    q = torch.randn(6, 5, 5, generator=g, dtype=torch.float64)
    q = q @ q.transpose(1, 2)
    want = torch.stack([torch.trace(torch.linalg.inv(si) @ qi) for si, qi in zip(s, q)])
    torch.testing.assert_close(trace_solve(s, q, positive=True), want, rtol=1e-10, atol=0)
    torch.testing.assert_close(trace_solve(s, q), want, rtol=1e-10, atol=0)
    singular = s.clone()
    singular[2] = 0.0
    for positive in (True, False):
        out = trace_solve(singular, q, positive=positive)
        assert out[2] == float("-inf") and torch.isfinite(out[[0, 1, 3, 4, 5]]).all()
