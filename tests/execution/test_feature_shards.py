"""A pool of precomputed features on Ray shards: every shard reads only the rows of its own range,
and 1, 2 and 3 shards pick exactly what the in-process executor picks (BAIT on a linear head,
FisherMask on an MLP, margin, k-center, BADGE), also when a shard actor is SIGKILLed mid-round.
k-center and BADGE keep their rows on the shards (blocks of 2,048 candidates): a pool of 7,000
rows gives each of 3 shards some."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from fishermask.data import FeatureData
from fishermask.execution.local import LocalExecutor
from fishermask.models import build_model
from fishermask.strategies import SelectionContext, build_strategy
from tests.execution.conftest import ray_executor

pytestmark = pytest.mark.integration  # Ray actors
N_POOL, N_BIG, D, BATCH = 1300, 7000, 16, 64
CASES = {"bait": ("linear", {"oversample": 2}),
         "fishermask": ("mlp", {"sparsity": 0.3, "fisher_target": "diag", "mask_samples": 200}),
         "margin": ("linear", {}), "kcenter": ("linear", {}), "badge": ("linear", {})}
DIVERSITY = ("kcenter", "badge")


def _features(folder, n):
    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.normal(size=(n + 200, D)).astype(np.float32))
    rows = rng.permutation(n + 200)[:n]  # a pool in a seeded random order
    return FeatureData(folder / "x.npy", rng.integers(0, 4, n), list("abcd"), rows)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return _features(tmp_path_factory.mktemp("features"), N_POOL)


@pytest.fixture(scope="module")
def big_pool(tmp_path_factory):
    return _features(tmp_path_factory.mktemp("big"), N_BIG)


def _select(ex, pool, name, n=20):
    torch.manual_seed(0)
    head, params = CASES[name]
    model = build_model(head, 4, D, {"hidden": (12,)} if head == "mlp" else None).eval()
    labeled = np.arange(0, len(pool), 13)
    if getattr(ex, "pool", None) is not pool:
        ex.bind(pool)
    ex.set_model(model)
    ctx = SelectionContext(model=model, executor=ex, labeled=labeled,
                           unlabeled=np.setdiff1d(np.arange(len(pool)), labeled),
                           num_classes=4, rng=np.random.default_rng(0))
    return build_strategy(name, **params).run_round(ctx, n).indices.tolist()


@pytest.fixture(scope="module")
def local(pool):
    torch.set_num_threads(1)
    ex = LocalExecutor(device="cpu", batch_size=BATCH)
    return {name: _select(ex, pool, name) for name in CASES}


@pytest.fixture(scope="module")
def local_big(big_pool):
    torch.set_num_threads(1)
    ex = LocalExecutor(device="cpu", batch_size=BATCH)
    return {name: _select(ex, big_pool, name, n=40) for name in DIVERSITY}


def _ray(shards):
    return ray_executor(shards, BATCH)


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_shards_pick_what_one_process_picks_reading_their_own_rows(ray_session, pool, local,
                                                                   shards):
    ex = _ray(shards)
    try:
        ex.bind(pool)
        before = [s["read_rows"] for s in ex.shard_stats()]
        assert before == [0] * shards  # binding sends the description, reads nothing
        margin = _select(ex, pool, "margin")
        stats = ex.shard_stats()
        # margin reads each unlabeled row once, split over the shards: no shard reads them all
        reads = [s["read_rows"] for s in stats]
        assert sum(reads) == N_POOL - len(np.arange(0, N_POOL, 13))
        if shards > 1:
            assert max(reads) < sum(reads)
            spans = sorted(s["read_span"] for s in stats)
            assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # disjoint ranges
        assert margin == local["margin"]
        for name in CASES:
            assert _select(ex, pool, name) == local[name], name
    finally:
        ex.close()


@pytest.mark.parametrize("shards", [2, 3])
def test_diversity_rows_stay_on_the_shards_and_pick_what_one_process_picks(
        ray_session, big_pool, local_big, shards):
    from fishermask.execution.ray.group import RayResident

    ex = _ray(shards)
    held = []
    init = RayResident.__init__

    def holding(group, *args):
        init(group, *args)
        held.append(group.bounds)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(RayResident, "__init__", holding)
            for name in DIVERSITY:
                assert _select(ex, big_pool, name, n=40) == local_big[name], name
        # every shard held some of the candidates, on block boundaries
        assert len(held) == 2 and all(len([b for b in h if b[1] > b[0]]) == shards for h in held)
        assert all(a % 2048 == 0 for h in held for a, _ in h)
    finally:
        ex.close()


@pytest.mark.parametrize("name,step", [("kcenter", 15), ("badge", 15)])
def test_a_killed_shard_actor_mid_diversity_round_changes_no_pick(
        ray_session, big_pool, local_big, name, step):
    from fishermask.execution.ray.group import RayResident
    from fishermask.kernels import diversity

    ex = _ray(2)
    killed, calls = [], []
    run = RayResident.run
    pick = {"kcenter": diversity.KCenterShard.pick, "badge": diversity.BadgeShard.pick}[name]

    def running(group, op, *args, **kw):
        out = run(group, op, *args, **kw)
        calls.append(op)
        if calls.count(pick) == step and not killed:  # the state changed 15 times: replayed
            killed.append(ex.actor_info[1]["pid"])
            os.kill(killed[0], signal.SIGKILL)
        return out

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(RayResident, "run", running)
            assert _select(ex, big_pool, name, n=40) == local_big[name]
        assert killed and ex.actor_info[1]["pid"] != killed[0] and ex.recoveries >= 1
    finally:
        ex.close()


def test_a_killed_shard_actor_mid_round_changes_no_pick(ray_session, pool, local, monkeypatch):
    from fishermask.kernels._group import ShardGroup

    ex = _ray(2)
    killed = []
    advance = ShardGroup.advance

    def advancing(group, *args):
        out = advance(group, *args)
        if group.steps == 25 and not killed:  # in the backward phase of BAIT (40 forward steps)
            killed.append(ex.actor_info[1]["pid"])
            os.kill(killed[0], signal.SIGKILL)
        return out

    monkeypatch.setattr(ShardGroup, "advance", advancing)
    try:
        assert _select(ex, pool, "bait") == local["bait"]
        assert killed and ex.actor_info[1]["pid"] != killed[0] and ex.recoveries >= 1
    finally:
        ex.close()
