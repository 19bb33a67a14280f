"""Trackers: where a run's parameters, per-round metrics and artifacts go.

:class:`MlflowTracker` logs through an explicit ``MlflowClient`` (no global fluent state, safe in
Ray workers).  Runs are found again by id (resume) or by a stable ``run_key`` tag (sweeps), so a
resumed or retried run never duplicates; every run ends FINISHED or FAILED.
"""

from __future__ import annotations

from typing import Any, Optional

import yaml

from fishermask.errors import FishermaskError
from fishermask.locks import blocking_lock, scratch_dir
from fishermask.tracking.client import (DEFAULT_PATIENCE_S, GuardedClient, StoreFull,
                                         bounded_http, classify)
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


def import_client(tracking_uri: str) -> None:
    """Import MLflow's client and the store ``tracking_uri`` needs (a SQLAlchemy store for a
    sqlite URI: more than a second of imports in each new process)."""
    import mlflow.tracking  # noqa: F401

    if tracking_uri.startswith("sqlite:"):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def make_client(tracking_uri: str, patience: float = DEFAULT_PATIENCE_S) -> GuardedClient:
    """An ``MlflowClient`` with bounded waits (:class:`~fishermask.tracking.client.GuardedClient`);
    a local sqlite store is created under a lock on its folder, so that first runs started at the
    same moment do not race on creating the schema."""
    import re

    from mlflow.tracking import MlflowClient

    bounded_http()
    m = re.match(r"^sqlite:///(.+)$", tracking_uri)
    if not m or m.group(1) == ":memory:":
        return GuardedClient(MlflowClient(tracking_uri), tracking_uri, patience)
    from pathlib import Path

    db = Path(m.group(1)).absolute()
    db.parent.mkdir(parents=True, exist_ok=True)
    with blocking_lock(db.parent):  # flock on the folder itself: no lock file left behind
        try:
            return GuardedClient(MlflowClient(tracking_uri), tracking_uri, patience)
        except Exception as exc:  # e.g. a first run killed while it created the tables
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            if classify(exc) == "full":
                raise StoreFull(f"the MLflow store {tracking_uri} cannot be opened: the disk of "
                                f"{db.parent} is full ({first}). Free space there and run the "
                                f"same command again") from None
            raise FishermaskError(
                f"cannot open the MLflow store {tracking_uri} ({type(exc).__name__}: "
                f"{first}). If {db} is new (a first run was stopped "
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


def find_run_by_key(client, experiment_id: str, run_key: str, legacy: bool = True):
    """The run tagged with ``run_key`` (``legacy``: also under the tag of older stores)."""
    for tag in (RUN_KEY_TAG, OLD_RUN_KEY_TAG) if legacy else (RUN_KEY_TAG,):
        runs = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{run_key}'",
                                  max_results=2)
        if runs:
            return runs[0]
    return None


class MlflowTracker(Tracker):
    """Logs a run with few calls: at the start one run (tags), one batch of params and the
    dataset inputs; per round one ``log_batch`` of metrics and at most one artifact upload (the
    round's own files, e.g. FisherMask's mask profile, and ``config.yaml`` with the first); at
    the end the summary metrics, one upload of the cumulative files (``rounds.json``,
    ``selected_indices.json``, and for a finished run its figures) and the status.  A status
    other than FINISHED is set before that upload: a run that fails for lack of space is marked
    before its files take what is left."""

    def __init__(self, tracking_uri: Optional[str] = None, *, experiment: Optional[str] = None,
                 run_name: Optional[str] = None, parent_run_id: Optional[str] = None,
                 run_key: Optional[str] = None, tags: Optional[dict[str, str]] = None,
                 variant: Optional[str] = None, sweep: Optional[str] = None,
                 given: Optional[dict[str, Any]] = None, context: Optional[dict[str, str]] = None,
                 experiment_id: Optional[str] = None, patience: Optional[float] = None,
                 legacy_keys: bool = True, figures: bool = True):
        """``variant``/``sweep``: the run's variant label and sweep name (tags); ``given``: config
        paths as the user wrote them; ``context``: MLflow context tags resolved by the driver
        (a Ray worker's own would name Ray's worker script); ``experiment_id``: the experiment,
        when the caller made it (a sweep's driver); ``patience``: seconds the server may not
        answer before :class:`~fishermask.tracking.client.TrackingUnavailable` (default: the
        config's ``tracking.patience_s``); ``legacy_keys``: look runs up under the run-key tag
        of older stores too; ``figures``: draw the run's figures at its end (a sweep's trials
        leave them to ``fishermask report``, which draws every run's)."""
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self._client = None
        self.experiment, self.run_name = experiment, run_name
        self.parent_run_id, self.run_key, self.tags = parent_run_id, run_key, dict(tags or {})
        self.variant, self.sweep, self.given, self.context = variant, sweep, given, context
        self.experiment_id, self.patience, self.legacy_keys = experiment_id, patience, legacy_keys
        self.figures = figures
        self.run_id: Optional[str] = None
        self._logged_steps: set[int] = set()
        self._logged_files: set[str] = set()  # rounds/… artifacts already in the run
        self._pending: dict[str, Any] = {}    # files for the next upload
        self._picks: dict[str, Any] = {}
        self.cfg, self.inputs = None, []

    def _patience(self, cfg=None) -> float:
        """Seconds the server may not answer: the given patience, else the config's."""
        cfg = cfg if cfg is not None else self.cfg
        if self.patience is not None:
            return self.patience
        return cfg.tracking.patience_s if cfg is not None else DEFAULT_PATIENCE_S

    @property
    def client(self):
        """The MLflow client, made on first use (a sqlite store is created then)."""
        if self._client is None:
            self._client = make_client(self.tracking_uri, self._patience())
        return self._client

    def share_client(self, clients: dict, cfg) -> None:
        """Use the client of ``clients`` for this tracking URI and patience (made and added
        there when missing): runs logged by one process share it."""
        key = (self.tracking_uri, float(self._patience(cfg)))
        if key not in clients:
            clients[key] = make_client(*key)
        self._client = clients[key]

    # ------------------------------------------------------------------ lifecycle
    def start(self, cfg, data, run_id: Optional[str] = None) -> str:
        return self.open(cfg, run_meta.dataset_descriptions(cfg, data), run_id)

    def open(self, cfg, inputs: list, run_id: Optional[str] = None) -> str:
        """:meth:`start` with the data already described (``run_meta.dataset_descriptions``):
        what a tracker that runs away from the data is given."""
        self.cfg, self.inputs = cfg, inputs
        exp_id = self.experiment_id
        if exp_id is None:
            exp_id = get_or_create_experiment(self.client, self.experiment or cfg.experiment)
            run_meta.describe_experiment(self.client, exp_id)
        self.experiment_id = exp_id
        run = self._find(run_id)
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
            self._log_inputs(self.client.get_run(self.run_id).inputs.dataset_inputs)
            return self.run_id
        tags = self._tags(cfg)
        if self.parent_run_id:
            tags[PARENT_TAG] = self.parent_run_id
        if self.run_key:
            tags[RUN_KEY_TAG] = self.run_key
        name = self.run_name or cfg.tracking.run_name or f"{cfg.strategy.name}-seed{cfg.seed}"
        run = self.client.create_run(exp_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        run_meta.log_params(self.client, self.run_id, run_meta.run_params(cfg, self.given))
        self._log_inputs([])
        self._pending["config.yaml"] = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        return self.run_id

    def _find(self, run_id: Optional[str]):
        """The run to continue: the checkpoint's (unless deleted in the UI), else the run key's."""
        run = None
        if run_id:
            try:
                run = self.client.get_run(run_id)
            except FishermaskError:
                raise
            except Exception:
                run = None
            if run is not None and run.info.lifecycle_stage == "deleted":
                import sys

                print(f"note: MLflow run {run_id} was deleted; logging this run to a new MLflow "
                      f"run (the finished rounds are logged again)", file=sys.stderr)
                run = None
        if run is None and self.run_key:
            run = find_run_by_key(self.client, self.experiment_id, self.run_key, self.legacy_keys)
        return run

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

    def _log_inputs(self, have) -> None:
        """The pool and the test set as the run's dataset inputs (once, also across resumes)."""
        seen = {(d.dataset.name, d.dataset.digest) for d in have}
        new = [d for d in run_meta.dataset_inputs(self.inputs)
               if (d.dataset.name, d.dataset.digest) not in seen]
        if not new:
            return
        try:
            self.client.log_inputs(self.run_id, datasets=new)
        except FishermaskError:
            raise
        except Exception as exc:  # another run of the sweep logged the same dataset this moment
            if "UNIQUE constraint" not in str(exc) and "IntegrityError" not in str(exc):
                raise
            self.client.log_inputs(self.run_id, datasets=new)

    def finish(self, records: list, status: str) -> None:
        if self.run_id is None:
            return
        if records:
            self._pending["rounds.json"] = [_record_dict(r) for r in records]
            self._pending["selected_indices.json"] = self._picks
        if status == "FINISHED" and records:  # the UI sorts by these as the report ranks
            from mlflow.entities import Metric

            step = records[-1].n_labels
            self.client.log_batch(self.run_id, metrics=[
                Metric(k, float(v), 0, step)
                for k, v in run_meta.summary_metrics(records).items()])
            if self.figures:
                self._pending.update(_figures(self.cfg, records))
        if status == "FINISHED":  # a finished run shows its files as soon as it shows FINISHED
            self._upload()
            self.client.set_terminated(self.run_id, status=status)
        else:
            self.client.set_terminated(self.run_id, status=status)
            self._upload()

    # ------------------------------------------------------------------ rounds
    def log_round(self, rec, records: list, picks: dict, replay: bool = False) -> None:
        """One round: its metrics (unless a resumed run has them) and its own files (those it
        lacks), in one call each; ``replay`` changes nothing (only what is missing is logged)."""
        from mlflow.entities import Metric

        self._picks = picks
        if rec.n_labels not in self._logged_steps:
            metrics = [Metric(k, float(v), 0, rec.n_labels)
                       for k, v in run_meta.round_metrics(rec).items()]
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
            self._logged_steps.add(rec.n_labels)
        for name, obj in rec.artifacts.items():
            path = f"rounds/round_{rec.round:03d}_{name}.json"
            if path not in self._logged_files:
                self._pending[path] = obj
        self._upload()

    def _upload(self) -> None:
        """The pending files in one ``log_artifacts`` call."""
        if not self._pending:
            return
        import json
        import shutil
        from pathlib import Path

        tmp = scratch_dir("artifacts-")  # swept by a later process if this one is killed here
        try:
            for path, obj in self._pending.items():
                dest = Path(tmp, path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(obj, bytes):
                    dest.write_bytes(obj)
                elif isinstance(obj, str):
                    dest.write_text(obj)
                else:
                    dest.write_text(json.dumps(obj, indent=2))
            self.client.log_artifacts(self.run_id, str(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._logged_files.update(p for p in self._pending if p.startswith("rounds/"))
        self._pending = {}


def _figures(cfg, records: list) -> dict[str, bytes]:
    """The learning curve and, for FisherMask, the mask profile over rounds, as PNG bytes."""
    import io

    import matplotlib.pyplot as plt

    from fishermask.tracking import plots

    figs = {"learning_curve.png": plots.learning_curve(
        records, f"{cfg.strategy.name}, seed {cfg.seed}")}
    profiles = [(r.round, r.artifacts["mask_profile"]) for r in records
                if "mask_profile" in r.artifacts]
    if profiles:
        figs["mask_profile.png"] = plots.mask_profile_rounds(profiles, "FisherMask mask profile")
    out = {}
    for name, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        out[name] = buf.getvalue()
    return out


def _record_dict(rec) -> dict[str, Any]:
    d = dict(rec.__dict__)
    d.pop("artifacts", None)
    return d
