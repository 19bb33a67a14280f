"""``fishermask`` against a real two-node Ray cluster made with ``ray start`` (head + one more
node, 1 CPU each, token authentication on, temp dirs and free ports of their own), driven through
the command line in subprocesses: the token-authentication mistakes, the resource check, a start
that ran no trial, and a sweep that runs on both nodes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import _free_port, ray_cluster, write_tiny_sweep

pytestmark = pytest.mark.integration  # Ray, an MLflow server, the CLI or the loop

FISHERMASK = [sys.executable, "-m", "fishermask"]


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, 1 CPU each, token authentication with a fresh token."""
    with ray_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def http1_port():
    """A port that answers like a web server (the dashboard, MLflow), not like Ray's GCS."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.3)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    srv.close()


def _env(tmp_path, auth: dict[str, str]) -> dict[str, str]:
    """Only the ``auth`` RAY_* variables, and a home without a token file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(auth, RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true",
               HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _sweep_args(tmp_path, address: str, *extra: str) -> list[str]:
    path = write_tiny_sweep(tmp_path)
    return ["sweep", str(path), "--address", address, "--storage", str(tmp_path / "storage"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra]


JOIN_MISTAKES = {  # case: (RAY_* variables, address, what the message must say)
    "mode-unset": ({}, "cluster", ["uses token authentication", "RAY_AUTH_MODE is not set",
                                   "export RAY_AUTH_MODE=token", "ray get-auth-token"]),
    "no-token": ({"RAY_AUTH_MODE": "token"}, "cluster",
                 ["RAY_AUTH_MODE=token, but this process has no token", "RAY_AUTH_TOKEN"]),
    "wrong-token": ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"}, "cluster",
                    ["rejected this process's token (from RAY_AUTH_TOKEN)",
                     "ray get-auth-token"]),
    "unreachable": ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "x"}, "closed",
                    ["cannot reach the Ray cluster at 127.0.0.1:", "ray status"]),
    "not-a-gcs": ({}, "http1", ["answers, but not as a Ray cluster's GCS",
                                "port 6379 by default"]),
}


@pytest.fixture(scope="module")
def failed_starts(cluster, http1_port, tmp_path_factory):
    """The command lines that must stop before any work, run at once (each in its own folder):
    the JOIN_MISTAKES, a sweep whose trials need 3 CPUs, and a ``run`` with 3 shards.
    {case: (folder, returncode, stdout, stderr)}."""
    good = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
    addresses = {"cluster": cluster.address, "closed": f"127.0.0.1:{_free_port()}",
                 "http1": f"127.0.0.1:{http1_port}"}
    jobs = {}
    for case, (auth, where, _) in JOIN_MISTAKES.items():
        folder = tmp_path_factory.mktemp(case)
        jobs[case] = (folder, auth, _sweep_args(folder, addresses[where]))
    folder = tmp_path_factory.mktemp("sweep")  # test_sweep_runs_on_both_nodes runs here next
    jobs["sweep-shards"] = (folder, good, _sweep_args(folder, cluster.address, "--set",
                                                      "sweep.seed=[0]", "--set",
                                                      "execution.shards=2"))
    folder = tmp_path_factory.mktemp("run")
    jobs["run-shards"] = (folder, good, [
        "run", str(write_tiny_sweep(folder)), "--set", f"execution.address={cluster.address}",
        "--set", "execution.shards=3", "--set", f"tracking.checkpoint_dir={folder / 'ckpt'}",
        "--no-progress", "--tracking-uri", f"sqlite:///{folder / 'run.db'}"])
    procs = {case: subprocess.Popen(FISHERMASK + args, cwd=folder, env=_env(folder, auth),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for case, (folder, auth, args) in jobs.items()}
    results = {}
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=400)
        results[case] = (jobs[case][0], proc.returncode, out, err)
    return results


@pytest.mark.parametrize("case", list(JOIN_MISTAKES))
def test_cluster_join_mistakes_exit_2_with_what_to_do(failed_starts, case):
    folder, code, out, err = failed_starts[case]
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for text in JOIN_MISTAKES[case][2]:
        assert text in err, err
    # found before Ray's own client ran: it retries for 20-40 s, logging each try, then aborts
    # the process (no token) or raises
    assert "gcs_client" not in err and "Failed to connect" not in err and "rpc_client" not in err
    # a start that ran no trial leaves no state (the sweep's lock file may remain)
    assert not list((folder / "storage").rglob("*.json"))


def test_run_with_more_shards_than_the_cluster_stops_before_any_work(failed_starts):
    folder, code, out, err = failed_starts["run-shards"]
    assert code == 2 and "Traceback" not in err, err
    assert "execution.shards=3 x (1 CPU per shard) needs 3 CPU in all, but the cluster has 2 " \
           "CPU: 1 CPU missing" in err
    assert "round" not in out and not list((folder / "ckpt").rglob("state.pt"))


def test_sweep_runs_on_both_nodes_after_a_start_that_ran_no_trial(cluster, failed_starts):
    # a trial asking for 1 + 2 CPUs can never be placed on 2 x 1 CPU: it stopped at once
    folder, code, out, err = failed_starts["sweep-shards"]
    assert code == 2 and "Traceback" not in err, err
    assert "each of 2 trials (e.g. 'random seed=0'), asking for 1 CPU for the trial + " \
           "execution.shards=2 x (1 CPU), needs 3 CPU in all, but the cluster has 2 CPU: " \
           "1 CPU missing" in err
    assert not list((folder / "storage").rglob("*.json"))
    # the corrected command in the same folder is not refused (no --resume needed) and runs
    # both trials at once, one per 1-CPU node
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
    p = subprocess.run(FISHERMASK + _sweep_args(folder, cluster.address, "--set",
                                                "sweep.seed=[0]"),
                       cwd=folder, env=_env(folder, auth), capture_output=True, text=True,
                       timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "MLflow child runs: 2 FINISHED" in p.stdout
    assert "for 2 trials (2 at a time)" in p.stdout
    assert (folder / "storage" / "tiny" / "fishermask_sweep.json").exists()


def test_a_plugin_next_to_the_sweep_file_reaches_the_workers_of_both_nodes(cluster, tmp_path):
    """The network and strategy exist only on the driver: the sweep file and the plug-in module
    sit on a tmpfs mounted in the driver's own mount namespace (``unshare -m``), so no node's
    worker can read them from disk (as on a real cluster, where they would be on the laptop).
    Ray's py_modules carries the module to every worker."""
    from tests.helpers import EXAMPLE

    assert shutil.which("unshare"), "the test needs unshare(1) for a driver-only folder"
    private = tmp_path / "driver-only"
    private.mkdir()
    sweep = write_tiny_sweep(tmp_path).read_text().replace(
        "model: {name: cnn_small}", "model: {name: 'fishermask_example.nets:ShapeNet', "
                                    "args: {width: 4}}").replace(
        "  strategy.name: [random, fishermask]",
        "  strategy.name: [random, 'fishermask_example.strategies:BalancedMargin']")
    (tmp_path / "plugin-sweep.yaml").write_text(sweep)
    script = (f"mount -t tmpfs tmpfs {private} && cp -r {EXAMPLE / 'fishermask_example'} "
              f"{tmp_path / 'plugin-sweep.yaml'} {private}/ && cd {private} && exec "
              + " ".join(FISHERMASK + ["sweep", "plugin-sweep.yaml", "--address", cluster.address,
                                       "--storage", str(tmp_path / "storage"), "--tracking-uri",
                                       f"sqlite:///{tmp_path / 'mlflow.db'}", "--set",
                                       "'sweep.seed=[0]'"]))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
                       cwd=tmp_path, env=_env(tmp_path, auth), capture_output=True, text=True,
                       timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "MLflow child runs: 2 FINISHED" in p.stdout
    assert "for 2 trials (2 at a time)" in p.stdout  # one trial on each 1-CPU node
    assert not (private / "fishermask_example").exists()  # only the driver has it


FEATURES_CHILD = """
import json, sys, numpy as np, torch, ray
from fishermask.data import FeatureData
from fishermask.execution.base import ExecutionParams
from fishermask.execution.local import LocalExecutor
from fishermask.execution.ray.executor import RayExecutor
from fishermask.models import build_model
from fishermask.strategies import SelectionContext, build_strategy

folder, address = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
np.save(folder + "/x.npy", rng.normal(size=(3000, 16)).astype(np.float32))
pool = FeatureData(folder + "/x.npy", rng.integers(0, 4, 3000), list("abcd"))
torch.manual_seed(0)
model = build_model("linear", 4, 16).eval()
labeled = np.arange(0, 3000, 30)

def picks(ex, name):
    ex.bind(pool)
    ex.set_model(model)
    ctx = SelectionContext(model=model, executor=ex, labeled=labeled,
                           unlabeled=np.setdiff1d(np.arange(3000), labeled), num_classes=4,
                           rng=np.random.default_rng(0))
    return build_strategy(name).run_round(ctx, 30).indices.tolist()

torch.set_num_threads(1)
names = ("margin", "bait", "kcenter", "badge")
want = {n: picks(LocalExecutor(device="cpu", batch_size=128), n) for n in names}
ray.init(address=address)
ex = RayExecutor(ExecutionParams(backend="ray", shards=2, address=address, batch_size=128,
                                 device="cpu", threads=1))
got = {"margin": picks(ex, "margin")}
stats = ex.shard_stats()
got.update({n: picks(ex, n) for n in names[1:]})
print("RESULT " + json.dumps({"same": got == want, "nodes": [i["node_id"] for i in ex.actor_info],
                              "reads": [s["read_rows"] for s in stats],
                              "spans": [s["read_span"] for s in stats]}))
ex.close()
"""


def test_features_pool_each_node_reads_its_own_rows_and_picks_as_one_process(cluster, tmp_path):
    import json

    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
    p = subprocess.run([sys.executable, "-c", FEATURES_CHILD, str(tmp_path), cluster.address],
                       cwd=tmp_path, env=_env(tmp_path, auth), capture_output=True, text=True,
                       timeout=400)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert p.returncode == 0 and lines, p.stdout[-3000:] + p.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["same"]  # margin, BAIT, k-center, BADGE pick what the in-process executor picks
    assert len(set(out["nodes"])) == 2  # one shard actor on each node
    unlabeled = 3000 - 100
    assert sum(out["reads"]) == unlabeled and max(out["reads"]) < unlabeled  # each its own rows
    (a0, a1), (b0, b1) = sorted(out["spans"])
    assert a1 < b0  # two disjoint ranges of the pool
