"""Faults around a run, with real processes, signals, files and MLflow stores: a second launch
while the first runs (and a stale lock after a crash), SIGTERM, a damaged checkpoint, first runs
racing on a fresh store, a silent tracking server, a run deleted in MLflow before a resume,
diverging training, a read-only working folder, and a working folder on a disk that fills up."""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from fishermask.cli import main
from fishermask.config import load_config

pytestmark = pytest.mark.integration  # Ray, an MLflow server, the CLI or the loop

CONFIG = """\
experiment: faults
data: {{dataset: digits, class_counts: [12, 12, 12, 40]}}
budget: {{initial: 8, query: 6, rounds: {rounds}}}
train: {{{train}, batch_size: 16}}
"""


def write(tmp: Path, rounds: int = 1, train: str = "max_epochs: 2") -> str:
    path = tmp / "c.yaml"
    path.write_text(CONFIG.format(rounds=rounds, train=train))
    return str(path)


def cli(argv, capfd):
    code = main(argv)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0")
    return subprocess.Popen([sys.executable, "-m", "fishermask", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def runs(uri: str, experiment: str = "faults"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


def checkpoint(path: str) -> Path:
    cfg = load_config(path)
    return Path(cfg.tracking.checkpoint_dir) / cfg.result_key()


def test_second_launch_refuses_and_a_stale_lock_does_not_block(tmp_path, capfd):
    path = write(tmp_path)
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the store exists (killed below later)
    lock = Path(f"{checkpoint(path)}.lock")
    first = spawn(["run", path, "--no-progress"], tmp_path)
    try:  # the first run holds the lock; freeze it there, however fast the machine is
        wait_for(lambda: lock.is_file() and lock.read_text(), first)
        first.send_signal(signal.SIGSTOP)
        code, out, err = cli(["run", path, "--no-progress"], capfd)
        assert code == 2 and f"pid {first.pid} on host {socket.gethostname()}" in err
        assert "is already running" in err
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: the lock file stays behind
        first.communicate()
    assert str(first.pid) in lock.read_text()
    code, out, err = cli(["run", path, "--no-progress"], capfd)
    assert code == 0 and "already running" not in err


def test_sigterm_ends_the_run_killed_with_its_checkpoint_intact(tmp_path, capfd):
    path = write(tmp_path, rounds=2, train="epochs: 20")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = checkpoint(path) / "state.pt"
    proc = spawn(["run", path, "--no-progress", "--tracking-uri", uri], tmp_path)
    wait_for(state.is_file, proc)  # round 0 is done and checkpointed
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    client, found = runs(uri)
    assert [r.info.status for r in found] == ["KILLED"]
    saved = torch.load(state, weights_only=False)
    assert 1 <= len(saved["records"]) <= 3
    code, out, err = cli(["run", path, "--no-progress", "--tracking-uri", uri], capfd)
    assert code == 0
    assert ("resuming from" in out + err) or len(saved["records"]) == 3
    client, found = runs(uri)
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(found[0].info.run_id, "accuracy"))
    assert steps == [8, 14, 20]


def test_a_sigterm_lost_in_a_garbage_collector_callback_still_ends_the_work(tmp_path):
    """Python ignores (and prints) an exception raised while the garbage collector runs a
    callback; a SIGTERM arriving then must still stop the run at the next batch, quietly."""
    import gc
    import types

    from fishermask import cli
    from fishermask.errors import Terminated
    from fishermask.training import TrainParams, train_model
    from tests.helpers import ToyNet

    class Handler:
        def __del__(self):  # the signal handler, run where exceptions cannot propagate
            cli._on_sigterm(signal.SIGTERM, None)

    seen = []
    hook = cli._unraisable(seen.append)
    before = sys.unraisablehook
    sys.unraisablehook = hook
    try:
        Handler()
        gc.collect()
        assert Terminated.received and seen == []  # swallowed, and not printed
        hook(types.SimpleNamespace(exc_value=ValueError("other")))
        assert len(seen) == 1  # any other lost exception still goes to the previous hook
        data = types.SimpleNamespace(inputs=lambda idx, **kw: torch.randn(len(idx), 6),
                                     targets=torch.zeros(40, dtype=torch.long))
        with pytest.raises(Terminated):
            train_model(ToyNet(), data, np.arange(40), TrainParams(epochs=1, batch_size=8),
                        augment=False, device=torch.device("cpu"),
                        generator=torch.Generator().manual_seed(0))
    finally:
        sys.unraisablehook = before
        Terminated.received = False


def test_a_sigterm_during_a_tracking_write_is_raised_once_the_write_is_done(tmp_path):
    """A real SIGTERM arrives while a real sqlite store's write runs: the write completes, then
    the run gets Terminated, and its last write (status KILLED) does not wait on a lock."""
    from fishermask import cli
    from fishermask.errors import Terminated
    from fishermask.tracking.client import GuardedClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    real = MlflowClient(uri)
    run = real.create_run(real.create_experiment("x"))

    class Signalled:  # the real client; the signal comes during log_metric
        def __getattr__(self, name):
            return getattr(real, name)

        def log_metric(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            return real.log_metric(*args, **kwargs)

    before = signal.signal(signal.SIGTERM, cli._on_sigterm)
    try:
        client = GuardedClient(Signalled(), uri, patience=5)
        with pytest.raises(Terminated):
            client.log_metric(run.info.run_id, "accuracy", 0.5, step=1)
        t0 = time.monotonic()
        client.set_terminated(run.info.run_id, "KILLED")  # no second Terminated, no wait
        assert time.monotonic() - t0 < 5
    finally:
        signal.signal(signal.SIGTERM, before)
        Terminated.received = Terminated.pending = False
    assert [m.value for m in real.get_metric_history(run.info.run_id, "accuracy")] == [0.5]
    assert real.get_run(run.info.run_id).info.status == "KILLED"


def test_damaged_checkpoint_names_the_file_and_suggests_restart(tmp_path, capfd):
    path = write(tmp_path, rounds=0)
    assert cli(["run", path, "--no-progress"], capfd)[0] == 0
    state = checkpoint(path) / "state.pt"
    state.write_bytes(state.read_bytes()[:500])  # cut short
    code, out, err = cli(["run", path, "--no-progress"], capfd)
    assert code == 2 and str(state) in err and "--restart" in err
    code, out, err = cli(["run", path, "--no-progress", "--restart"], capfd)
    assert code == 0 and torch.load(state, weights_only=False)["records"]


def test_first_runs_at_once_create_a_fresh_store_safely(tmp_path):
    path = write(tmp_path, rounds=0, train="epochs: 1")
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    procs = [spawn(["run", path, "--no-progress", "--tracking-uri", uri, "--set", f"seed={s}"],
                   tmp_path) for s in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    client, found = runs(uri)
    assert sorted(r.info.status for r in found) == ["FINISHED"] * 2


def test_an_unreadable_store_is_named(tmp_path, capfd):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a database, e.g. left by an interrupted copy" * 100)
    code, out, err = cli(["run", write(tmp_path), "--no-progress", "--tracking-uri",
                          f"sqlite:///{db}"], capfd)
    assert code == 2 and f"cannot open the MLflow store sqlite:///{db}" in err
    assert "if it holds results, keep it" in err


def test_a_silent_tracking_server_fails_within_seconds(tmp_path, capfd, monkeypatch):
    from fishermask import preflight

    monkeypatch.setattr(preflight, "REACH_TIMEOUT_S", 2.0)
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        t0 = time.monotonic()
        code, out, err = cli(["run", write(tmp_path), "--tracking-uri", uri], capfd)
    assert code == 2 and f"cannot reach the MLflow tracking server at {uri}" in err
    assert "mlflow server" in err and time.monotonic() - t0 < 10


def test_a_web_server_that_is_not_mlflow_is_named(tmp_path, capfd):
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, err = cli(["run", write(tmp_path), "--tracking-uri", uri], capfd)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2 and f"{uri} answers, but not as an MLflow tracking server (HTTP 404" in err


def test_a_real_tracking_server_passes_the_probe(mlflow_server):
    from fishermask import preflight

    assert preflight.tracking_uri(mlflow_server.uri) == mlflow_server.uri


def test_resume_after_the_mlflow_run_was_deleted(tmp_path, capfd):
    from fishermask.loop import ActiveLearningLoop
    from fishermask.tracking.tracker import MlflowTracker

    path = write(tmp_path, rounds=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def crash(loop, rec):
        if rec.round == 1:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        ActiveLearningLoop.from_config(load_config(path), tracker=MlflowTracker(uri), progress=False,
                           on_round=crash).run()
    client, found = runs(uri)
    client.delete_run(found[0].info.run_id)  # as the UI's delete button does
    code, out, err = cli(["run", path, "--no-progress", "--tracking-uri", uri], capfd)
    assert code == 0 and "was deleted" in err
    client, found = runs(uri)
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(found[0].info.run_id, "accuracy"))
    assert steps == [8, 14, 20]  # the rounds before the crash were logged again, none lost
    arts = {a.path for a in client.list_artifacts(found[0].info.run_id)}
    assert {"rounds.json", "selected_indices.json", "config.yaml"} <= arts
    assert found[0].info.artifact_uri.startswith(("file://" + str(tmp_path), str(tmp_path)))


def test_diverging_training_fails_the_run(tmp_path, capfd):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, err = cli(["run", write(tmp_path), "--no-progress", "--tracking-uri", uri,
                          "--set", "train.lr=1e30"], capfd)
    assert code == 2 and "training diverged: the loss is nan" in err and "train.lr" in err
    client, found = runs(uri)
    assert [r.info.status for r in found] == ["FAILED"]


def test_read_only_working_folder_fails_at_once_naming_it(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    path = write(tmp_path)
    cmd = [sys.executable, "-m", "fishermask", "run", path]
    if os.geteuid() == 0:  # root writes through permissions: make a read-only mount instead
        assert shutil.which("unshare"), "root needs unshare(1) for a read-only mount"
        script = ("mount --bind \"$0\" \"$0\" && mount -o remount,ro,bind \"$0\" && cd \"$0\" && "
                  "exec \"$@\"")
        cmd = ["unshare", "-m", "sh", "-c", script, str(ro), *cmd]
    else:
        ro.chmod(0o555)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ro, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true"))
    ro.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert f"the folder {ro} is read-only" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 30 and not list(ro.iterdir())


class SmallDisk:
    """A tmpfs of ``size`` mounted on ``folder`` in a mount namespace of its own (held by a
    sleeping process): commands run there with :meth:`run`/:meth:`spawn`, and the test reads and
    writes the disk through ``/proc/<pid>/root``."""

    def __init__(self, folder: Path, size: str):
        assert os.geteuid() == 0 and shutil.which("unshare") and shutil.which("nsenter"), \
            "a small disk needs root, unshare(1) and nsenter(1)"
        folder.mkdir()
        self.folder = folder
        self.holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f'mount -t tmpfs -o size={size} tmpfs "$0" && echo mounted && exec sleep 900',
             str(folder)], stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout.readline().strip() == "mounted"
        self.view = Path(f"/proc/{self.holder.pid}/root{folder}")

    def spawn(self, args: list[str]) -> subprocess.Popen:
        """``fishermask ARGS`` with the small disk as its working folder."""
        line = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "fishermask", *args])
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0")
        return subprocess.Popen(["nsenter", "-t", str(self.holder.pid), "-m", "sh", "-c",
                                 f"cd {shlex.quote(str(self.folder))} && exec {line}"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def fill(self, leave: int) -> Path:
        """Fill the disk, then give back ``leave`` bytes; the ballast file."""
        ballast = self.view / "ballast"
        with open(ballast, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            f.truncate(max(0, f.tell() - leave))
        return ballast

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


def _accuracy_curve(db: Path, copy_to: Path) -> tuple[list[str], list[tuple[int, float]]]:
    """Run statuses and the accuracy curve in an MLflow sqlite store, read with sqlite3 alone
    from a copy (with its journal, if one was left) in ``copy_to``."""
    import sqlite3

    copy_to.mkdir(exist_ok=True)
    for suffix in ("", "-journal", "-wal"):
        if Path(f"{db}{suffix}").exists():
            shutil.copyfile(f"{db}{suffix}", copy_to / f"{db.name}{suffix}")
    con = sqlite3.connect(copy_to / db.name)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        statuses = [s for (s,) in con.execute("SELECT status FROM runs")]
        curve = con.execute("SELECT step, value FROM metrics WHERE key = 'accuracy' "
                            "ORDER BY step").fetchall()
    finally:
        con.close()
    return statuses, [(int(s), float(v)) for s, v in curve]


def test_a_full_disk_stops_the_run_with_one_message_and_a_rerun_resumes(tmp_path):
    """The working folder (checkpoints, the sqlite store, the artifacts) on a 16 MB tmpfs that
    fills up after round 0: one message naming the folder, nothing half-written, the run marked
    FAILED; once space is freed, the same command resumes to the uninterrupted curve."""
    path = write(tmp_path, rounds=2, train="epochs: 8")
    # the uninterrupted run, meanwhile, in the test's own folder on the ordinary disk
    reference = spawn(["run", path, "--no-progress"], tmp_path)
    disk = SmallDisk(tmp_path / "disk", "16m")
    try:
        ckpt = disk.view / ".fishermask" / "checkpoints" / load_config(path).result_key()
        proc = disk.spawn(["run", path, "--no-progress"])
        wait_for((ckpt / "state.pt").is_file, proc)  # round 0 is checkpointed: fill the disk
        t0 = time.monotonic()
        ballast = disk.fill(leave=48 * 1024)
        out, err = proc.communicate(timeout=120)
        assert time.monotonic() - t0 < 120
        assert proc.returncode == 2, err
        lines = [line for line in err.splitlines() if "error" in line.lower()]
        assert len(lines) == 1 and lines[0].startswith("error: no space left"), err
        assert str(disk.folder) in lines[0] and "run the same command again" in lines[0]
        assert "Traceback" not in out + err
        assert not [p for p in disk.view.rglob("*") if p.name.endswith(".tmp") or
                    ".tmp-" in p.name]  # nothing half-written
        saved = torch.load(ckpt / "state.pt", weights_only=False)
        assert [r["round"] for r in saved["records"]] == [0]
        statuses, curve = _accuracy_curve(disk.view / "mlflow.db", tmp_path / "after-fault")
        assert statuses == ["FAILED"] and [s for s, _ in curve] == [8]

        ballast.unlink()  # space freed: the same command resumes in the same run
        proc = disk.spawn(["run", path, "--no-progress"])
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "resuming from" in out + err and "Traceback" not in out + err
        statuses, curve = _accuracy_curve(disk.view / "mlflow.db", tmp_path / "after-rerun")
    finally:
        disk.close()
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    ref_statuses, ref_curve = _accuracy_curve(tmp_path / "mlflow.db", tmp_path / "reference")
    assert statuses == ref_statuses == ["FINISHED"]
    assert [s for s, _ in curve] == [s for s, _ in ref_curve] == [8, 14, 20]
    assert [v for _, v in curve] == pytest.approx([v for _, v in ref_curve], abs=1e-6)
