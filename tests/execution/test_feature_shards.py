"""A pool of precomputed features on Ray shards: every shard reads only the rows of its own range,
and 1, 2 and 3 shards pick exactly what the in-process executor picks (BAIT on a linear head,
FisherMask on an MLP, margin, k-center, BADGE), also when a shard actor is SIGKILLed mid-round."""

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
N_POOL, D, BATCH = 1300, 16, 64
CASES = {"bait": ("linear", {"oversample": 2}),
         "fishermask": ("mlp", {"sparsity": 0.3, "fisher_target": "diag", "mask_samples": 200}),
         "margin": ("linear", {}), "kcenter": ("linear", {}), "badge": ("linear", {})}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.normal(size=(N_POOL + 200, D)).astype(np.float32))
    rows = rng.permutation(N_POOL + 200)[:N_POOL]  # a pool in a seeded random order
    return FeatureData(folder / "x.npy", rng.integers(0, 4, N_POOL), list("abcd"), rows)


def _select(ex, pool, name, n=20):
    torch.manual_seed(0)
    head, params = CASES[name]
    model = build_model(head, 4, D, {"hidden": (12,)} if head == "mlp" else None).eval()
    labeled = np.arange(0, N_POOL, 13)
    if getattr(ex, "pool", None) is not pool:
        ex.bind(pool)
    ex.set_model(model)
    ctx = SelectionContext(model=model, executor=ex, labeled=labeled,
                           unlabeled=np.setdiff1d(np.arange(N_POOL), labeled),
                           num_classes=4, rng=np.random.default_rng(0))
    return build_strategy(name, **params).run_round(ctx, n).indices.tolist()


@pytest.fixture(scope="module")
def local(pool):
    torch.set_num_threads(1)
    ex = LocalExecutor(device="cpu", batch_size=BATCH)
    return {name: _select(ex, pool, name) for name in CASES}


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


def test_a_killed_shard_actor_mid_round_changes_no_pick(ray_session, pool, local, monkeypatch):
    from fishermask.execution.ray.group import RayShardGroup

    ex = _ray(2)
    killed = []
    advance = RayShardGroup.advance

    def advancing(group, *args):
        out = advance(group, *args)
        if group.steps == 25 and not killed:  # in the backward phase of BAIT (40 forward steps)
            killed.append(ex.actor_info[1]["pid"])
            os.kill(killed[0], signal.SIGKILL)
        return out

    monkeypatch.setattr(RayShardGroup, "advance", advancing)
    try:
        assert _select(ex, pool, "bait") == local["bait"]
        assert killed and ex.actor_info[1]["pid"] != killed[0] and ex.recoveries >= 1
    finally:
        ex.close()
