"""``fishermask sweep``: a Ray Tune grid of active-learning runs, logged to MLflow; and the
``report`` subcommand's wiring.

Layout:

* one Tune trial = one AL run; the grid comes from the file's ``sweep:`` block (``sweeps.grid``);
* the driver creates the MLflow store, the experiment and the sweep's **parent run** before any
  trial starts; each trial logs into a **child run** (tag ``mlflow.parentRunId``) found-or-created
  by the key ``<parent run id>:<trial key>``, so retries and resumes never duplicate runs;
* Tune's experiment lives in ``<storage>/<name>`` (default storage ``.fishermask/sweeps`` in the
  working directory, made absolute; ``--storage s3://...`` or a shared path on clusters), next to
  ``fishermask_sweep.json`` (parent run id, tracking URI) which ``--resume`` reads back;
* every trial reports a checkpoint per round, ``FailureConfig`` retries crashed trials from their
  last round, and ``--resume`` restores the Tuner (finished trials are not rerun; unfinished
  ones first, then the rest in grid order).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

from fishermask import preflight
from fishermask.config import from_dict
from fishermask.errors import ConfigError, FishermaskError, Terminated
from fishermask.locks import RunLock
from fishermask.reports import command as report
from fishermask.sweeps import progress, watch
from fishermask.sweeps.cluster import check_trials_fit, forget_start, head_address, init_ray
from fishermask.sweeps.ending import close_parent, end_message, finish, head_lost
from fishermask.sweeps.grid import absolute_tracking_uri, load_sweep, storage_root
from fishermask.sweeps.hints import int_at_least, resume_command, ResumeHint
from fishermask.sweeps.host import start_host
from fishermask.sweeps.state import (UnreadableState, create_parent, order_saved_trials,
                                     read_state, remove_experiment, write_state)
from fishermask.sweeps.trial import run_trial, trial_resources
from fishermask.tracking import run_meta
from fishermask.tracking.client import TrackingUnavailable
from fishermask.tracking.tracker import get_or_create_experiment, make_client


def add_parsers(subparsers, add_common) -> None:
    p = subparsers.add_parser("sweep", help="run a sweep file's grid with Ray Tune, logged to MLflow")
    p.add_argument("file", help="sweep file: a config plus a sweep: block {dotted key: [values]}")
    add_common(p)
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (auto = the one `ray start` made here; default: "
                        "execution.address, else RAY_ADDRESS, else a new local Ray)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep under the same parent run: finished trials "
                        "are kept, unfinished and errored ones continue from their last round")
    p.add_argument("--restart", action="store_true",
                   help="discard this sweep's Tune state and start a new sweep (new parent run)")
    p.add_argument("--max-concurrent", type=int_at_least(1), default=None, metavar="N",
                   help="at most N trials at a time (default: as many as the resources allow)")
    p.add_argument("--max-failures", type=int_at_least(0), default=None, metavar="K",
                   help="retry a crashed trial up to K times from its last round (default 2)")
    p.add_argument("--storage", default=None, metavar="PATH|URI",
                   help="Tune storage root (default .fishermask/sweeps here; on a multi-node "
                        "cluster a shared path or s3://bucket/prefix)")
    p.add_argument("--dry-run", action="store_true", help="list the trials and exit")
    p.add_argument("--verbose", action="store_true",
                   help="print every trial's round lines, Tune's trial table, what Ray's workers "
                        "print and the tracebacks of failed trials (default: a progress line "
                        "every 30 s)")

    report.add_parser(subparsers)


# ----------------------------------------------------------------------------- state file

def trial_name(trial) -> str:
    return trial.config["trial"]["label"].replace(" ", "_")


def trial_dirname(trial) -> str:
    return f"trial_{trial.config['trial']['key']}"


def build_tuner(sweep, ctx: dict[str, Any], storage: str, args, restore: bool):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    trainable = tune.with_resources(run_trial, trial_resources)
    exp_path = f"{storage}/{sweep.name}"
    # Tune's own analysis reads each trial's result.json (its other loggers stay off: MLflow has
    # every round, and the TensorBoard writer's thread deadlocked the driver's exit on SIGTERM)
    callbacks = [JsonLoggerCallback(), watch.trial_events()]
    if restore:
        order_saved_trials(exp_path)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
        run_config = getattr(getattr(tuner, "_local_tuner", None), "get_run_config", None)
        if run_config is not None:  # this command's reporting, not the one the state saved
            run_config().callbacks, run_config().progress_reporter = callbacks, \
                progress.reporter()
        return tuner
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.to_dict() for t in sweep.trials]), "sweep": ctx},
        # a fresh worker process per trial: reused workers kept what each trial left in their
        # heap (two workers grew to 10-11 GB over 23 resnet18_narrow trials each, until the
        # node's OOM killer ended the sweep)
        tune_config=tune.TuneConfig(max_concurrent_trials=args.max_concurrent, reuse_actors=False,
                                    trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=sweep.name, storage_path=storage, callbacks=callbacks,
            failure_config=tune.FailureConfig(
                max_failures=2 if args.max_failures is None else args.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            progress_reporter=progress.reporter(), verbose=1))


# ----------------------------------------------------------------------------- command

@dataclass
class _Session:
    """A sweep being run: what the planning step found and the opening step made."""

    sweep: Any
    storage: str
    exp_path: str
    state: Optional[dict[str, Any]] = None
    client: Any = None
    parent_id: str = ""
    tracking_uri: str = ""
    fresh: bool = True              # a new parent run (not a resume)
    started_ray: bool = False       # this process started the Ray it uses (or joined a cluster)
    joined: bool = False            # a cluster joined by address (not a local Ray of our own)
    head: Optional[str] = None      # its head's GCS address (host:port), watched while it runs
    experiment_id: str = ""
    host: Any = None                # the trials' tracking actor (sweeps.host), while Tune runs


def cmd_sweep(args) -> int:
    """``fishermask sweep``: plan, open (or resume), run, finish."""
    held: list = []  # the sweep's lock, once taken
    try:
        session = _plan(args, held)
        if session is None:  # --dry-run
            return 0
        _check_state(args, session)
        _open(args, session)
        return _run(args, session)
    finally:
        for lock in held:
            lock.release()


def _plan(args, held: list) -> Optional[_Session]:
    """The trials of the sweep file, checked before anything starts (None after --dry-run)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the compact table (CLIReporter) below
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # MLflow is the record of every round; Tune's own loggers add nothing, and the TensorBoard
    # one's writer thread deadlocked the driver's exit when SIGTERM stopped a sweep mid-write
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # a failed trial is one line (watch.trial_events), Tune's traceback only with --verbose
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "1" if args.verbose else "0"
    progress.SETTINGS["verbose"] = watch.LIVE["verbose"] = args.verbose
    progress.quiet_logs(args.verbose)
    if args.resume and args.restart:
        raise ConfigError("give either --resume or --restart, not both")
    sweep = load_sweep(args.file, args.overrides)
    storage = storage_root(args.storage)
    session = _Session(sweep, storage, f"{storage}/{sweep.name}")
    print(f"sweep {sweep.name}: {len(sweep.trials)} trials ({sweep.points} grid points) "
          f"over {', '.join(sweep.axes) or 'no axes'}")
    for note in sweep.notes:
        print(f"  note: {note}")
    if args.dry_run:
        for t in sweep.trials:
            print(f"  {t.key}  {t.label}")
        return None
    if "://" not in storage:
        preflight.writable_folder(storage, "sweep state (--storage)",
                                  "or pass --storage /a/writable/folder")
        # one driver per sweep: a second launch refuses, naming the first
        held.append(RunLock(f"{session.exp_path}.lock",
                            f"sweep '{sweep.name}' ({session.exp_path})").acquire())
    local = not (args.address or sweep.base.execution.address or os.environ.get("RAY_ADDRESS"))
    for t in sweep.trials:
        cfg = from_dict(t.config)
        if local:  # a trial larger than this machine would wait forever
            preflight.local_trial(cfg.execution, t.label)
        try:
            preflight.trial_mask_capacity(cfg)
        except FishermaskError as exc:
            raise ConfigError(f"trial '{t.label}': {exc}") from None
    return session


def _check_state(args, session: _Session) -> None:
    """The saved state of an earlier launch must agree with --resume / --restart."""
    sweep, exp_path = session.sweep, session.exp_path
    try:
        state = read_state(exp_path)
    except UnreadableState:
        if not args.restart:
            raise
        state = None
        remove_experiment(exp_path)  # what cannot be read cannot be resumed
    if state is not None and not args.resume and not args.restart:
        raise ConfigError(
            f"sweep '{sweep.name}' already ran in {exp_path} (parent run {state['parent_run_id']}). "
            f"Use --resume to continue it (finished trials are kept) or --restart to start a new "
            f"sweep; or change the experiment name (--set experiment=...)")
    if args.resume and state is None:
        raise ConfigError(f"nothing to resume: no sweep state in {exp_path}; run without --resume "
                          f"(or pass the --storage of the interrupted sweep)")
    if args.resume and (args.max_concurrent is not None or args.max_failures is not None):
        print("note: a resumed sweep keeps the --max-concurrent and --max-failures it started "
              "with (Tune restores them); --restart starts it afresh with new ones",
              file=sys.stderr)
    if args.resume and state.get("digest") not in (None, sweep.digest):
        # Tune would run the trials it saved, not the ones listed above
        raise ConfigError(
            f"--resume: the trials of {sweep.path} (with these --set) are not the ones sweep "
            f"'{sweep.name}' started with, and a resume runs only those. Undo the change to resume "
            f"it, use --restart to start it afresh, or --set experiment=NEW for a separate sweep")
    session.state = state


def _open(args, session: _Session) -> None:
    """The tracking store (cheap: a server that is down must not wait for Ray), then Ray, then the
    parent run (found again on --resume).  A cluster that cannot be joined, or cannot place a
    trial, leaves no sweep state behind."""
    import ray

    sweep, exp_path, state = session.sweep, session.exp_path, session.state
    preflight.tracking_uri(state["tracking_uri"] if state is not None and not args.restart
                           else args.tracking_uri or sweep.base.tracking.tracking_uri)
    address = args.address or sweep.base.execution.address
    # the trials' and raylets' own output only with --verbose (a failed trial is a note; its
    # error.txt has the rest), e.g. not the raylets' complaints when the head node is lost
    session.started_ray = init_ray(address, log_to_driver=args.verbose)
    session.joined = (address or os.environ.get("RAY_ADDRESS") or "local") != "local"
    try:  # nothing below may leave this process's Ray running
        check_trials_fit(sweep)
        if args.restart and state is not None:
            remove_experiment(exp_path)
            state = session.state = None
        session.fresh = state is None
        if state is not None:
            _resume_parent(args, session)
        else:
            uri = absolute_tracking_uri(
                preflight.tracking_uri(args.tracking_uri or sweep.base.tracking.tracking_uri))
            session.tracking_uri = uri
            session.client = make_client(uri, sweep.base.tracking.patience_s)
            session.parent_id = create_parent(session.client, sweep, exp_path,
                                              run_meta.context_tags())
            session.state = {"parent_run_id": session.parent_id, "tracking_uri": uri,
                             "digest": sweep.digest, "experiment": sweep.experiment,
                             "file": str(sweep.path)}
            write_state(exp_path, session.state)
        session.experiment_id = get_or_create_experiment(session.client, sweep.experiment)
        print(f"MLflow: experiment '{sweep.experiment}', parent run {session.parent_id} at "
              f"{session.tracking_uri}")
        print(f"Tune:   {exp_path}")
    except BaseException:
        if session.started_ray:
            ray.shutdown()
        raise


def _resume_parent(args, session: _Session) -> None:
    """The parent run of the saved state, set RUNNING again."""
    uri = session.state["tracking_uri"]
    if args.tracking_uri and absolute_tracking_uri(args.tracking_uri) != uri:
        raise ConfigError(f"--resume: this sweep logs to {uri}, not {args.tracking_uri}; drop "
                          f"--tracking-uri or pass the original one")
    preflight.tracking_uri(uri)
    session.tracking_uri = uri
    session.client = make_client(uri, session.sweep.base.tracking.patience_s)
    session.parent_id = session.state["parent_run_id"]
    try:
        session.client.get_run(session.parent_id)
    except TrackingUnavailable:
        raise
    except Exception as exc:
        raise FishermaskError(f"--resume: parent run {session.parent_id} not found at {uri} "
                              f"({type(exc).__name__}); is the tracking server up?") from None
    session.client.update_run(session.parent_id, status="RUNNING")


def _run(args, session: _Session) -> int:
    """Tune's run of the trials under the driver's watch (``sweeps.watch``), the summary, and the
    end state of the parent run.  Every way a sweep can stop prints one message; the MLflow
    calls after a failure are bounded and never replace the first error."""
    import logging

    import ray
    from mlflow.exceptions import MlflowException
    from ray import tune
    from ray.exceptions import RayError

    sweep, client, parent_id = session.sweep, session.client, session.parent_id
    again = resume_command(args)
    session.head = head_address() if session.joined else None
    guard = watch.Watch(session.tracking_uri, sweep.base.tracking.patience_s, client, session.head,
                        on_head_lost=lambda s: head_lost(session, s, again),
                        on_stuck=lambda exc: _stuck(session, exc, again))
    tune_log = logging.getLogger("ray.tune.tune")
    for old in [f for f in tune_log.filters if isinstance(f, (ResumeHint, progress.DropWhen))]:
        tune_log.removeFilter(old)
    tune_log.addFilter(progress.DropWhen(progress.STOP_NOISE,
                                         lambda: guard.tracking_lost is not None))
    tune_log.addFilter(ResumeHint(again))
    status, code, forgotten = "FAILED", 1, False
    t0 = time.perf_counter()
    try:
        restore = args.resume and tune.Tuner.can_restore(session.exp_path)
        ctx = {"parent_run_id": parent_id, "tracking_uri": session.tracking_uri,
               "experiment": sweep.experiment, "experiment_id": session.experiment_id,
               "name": sweep.name, "context_tags": run_meta.context_tags(),
               "given": {"data.data_dir": sweep.base.data.data_dir},
               "legacy_keys": not session.fresh, "round_logs": args.verbose}
        session.host = start_host(parent_id, session.tracking_uri)  # the trials log through it
        with guard:
            results = build_tuner(sweep, ctx, session.storage, args, restore).fit()
        if guard.tracking_lost is not None:
            raise guard.tracking_lost
        status, code = finish(args, session, results, time.perf_counter() - t0)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: parent and unfinished trials end KILLED
        status = "KILLED"
        what = "terminated (SIGTERM)" if Terminated.received else "interrupted"
        print(f"{what}; finished trials and the rounds of unfinished ones are kept; continue "
              f"with: {again}", file=sys.stderr)
        code = 143 if Terminated.received else 130
    except TrackingUnavailable as exc:
        status, code = "KILLED", 2
        print(end_message(session, exc, again), file=sys.stderr)
    except (RuntimeError, RayError, MlflowException) as exc:  # Tune itself stopped, or MLflow
        if session.fresh and forget_start(client, session.exp_path, parent_id, sweep.experiment):
            forgotten = True
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
        print(f"error: the sweep stopped: {first}\nFinished trials and the rounds of unfinished "
              f"ones are kept; continue with: {again}", file=sys.stderr)
        code = 2 if isinstance(exc, MlflowException) else 1
    except BaseException:
        forgotten = session.fresh and forget_start(client, session.exp_path, parent_id,
                                                   sweep.experiment)
        if forgotten:
            print(f"no trial started; the sweep's state in {session.exp_path} and its parent run "
                  f"were removed, so running the same command again starts it afresh",
                  file=sys.stderr)
        raise
    finally:
        if session.started_ray:
            ray.shutdown()  # the trials' workers stop here: nothing logs to MLflow after it
        if not forgotten:
            close_parent(session, status)
    return code


def _stuck(session: _Session, exc: TrackingUnavailable, again: str) -> None:
    """Tune did not stop the trials in time after the tracking server went away: end the driver
    (its trials end with it) with the same message."""
    print(end_message(session, exc, again), file=sys.stderr, flush=True)
    os._exit(2)


def cmd_report(args) -> int:
    return report.cmd_report(args)


HANDLERS = {"sweep": cmd_sweep, "report": cmd_report}
