"""Shared fixtures: environment, one local Ray per session, a real MLflow tracking server, and a
tiny sweep run once and shared by the sweep and report tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

TINY_SWEEP = """\
# tests: 2 strategies x 2 seeds, digits, 3 rounds of a few seconds
experiment: {experiment}
data: {{dataset: digits, class_counts: [12, 12, 12, 40]}}
budget: {{initial: 10, query: 10, rounds: 2}}
model: {{name: cnn_small}}
train: {{max_epochs: 3, batch_size: 16}}
strategy: {{name: fishermask, sparsity: 0.05}}
sweep:
  strategy.name: [random, fishermask]
  seed: [0, 1]
"""


def write_tiny_sweep(folder: Path, experiment: str = "tiny") -> Path:
    path = folder / "tiny.yaml"
    path.write_text(TINY_SWEEP.format(experiment=experiment))
    return path


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small matrices: OpenMP threads only add overhead)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder, so what lands in the working directory by
    default (MLflow's ./mlruns artifacts, mlflow.db, .fishermask/) never reaches the checkout."""
    monkeypatch.chdir(tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def make_tiny_sweep():
    """``make_tiny_sweep(folder, experiment="tiny") -> path`` of the tiny sweep file."""
    return write_tiny_sweep


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """One local Ray for the session (2 CPUs).  ``fault_dir``: a file ``fail_round_<r>`` there
    makes the next trial reaching round r raise once, before it reports the round to Tune (a
    worker setup hook wraps ``ray.tune.report`` in every worker; production code has no hook)."""
    import ray

    fault_dir = tmp_path_factory.mktemp("faults")

    def inject_faults():  # nested, so that Ray pickles it by value for the workers
        import ray.tune

        real = ray.tune.report

        def report(metrics, *args, **kwargs):
            marker = Path(fault_dir) / f"fail_round_{metrics.get('round')}"
            if not metrics.get("done", True):  # a round's report, not the final one
                try:
                    marker.unlink()  # only the first trial to get here fails, and only once
                except FileNotFoundError:
                    pass
                else:
                    raise RuntimeError(f"injected fault in round {metrics['round']}")
            return real(metrics, *args, **kwargs)

        ray.tune.report = report

    # address="local": a new Ray of our own even when a `ray start` cluster runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=256 * 1024 ** 2,
             runtime_env={"env_vars": {"MLFLOW_DISABLE_TELEMETRY": "true"},
                          "worker_process_setup_hook": inject_faults})
    yield SimpleNamespace(fault_dir=fault_dir)
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_process(tmp_path_factory):
    """``mlflow server`` (sqlite backend, proxied artifacts) on a free local port, started but not
    yet waited on (so that Ray can start meanwhile); use ``mlflow_server``."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root / 'db'}", "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))  # no job-runner pool
    yield SimpleNamespace(uri=f"http://127.0.0.1:{port}", root=root, proc=proc)
    os.killpg(proc.pid, signal.SIGTERM)  # the server's own session: uvicorn workers included
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_process):
    """A real MLflow tracking server, once /health answers (7-15 s on an idle 2-core box)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{mlflow_process.uri}/health", timeout=2) as r:
                if r.status == 200:
                    return mlflow_process
        except OSError:
            pass
        if mlflow_process.proc.poll() is not None or time.monotonic() > deadline:
            log = (mlflow_process.root / "server.log").read_text()
            raise RuntimeError(f"mlflow server did not come up:\n{log}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def tiny_sweep(mlflow_process, ray_local, mlflow_server, tmp_path_factory):
    """The tiny sweep run once in-process on the session Ray, logging to the MLflow server; the
    first trial reaching round 1 crashes once (Tune retries it from its round-0 checkpoint)."""
    from fishermask.cli import main

    work = tmp_path_factory.mktemp("sweep")
    path = write_tiny_sweep(work)
    (ray_local.fault_dir / "fail_round_1").touch()
    storage = work / "storage"
    t0 = time.perf_counter()
    code = main(["sweep", str(path), "--tracking-uri", mlflow_server.uri, "--storage", str(storage),
                 "--max-failures", "2"])
    wall = time.perf_counter() - t0
    from fishermask.sweeps.command import read_state

    state = read_state(f"{storage}/tiny")
    return SimpleNamespace(code=code, path=path, work=work, storage=storage, wall=wall,
                           uri=mlflow_server.uri, parent_run_id=state["parent_run_id"],
                           experiment="tiny", fault_marker=ray_local.fault_dir / "fail_round_1")


INTEGRATION_FIXTURES = {"ray_local", "mlflow_process", "mlflow_server", "tiny_sweep",
                        "ray_session", "executors"}


def pytest_collection_modifyitems(config, items):
    """A test that uses Ray or an MLflow server through a fixture is an integration test even
    when its module forgot the marker (the modules that start them mark themselves)."""
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
