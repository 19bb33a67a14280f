"""The sweep driver's watch over what Tune does not watch: the tracking server, the Ray head node,
and its trials' failures (``docs/design.md`` §4).

* **Tracking server** (http/https): probed every few seconds; when it has not answered for
  ``tracking.patience_s`` (60 s), or a trial gave up on it, the sweep is stopped the way Ctrl-C
  stops it (Tune's SIGUSR1 handler: experiment state saved, trials stopped with their reported
  rounds, unfinished in Tune's state), the driver's MLflow client stops waiting, and the sweep
  ends with one message naming the server and the ``--resume`` command.
* **Ray head** (a cluster joined by address): its GCS port is probed every 2 s; when it has
  refused or ignored connections for ``HEAD_PATIENCE_S``, well before Ray's own client aborts
  the driver (60 s, with a C++ log line and no hint), the watch marks the parent and the running
  child runs KILLED, prints one message with the ``--resume`` command and ends the driver (its
  Ray client cannot be shut down without the head).
* **Trial failures**: one line per failed attempt (Tune's own traceback is kept for
  ``--verbose``), naming the trial, the first line of its error and Tune's error file.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Optional

from fishermask.tracking.client import TrackingUnavailable, answers

PROBE_EVERY_S = 2.0
HEAD_PATIENCE_S = 12.0
"""How long the Ray head may refuse connections before the sweep gives it up (Ray's driver
client aborts the process after 60 s without it)."""
STOP_GRACE_S = 45.0
"""How long Tune may take to stop the trials after the watch asked it to, before the driver
ends anyway (the trials, owned by the driver, end with it)."""


def _port_open(address: str, timeout: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class Watch:
    """A daemon thread probing the tracking server (``uri``, when http) and the Ray head (``gcs``,
    host:port, when the sweep joined a cluster).  ``on_head_lost(seconds)`` must end the process;
    ``on_stuck(exc)`` ends it when Tune did not stop within ``STOP_GRACE_S`` of a request."""

    def __init__(self, uri: str, patience: float, client, gcs: Optional[str],
                 on_head_lost: Callable[[float], None],
                 on_stuck: Callable[[TrackingUnavailable], None]):
        self.uri, self.patience, self.client, self.gcs = uri, patience, client, gcs
        self.on_head_lost, self.on_stuck = on_head_lost, on_stuck
        self.tracking_lost: Optional[TrackingUnavailable] = None
        self._stop = threading.Event()
        self._asked_at: Optional[float] = None
        self._thread = threading.Thread(target=self._loop, name="fishermask-watch", daemon=True)

    def __enter__(self) -> "Watch":
        LIVE["watch"] = self
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        LIVE["watch"] = None

    def give_up_tracking(self, exc: TrackingUnavailable) -> None:
        """Stop the sweep because the tracking server does not answer (also called when a trial
        gave up on it)."""
        if self.tracking_lost is None:
            self.tracking_lost = exc
            self.client.mark_down()
        self._ask_tune_to_stop()

    def _ask_tune_to_stop(self) -> None:
        # Tune's handler is installed while it runs; before that, SIGUSR1 would end the process
        if self._asked_at is None and callable(signal.getsignal(signal.SIGUSR1)):
            self._asked_at = time.monotonic()
            os.kill(os.getpid(), signal.SIGUSR1)

    def _loop(self) -> None:
        web = self.uri.startswith(("http://", "https://"))
        silent_since = head_gone_since = None
        while not self._stop.wait(PROBE_EVERY_S):
            now = time.monotonic()
            if self.gcs is not None:
                if _port_open(self.gcs):
                    head_gone_since = None
                else:
                    head_gone_since = head_gone_since or now
                    if now - head_gone_since >= HEAD_PATIENCE_S:
                        self.on_head_lost(now - head_gone_since + PROBE_EVERY_S)
                        return
            if web and self.tracking_lost is None:
                if answers(self.uri, timeout=min(5.0, self.patience / 4)):
                    silent_since = None
                else:
                    silent_since = silent_since or now
                    if now - silent_since + PROBE_EVERY_S >= self.patience:
                        self.give_up_tracking(TrackingUnavailable(
                            self.uri, now - silent_since + PROBE_EVERY_S, "no answer"))
            if self.tracking_lost is not None:
                self._ask_tune_to_stop()
                if self._asked_at is not None and now - self._asked_at > STOP_GRACE_S:
                    self.on_stuck(self.tracking_lost)
                    return


def _trial_error(trial):
    """The error of the trial's last failure (Tune's pickled copy in the driver's staging
    folder, written before the callbacks run), unwrapped from Ray's task error; None if none."""
    from ray import cloudpickle

    path = trial.pickled_error_file
    try:
        with open(path, "rb") as f:
            err = cloudpickle.load(f)
    except Exception:  # no file, or an error that does not unpickle here
        return None
    return getattr(err, "cause", None) or err


def _error_line(trial, cause) -> str:
    """The first line of the trial's error that says what went wrong (not Ray's wrapper)."""
    if cause is not None:
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[0][:300]}" if text else type(cause).__name__
    try:
        with open(trial.error_file) as f:
            text = f.read().strip().splitlines()
    except (OSError, TypeError):
        text = []
    return text[-1][:300] if text else "see its error file"


LIVE: dict = {"watch": None, "verbose": False}
"""The watch of the sweep this process runs, and whether it is --verbose (read by the callback,
which Tune pickles with the sweep's state as a reference to :func:`trial_events`)."""


def trial_events():
    """The Tune callback of the live watch: one line per failed trial attempt; a trial that gave
    up on the tracking server stops the sweep (``Watch.give_up_tracking``)."""
    return _events_class()()


@functools.lru_cache(maxsize=None)
def _events_class():
    from ray import tune

    class TrialEvents(tune.Callback):
        def __reduce__(self):  # a resumed sweep gets the live watch, not a pickled one
            return trial_events, ()

        def on_trial_recover(self, iteration, trials, trial, **info):
            self._failed(trial, retried=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._failed(trial, retried=False)

        def _failed(self, trial, retried: bool) -> None:
            watch = LIVE["watch"]
            cause = _trial_error(trial)
            if watch is not None and isinstance(cause, TrackingUnavailable):
                watch.give_up_tracking(cause)
                return
            if LIVE["verbose"] or (watch is not None and watch.tracking_lost is not None):
                return  # Tune printed the traceback / the sweep is stopping and says why
            label = trial.config.get("trial", {}).get("label", str(trial))
            then = ("Tune retries it from its last reported round" if retried
                    else "no retries left; --resume runs it again")
            print(f"note: trial '{label}' failed ({_error_line(trial, cause)}); {then}. Its "
                  f"error: {trial.path}/error.txt", file=sys.stderr, flush=True)

    return TrialEvents
