"""Trackers: where a run's parameters, per-round metrics and artifacts go.

:class:`MlflowTracker` logs through an explicit ``MlflowClient`` (no global fluent state, safe in
Ray workers).  Runs are found again by id (resume) or by a stable ``run_key`` tag (sweeps), so a
resumed or retried run never duplicates; every run ends FINISHED or FAILED.
"""

from __future__ import annotations

from typing import Any, Optional

import yaml

from fishermask.errors import FishermaskError
from fishermask.locks import blocking_lock
from fishermask.tracking import run_meta

RUN_KEY_TAG = "mlflow.fishermask.run_key"  # "mlflow." keys are hidden in the UI
OLD_RUN_KEY_TAG = "fishermask.run_key"     # stores written before the key was hidden
PARENT_TAG = "mlflow.parentRunId"


class Tracker:
    """The interface the AL loop talks to (also a no-op tracker).  It receives plain values:

    * ``start(cfg, data, run_id)``: the config and the experiment data (pool and test set) at the
      start of a run (``run_id``: the run a checkpoint names, to resume); returns the run's id;
    * ``log_round(rec, records, picks, replay)``: a finished round's record, every record so far
      and the picks so far (``{"initial": [...], "rounds": [[...], ...]}``); ``replay``: an earlier
      round logged again after a resume (only what is missing is logged);
    * ``finish(records, status)``: FINISHED, FAILED or KILLED.
    """

    def start(self, cfg, data, run_id: Optional[str] = None) -> Optional[str]:
        return run_id

    def log_round(self, rec, records: list, picks: dict, replay: bool = False) -> None:
        pass

    def finish(self, records: list, status: str) -> None:
        pass


def default_tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def make_client(tracking_uri: str):
    """An ``MlflowClient``; a local sqlite store is created under a lock on its folder, so that
    first runs started at the same moment do not race on creating the schema."""
    import re

    from mlflow.tracking import MlflowClient

    m = re.match(r"^sqlite:///(.+)$", tracking_uri)
    if not m or m.group(1) == ":memory:":
        return MlflowClient(tracking_uri)
    from pathlib import Path

    db = Path(m.group(1)).absolute()
    db.parent.mkdir(parents=True, exist_ok=True)
    with blocking_lock(db.parent):  # flock on the folder itself: no lock file left behind
        try:
            return MlflowClient(tracking_uri)
        except Exception as exc:  # e.g. a first run killed while it created the tables
            raise FishermaskError(
                f"cannot open the MLflow store {tracking_uri} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}). If {db} is new (a first run was stopped "
                f"while it created the store), delete it and run again; if it holds results, keep "
                f"it and check the file, or pass another --tracking-uri") from None


def get_or_create_experiment(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created concurrently by someone else
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_run_by_key(client, experiment_id: str, run_key: str):
    for tag in (RUN_KEY_TAG, OLD_RUN_KEY_TAG):
        runs = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{run_key}'",
                                  max_results=2)
        if runs:
            return runs[0]
    return None


class MlflowTracker(Tracker):
    def __init__(self, tracking_uri: Optional[str] = None, *, experiment: Optional[str] = None,
                 run_name: Optional[str] = None, parent_run_id: Optional[str] = None,
                 run_key: Optional[str] = None, tags: Optional[dict[str, str]] = None,
                 variant: Optional[str] = None, sweep: Optional[str] = None,
                 given: Optional[dict[str, Any]] = None, context: Optional[dict[str, str]] = None):
        """``variant``/``sweep``: the run's variant label and sweep name (tags); ``given``: config
        paths as the user wrote them; ``context``: MLflow context tags resolved by the driver
        (a Ray worker's own would name Ray's worker script)."""
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self._client = None
        self.experiment, self.run_name = experiment, run_name
        self.parent_run_id, self.run_key, self.tags = parent_run_id, run_key, dict(tags or {})
        self.variant, self.sweep, self.given, self.context = variant, sweep, given, context
        self.run_id: Optional[str] = None
        self._logged_steps: set[int] = set()
        self._logged_files: set[str] = set()  # rounds/… artifacts already in the run
        self._inputs_logged = False
        self.cfg = self.data = None

    @property
    def client(self):
        """The MLflow client, made on first use (a sqlite store is created then)."""
        if self._client is None:
            self._client = make_client(self.tracking_uri)
        return self._client

    # ------------------------------------------------------------------ lifecycle
    def start(self, cfg, data, run_id: Optional[str] = None) -> str:
        self.cfg, self.data = cfg, data
        exp_id = get_or_create_experiment(self.client, self.experiment or cfg.experiment)
        self.experiment_id = exp_id
        run_meta.describe_experiment(self.client, exp_id)
        run = None
        if run_id:
            try:
                run = self.client.get_run(run_id)
            except Exception:
                run = None
            if run is not None and run.info.lifecycle_stage == "deleted":
                import sys

                print(f"note: MLflow run {run_id} was deleted; logging this run to a new MLflow "
                      f"run (the finished rounds are logged again)", file=sys.stderr)
                run = None
        if run is None and self.run_key:
            run = find_run_by_key(self.client, exp_id, self.run_key)
        if run is not None:
            self.run_id = run.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            hist = self.client.get_metric_history(self.run_id, "accuracy")
            self._logged_steps = {m.step for m in hist}
            try:  # a stop between a round's metrics and its files: the files are logged again
                self._logged_files = {f.path for f in self.client.list_artifacts(self.run_id,
                                                                                  "rounds")}
            except Exception:
                self._logged_files = set()
            return self.run_id
        tags = self._tags(cfg)
        if self.parent_run_id:
            tags[PARENT_TAG] = self.parent_run_id
        if self.run_key:
            tags[RUN_KEY_TAG] = self.run_key
        name = self.run_name or cfg.tracking.run_name or f"{cfg.strategy.name}-seed{cfg.seed}"
        run = self.client.create_run(exp_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        self._log_params(cfg)
        self.client.log_text(self.run_id, yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
        return self.run_id

    def _tags(self, cfg) -> dict[str, str]:
        """Provenance, the description, and what params do not say (variant, seed, sweep)."""
        tags = dict(self.context if self.context is not None else run_meta.context_tags())
        tags.update(run_meta.versions())
        tags.update(run_meta.plugin_tags(cfg))
        tags["device"] = run_meta.device_name(cfg.execution.device)
        tags.update({"variant": self.variant or cfg.strategy.name, "seed": str(cfg.seed)})
        if self.sweep:
            tags["sweep"] = self.sweep
        tags[run_meta.NOTE_TAG] = run_meta.run_description(cfg, self.variant, self.sweep)
        tags.update(self.tags)
        return tags

    def _log_params(self, cfg) -> None:
        run_meta.log_params(self.client, self.run_id, run_meta.run_params(cfg, self.given))

    def _log_inputs(self) -> None:
        """The pool and the test set as the run's dataset inputs (once, also across resumes)."""
        self._inputs_logged = True
        have = {(d.dataset.name, d.dataset.digest)
                for d in self.client.get_run(self.run_id).inputs.dataset_inputs}
        new = [d for d in run_meta.dataset_inputs(self.cfg, self.data)
               if (d.dataset.name, d.dataset.digest) not in have]
        if new:
            self.client.log_inputs(self.run_id, datasets=new)

    def finish(self, records: list, status: str) -> None:
        if self.run_id is None:
            return
        if status == "FINISHED" and records:  # the UI sorts by these as the report ranks
            from mlflow.entities import Metric

            step = records[-1].n_labels
            self.client.log_batch(self.run_id, metrics=[
                Metric(k, float(v), 0, step)
                for k, v in run_meta.summary_metrics(records).items()])
        self.client.set_terminated(self.run_id, status=status)

    # ------------------------------------------------------------------ rounds
    def log_round(self, rec, records: list, picks: dict, replay: bool = False) -> None:
        from mlflow.entities import Metric

        from fishermask.tracking import plots

        if not self._inputs_logged:
            self._log_inputs()
        if rec.n_labels not in self._logged_steps:
            values = run_meta.round_metrics(rec)
            ts = 0
            metrics = [Metric(k, float(v), ts, rec.n_labels) for k, v in values.items()]
            for i in range(0, len(metrics), 500):
                self.client.log_batch(self.run_id, metrics=metrics[i:i + 500])
            self._logged_steps.add(rec.n_labels)
        files = {f"rounds/round_{rec.round:03d}_{name}.json": obj
                 for name, obj in rec.artifacts.items()}
        missing = {path: obj for path, obj in files.items() if path not in self._logged_files}
        if missing:
            for path, obj in missing.items():
                self.client.log_dict(self.run_id, obj, path)
                self._logged_files.add(path)
            if "mask_profile" in rec.artifacts:
                profiles = [(r.round, r.artifacts["mask_profile"]) for r in records
                            if "mask_profile" in r.artifacts and r.round <= rec.round]
                self._log_figure(plots.mask_profile_rounds(profiles, "FisherMask mask profile"),
                                 "mask_profile.png")
        if replay:
            return
        self.client.log_dict(self.run_id, picks, "selected_indices.json")
        self.client.log_dict(self.run_id, [_record_dict(r) for r in records], "rounds.json")
        self._log_figure(plots.learning_curve(records, f"{self.cfg.strategy.name}, seed "
                                                       f"{self.cfg.seed}"), "learning_curve.png")

    def _log_figure(self, fig, path: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(self.run_id, fig, path)
        plt.close(fig)


def _record_dict(rec) -> dict[str, Any]:
    d = dict(rec.__dict__)
    d.pop("artifacts", None)
    return d
