"""The sweep's tracking process: a Ray actor holding a
:class:`~fishermask.tracking.service.TrackerHost`, on the driver's node, that logs every trial's
run (trials reach it by name; a trial of a sweep without one logs itself)."""

from __future__ import annotations

from typing import Any, Callable, Optional


def host_name(parent_run_id: str) -> str:
    """The actor's name: one per sweep (its parent run), the same after ``--resume``."""
    return f"fishermask-tracking-{parent_run_id}"


def start_host(parent_run_id: str, tracking_uri: str):
    """Start the sweep's tracking actor on this node (no CPU reserved: it waits on MLflow most of
    the time) and let it load MLflow's client while the first trials set up.  Keep the handle:
    the actor lives as long as the driver holds it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from fishermask.tracking.service import TrackerHost

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(TrackerHost).options(
        name=host_name(parent_run_id), num_cpus=0, max_restarts=0,
        scheduling_strategy=here).remote()
    actor.warm.remote(tracking_uri)
    return actor


def find_host(parent_run_id: str) -> Optional[Callable[..., Any]]:
    """``call(method, *args)`` on the sweep's tracking actor, or None when it has none (a sweep
    state saved by an older version, or a trial run outside a sweep's driver)."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        actor = ray.get_actor(host_name(parent_run_id))
    except ValueError:
        return None

    def call(method: str, *args):
        try:
            return ray.get(getattr(actor, method).remote(*args))
        except RayTaskError as exc:  # the tracker's own error (TrackingUnavailable, ...)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    return call


__all__ = ["find_host", "host_name", "start_host"]
