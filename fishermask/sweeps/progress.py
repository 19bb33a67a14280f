"""What a sweep prints while it runs: one progress line every 30 s instead of Tune's trial table
(``--verbose`` keeps the table, the trials' round lines and Tune's tracebacks of failed trials),
and Ray's, Tune's and MLflow's routine log lines kept out of the way (warnings and errors still
show)."""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable

QUIET = {  # logger -> the level below which its lines are dropped (unless --verbose)
    "ray.tune.tune": logging.WARNING,            # "Wrote the latest version…", "Total run time"
    "ray.tune.execution.tune_controller": logging.WARNING,  # "Restoring the run from …"
    "ray._private.worker": logging.WARNING,      # "Started a local Ray instance."
    "mlflow.store.db.utils": logging.WARNING,    # "Creating initial MLflow database tables…"
}
LOCAL_TOKEN = "Token authentication is enabled for this Ray cluster"
"""Ray's warning at every start of a local Ray (token authentication on by default): a sweep's
own Ray is local to this machine, and the README says how clusters use tokens."""
STOP_NOISE = ("Stop signal received", "Trials did not complete", "Tuner.restore(",
              "Experiment has been interrupted")


SETTINGS = {"verbose": False, "every_s": 30.0}


def reporter():
    """Tune's progress reporter for this process's sweep: a line every 30 s, or with --verbose
    Tune's trial table.  What Tune pickles with the sweep's state is a reference to this
    function, so a resumed sweep reports as its own command line says."""
    return _reporter_classes()[1 if SETTINGS["verbose"] else 0]()


@functools.lru_cache(maxsize=None)
def _reporter_classes():
    from ray import tune
    from ray.tune.progress_reporter import ProgressReporter

    class Progress(ProgressReporter):
        def __init__(self):
            self.start = self.last = time.monotonic()

        def __reduce__(self):
            return reporter, ()

        def setup(self, *args, **kwargs) -> None:
            self.start = self.last = time.monotonic()

        def should_report(self, trials, done: bool = False) -> bool:
            return not done and time.monotonic() - self.last >= SETTINGS["every_s"]

        def report(self, trials, done: bool, *sys_info: str) -> None:
            self.last = time.monotonic()
            print(f"[{_clock(self.last - self.start)}] {progress_line(trials)}", flush=True)

    class Table(tune.CLIReporter):
        def __init__(self):
            super().__init__(
                parameter_columns={"trial/label": "trial"}, max_report_frequency=30,
                metric_columns={"round": "round", "n_labels": "labels", "accuracy": "acc",
                                "balanced_accuracy": "bal-acc", "trial_seconds": "seconds"})

        def __reduce__(self):
            return reporter, ()

    return Progress, Table


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


def progress_line(trials) -> str:
    """``3/24 done, 2 running (bait seed=0 (round 2), …), 19 pending[, 1 failed]``."""
    by: dict[str, list] = {}
    for t in trials:
        by.setdefault(t.status, []).append(t)
    running = []
    for t in by.get("RUNNING", []):
        label = t.config.get("trial", {}).get("label", str(t))
        rnd = (t.last_result or {}).get("round")
        running.append(label + (f" (round {rnd})" if rnd is not None else ""))
    shown = ", ".join(running[:4]) + (f", +{len(running) - 4} more" if len(running) > 4 else "")
    parts = [f"{len(by.get('TERMINATED', []))}/{len(trials)} done",
             f"{len(running)} running" + (f" ({shown})" if shown else ""),
             f"{len(by.get('PENDING', []))} pending"]
    if by.get("ERROR"):
        parts.append(f"{len(by['ERROR'])} failed")
    return ", ".join(parts)


class DropWhen(logging.Filter):
    """Drops the records whose text contains one of ``texts`` while ``when()`` is true."""

    def __init__(self, texts: tuple[str, ...], when: Callable[[], bool]):
        super().__init__()
        self.texts, self.when = texts, when

    def filter(self, record) -> bool:
        return not (self.when() and any(t in str(record.msg) for t in self.texts))


def quiet_logs(verbose: bool) -> None:
    """Raise the level of Ray's, Tune's and MLflow's routine loggers (not with ``--verbose``)."""
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else level)
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    for old in [f for f in auth.filters if isinstance(f, DropWhen)]:
        auth.removeFilter(old)
    auth.addFilter(DropWhen((LOCAL_TOKEN,), lambda: not verbose))
