"""Driving ``fishermask`` in subprocesses against a Ray cluster and an MLflow server, and reading
back what a fault left: the MLflow runs of an experiment, and temporary files half-written."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

FISHERMASK = [sys.executable, "-m", "fishermask"]
SWEEP = """\
experiment: {experiment}
data: {{dataset: digits, class_counts: [12, 12, 12, 40]}}
budget: {{initial: 10, query: 10, rounds: 2}}
model: {{name: cnn_small}}
train: {{max_epochs: 3, batch_size: 16}}
sweep:
  strategy.name: [random, margin]
"""
LABELS = ["margin seed=0", "random seed=0"]
STEPS = [10, 20, 30]


class Driver:
    """``fishermask ARGS`` in ``folder`` with the cluster's credentials; output in files."""

    def __init__(self, folder: Path, cluster, args: list[str]):
        self.folder, self.args = folder, args
        self.env = cluster.env(folder / "home")
        self.out, self.err = open(folder / "out.log", "w"), open(folder / "err.log", "w")
        self.proc = subprocess.Popen(FISHERMASK + args, cwd=folder, env=self.env,
                                     stdout=self.out, stderr=self.err)
        self.t0 = time.monotonic()

    def wait(self, timeout: float) -> SimpleNamespace:
        """Its end: exit code, output, and seconds since ``mark`` (or the start)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()
        return SimpleNamespace(code=self.proc.returncode, seconds=time.monotonic() - self.t0,
                               out=(self.folder / "out.log").read_text(),
                               err=(self.folder / "err.log").read_text())

    def mark(self) -> None:
        self.t0 = time.monotonic()


def sweep_args(folder: Path, address: str, uri: str, experiment: str, *extra: str) -> list[str]:
    path = folder / f"{experiment}.yaml"
    path.write_text(SWEEP.format(experiment=experiment))
    return ["sweep", str(path), "--address", address, "--storage", str(folder / "storage"),
            "--tracking-uri", uri, *extra]


def wait_until(cond, driver: Driver, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert driver.proc.poll() is None, (driver.folder / "err.log").read_text()[-3000:]
        if time.monotonic() > deadline:
            driver.proc.kill()  # not left running after the test
            raise AssertionError(f"timed out in {driver.folder}")
        time.sleep(0.2)


def rounds_reported(folder: Path, experiment: str, trials: int = 1):
    """True once ``trials`` trials have reported a round (a checkpoint) to Tune."""
    exp = folder / "storage" / experiment
    return lambda: len({p.parent for p in exp.glob("trial_*/checkpoint_*")}) >= trials


def resume(folder: Path, cluster, args: list[str], timeout: float = 300) -> SimpleNamespace:
    address = args.index("--address") + 1
    again = args[:address] + [cluster.address] + args[address + 1:] + ["--resume"]
    return Driver(folder, cluster, again).wait(timeout)


def runs_of(uri: str, experiment: str) -> SimpleNamespace:
    """The experiment's parent runs, child runs, and each child's accuracy steps."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id])
    parents = [r for r in found if r.data.tags.get("mlflow.fishermask.role") == "sweep"]
    children = [r for r in found if r not in parents]
    curves = {r.info.run_name: sorted((m.step, m.value) for m in
                                      client.get_metric_history(r.info.run_id, "accuracy"))
              for r in children}
    return SimpleNamespace(parents=parents, children=children, curves=curves,
                           steps={name: [s for s, _ in c] for name, c in curves.items()},
                           statuses=sorted(r.info.status for r in found))


def assert_complete(runs: SimpleNamespace, labels=LABELS, steps=STEPS) -> None:
    """One parent, one child per trial (no duplicate), all FINISHED, every round logged once."""
    assert len(runs.parents) == 1 and runs.parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in runs.children) == sorted(labels)
    assert {r.info.status for r in runs.children} == {"FINISHED"}
    assert runs.steps == {label: list(steps) for label in labels}
    for r in runs.children:
        assert r.data.tags["mlflow.parentRunId"] == runs.parents[0].info.run_id


def leftovers(folder: Path) -> list[Path]:
    """Temporary files a fault left half-written."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
