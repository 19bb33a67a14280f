"""``fishermask`` against a real two-node Ray cluster made with ``ray start`` (head + one more
node, 1 CPU each, token authentication on, temp dirs and free ports of their own), driven through
the command line in subprocesses: the token-authentication mistakes, the resource check, a start
that ran no trial, and a sweep that runs on both nodes."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import _free_port, write_tiny_sweep

pytestmark = pytest.mark.integration  # Ray, an MLflow server, the CLI or the loop

RAY = str(Path(sys.executable).with_name("ray"))
FISHERMASK = [sys.executable, "-m", "fishermask"]


def _node_args(home: Path) -> list[str]:
    ports = {"--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"}
    args = ["--num-cpus", "1", "--object-store-memory", str(80 * 1024 ** 2),
            "--disable-usage-stats", "--block"]
    for p in sorted(ports):
        args += [p, str(_free_port())]
    return args


def _wait_for(log: Path, proc: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start did not come up:\n{log.read_text()}")
        time.sleep(0.3)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each node's process group (``ray start --block`` stops its node), then SIGKILL
    to what is left after a few seconds (the nodes' worker processes exit with their raylet)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 4
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        if all(p.poll() is not None for p in procs):
            return


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node (`ray start --block`, each in its own session so that both can be
    stopped by process group), 1 CPU each, token authentication with a fresh token."""
    root = Path(tempfile.mkdtemp(prefix="fmray-"))  # short: Ray's unix sockets live below it
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
               MLFLOW_DISABLE_TELEMETRY="true", HOME=str(root / "home"))
    (root / "home").mkdir()
    port = _free_port()
    procs = []
    try:
        for name, extra in (("head", ["--head", "--port", str(port), "--include-dashboard",
                                      "false"]),
                            ("node", ["--address", f"127.0.0.1:{port}"])):
            log = root / f"{name}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen([RAY, "start", *extra, "--temp-dir", str(root / name),
                                         *_node_args(root)], env=env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            _wait_for(log, proc, "Ray runtime started")
        yield SimpleNamespace(address=f"127.0.0.1:{port}", token=token, root=root)
    finally:
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)


def _cli(args, tmp_path, auth: dict[str, str], timeout: float = 300):
    """Run ``fishermask ARGS`` in ``tmp_path`` with only the ``auth`` RAY_AUTH_* variables and a
    home without a token file; (returncode, stdout, stderr, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(auth, RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true",
               HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    p = subprocess.run(FISHERMASK + list(args), cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0


def _sweep_args(tmp_path, address: str, *extra: str) -> list[str]:
    path = write_tiny_sweep(tmp_path)
    return ["sweep", str(path), "--address", address, "--storage", str(tmp_path / "storage"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra]


@pytest.mark.parametrize("auth, expect", [
    ({}, ["uses token authentication", "RAY_AUTH_MODE is not set", "export RAY_AUTH_MODE=token",
          "ray get-auth-token"]),
    ({"RAY_AUTH_MODE": "token"}, ["RAY_AUTH_MODE=token, but this process has no token",
                                  "RAY_AUTH_TOKEN"]),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
     ["rejected this process's token (from RAY_AUTH_TOKEN)", "ray get-auth-token"]),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "the-token", "address": "unreachable"},
     ["cannot reach the Ray cluster at 127.0.0.1:", "ray status"]),
], ids=["mode-unset", "no-token", "wrong-token", "unreachable"])
def test_cluster_join_mistakes_exit_2_with_what_to_do(cluster, tmp_path, auth, expect):
    auth = dict(auth)
    address = (f"127.0.0.1:{_free_port()}" if auth.pop("address", None) == "unreachable"
               else cluster.address)
    code, out, err, seconds = _cli(_sweep_args(tmp_path, address), tmp_path, auth)
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for text in expect:
        assert text in err, err
    assert seconds < 60  # Ray's own client retries for 20-40 s, then aborts or raises
    assert not (tmp_path / "storage").exists()  # a start that ran no trial leaves no state


def test_run_with_more_shards_than_the_cluster_stops_before_any_work(cluster, tmp_path):
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
    cfg = write_tiny_sweep(tmp_path)
    code, out, err, _ = _cli(["run", str(cfg), "--set", f"execution.address={cluster.address}",
                              "--set", "execution.shards=3", "--set",
                              f"tracking.checkpoint_dir={tmp_path / 'ckpt'}", "--no-progress",
                              "--tracking-uri", f"sqlite:///{tmp_path / 'run.db'}"],
                             tmp_path, auth)
    assert code == 2 and "Traceback" not in err, err
    assert "execution.shards=3 x (1 CPU per shard) needs 3 CPU in all, but the cluster has 2 " \
           "CPU: 1 CPU missing" in err
    assert "round" not in out and not (tmp_path / "ckpt").exists()


def test_sweep_runs_on_both_nodes_after_a_start_that_ran_no_trial(cluster, tmp_path):
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
    # a trial asking for 1 + 2 CPUs can never be placed on 2 x 1 CPU: stop at once, no state
    code, out, err, _ = _cli(_sweep_args(tmp_path, cluster.address, "--set", "sweep.seed=[0]",
                                         "--set", "execution.shards=2"), tmp_path, auth)
    assert code == 2 and "Traceback" not in err, err
    assert "each of 2 trials (e.g. 'random seed=0'), asking for 1 CPU for the trial + " \
           "execution.shards=2 x (1 CPU), needs 3 CPU in all, but the cluster has 2 CPU: " \
           "1 CPU missing" in err
    assert not (tmp_path / "storage").exists()
    # the corrected command is not refused (no --resume needed) and runs both trials at once,
    # one per 1-CPU node
    code, out, err, _ = _cli(_sweep_args(tmp_path, cluster.address, "--set", "sweep.seed=[0]"),
                             tmp_path, auth)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "MLflow child runs: 2 FINISHED" in out
    assert "for 2 trials (2 at a time)" in out
    assert (tmp_path / "storage" / "tiny" / "fishermask_sweep.json").exists()
