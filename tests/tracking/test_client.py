"""The MLflow client's bounded waits, against real sockets: a server that refuses connections
and one that accepts them but never answers."""

from __future__ import annotations

import errno
import os
import pickle
import socket
import time

import pytest
from mlflow.tracking import MlflowClient

from fishermask.tracking.client import (GuardedClient, TrackingUnavailable, bounded_http,
                                        classify)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refusing_server_is_given_up_after_the_patience_then_calls_fail_fast(monkeypatch):
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    bounded_http()
    uri = f"http://127.0.0.1:{_closed_port()}"
    client = GuardedClient(MlflowClient(uri), uri, patience=4)
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailable) as err:
        client.get_experiment_by_name("x")
    assert 2 <= time.monotonic() - t0 < 30  # retried, then gave up (not MLflow's 4 minutes)
    assert f"the MLflow tracking server at {uri} has not answered for 4 s" in str(err.value)
    assert "connection refused" in str(err.value)
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailable):
        client.search_runs(["0"])
    assert time.monotonic() - t0 < 10  # once given up, one try
    again = pickle.loads(pickle.dumps(err.value))  # a trial's error travels pickled
    assert isinstance(again, TrackingUnavailable) and str(again) == str(err.value)


def test_a_silent_server_times_out_within_the_bound(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        client = GuardedClient(MlflowClient(uri), uri, patience=3)
        t0 = time.monotonic()
        with pytest.raises(TrackingUnavailable):
            client.get_experiment_by_name("x")
        assert time.monotonic() - t0 < 30


def test_the_users_http_settings_win(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    bounded_http()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"


def test_what_is_retried_and_what_is_a_full_disk(tmp_path):
    from mlflow.exceptions import MlflowException

    assert classify(OSError(errno.ENOSPC, "No space left on device")) == "full"
    assert classify(MlflowException("(sqlite3.OperationalError) database or disk is full")) == \
        "full"
    assert classify(MlflowException("(sqlite3.OperationalError) database is locked")) == \
        "unreachable"
    assert classify(MlflowException("RESOURCE_DOES_NOT_EXIST: run 'x' not found")) is None
    # a real store's own error is not retried: it comes back at once
    client = GuardedClient(MlflowClient(f"sqlite:///{tmp_path / 'm.db'}"), "sqlite", patience=60)
    t0 = time.monotonic()
    with pytest.raises(MlflowException):
        client.get_run("0" * 32)
    assert time.monotonic() - t0 < 30
