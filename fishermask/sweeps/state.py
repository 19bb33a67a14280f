"""What a sweep keeps between launches: its state file beside Tune's experiment folder (parent
run id, tracking URI), the parent run in MLflow and its children's final status."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from fishermask.errors import FishermaskError
from fishermask.tracking import run_meta
from fishermask.tracking.tracker import get_or_create_experiment, PARENT_TAG

STATE_FILE = "fishermask_sweep.json"
# bookkeeping tags of the parent run; "mlflow." keys are hidden in the UI
SWEEP_TAG = "mlflow.fishermask.sweep_path"
ROLE_TAG = "mlflow.fishermask.role"
DIGEST_TAG = "mlflow.fishermask.sweep_digest"


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path)


def read_state(exp_path: str) -> Optional[dict[str, Any]]:
    """The sweep's state file, None if there is none; one that cannot be read (a write cut
    short) raises :class:`UnreadableState`."""
    import pyarrow.fs

    fs, p = _fs(exp_path)
    info = fs.get_file_info(f"{p}/{STATE_FILE}")
    if info.type != pyarrow.fs.FileType.File:
        return None
    try:
        with fs.open_input_stream(f"{p}/{STATE_FILE}") as f:
            state = json.loads(f.read().decode())
        if not isinstance(state, dict) or "parent_run_id" not in state:
            raise ValueError("no parent_run_id")
        return state
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnreadableState(f"the sweep state {exp_path}/{STATE_FILE} cannot be read ({exc}); "
                              f"--restart starts the sweep afresh (its finished trials stay in "
                              f"MLflow)") from None


class UnreadableState(FishermaskError):
    pass


def _write(fs, path: str, data: bytes) -> None:
    """Write ``data`` whole or not at all: a temporary file renamed over the old one (on object
    stores, where a write is already all-or-nothing, directly)."""
    import pyarrow.fs

    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def write_state(exp_path: str, state: dict[str, Any]) -> None:
    fs, p = _fs(exp_path)
    fs.create_dir(p, recursive=True)
    _write(fs, f"{p}/{STATE_FILE}", json.dumps(state, indent=2).encode())


def remove_experiment(exp_path: str) -> None:
    import pyarrow.fs

    fs, p = _fs(exp_path)
    if fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(p)


def order_saved_trials(exp_path: str) -> bool:
    """Put the trials of Tune's newest experiment state back in grid order; True if rewritten.

    Tune saves its trial list from a set, so a restored sweep would start its pending trials in
    an arbitrary order and an interrupted sweep would leave scattered trials rather than whole
    seeds.  Trial ids end in the grid index (``<run>_00017``); Tune requeues restored trials by
    their last result time with a stable sort, so after this the unfinished ones resume first and
    the rest follow the grid.  A state file of another layout is left as it is."""
    import fnmatch

    import pyarrow.fs

    fs, p = _fs(exp_path)
    names = [i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(p))
             if fnmatch.fnmatch(i.base_name, "experiment_state-*.json")]
    if not names:
        return False
    path = f"{p}/{max(names)}"
    try:
        with fs.open_input_stream(path) as f:
            state = json.loads(f.read().decode())
        index = [int(json.loads(entry[0])["trial_id"].rsplit("_", 1)[1])
                 for entry in state["trial_data"]]
    except (KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError):
        return False  # Tune reads (or refuses) its own file; the order is a nicety
    if index == sorted(index):
        return False
    state["trial_data"] = [e for _, e in sorted(zip(index, state["trial_data"]),
                                                key=lambda pair: pair[0])]
    _write(fs, path, json.dumps(state).encode())
    return True


# ----------------------------------------------------------------------------- MLflow parent

def create_parent(client, sweep, exp_path: str, context: Optional[dict[str, str]] = None) -> str:
    """The sweep's parent run: the base config and the axes as params (readable, once), its
    description, provenance, and the sweep file and trial list as artifacts."""
    exp_id = get_or_create_experiment(client, sweep.experiment)
    run_meta.describe_experiment(client, exp_id)
    tags = {SWEEP_TAG: exp_path, ROLE_TAG: "sweep", DIGEST_TAG: sweep.digest, "sweep": sweep.name,
            run_meta.NOTE_TAG: run_meta.sweep_description(sweep),
            **(context if context is not None else run_meta.context_tags()),
            **run_meta.versions()}
    run = client.create_run(exp_id, run_name=f"sweep {sweep.name}", tags=tags)
    run_id = run.info.run_id
    run_meta.log_params(client, run_id, run_meta.sweep_params(sweep))
    client.log_text(run_id, sweep.raw_text, f"sweep/{sweep.path.name}")
    client.log_dict(run_id, [t.to_dict() for t in sweep.trials], "sweep/trials.json")
    return run_id


def _finish_children(client, experiment: str, parent_id: str,
                     leftover: str = "FAILED") -> dict[str, int]:
    """Statuses of the child runs; a child still RUNNING is marked ``leftover`` (FAILED: its
    worker died; KILLED: the sweep was stopped, and a resume continues it)."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'",
                              max_results=10000)
    counts: dict[str, int] = {}
    for r in runs:
        status = r.info.status
        if status in ("RUNNING", "SCHEDULED"):
            client.set_terminated(r.info.run_id, status=leftover)
            status = leftover
        counts[status] = counts.get(status, 0) + 1
    return counts


# ----------------------------------------------------------------------------- Tune
