"""RayExecutor (Ray pool-shard actors) against LocalExecutor: identical results on a real local Ray,
actor faults, a two-node cluster and a Tune trial on logical GPUs (the last two in subprocesses,
each with its own Ray, so that the session's Ray is left alone)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fishermask.strategies import inference
from fishermask.config import ExecutionConfig
from fishermask.data import ImageData
from fishermask.errors import FishermaskError
from fishermask.execution.local import LocalExecutor
from fishermask.models import build_model
from fishermask.strategies import SelectionContext, build_strategy
from fishermask.strategies.fisher_greedy import FisherDiagonalSum
from tests.helpers import with_batchnorm_statistics

pytestmark = pytest.mark.integration  # Ray, an MLflow server, the CLI or the loop

ROOT = Path(__file__).resolve().parents[2]
BATCH = 64
N_POOL, N_QUERY = 700, 24
GREEDY_CASES = {  # name: (strategy, params)
    "bait": ("bait", {}),                                   # last layer, oversample 2
    "fishermask": ("fishermask", {"sparsity": 0.006}),      # k = 560, dense F
    "fishermask_diag": ("fishermask", {"sparsity": 0.006, "fisher_target": "diag",
                                       "oversample": 2, "weighting": "uniform"}),
}


# ------------------------------------------------------------------------------------ helpers
def make_problem(n_pool: int = N_POOL, seed: int = 0):
    """A random uint8 pool (12×12, 4 classes), a cnn_small with non-trivial BatchNorm statistics,
    and a labeled/unlabeled split."""
    g = torch.Generator().manual_seed(seed)
    pool = ImageData(torch.randint(0, 256, (n_pool, 1, 12, 12), dtype=torch.uint8, generator=g),
                     torch.randint(0, 4, (n_pool,), generator=g), list("abcd"), (0.5,), (0.25,))
    torch.manual_seed(seed)
    model = with_batchnorm_statistics(build_model("cnn_small", 4, 1).eval())
    labeled = np.arange(0, n_pool, 9)
    return pool, model, labeled, np.setdiff1d(np.arange(n_pool), labeled)


def select_with(executor, problem, name: str, params: dict, n: int = N_QUERY, bind: bool = True):
    pool, model, labeled, unlabeled = problem
    if bind:
        executor.bind(pool)
    executor.set_model(model)
    ctx = SelectionContext(model=model, executor=executor, labeled=labeled, unlabeled=unlabeled,
                           num_classes=pool.num_classes, rng=np.random.default_rng(0))
    return build_strategy(name, **params).run_round(ctx, n)


def ray_cfg(shards: int, **kw) -> ExecutionConfig:
    # 0.25 CPU per shard: the 1+2+3 shards of the module and a loop's 2 fit in a 2-CPU session Ray
    return ExecutionConfig(backend="ray", shards=shards, cpus_per_shard=0.25, batch_size=BATCH,
                           device="cpu", **kw)


def run_child(code: str, timeout: int = 240) -> dict:
    """Run ``code`` in a fresh Python (own Ray); it prints one JSON line starting with RESULT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true",
               TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()  # the shards run one thread each; so does the reference
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module")
def executors(ray_session, problem):
    """RayExecutors with 1, 2 and 3 shards, bound to the pool once for the module."""
    from fishermask.execution.ray.executor import RayExecutor

    out = {}
    for shards in (1, 2, 3):
        out[shards] = RayExecutor(ray_cfg(shards))
        out[shards].bind(problem[0])
    yield out
    for ex in out.values():
        ex.close()


@pytest.fixture(scope="module")
def local_picks(problem):
    before = torch.get_num_threads()  # module fixtures run before the autouse one
    torch.set_num_threads(1)
    ex = LocalExecutor(device="cpu", batch_size=BATCH)
    out = {case: select_with(ex, problem, *GREEDY_CASES[case]).indices for case in GREEDY_CASES}
    torch.set_num_threads(before)
    return out


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("shards", [2, 3])
def test_map_and_sum_are_identical_to_local(executors, problem, shards):
    pool, model, labeled, unlabeled = problem
    local = LocalExecutor(device="cpu", batch_size=BATCH)
    local.bind(pool)
    local.set_model(model)
    ex = executors[shards]
    ex.set_model(model)
    arch = ex._arch_ref
    ex.set_model(model)  # same architecture: only the weights travel again
    assert ex._arch_ref is arch
    order = np.concatenate([unlabeled[::-1], labeled])  # any order, kept
    for fn in (inference.probs, inference.ProbsFeatures()):
        got, want = ex.map(fn, order), local.map(fn, order)
        if isinstance(want, dict):
            assert all(torch.equal(got[k], want[k]) for k in want)
        else:
            assert torch.equal(got, want)
    subset = np.sort(np.random.default_rng(1).choice(len(pool), 600, replace=False))
    got, want = ex.sum(FisherDiagonalSum(), subset), local.sum(FisherDiagonalSum(), subset)
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert ex.map(inference.probs, np.zeros(0, dtype=np.int64)).numel() == 0


@pytest.mark.parametrize("shards", [1, 2, 3])
@pytest.mark.parametrize("case", list(GREEDY_CASES))
def test_greedy_picks_are_identical_to_local(executors, problem, local_picks, case, shards):
    sel = select_with(executors[shards], problem, *GREEDY_CASES[case], bind=False)
    assert sel.indices.tolist() == local_picks[case].tolist()
    assert sel.diagnostics["shards"] == shards
    for phase in ("gradients", "fisher", "greedy"):
        assert sel.metrics[f"phase_{phase}_seconds"] >= 0


@pytest.mark.parametrize("name", ["random", "entropy", "margin", "least_confidence", "kcenter",
                                  "badge"])
def test_other_strategies_are_identical_to_local(executors, problem, name):
    want = select_with(LocalExecutor(device="cpu", batch_size=BATCH), problem, name, {}).indices
    for shards in (2, 3):
        got = select_with(executors[shards], problem, name, {}, bind=False).indices
        assert got.tolist() == want.tolist()


@pytest.mark.parametrize("event,step", [("embed", -1), ("step", 55)])
def test_killed_actor_is_restarted_and_picks_do_not_change(executors, problem, local_picks,
                                                           event, step, monkeypatch):
    """SIGKILL shard 1's process while its embedding runs, in the forward phase, or in the
    backward phase (n 24, oversample 2: steps 0–47 add, 48–71 remove)."""
    from fishermask.execution.ray.group import RayResident
    from fishermask.kernels._group import ShardGroup

    ex = executors[2]
    killed = []

    def kill(ev, st):
        if (ev, st) == (event, step) and not killed:
            killed.append(ex.actor_info[1]["pid"])
            os.kill(killed[0], signal.SIGKILL)

    embed, advance = RayResident._compute, ShardGroup.advance

    def embedding(group, j):  # kill shard 1 once every shard's embedding has been submitted
        ref = embed(group, j)
        if j == group.active[-1]:
            kill("embed", -1)
        return ref

    def advancing(group, *args):
        out = advance(group, *args)
        kill("step", group.steps)
        return out

    monkeypatch.setattr(RayResident, "_compute", embedding)
    monkeypatch.setattr(ShardGroup, "advance", advancing)
    sel = select_with(ex, problem, *GREEDY_CASES["fishermask_diag"], bind=False)
    assert killed and sel.diagnostics["recoveries"] >= 1
    assert ex.actor_info[1]["pid"] != killed[0]  # a new process
    assert sel.indices.tolist() == local_picks["fishermask_diag"].tolist()


def test_actor_killed_between_calls_recovers_map(executors, problem):
    import ray

    pool, model, *_ = problem
    ex = executors[2]
    ex.set_model(model)
    want = ex.map(inference.probs, np.arange(len(pool)))
    ray.kill(ex.actors[0], no_restart=False)
    assert torch.equal(ex.map(inference.probs, np.arange(len(pool))), want)


def test_memory_check_names_the_shards(executors, problem):
    from fishermask.execution.ray.executor import RayExecutor

    ex = RayExecutor(ray_cfg(2, max_memory_gb=1e-5))
    borrowed = executors[2]  # borrow the running actors and the pool they hold
    ex.actors, ex.pool, ex._pool_ref = borrowed.actors, borrowed.pool, borrowed._pool_ref
    try:
        with pytest.raises(FishermaskError) as err:
            select_with(ex, problem, "fishermask", {"sparsity": 0.006}, bind=False)
    finally:
        ex.actors = []
    assert "2 shards" in str(err.value) and "more shards (now 2)" in str(err.value)
    assert "execution." not in str(err.value)  # the executor's own terms; the loop adds the keys


def test_impossible_resources_fail_fast(ray_session, problem):
    from fishermask.execution.ray.executor import RayExecutor

    with pytest.raises(FishermaskError, match="GPU"):
        RayExecutor(ray_cfg(2, gpus_per_shard=1)).bind(problem[0])
    with pytest.raises(FishermaskError, match="gpus_per_shard"):
        RayExecutor(ExecutionConfig(shards=2, device="cuda")).bind(problem[0])


def test_loop_with_two_shards_picks_what_one_shard_picks(ray_session, tmp_path):
    from fishermask.loop import ActiveLearningLoop
    from tests.helpers import tiny_config

    picks = {}
    for shards in (1, 2):
        cfg = tiny_config(tmp_path / str(shards), strategy={"name": "fishermask", "sparsity": 0.006},
                          execution={"shards": shards, "cpus_per_shard": 0.25, "device": "cpu",
                                     "threads": 1})
        loop = ActiveLearningLoop.from_config(cfg, progress=False)
        loop.run()
        picks[shards] = loop.selected_indices()
        assert [r.diagnostics.get("shards", 1) for r in loop.records[1:]] == [shards] * 2
    assert picks[1] == picks[2]


CLUSTER_CHILD = """
import json, ray
from ray.cluster_utils import Cluster
import tests.execution.test_ray_executor as t
from fishermask.execution.local import LocalExecutor
from fishermask.execution.ray.executor import RayExecutor
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
ray.init(address=cluster.address)
problem = t.make_problem()
want = t.select_with(LocalExecutor(device="cpu", batch_size=t.BATCH), problem, "fishermask",
                     {"sparsity": 0.006}).indices.tolist()
ex = RayExecutor(t.ray_cfg(2))
got = t.select_with(ex, problem, "fishermask", {"sparsity": 0.006}).indices.tolist()
out = {"nodes": [i["node_id"] for i in ex.actor_info], "n_nodes": len(ray.nodes()),
       "same": got == want}
ex.close(); ray.shutdown(); cluster.shutdown()
print("RESULT " + json.dumps(out))
"""


def test_two_node_cluster_spreads_shards_and_picks_the_same():
    out = run_child(CLUSTER_CHILD)
    assert out["n_nodes"] == 2 and len(set(out["nodes"])) == 2
    assert out["same"]


TUNE_CHILD = """
import json, tempfile, numpy as np, ray
from ray import tune
from ray.util import get_current_placement_group
import tests.execution.test_ray_executor as t
from fishermask.strategies import inference
from fishermask.config import ExecutionConfig
from fishermask.execution.ray.executor import RayExecutor, execution_resources
cfg = ExecutionConfig(shards=2, cpus_per_shard=1, gpus_per_shard=1, batch_size=t.BATCH)

def trial(config):
    ex = RayExecutor(cfg)
    problem = t.make_problem(200)
    got = t.select_with(ex, problem, "bait", {}, n=5).indices.tolist()
    probs = ex.map(inference.probs, np.arange(200))
    info = {"actors": ex.actor_info, "trial_pg": get_current_placement_group().id.hex(),
            "picks": got, "rows": int(probs.shape[0])}
    ex.close()
    tune.report({"done": 1, "payload": json.dumps(info)})

ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False,
         object_store_memory=200 * 1024 ** 2)
from fishermask.execution.local import LocalExecutor
want = t.select_with(LocalExecutor(device="cpu", batch_size=t.BATCH), t.make_problem(200), "bait",
                     {}, n=5).indices.tolist()
tuner = tune.Tuner(tune.with_resources(trial, execution_resources(cfg)),
                   run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), name="gpu", verbose=0),
                   tune_config=tune.TuneConfig(num_samples=1))
result = tuner.fit()[0]
assert result.error is None, result.error
info = json.loads(result.metrics["payload"])
info["want"] = want
ray.shutdown()
print("RESULT " + json.dumps(info))
"""


def test_tune_trial_places_shards_in_its_placement_group_with_distinct_gpus():
    out = run_child(TUNE_CHILD)
    actors = out["actors"]
    assert len(actors) == 2
    assert all(len(a["gpu_ids"]) == 1 for a in actors)
    assert actors[0]["gpu_ids"] != actors[1]["gpu_ids"]
    assert all(a["placement_group"] == out["trial_pg"] for a in actors)
    assert all(a["device"] == "cpu" for a in actors)  # logical GPUs: torch sees none
    assert out["rows"] == 200 and out["picks"] == out["want"]
