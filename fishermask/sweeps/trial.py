"""One Tune trial = one active-learning run, logged to an MLflow child run.

Runs inside a Ray worker.  The trial restores the loop's own checkpoint folder from Tune's latest
checkpoint (so a retried or resumed trial continues after its last reported round), logs into the
child run found-or-created by the trial key under the sweep's parent run, and reports metrics plus
a checkpoint to Tune after every round.  It times what is Tune/MLflow overhead (tracking calls,
reports, checkpoint restore) separately from the active-learning work.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from fishermask.config import from_dict
from fishermask.execution.ray.executor import execution_resources
from fishermask.locks import scratch_dir
from fishermask.loop import ActiveLearningLoop
from fishermask.sweeps.host import find_host
from fishermask.tracking.service import ForwardingTracker
from fishermask.tracking.tracker import MlflowTracker

# Tune logs "Restored on <ip> from checkpoint: …" in the trial's worker before the trial runs
# (this module is imported there first); the sweep's own note says when a trial is retried
logging.getLogger("ray.tune.trainable.trainable").setLevel(logging.WARNING)

TRIAL_EXTRA_PATIENCE_S = 30.0
"""A trial waits this much longer for a silent tracking server than the driver, which stops the
sweep first and names the server once (a trial gives up alone only when the driver still reaches
the server and it does not)."""


def trial_resources(config: dict[str, Any]):
    """Placement group of a trial (Tune calls this with the trial's config)."""
    execution = from_dict(config["trial"]["config"]).execution
    return resources_for(execution)


def resources_for(execution):
    """The placement group of a trial with these ``execution`` settings."""
    return execution_resources(execution)


class _Timer:
    def __init__(self):
        self.seconds = 0.0

    def wrap(self, fn):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t0
        return timed


def _threads() -> int:
    from ray import tune

    try:
        pgf = tune.get_context().get_trial_resources()
        return max(1, int(pgf.head_cpus or 1))
    except Exception:  # pragma: no cover - outside Tune
        return 1


def trial_tracker(ctx: dict[str, Any], spec: dict[str, Any], cfg):
    """The trial's tracker: its calls go to the sweep's tracking actor (``sweeps.host``), or, in
    a sweep that has none, an :class:`MlflowTracker` in this process."""
    key = f"{ctx['parent_run_id']}:{spec['key']}"
    kwargs = dict(tracking_uri=ctx["tracking_uri"], experiment=ctx["experiment"],
                  run_name=spec["label"], parent_run_id=ctx["parent_run_id"], run_key=key,
                  variant=spec["variant"], sweep=ctx["name"], given=ctx.get("given"),
                  context=ctx.get("context_tags"), experiment_id=ctx.get("experiment_id"),
                  patience=cfg.tracking.patience_s + TRIAL_EXTRA_PATIENCE_S,
                  legacy_keys=ctx.get("legacy_keys", True), figures=False)
    call = find_host(ctx["parent_run_id"])
    if call is not None:
        return ForwardingTracker(call, key, kwargs)
    return MlflowTracker(**kwargs)


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable.  ``config = {"trial": TrialSpec dict, "sweep": context}``."""
    t_enter, started = time.perf_counter(), time.time()
    import torch
    from ray import tune

    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # per-round noise
    spec, ctx = config["trial"], config["sweep"]
    cfg = from_dict(spec["config"])
    if not cfg.execution.threads:
        torch.set_num_threads(_threads())
    mlflow_t, tune_t = _Timer(), _Timer()  # MLflow calls; Tune checkpoint restore + reports
    workdir = scratch_dir("trial-")  # a killed trial's copy goes with the next trial's start
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        t0 = time.perf_counter()
        with ckpt.as_directory() as d:
            shutil.copytree(d, workdir, dirs_exist_ok=True)
        tune_t.seconds += time.perf_counter() - t0
    tracker = trial_tracker(ctx, spec, cfg)
    for name in ("start", "log_round", "finish"):
        setattr(tracker, name, mlflow_t.wrap(getattr(tracker, name)))
    t_loop, o_loop = time.perf_counter(), tune_t.seconds

    def timings(final: bool) -> dict[str, Any]:
        now = time.perf_counter()  # loop = the AL work: data, training, queries (no tracking)
        inside = mlflow_t.seconds + tune_t.seconds - o_loop
        return {"trial_seconds": now - t_enter, "mlflow_seconds": mlflow_t.seconds,
                "tune_seconds": tune_t.seconds, "loop_seconds": now - t_loop - inside,
                "trial_start": started, "trial_end": time.time(), "done": final}

    def on_round(loop: ActiveLearningLoop, rec) -> None:
        metrics = {"round": rec.round, "n_labels": rec.n_labels, "accuracy": rec.accuracy,
                   "balanced_accuracy": rec.balanced_accuracy, "query_seconds": rec.query_seconds,
                   "train_seconds": rec.train_seconds, "run_id": tracker.run_id,
                   **timings(False)}
        t0 = time.perf_counter()
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(workdir)))
        tune_t.seconds += time.perf_counter() - t0

    try:
        loop = ActiveLearningLoop.from_config(cfg, tracker=tracker, checkpoint_dir=workdir,
                                              progress=False, on_round=on_round,
                                              echo=bool(ctx.get("round_logs")))
        last = loop.run()[-1]
        tune.report({"round": last.round, "n_labels": last.n_labels, "accuracy": last.accuracy,
                     "balanced_accuracy": last.balanced_accuracy, "run_id": tracker.run_id,
                     **timings(True)})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
