"""The MLflow client of runs and sweeps, with bounded waits when the tracking store fails.

MLflow's own HTTP client retries a failed request 7 times with exponential backoff and waits up
to 120 s for each answer: a tracking server that went away turned every call into ~4 minutes.
Here, unless the user set them, one request is one try (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``)
waiting at most ``MLFLOW_HTTP_REQUEST_TIMEOUT=30`` s, and :class:`GuardedClient` retries calls
that failed because the server did not answer, every few seconds, until it has not answered for
``patience`` seconds in all; then it raises :class:`TrackingUnavailable`, and later calls try
once (they fail fast while the server stays away).  A store whose disk is full raises
:class:`StoreFull`.  ``docs/design.md`` §4 says why a sweep stops rather than queue its logging.
"""

from __future__ import annotations

import errno
import functools
import os
import time
import urllib.error
import urllib.request
from typing import Any, Optional

from fishermask.errors import DiskFull, FishermaskError, Terminated

DEFAULT_PATIENCE_S = 60.0
"""How long a tracking server may not answer before a run or sweep stops (``tracking.patience_s``)."""
RETRY_EVERY_S = 2.0
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                 # MLflow prints "View run … at: <url>" at each end of a run on a server
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


class TrackingUnavailable(FishermaskError):
    """The tracking server has not answered for the patience allowed."""

    def __init__(self, uri: str, seconds: float, reason: str):
        self.uri, self.seconds, self.reason = uri, seconds, reason
        super().__init__(f"the MLflow tracking server at {uri} has not answered for "
                         f"{seconds:.0f} s ({reason})")

    def __reduce__(self):  # rebuilt from its parts (a trial's error travels pickled to Tune)
        return type(self), (self.uri, self.seconds, self.reason)


class StoreFull(DiskFull):
    """The tracking store (or the artifact folder) is on a full disk."""


def bounded_http() -> None:
    """MLflow's HTTP client: one try per request, 30 s at most, no URL printed at the end of a
    run (the user's settings win)."""
    for key, value in HTTP_SETTINGS.items():
        os.environ.setdefault(key, value)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def classify(exc: BaseException) -> Optional[str]:
    """``"unreachable"`` (no answer, a refused connection, a 5xx after retries, a locked sqlite
    file), ``"full"`` (no space left) or None (an error of MLflow's own: not retried)."""
    try:
        import requests
        transport: tuple = (requests.exceptions.RequestException,)
    except ImportError:  # pragma: no cover - MLflow depends on requests
        transport = ()
    for e in _chain(exc):
        text = str(e)
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "disk is full" in text \
                or "No space left" in text:
            return "full"
        if isinstance(e, transport + (ConnectionError, TimeoutError)) \
                or "database is locked" in text:
            return "unreachable"
    return None


def _reason(exc: BaseException) -> str:
    for e in _chain(exc):
        text = str(e)
        for marker in ("Connection refused", "timed out", "Name or service not known",
                       "Max retries exceeded", "database is locked"):
            if marker in text:
                return marker.lower()
    return type(exc).__name__


class GuardedClient:
    """An ``MlflowClient`` whose calls wait for a tracking server that does not answer, at most
    ``patience`` seconds counted from the first failure (not per call)."""

    def __init__(self, client, uri: str, patience: float = DEFAULT_PATIENCE_S):
        self._client, self.uri, self.patience = client, uri, patience
        self.down_since: Optional[float] = None
        self.given_up = False

    def mark_down(self) -> None:
        """The server is known to be away (the sweep's watch said so): calls try once."""
        self.given_up = True
        if self.down_since is None:
            self.down_since = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            return self._call(attr, args, kwargs)
        return call

    def _call(self, fn, args, kwargs):
        while True:
            try:
                with Terminated.deferred():  # never half a transaction (docs/design.md §4)
                    out = fn(*args, **kwargs)
            except Exception as exc:
                kind = classify(exc)
                if kind == "full":
                    raise StoreFull(f"the MLflow store {self.uri} is on a full disk "
                                    f"({str(exc).splitlines()[0][:200]})") from None
                if kind is None:
                    raise
                now = time.monotonic()
                self.down_since = self.down_since if self.down_since is not None else now
                waited = now - self.down_since
                if self.given_up or waited + RETRY_EVERY_S > self.patience:
                    self.given_up = True
                    raise TrackingUnavailable(self.uri, max(waited, self.patience),
                                              _reason(exc)) from None
                time.sleep(RETRY_EVERY_S)
                continue
            self.down_since, self.given_up = None, False
            return out


def answers(uri: str, timeout: float = 5.0) -> bool:
    """Whether the tracking server at ``uri`` (http/https) answers one REST call in time."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + PROBE, timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500  # 401/403: it answers (credentials are MLflow's business)
    except (OSError, ValueError):
        return False
