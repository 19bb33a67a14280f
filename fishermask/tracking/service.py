"""One process logs for many runs: a sweep's trials hand their tracking calls to a
:class:`TrackerHost` beside the driver instead of each opening MLflow itself.

A trial process then never imports MLflow or opens its store (about 1.6 s of imports and a
SQLAlchemy engine per trial process on a 2-core machine, as much as the logging itself), a local
sqlite store is written by one process only, and it is reachable from trials on other nodes.
:class:`ForwardingTracker` is the trial's side: the loop's :class:`~fishermask.tracking.tracker.
Tracker`, with every call passed on by a ``call(method, *args)`` function (in a sweep, a Ray
actor call; the tracking layer knows nothing of Ray).  The data never travels: the trial
describes it (:func:`~fishermask.tracking.run_meta.dataset_descriptions`) and sends that.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from fishermask.tracking import run_meta
from fishermask.tracking.tracker import MlflowTracker, Tracker, import_client


class TrackerHost:
    """The runs' :class:`~fishermask.tracking.tracker.MlflowTracker` s, by key, in this process;
    one client per (tracking URI, patience), shared by the runs."""

    def __init__(self):
        self._trackers: dict[str, MlflowTracker] = {}
        self._clients: dict[tuple[str, float], Any] = {}

    def warm(self, tracking_uri: str) -> None:
        """Load MLflow's client for ``tracking_uri`` ahead of the first run."""
        import_client(tracking_uri)

    def start(self, key: str, kwargs: dict[str, Any], cfg, inputs: list,
              run_id: Optional[str] = None) -> str:
        """A new tracker for the run ``key`` (a retried trial replaces its old one); opens or
        finds its run (:meth:`MlflowTracker.open`) and returns its id."""
        tracker = MlflowTracker(**kwargs)
        tracker.share_client(self._clients, cfg)
        self._trackers[key] = tracker
        return tracker.open(cfg, inputs, run_id)

    def log_round(self, key: str, rec, records: list, picks: dict, replay: bool = False) -> None:
        self._tracker(key).log_round(rec, records, picks, replay)

    def finish(self, key: str, records: list, status: str) -> None:
        self._tracker(key).finish(records, status)
        self._trackers.pop(key, None)

    def _tracker(self, key: str) -> MlflowTracker:
        try:
            return self._trackers[key]
        except KeyError:
            raise RuntimeError(f"no run '{key}' was started in this tracking process "
                               f"(it was restarted): the trial starts again") from None


class ForwardingTracker(Tracker):
    """The loop's tracker in a process that does not log itself: ``call(method, *args)`` runs
    :class:`TrackerHost`'s ``method`` for the run ``key`` (and returns its result)."""

    def __init__(self, call: Callable[..., Any], key: str, kwargs: dict[str, Any]):
        self.call, self.key, self.kwargs = call, key, kwargs
        self.run_id: Optional[str] = None

    def start(self, cfg, data, run_id: Optional[str] = None) -> str:
        inputs = run_meta.dataset_descriptions(cfg, data)
        self.run_id = self.call("start", self.key, self.kwargs, cfg, inputs, run_id)
        return self.run_id

    def log_round(self, rec, records: list, picks: dict, replay: bool = False) -> None:
        self.call("log_round", self.key, rec, records, picks, replay)

    def finish(self, records: list, status: str) -> None:
        if self.run_id is not None:
            self.call("finish", self.key, records, status)


__all__ = ["ForwardingTracker", "TrackerHost"]
