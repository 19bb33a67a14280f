"""How a sweep ends: the summary of one that Tune finished, the parent run's final status, and the
one message of a sweep stopped by a fault around it (tracking server, Ray head), each with the
``--resume`` command.  The MLflow calls made after a failure are bounded by the client's patience
(``tracking.client``) and never replace the error that stopped the sweep."""

from __future__ import annotations

import os
import sys
from typing import Any

from fishermask.sweeps.hints import resume_command
from fishermask.sweeps.state import _finish_children
from fishermask.sweeps.summary import summarize
from fishermask.tracking import run_meta
from fishermask.tracking.client import TrackingUnavailable


def finish(args, session, results, wall: float) -> tuple[str, int]:
    """The summary of a sweep that Tune ended: printed and logged; (status, exit code)."""
    import ray

    sweep, client, parent_id = session.sweep, session.client, session.parent_id
    children = _finish_children(client, sweep.experiment, parent_id)
    text, ok = summarize(results, wall, children, ray.cluster_resources(),
                         {t.key: t.label for t in sweep.trials}, resumed=bool(args.resume),
                         max_concurrent=None if args.resume else args.max_concurrent)
    print("\n" + text)
    client.log_text(parent_id, text, "sweep/trials.md")
    client.log_metric(parent_id, "time/sweep_wall_seconds", wall)
    if not ok:
        print(f"some trials did not finish; continue with: {resume_command(args)}",
              file=sys.stderr)
    print(f"report: fishermask report --run {parent_id} --out report/"
          + (f" --tracking-uri {session.tracking_uri}"
             if not os.environ.get("MLFLOW_TRACKING_URI") else ""))
    _print_where_to_look(client, session.experiment_id, session.tracking_uri)
    return ("FINISHED", 0) if ok else ("FAILED", 1)


def _print_where_to_look(client, experiment_id: str, tracking_uri: str) -> None:
    serve = run_meta.ui_command(tracking_uri)
    if serve:
        print(f"MLflow UI: {serve}")
    print(f"runs view: {run_meta.runs_url(tracking_uri, experiment_id)}")
    print("  compare strategies: Chart view, Group by -> tag 'variant' (mean ± band over seeds); "
          "sort the table by aubc/accuracy")


def close_parent(session, status: str) -> None:
    """The parent run ends ``status`` (KILLED: its unfinished children too, a resume continues
    them).  Skipped while the tracking server is known to be away (``--resume`` sets them);
    an error here is one note, never a replacement of the error that stopped the sweep."""
    client = session.client
    if client is None or client.given_up:
        return
    try:
        if status == "KILLED":
            _finish_children(client, session.sweep.experiment, session.parent_id,
                             leftover="KILLED")
        client.set_terminated(session.parent_id, status=status)
    except Exception as exc:  # e.g. the server went away just now: --resume sets them
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        print(f"note: the parent run {session.parent_id} could not be marked {status} ({first}); "
              f"--resume sets it", file=sys.stderr)


def end_message(session, exc: TrackingUnavailable, again: str) -> str:
    """The one message of a sweep stopped because its tracking server went away."""
    return (f"error: {exc}, so the sweep stopped. Finished trials and every round the others "
            f"reported are kept in {session.exp_path}; their MLflow runs are marked when the "
            f"server answers again. Start the server (or fix its address), then continue with: "
            f"{again}")


def head_lost(session, seconds: float, again: str) -> Any:
    """The Ray head stopped answering: mark the parent and the running children KILLED, say so
    once, and end the driver (Ray's client aborts it soon anyway; it cannot shut down without the
    head).  Runs in the watch's thread."""
    sweep, client = session.sweep, session.client
    try:
        _finish_children(client, sweep.experiment, session.parent_id, leftover="KILLED")
        client.set_terminated(session.parent_id, status="KILLED")
        marked = "the parent run and the unfinished trials' runs are marked KILLED"
    except Exception as exc:  # the tracking server is away too
        marked = f"the MLflow runs could not be marked KILLED ({type(exc).__name__}; --resume does)"
    print(f"error: lost the Ray cluster: its head node at {session.head} has not answered for "
          f"{seconds:.0f} s, so the sweep stopped; {marked}. Finished trials and every round the "
          f"others reported are kept in {session.exp_path}. Once the cluster is up again (on a "
          f"new head: with its --address), continue with: {again}",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)
