"""Faults of the systems around a sweep, met the way a user meets them: on a real two-node
``ray start`` cluster (token authentication, 1 CPU per node) with real ``mlflow server``s, driven
through the command line in subprocesses.

| fault | what must happen |
|---|---|
| the tracking server killed for good | the sweep stops within its patience plus a bound, exit 2, one message naming the server and the ``--resume`` command; with the server back, ``--resume`` completes every curve without a duplicate run |
| the tracking server killed and restarted | the sweep finishes as if nothing happened |
| the driver SIGKILLed | ``--resume`` completes every trial under the same parent |
| two sweeps at once | both finish; each experiment holds only its own runs; the summaries count what ran at once |
| a worker node SIGKILLed mid-sweep | Tune retries its trial (one note says so); complete curves, no duplicates |
| a worker node killed during a sharded FisherMask run | the run finishes with the picks of an undisturbed run |
| the head node killed | the driver exits 2 within a bound with one message and ``--resume``, leaving no run RUNNING; ``--resume`` on a new cluster completes |

The scenarios run at once on two clusters, each in a thread of the module's fixture (their
waits overlap on the 2-core machine); the tests then check what each recorded.  Every bound is
against a hang, not a speed claim.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fishermask.sweeps.summary import most_at_once
from tests.conftest import MlflowServer, _descendants, ray_cluster
from tests.sweep_drivers import (LABELS, Driver, assert_complete, cmdline, leftovers, resume,
                                 rounds_reported, runs_of, sweep_args, wait_until)

pytestmark = pytest.mark.integration  # Ray, MLflow servers, the CLI

SHARDED_RUN = """\
experiment: sharded
data: {dataset: digits, class_counts: [60, 60, 60, 60, 60, 60]}
budget: {initial: 12, query: 10, rounds: 3}
model: {name: cnn_small}
train: {epochs: 3, batch_size: 16}
strategy: {name: fishermask, sparsity: 0.01}
execution: {device: cpu, threads: 1, cpus_per_shard: 1, batch_size: 64}
"""
# 348 candidates: both shards hold some (shard boundaries are multiples of 256 rows)


# ----------------------------------------------------------------------------- scenarios

def tracking_server_gone(cluster, folder: Path) -> SimpleNamespace:
    """Kill the sweep's tracking server after the first round (patience 10 s); later start it
    again and resume."""
    with MlflowServer(folder).start().wait_up() as server:
        args = sweep_args(folder, cluster.address, server.uri, "gone", "--set",
                          "tracking.patience_s=10", "--set", "sweep.strategy.name=[random]")
        driver = Driver(folder, cluster, args)
        wait_until(rounds_reported(folder, "gone"), driver)
        server.kill()
        driver.mark()
        first = driver.wait(timeout=180)
        server.start().wait_up()
        again = resume(folder, cluster, args)
        runs = runs_of(server.uri, "gone")
    return SimpleNamespace(first=first, again=again, runs=runs, uri=server.uri,
                           leftovers=leftovers(folder))


def tracking_server_restarted(cluster, folder: Path) -> SimpleNamespace:
    """Kill the tracking server after the first round and start it again at once (it is away
    for the 10-20 s it takes to come up, within the default patience of 60 s)."""
    with MlflowServer(folder).start().wait_up() as server:
        args = sweep_args(folder, cluster.address, server.uri, "blip", "--set",
                          "sweep.strategy.name=[random]")
        driver = Driver(folder, cluster, args)
        wait_until(rounds_reported(folder, "blip"), driver)
        server.kill()
        t0 = time.monotonic()
        server.start().wait_up()
        away = time.monotonic() - t0
        done = driver.wait(timeout=300)
        runs = runs_of(server.uri, "blip")
    return SimpleNamespace(done=done, away=away, runs=runs, leftovers=leftovers(folder))


def driver_killed(cluster, folder: Path, uri: str) -> SimpleNamespace:
    args = sweep_args(folder, cluster.address, uri, "killed")
    driver = Driver(folder, cluster, args)
    wait_until(rounds_reported(folder, "killed"), driver)
    driver.proc.kill()  # SIGKILL: no handler runs, the cluster ends the driver's trials
    driver.wait(timeout=30)
    before = runs_of(uri, "killed")
    again = resume(folder, cluster, args)
    return SimpleNamespace(before=before, again=again, runs=runs_of(uri, "killed"),
                           leftovers=leftovers(folder))


def two_sweeps(cluster, folder: Path, uri: str) -> SimpleNamespace:
    drivers = {}
    for name, trials in (("twin-a", "[random, margin]"), ("twin-b", "[margin]")):
        sub = folder / name
        sub.mkdir()
        drivers[name] = Driver(sub, cluster, sweep_args(sub, cluster.address, uri, name, "--set",
                                                        f"sweep.strategy.name={trials}"))
    done = {name: d.wait(timeout=400) for name, d in drivers.items()}
    spans = {}
    for name in drivers:  # when each trial ran, from Tune's own result files
        spans[name] = []
        for result in (folder / name / "storage" / name).glob("trial_*/result.json"):
            last = json.loads(result.read_text().strip().splitlines()[-1])
            spans[name].append((last["trial_start"], last["trial_end"]))
    return SimpleNamespace(done=done, spans=spans, leftovers=leftovers(folder),
                           runs={name: runs_of(uri, name) for name in drivers})


def worker_node_killed(cluster, folder: Path, uri: str) -> SimpleNamespace:
    """SIGKILL the second node once both trials (one per node) have reported a round; a new
    node joins at once (as an autoscaler's would)."""
    # long enough trials that both are still running when the node dies (a trial that logs
    # through the sweep's tracking actor finishes 2 rounds in about 3 s)
    args = sweep_args(folder, cluster.address, uri, "worker", "--set", "train.epochs=150",
                      "--set", "budget.rounds=5")
    driver = Driver(folder, cluster, args)
    wait_until(rounds_reported(folder, "worker", trials=2), driver)
    cluster.kill(cluster.nodes[-1])
    cluster.add_node()
    done = driver.wait(timeout=400)
    return SimpleNamespace(done=done, runs=runs_of(uri, "worker"), leftovers=leftovers(folder))


def sharded_run_node_killed(cluster, folder: Path) -> SimpleNamespace:
    """``fishermask run`` with one shard actor on each node; the second node is killed once
    round 0 is checkpointed (round 1's selection runs next) and a new node joins."""
    path = folder / "sharded.yaml"
    path.write_text(SHARDED_RUN)
    args = ["run", str(path), "--no-progress", "--set", "execution.shards=2", "--set",
            f"execution.address={cluster.address}", "--tracking-uri",
            f"sqlite:///{folder / 'mlflow.db'}"]
    driver = Driver(folder, cluster, args)
    shards, stop = set(), threading.Event()  # (node, pid) of every shard actor seen

    def watch_shards():
        while not stop.wait(0.2):
            for node in list(cluster.nodes):
                shards.update((node.pid, pid) for pid in _descendants(node.pid)
                              if "ray::PoolShard" in cmdline(pid))

    spy = threading.Thread(target=watch_shards, daemon=True)
    spy.start()
    state = folder / ".fishermask" / "checkpoints"
    wait_until(lambda: list(state.glob("*/state.pt")), driver)
    killed = cluster.nodes[-1]
    before = {node for node, _ in shards}
    cluster.kill(killed)
    new = cluster.add_node()
    done = driver.wait(timeout=400)
    stop.set()
    spy.join()
    saved = torch.load(next(state.glob("*/state.pt")), weights_only=False)
    return SimpleNamespace(done=done, spread=killed.pid in before and len(before) == 2,
                           moved=new.pid in {node for node, _ in shards},
                           picks=(saved["initial"], [r["picked"] for r in saved["records"]]),
                           statuses=runs_of(f"sqlite:///{folder / 'mlflow.db'}", "sharded").statuses,
                           leftovers=leftovers(folder))


def undisturbed_picks(folder: Path) -> tuple[list, list]:
    """The picks of the sharded run's config run here, in this process, without Ray."""
    from fishermask.config import load_config
    from fishermask.loop import ActiveLearningLoop

    path = folder / "undisturbed.yaml"
    path.write_text(SHARDED_RUN)
    threads = torch.get_num_threads()
    try:
        loop = ActiveLearningLoop.from_config(load_config(path, ["execution.shards=1"]),
                                              checkpoint_dir=folder / "ckpt", progress=False,
                                              echo=False)
        loop.run()
    finally:
        torch.set_num_threads(threads)
    return loop.initial_indices, [r.picked for r in loop.records]


def head_node_killed(cluster, folder: Path, uri: str, elsewhere) -> SimpleNamespace:
    """SIGKILL the head (GCS, raylet, its trial) after a round; then the other node goes too
    (an operator's cleanup), and the sweep resumes on another cluster (``elsewhere``)."""
    args = sweep_args(folder, cluster.address, uri, "headless", "--set",
                      "sweep.strategy.name=[random]")
    driver = Driver(folder, cluster, args)
    wait_until(rounds_reported(folder, "headless"), driver)
    cluster.kill(cluster.nodes[0])
    driver.mark()
    first = driver.wait(timeout=150)
    cluster.stop()
    after = runs_of(uri, "headless")
    elsewhere.wait()
    again = resume(folder, elsewhere.cluster, args)
    return SimpleNamespace(first=first, after=after, again=again,
                           runs=runs_of(uri, "headless"), leftovers=leftovers(folder))


# ----------------------------------------------------------------------------- the fixture

class Later:
    """A cluster that another thread makes available later (``wait`` blocks until then)."""

    def __init__(self):
        self.cluster, self._ready = None, threading.Event()

    def set(self, cluster) -> None:
        self.cluster = cluster
        self._ready.set()

    def wait(self) -> None:
        assert self._ready.wait(900), "the shared cluster never came up"


HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "5000",
          "RAY_health_check_failure_threshold": "5"}
"""The head declares a node dead after 5 failed checks a second apart (Ray's defaults: 3 s, 5
checks after a 5 s delay), so that a killed node's trial or actor is replaced sooner."""


@pytest.fixture(scope="module")
def faults(mlflow_server, tmp_path_factory):
    """Every scenario, on two clusters at once: one runs the tracking-server, driver and
    two-sweep scenarios side by side; the other loses a worker node under a sharded run, then
    under a sweep, then its head (and that sweep resumes on the first cluster)."""
    uri, shared, other_done = mlflow_server.uri, Later(), threading.Event()
    folder = {name: tmp_path_factory.mktemp(name) for name in
              ("gone", "blip", "killed", "twins", "worker", "sharded", "headless")}

    def shared_lane():
        with ray_cluster(node_env=HEALTH) as cluster:
            shared.set(cluster)
            with ThreadPoolExecutor(4) as pool:
                jobs = {"gone": pool.submit(tracking_server_gone, cluster, folder["gone"]),
                        "blip": pool.submit(tracking_server_restarted, cluster, folder["blip"]),
                        "killed": pool.submit(driver_killed, cluster, folder["killed"], uri),
                        "twins": pool.submit(two_sweeps, cluster, folder["twins"], uri)}
                out = {name: job.result() for name, job in jobs.items()}
            other_done.wait(900)  # the head scenario resumes on this cluster
            return out

    def other_lane():
        try:
            with ray_cluster(node_env=HEALTH) as cluster:
                out = {"sharded": sharded_run_node_killed(cluster, folder["sharded"])}
                out["sharded"].want = undisturbed_picks(folder["sharded"])
                out["worker"] = worker_node_killed(cluster, folder["worker"], uri)
                out["headless"] = head_node_killed(cluster, folder["headless"], uri, shared)
                return out
        finally:
            other_done.set()

    with ThreadPoolExecutor(2) as lanes:
        first, second = lanes.submit(shared_lane), lanes.submit(other_lane)
        return {**first.result(), **second.result()}


# ----------------------------------------------------------------------------- tests

def test_a_tracking_server_gone_for_good_stops_the_sweep_and_resume_completes(faults):
    f = faults["gone"]
    # noticed after its 10 s of patience, the trials stopped and the driver out within a bound
    assert f.first.code == 2 and f.first.seconds < 10 + 60, f.first.err[-3000:]
    errors = [line for line in f.first.err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in f.first.out + f.first.err
    assert f"the MLflow tracking server at {f.uri} has not answered" in errors[0]
    assert errors[0].rstrip().endswith("--resume") and "tracking.patience_s=10" in errors[0]
    assert f.again.code == 0, f.again.err[-3000:]
    assert_complete(f.runs, ["random seed=0"])  # nothing lost, no duplicate, nothing RUNNING
    assert not f.leftovers


def test_a_tracking_server_restarted_within_the_patience_goes_unnoticed(faults):
    f = faults["blip"]
    assert f.away > 2  # it was away while the trials logged
    assert f.done.code == 0 and f.done.seconds < 300, f.done.err[-3000:]
    assert "Traceback" not in f.done.out + f.done.err and "error" not in f.done.err.lower()
    assert_complete(f.runs, ["random seed=0"])
    assert not f.leftovers


def test_resume_after_the_driver_was_sigkilled(faults):
    f = faults["killed"]
    assert [p.info.status for p in f.before.parents] == ["RUNNING"]  # the kill left it so
    assert f.again.code == 0 and f.again.seconds < 300, f.again.err[-3000:]
    assert_complete(f.runs)
    assert f.runs.parents[0].info.run_id == f.before.parents[0].info.run_id
    assert "Traceback" not in f.again.out + f.again.err and not f.leftovers
    # the same trials as an uninterrupted sweep's (the twins'), to the last digit
    assert f.runs.curves == faults["twins"].runs["twin-a"].curves


def test_two_sweeps_at_once_on_one_cluster_and_one_server(faults):
    f = faults["twins"]
    for name, labels in (("twin-a", LABELS), ("twin-b", ["margin seed=0"])):
        done = f.done[name]
        assert done.code == 0 and done.seconds < 400, done.err[-3000:]
        assert "Traceback" not in done.out + done.err
        assert_complete(f.runs[name], labels)  # each experiment holds its own runs only
        # "at a time": what ran at once (the trials' own start and end), not the cluster's size
        at_once = most_at_once(f.spans[name])
        assert f"for {len(labels)} trials ({at_once} at a time)" in done.out
    both = f.spans["twin-a"] + f.spans["twin-b"]
    assert len(both) == 3 and most_at_once(both) <= 2  # they shared the cluster's 2 CPUs
    parents = {f.runs[n].parents[0].info.run_id for n in f.runs}
    assert len(parents) == 2 and not f.leftovers


def test_a_worker_node_killed_mid_sweep_is_retried(faults):
    f = faults["worker"]
    assert f.done.code == 0 and f.done.seconds < 400, f.done.err[-3000:]
    notes = [line for line in f.done.err.splitlines() if line.startswith("note: trial")]
    assert len(notes) == 1 and "Tune retries it from its last reported round" in notes[0], \
        f.done.err[-3000:] + f.done.out[-3000:]
    assert "Traceback" not in f.done.out + f.done.err
    assert_complete(f.runs, steps=range(10, 70, 10))
    assert not f.leftovers


def test_a_worker_node_killed_during_a_sharded_fishermask_run_keeps_the_picks(faults):
    f = faults["sharded"]
    assert f.done.code == 0 and f.done.seconds < 400, f.done.err[-3000:]
    assert f.spread  # one shard actor on each node, the killed one included
    assert f.moved  # the killed node's shard actor was restarted on the node that joined
    assert "Traceback" not in f.done.out + f.done.err
    assert len(f.picks[1]) == 4 and f.picks == f.want  # every round, the same picks
    assert f.statuses == ["FINISHED"] and not f.leftovers


def test_the_head_node_killed_ends_the_driver_with_one_message(faults):
    f = faults["headless"]
    assert f.first.code == 2 and f.first.seconds < 60, f.first.err[-3000:]
    errors = [line for line in f.first.err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: lost the Ray cluster"), errors
    assert errors[0].rstrip().endswith("--resume")
    assert "RUNNING" not in f.after.statuses  # the parent and the running trials marked
    assert [p.info.status for p in f.after.parents] == ["KILLED"]
    assert f.again.code == 0, f.again.err[-3000:]  # on another cluster
    assert_complete(f.runs, ["random seed=0"])
    assert not f.leftovers
