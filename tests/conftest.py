"""Shared fixtures: environment, one local Ray per session, a real MLflow tracking server, and a
tiny sweep run once and shared by the sweep and report tests."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


class MlflowServer:
    """``mlflow server`` (sqlite backend, proxied artifacts) on a free local port of ``root``, in
    a session of its own (so that :meth:`kill` ends its uvicorn workers too); :meth:`start`
    again serves the same store on the same port.  As a context manager: killed at the end."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, _free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> "MlflowServer":
        with open(self.root / "server.log", "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                 f"sqlite:///{self.root / 'db'}", "--artifacts-destination",
                 str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))  # no job pool
        return self

    def wait_up(self, timeout: float = 120) -> "MlflowServer":
        """Once /health answers (7-15 s on an idle 2-core box)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "server.log").read_text()
                raise RuntimeError(f"mlflow server did not come up:\n{log}")
            time.sleep(0.5)

    def __enter__(self) -> "MlflowServer":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="session")
def mlflow_process(tmp_path_factory):
    """The session's MLflow server, started but not yet waited on (so that Ray can start
    meanwhile); use ``mlflow_server``."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.kill(signal.SIGTERM)


@pytest.fixture(scope="session")
def mlflow_server(mlflow_process):
    """A real MLflow tracking server, once it answers."""
    return mlflow_process.wait_up()


RAY = str(Path(sys.executable).with_name("ray"))


class RayCluster:
    """A Ray cluster of ``ray start --block`` nodes on this machine, 1 CPU each, token
    authentication with a fresh token, each node in a session of its own (stopped or killed by
    process group) with its own temp dir and free ports.  ``env(home)``: what a process that
    joins it needs."""

    def __init__(self, root: Path, node_env: dict[str, str] | None = None):
        self.root, self.token, self.port = root, secrets.token_hex(16), _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self._env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                         RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true",
                         HOME=str(root / "home"), **(node_env or {}))
        (root / "home").mkdir(exist_ok=True)

    def env(self, home: Path) -> dict[str, str]:
        env = dict(self._env, HOME=str(home))
        home.mkdir(parents=True, exist_ok=True)
        return env

    def add_node(self, head: bool = False) -> subprocess.Popen:
        """Start a node (the head first) and wait until it runs."""
        name = f"node{len(self.nodes)}"
        if head:
            where = ["--head", "--port", str(self.port), "--include-dashboard", "false"]
            if importlib.util.find_spec("grpc"):  # ray[client] installed: on a free port
                where += ["--ray-client-server-port", str(_free_port())]
        else:
            where = ["--address", self.address]
        args = ["--num-cpus", "1", "--object-store-memory", str(80 * 1024 ** 2),
                "--disable-usage-stats", "--block", "--temp-dir", str(self.root / name)]
        for flag in ("--node-manager-port", "--object-manager-port", "--runtime-env-agent-port",
                     "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                     "--metrics-export-port"):
            args += [flag, str(_free_port())]
        log = self.root / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([RAY, "start", *where, *args], env=self._env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes.append(proc)
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start did not come up:\n{log.read_text()}")
            time.sleep(0.3)
        return proc

    def kill(self, node: subprocess.Popen) -> None:
        """SIGKILL a node and every process it started (raylet, on the head the GCS, and the
        workers, which would otherwise finish their task after their raylet died)."""
        for pid in [node.pid, *_descendants(node.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.wait()

    def stop(self) -> None:
        """SIGTERM to each node's process group (``ray start --block`` stops its node), then
        SIGKILL to what is left after a few seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.nodes:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 4
            while any(p.poll() is None for p in self.nodes) and time.monotonic() < deadline:
                time.sleep(0.2)
            if all(p.poll() is not None for p in self.nodes):
                return


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: parent links, whatever their session)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


@contextlib.contextmanager
def ray_cluster(nodes: int = 2, node_env: dict[str, str] | None = None):
    """A :class:`RayCluster` of a head and ``nodes - 1`` more nodes, stopped at the end."""
    root = Path(tempfile.mkdtemp(prefix="fmray-"))  # short: Ray's unix sockets live below it
    cluster = RayCluster(root, node_env)
    try:
        cluster.add_node(head=True)
        for _ in range(nodes - 1):
            cluster.add_node()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


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
