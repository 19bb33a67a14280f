"""preflight: the checks that run before any work, each on its own (no Ray, no MLflow server)."""

from __future__ import annotations

import math
import os
import socket

import pytest

from fishermask import preflight
from fishermask.errors import ConfigError, FishermaskError, MemoryLimitError
from fishermask.execution.ray.cluster import local_cpus
from fishermask.models import build_model
from tests.helpers import tiny_config


# ----------------------------------------------------------------------------- folders

def test_writable_folder_is_made_absolute_and_may_not_exist_yet(tmp_path):
    got = preflight.writable_folder(tmp_path / "a" / "b", "checkpoints")
    assert got == (tmp_path / "a" / "b") and got.is_absolute() and not got.exists()
    home = preflight.writable_folder("~/never-made-by-this-test", "x")
    assert str(home).startswith(os.path.expanduser("~"))


def test_writable_folder_names_a_file_in_the_way(tmp_path):
    (tmp_path / "blocker").write_text("")
    with pytest.raises(FishermaskError, match="blocker exists but is a file, not a folder") as err:
        preflight.writable_folder(tmp_path / "blocker" / "ckpt", "checkpoints", "or set X")
    assert str(err.value).endswith("or set X")


# ----------------------------------------------------------------------------- tracking URI

def test_sqlite_uris(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    assert preflight.tracking_uri(uri) == uri
    assert preflight.tracking_uri("sqlite:///:memory:") == "sqlite:///:memory:"
    expanded = preflight.tracking_uri("sqlite:///~/m.db")
    assert expanded == "sqlite:///" + os.path.expanduser("~/m.db")
    with pytest.raises(ConfigError, match="is not a valid sqlite URI"):
        preflight.tracking_uri("sqlite://")
    (tmp_path / "f").write_text("")
    with pytest.raises(FishermaskError, match="exists but is a file"):
        preflight.tracking_uri(f"sqlite:///{tmp_path}/f/m.db")


@pytest.mark.parametrize("uri,text", [
    ("http://", "has no host"),
    ("http://127.0.0.1:port", "malformed port"),
    ("gopher://x", "unknown scheme 'gopher'"),
])
def test_malformed_uris_are_named(uri, text):
    with pytest.raises(ConfigError, match=text):
        preflight.tracking_uri(uri)


def test_database_and_folder_stores(tmp_path):
    assert preflight.tracking_uri("postgresql://u@h/db") == "postgresql://u@h/db"
    assert preflight.tracking_uri("mysql+pymysql://u@h/db") == "mysql+pymysql://u@h/db"
    assert preflight.tracking_uri(str(tmp_path / "mlruns")) == str(tmp_path / "mlruns")
    assert preflight.tracking_uri(f"file://{tmp_path}/mlruns") == (tmp_path / "mlruns").as_uri()


def test_a_server_that_does_not_answer_is_named_with_what_to_do():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FishermaskError) as err:
        preflight.tracking_uri(f"http://127.0.0.1:{port}")
    text = str(err.value)
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in text
    assert f"mlflow server --host 127.0.0.1 --port {port}" in text


# ----------------------------------------------------------------------------- resources

def test_budget_must_fit_the_pool(tmp_path):
    cfg = tiny_config(tmp_path)  # 8 + 2 × 6 = 20 labels
    preflight.budget(cfg, 20)
    with pytest.raises(ConfigError, match=r"8 initial \+ 2 rounds × 6 = 20 labels, but the pool "
                                          r"has only 19 images"):
        preflight.budget(cfg, 19)


def test_device(tmp_path):
    assert preflight.device(tiny_config(tmp_path, execution={"device": "cpu"}).execution).type == "cpu"
    cuda = tiny_config(tmp_path, execution={"device": "cuda"}).execution
    if preflight.device(tiny_config(tmp_path).execution).type == "cuda":
        assert preflight.device(cuda).type == "cuda"
    else:
        with pytest.raises(ConfigError, match="execution.device is 'cuda' but no GPU is visible"):
            preflight.device(cuda)


def test_local_trial_larger_than_this_machine(tmp_path):
    cpus = local_cpus()
    fits = tiny_config(tmp_path, execution={"shards": 1}).execution
    preflight.local_trial(fits, "ok")
    big = tiny_config(tmp_path, execution={"shards": cpus + 1, "cpus_per_shard": 1}).execution
    with pytest.raises(ConfigError) as err:
        preflight.local_trial(big, "too big")
    assert f"trial 'too big' needs {cpus + 2} CPUs" in str(err.value)
    assert f"this machine has {cpus}" in str(err.value)


# ----------------------------------------------------------------------------- FisherMask

def _fm(tmp_path, **strategy):
    return tiny_config(tmp_path, strategy={"name": "fishermask", **strategy})


def test_mask_too_small_for_the_classifier_names_the_smallest_sparsity(tmp_path):
    model = build_model("cnn_small", 4, 1)
    n = sum(p.numel() for p in model.parameters())
    need = model.classifier.weight.numel()
    with pytest.raises(ConfigError) as err:
        preflight.mask_capacity(_fm(tmp_path, sparsity=0.002), model, 76, 4)
    text = str(err.value)
    smallest = float(text.split("The smallest valid sparsity is ")[1].split(":")[0])
    assert math.floor(smallest * n) >= need  # it fits ...
    assert math.floor(round(smallest - 10 ** (math.floor(math.log10(smallest)) - 2), 12) * n) \
        < need  # ... and one step of its last digit less does not
    assert f"--set strategy.sparsity={smallest:g}" in text
    preflight.mask_capacity(_fm(tmp_path, sparsity=smallest), model, 76, 4)


def test_without_the_last_layer_a_mask_needs_one_weight(tmp_path):
    model = build_model("cnn_small", 4, 1)
    with pytest.raises(ConfigError, match="fewer than one weight"):
        preflight.mask_capacity(_fm(tmp_path, sparsity=1e-9, include_last_layer=False), model,
                                76, 4)


def test_mask_memory_is_checked_in_config_keys(tmp_path):
    model = build_model("cnn_small", 4, 1)
    cfg = _fm(tmp_path, sparsity=0.5, fisher_target="dense")
    cfg.execution.max_memory_gb = 0.001
    with pytest.raises(MemoryLimitError) as err:
        preflight.mask_capacity(cfg, model, 76, 4)
    text = str(err.value)
    assert "execution.max_memory_gb is 0.001" in text and "strategy.sparsity" in text
    assert "strategy.fisher_target=diag" in text
    cfg.strategy = {"name": "fishermask", "sparsity": 0.5, "fisher_target": "diag"}
    cfg.execution.max_memory_gb = 64
    preflight.mask_capacity(cfg, model, 76, 4)


def test_other_strategies_and_unknown_datasets_are_not_checked(tmp_path):
    model = build_model("cnn_small", 4, 1)
    preflight.mask_capacity(tiny_config(tmp_path, strategy={"name": "bait"}), model, 76, 4)
    cfg = tiny_config(tmp_path, data={"dataset": "image_folder", "class_counts": None},
                      strategy={"name": "fishermask", "sparsity": 1e-6})
    preflight.trial_mask_capacity(cfg)  # checked when the trial loads the folder


def test_trial_mask_capacity_without_loading_the_data(tmp_path):
    with pytest.raises(ConfigError, match="model cnn_small"):
        preflight.trial_mask_capacity(_fm(tmp_path, sparsity=0.002))
    preflight.trial_mask_capacity(_fm(tmp_path, sparsity=0.05))
