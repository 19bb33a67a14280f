"""Plug-ins through the command line, in fresh processes: an import-path dataset, network and
strategy next to the config file in ``run`` and in a ``sweep`` (on a local Ray, whose workers get
the module as py_modules), the same by their entry-point names from an installed distribution,
``fishermask list``, torchvision's ResNet-18 (final layer ``fc``) for margin, BAIT and FisherMask,
``model.weights`` with ``model.freeze``, what MLflow records, and bad plug-ins (exit 2, one
message)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from fishermask.models import build_model
from tests.helpers import copy_example, install_example

pytestmark = pytest.mark.integration  # the CLI, the loop, Ray

TINY = {"budget": {"initial": 12, "query": 6, "rounds": 2},
        "train": {"max_epochs": 3, "batch_size": 16}}
PATHS = {"data": {"dataset": "fishermask_example.data:shapes",
                  "args": {"n_train": 120, "n_test": 60, "size": 12}},
         "model": {"name": "fishermask_example.nets:ShapeNet", "args": {"width": 4}},
         "strategy": {"name": "fishermask_example.strategies:BalancedMargin",
                      "temperature": 2.0}}


def _fm(folder: Path, *args: str, path: str = "", timeout: int = 400):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "fishermask", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _write(folder: Path, name: str, **sections) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"experiment": path.stem, **TINY, **sections}))
    return path


def _runs(folder: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id])


def test_import_paths_next_to_the_config_in_run_and_sweep(tmp_path):
    copy_example(tmp_path)  # not installed: the module sits next to the config file
    cfg = _write(tmp_path, "paths.yaml", **PATHS)
    p = _fm(tmp_path, "run", str(cfg), "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "done: fishermask_example.strategies:BalancedMargin, seed 0: 2 rounds, 24 labels" \
        in p.stdout
    run = _runs(tmp_path, "paths")[0]
    assert run.data.tags["plugin.strategy.name"] == "fishermask_example.strategies:BalancedMargin"
    assert run.data.tags["plugin.model.name"] == "fishermask_example.nets:ShapeNet"
    assert run.data.params["strategy.temperature"] == "2.0"
    # a sweep with the plug-in and built-ins as one axis; a parameter only the plug-in takes
    sweep = _write(tmp_path, "sweep.yaml", **PATHS, sweep={
        "strategy.name": ["margin", PATHS["strategy"]["name"]]})
    p = _fm(tmp_path, "sweep", str(sweep))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "MLflow child runs: 2 FINISHED" in p.stdout
    assert "margin: ignores temperature" in p.stdout


def test_entry_point_names_of_an_installed_distribution(tmp_path):
    site = install_example(tmp_path / "site")
    listing = _fm(tmp_path, "list", path=str(site))
    assert listing.returncode == 0, listing.stderr
    for name in ("shapes", "shape_net", "balanced_margin"):
        line = next(x for x in listing.stdout.splitlines() if x.split()[:1] == [name])
        assert "entry point of fishermask-example 0.1.0" in line
    cfg = _write(tmp_path, "names.yaml",
                 data={"dataset": "shapes", "args": {"n_train": 120, "n_test": 60, "size": 12}},
                 model={"name": "shape_net", "args": {"width": 4}},
                 strategy={"name": "balanced_margin"})
    p = _fm(tmp_path, "run", str(cfg), "--no-progress", path=str(site))
    assert p.returncode == 0, p.stderr[-3000:]
    tags = _runs(tmp_path, "names")[0].data.tags
    assert tags["plugin.data.dataset"] == "fishermask_example.data:shapes"
    assert tags["plugin.data.dataset.distribution"] == "fishermask-example 0.1.0"


def test_torchvision_resnet_with_fc_for_margin_bait_and_fishermask(tmp_path):
    sweep = _write(tmp_path, "tv.yaml",
                   data={"dataset": "digits", "class_counts": [12, 12, 12, 40]},
                   model={"name": "torchvision.models:resnet18"},
                   strategy={"name": "fishermask", "sparsity": 2e-4, "mask_samples": 16,
                             "fisher_target": "diag"},
                   sweep={"strategy.name": ["margin", "bait", "fishermask"]})
    p = _fm(tmp_path, "sweep", str(sweep), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "MLflow child runs: 3 FINISHED" in p.stdout


def test_weights_and_a_frozen_body(tmp_path):
    torch.manual_seed(5)
    start = build_model("cnn_small", 4, 1).state_dict()
    torch.save(start, tmp_path / "start.pt")
    cfg = _write(tmp_path, "frozen.yaml", data={"dataset": "digits", "class_counts": [12, 12, 12, 40]},
                 model={"name": "cnn_small", "weights": str(tmp_path / "start.pt"),
                        "freeze": "features"},
                 strategy={"name": "bait"}, tracking={"checkpoint_dir": str(tmp_path / "ckpt")})
    p = _fm(tmp_path, "run", str(cfg), "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    state = torch.load(next((tmp_path / "ckpt").rglob("state.pt")), weights_only=False)["model"]
    body = [k for k in start if not k.startswith("classifier.")]
    assert body and all(torch.equal(state[k], start[k]) for k in body)  # trained: the head only
    assert not torch.equal(state["classifier.weight"], start["classifier.weight"])
    assert _runs(tmp_path, "frozen")[0].data.params["model.freeze"] == "features"


@pytest.mark.parametrize("change,text", [
    ({"strategy": {"name": "fishermask_example.strategies:BalancedMarjin"}},
     "strategy.name: 'fishermask_example.strategies:BalancedMarjin': module "
     "'fishermask_example.strategies' has no attribute 'BalancedMarjin'; did you mean "
     "BalancedMargin"),
    ({"model": {"name": "fishermask_exampel.nets:ShapeNet"}},
     "model.name: 'fishermask_exampel.nets:ShapeNet': no module named 'fishermask_exampel'"),
    ({"strategy": {"name": "fishermask_example.nets:ShapeNet"}},
     "strategy.name: 'fishermask_example.nets:ShapeNet' is a type, not a subclass of "
     "fishermask.strategies.Strategy"),
    ({"data": {"dataset": "fishermask_example.data:shapes", "args": {"n_trian": 3}}},
     "data.args: the dataset factory fishermask_example.data:shapes cannot be called with "
     "{'n_trian': 3}"),
])
def test_bad_plugins_exit_2_with_one_message(tmp_path, change, text):
    copy_example(tmp_path)
    cfg = _write(tmp_path, "bad.yaml", **{**PATHS, **change})
    p = _fm(tmp_path, "run", str(cfg), "--no-progress", timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("error: ") and text in p.stderr, p.stderr
    assert not (tmp_path / ".fishermask").exists()  # nothing was started
