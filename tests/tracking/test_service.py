"""A run logged through a TrackerHost (as a sweep's trials log through its tracking actor) is the
run the in-process MlflowTracker logs: same metrics, params, tags, inputs and files; the calls
carry plain values (pickled here as Ray pickles them), never the data."""

from __future__ import annotations

import pickle

import pytest

from fishermask.loop import ActiveLearningLoop
from fishermask.tracking.service import ForwardingTracker, TrackerHost
from fishermask.tracking.tracker import MlflowTracker
from tests.helpers import tiny_config


def _run(cfg, tracker):
    loop = ActiveLearningLoop.from_config(cfg, tracker=tracker, progress=False)
    loop.run()
    return loop


def _logged(client, run_id):
    run = client.get_run(run_id)
    curves = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)]
              for k in run.data.metrics if not k.startswith("time/")}
    tags = {k: v for k, v in run.data.tags.items() if k not in ("fishermask.run_key",)}
    files = sorted(a.path for a in client.list_artifacts(run_id)) + \
        sorted(a.path for a in client.list_artifacts(run_id, "rounds"))
    inputs = sorted((d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs)
    params = {k: v for k, v in run.data.params.items() if k != "tracking.checkpoint_dir"}
    return run.info.status, curves, params, tags, files, inputs


def test_a_run_through_a_host_is_the_run_logged_in_process(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(tmp_path, strategy={"name": "margin"}, experiment="host-test")
    direct = _run(cfg, MlflowTracker(uri, run_name="same", figures=False))

    host, sent = TrackerHost(), []

    def call(method, *args):  # what a Ray actor call does to the arguments
        blob = pickle.dumps(args)
        sent.append(len(blob))
        return getattr(host, method)(*pickle.loads(blob))

    cfg2 = tiny_config(tmp_path, strategy={"name": "margin"}, experiment="host-test",
                       tracking={"checkpoint_dir": str(tmp_path / "ckpt2")})
    tracker = ForwardingTracker(call, "key-1", dict(tracking_uri=uri, run_name="same",
                                                    figures=False))
    forwarded = _run(cfg2, tracker)
    assert tracker.run_id and host._trackers == {}  # finished: the host forgot the run
    assert forwarded.selected_indices() == direct.selected_indices()
    client = MlflowClient(uri)
    a, b = _logged(client, direct.run_id), _logged(client, tracker.run_id)
    assert a[0] == b[0] == "FINISHED"
    assert a[1] == b[1] and len(a[1]["accuracy"]) == 3   # curves
    assert a[2] == b[2] and a[3] == b[3]                  # params, tags
    assert a[4] == b[4] and "selected_indices.json" in a[4] and a[5] == b[5]  # files, inputs
    assert max(sent) < 200_000  # descriptions and records, not the pool's images


def test_a_host_that_lost_a_run_says_so():
    host = TrackerHost()
    with pytest.raises(RuntimeError, match="no run 'k' was started"):
        host.log_round("k", None, [], {})


def test_runs_of_one_process_share_a_client_per_uri_and_patience(tmp_path):
    cfg = tiny_config(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    clients: dict = {}
    a, b = MlflowTracker(uri, patience=30.0), MlflowTracker(uri, patience=30.0)
    c = MlflowTracker(uri)  # the config's patience
    for t in (a, b, c):
        t.share_client(clients, cfg)
    assert a.client is b.client and c.client is not a.client
    assert set(clients) == {(uri, 30.0), (uri, float(cfg.tracking.patience_s))}
