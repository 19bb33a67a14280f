"""The Ray side of ``fishermask sweep`` before any trial runs: joining the cluster (or starting a
local Ray), checking every trial's placement group against it, and forgetting a sweep start that
ran no trial (so that the next try needs no ``--resume``)."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from fishermask.config import from_dict
from fishermask.execution.ray.cluster import check_bundles, connect, ray_init
from fishermask.sweeps.state import remove_experiment
from fishermask.sweeps.trial import trial_resources
from fishermask.tracking.tracker import PARENT_TAG


def init_ray(address: Optional[str], log_to_driver: bool = True) -> bool:
    """Join ``address`` (or ``RAY_ADDRESS``, as under ``ray job submit``), else start a local Ray
    of our own (never silently join some other local cluster).  True when we started it.  An
    unreachable cluster, or one whose token authentication this process does not meet, ends in a
    message saying what to do.  ``log_to_driver``: print what the workers and raylets print."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        ray_init(address="local", log_to_driver=log_to_driver)
    else:
        connect(address, log_to_driver=log_to_driver)
    return True


def head_address() -> Optional[str]:
    """host:port of the Ray head (its GCS) this process is connected to."""
    import ray

    ctx = ray.get_runtime_context()
    return getattr(ctx, "gcs_address", None)


def check_trials_fit(sweep) -> None:
    """Every trial's placement group (``trial_resources``) against the Ray cluster joined: a
    trial the cluster can never place would stay PENDING in silence."""
    groups: dict[str, tuple[list, list[str], Any]] = {}
    for t in sweep.trials:
        spec = t.to_dict()
        bundles = trial_resources({"trial": spec}).bundles
        entry = groups.setdefault(json.dumps(bundles, sort_keys=True),
                                  (bundles, [], from_dict(spec["config"]).execution))
        entry[1].append(t.label)
    requests = {}
    for bundles, labels, ex in groups.values():
        shard = f"{ex.cpus_per_shard:g} CPU" + (f", {ex.gpus_per_shard:g} GPU"
                                                if ex.gpus_per_shard else "")
        parts = (f"1 CPU for the trial + execution.shards={ex.shards} x ({shard})"
                 if ex.use_ray else f"{shard} for the trial")
        who = (f"trial '{labels[0]}'" if len(labels) == 1
               else f"each of {len(labels)} trials (e.g. '{labels[0]}')")
        requests[f"{who}, asking for {parts},"] = bundles
    check_bundles(requests, fix="Lower execution.shards, execution.cpus_per_shard or "
                                "execution.gpus_per_shard (e.g. --set execution.shards=1), or "
                                "add nodes to the cluster")


def forget_start(client, exp_path: str, parent_id: str, experiment: str) -> bool:
    """After a fresh sweep failed: if no trial ever started (no child run), remove its state and
    the empty parent run, so that the next try starts afresh rather than asking for --resume."""
    try:
        exp = client.get_experiment_by_name(experiment)
        if client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'",
                              max_results=1):
            return False
        remove_experiment(exp_path)
        client.delete_run(parent_id)
    except Exception:  # the store is unreachable too: keep what is there
        return False
    return True
