"""``fishermask`` command line: ``run``, ``sweep``, ``report``, ``select`` and ``list``.

User errors (bad config, missing data, impossible budget, memory limits) print one clear message
and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from fishermask import preflight
from fishermask.config import load_config
from fishermask.data.params import DATASETS
from fishermask.models import MODELS
from fishermask.plugins import available
from fishermask.strategies import STRATEGIES
from fishermask.errors import FishermaskError, Terminated
from fishermask.labeling import command as select_cmd
from fishermask.loop import ActiveLearningLoop
from fishermask.sweeps import command as sweep_mod
from fishermask.tracking import run_meta
from fishermask.tracking.client import StoreFull, TrackingUnavailable
from fishermask.tracking.tracker import MlflowTracker


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value with a dotted key, e.g. --set strategy.name=entropy")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLflow's default, sqlite:///mlflow.db here)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fishermask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one active-learning experiment from a YAML file")
    run.add_argument("file", help="config or sweep file (a sweep: block is ignored)")
    _add_common(run)
    run.add_argument("--restart", action="store_true",
                     help="ignore an existing checkpoint of this config and start from round 0")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    select_cmd.add_parser(sub, _add_common)
    sub.add_parser("list", help="every name data.dataset, model.name and strategy.name accept: "
                                "built-in and installed plug-ins, and where each comes from")
    try:
        sweep_mod.add_parsers(sub, _add_common)
    except ImportError:  # pragma: no cover - sweeps not installed
        pass
    return parser


def cmd_list(args) -> int:
    for kind, key, builtins in (("datasets", "data.dataset", {n: n for n in DATASETS}),
                                ("models", "model.name", MODELS),
                                ("strategies", "strategy.name", STRATEGIES)):
        print(f"{kind} ({key}):")
        for name, where in available(kind, builtins):
            print(f"  {name:<22} {where}")
    print("\nEach key also takes an import path package.module:attribute (a module installed, or "
          "next to the config file); installed plug-ins register entry points in the groups "
          "fishermask.datasets, fishermask.models and fishermask.strategies.")
    return 0


def cmd_run(args) -> int:
    cfg = load_config(args.file, args.overrides)
    if args.tracking_uri:
        cfg.tracking.tracking_uri = args.tracking_uri
    # cheap checks first: an unreachable server or a read-only folder fails in seconds
    tracker = MlflowTracker(preflight.tracking_uri(cfg.tracking.tracking_uri))  # store made later
    # the run's lock first (a second launch of the same config refuses before touching anything),
    # then the data, the budget and the model are checked
    with ActiveLearningLoop.from_config(cfg, tracker=tracker,
                                        progress=not args.no_progress) as loop:
        if args.restart:
            loop.discard_checkpoint()
        try:
            records = loop.run()
        except (TrackingUnavailable, StoreFull) as exc:
            fix = "once it answers" if isinstance(exc, TrackingUnavailable) else "after freeing space"
            raise FishermaskError(
                f"{exc}. Every finished round is checkpointed in {loop.checkpoint_dir}; {fix}, "
                f"run the same command again: it resumes and logs the missing rounds") from None
    last = records[-1]
    print(f"\ndone: {cfg.strategy.name}, seed {cfg.seed}: {len(records) - 1} rounds, "
          f"{last.n_labels} labels, accuracy {last.accuracy:.4f}, "
          f"balanced accuracy {last.balanced_accuracy:.4f}")
    print(f"MLflow run {tracker.run_id} in experiment '{cfg.experiment}' at {tracker.tracking_uri}")

    serve = run_meta.ui_command(tracker.tracking_uri)
    if serve:
        print(f"open the UI with:  {serve}")
    print(f"runs view: {run_meta.runs_url(tracker.tracking_uri, tracker.experiment_id)}")
    return 0


def _on_sigterm(signum, frame):
    Terminated.received = True
    if Terminated.deferring():  # inside a tracking store's write: raised when it ends
        Terminated.pending = True
        return
    raise Terminated()


def _unraisable(hook):
    """``sys.unraisablehook`` that keeps quiet about our SIGTERM's exception when Python could
    not raise it (it came while the garbage collector ran a callback): ``Terminated.check``
    raises it at the next training batch or round instead; anything else goes to ``hook``."""
    def quiet(unraisable):
        if not isinstance(unraisable.exc_value, Terminated):
            hook(unraisable)
    return quiet


def main(argv: Optional[list[str]] = None) -> int:
    import signal
    import threading

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = build_parser().parse_args(argv)
    previous, hook = None, sys.unraisablehook
    Terminated.received = Terminated.pending = False  # an earlier command's are not this one's
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)  # like Ctrl-C: run KILLED, kept
        sys.unraisablehook = _unraisable(hook)
    try:
        return _dispatch(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            sys.unraisablehook = hook


def _terminated(exc: BaseException) -> bool:
    """Whether ``exc`` was caused (directly or further down its chain) by our SIGTERM."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Terminated):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _dispatch(args) -> int:
    handlers = {"run": cmd_run, "list": cmd_list, "select": select_cmd.cmd_select}
    try:
        handlers.update(sweep_mod.HANDLERS)
    except ImportError:  # pragma: no cover
        pass
    try:
        return handlers[args.command](args)
    except FishermaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a SIGTERM raised inside a library call that wrapped it
        if _terminated(exc):
            print("terminated (SIGTERM); the last finished round is checkpointed — run the same "
                  "command again to resume", file=sys.stderr)
            return 143
        if not type(exc).__module__.startswith("mlflow"):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
        hint = ("\nThe last finished round is checkpointed; run the same command again to "
                "resume" if args.command == "run" else "")
        print(f"error: MLflow: {first}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}; the last finished round is checkpointed — run the same command "
              "again to resume", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
