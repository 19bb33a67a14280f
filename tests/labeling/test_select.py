"""``fishermask select``: a real labeling round from a folder of image files and a labels CSV,
over two rounds, with every strategy, on two Ray shards (the same picks), as Label Studio tasks,
and every bad input (exit 2, one message)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from sklearn.datasets import load_digits

from fishermask.cli import main
from fishermask.models import build_model
from fishermask.strategies import STRATEGIES

pytestmark = pytest.mark.integration  # the CLI, training, MLflow, Ray
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """200 digits as PNG files in one flat folder; the truth by path; 30 labels so far."""
    root = tmp_path_factory.mktemp("labeling")
    images = root / "images"
    images.mkdir()
    d = load_digits()
    truth = {}
    for i in range(200):
        path = f"d{i:03d}.png"
        Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).save(images / path)
        truth[path] = NAMES[d.target[i]]
    first = sorted(truth)[::6][:30]
    return root, truth, first


def _setup(tmp_path, folder, labeled, strategy="margin", **extra):
    root, truth, _ = folder
    cfg = {"experiment": "labeling", "data": {"dataset": "image_folder",
                                             "data_dir": str(root / "images"), "image_size": 8},
           "model": {"name": "cnn_small"}, "train": {"max_epochs": 8, "batch_size": 16},
           "strategy": {"name": strategy, **extra}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([p, truth[p]] for p in labeled)
    return ["select", str(tmp_path / "cfg.yaml"), "--labeled", str(tmp_path / "labels.csv"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]


def _read(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_two_rounds(tmp_path, folder, capsys):
    _, truth, first = folder
    args = _setup(tmp_path, folder, first)
    assert main(args + ["--n", "8", "--out", str(tmp_path / "r1.csv")]) == 0
    rows = _read(tmp_path / "r1.csv")
    picked = [r["path"] for r in rows]
    assert [int(r["rank"]) for r in rows] == list(range(1, 9))
    assert len(set(picked)) == 8 and not set(picked) & set(first) and set(picked) <= set(truth)
    scores = [float(r["score"]) for r in rows]  # margin's score: −(p₁ − p₂), best first
    assert scores == sorted(scores, reverse=True)
    # the person labels them; the same command with the longer CSV is the next round
    args = _setup(tmp_path, folder, first + picked)
    assert main(args + ["--n", "8", "--out", str(tmp_path / "r2.csv")]) == 0
    second = [r["path"] for r in _read(tmp_path / "r2.csv")]
    assert len(set(second)) == 8 and not set(second) & set(first + picked)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("labeling").experiment_id])
    assert sorted(r.data.params["select.labeled"] for r in runs) == ["30", "38"]
    assert all(r.info.status == "FINISHED" for r in runs)
    arts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"picks.json", "r2.csv"} <= arts or {"picks.json", "r1.csv"} <= arts


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy(tmp_path, folder, name):
    extra = {"sparsity": 0.05} if name.startswith("fishermask") else {}
    args = _setup(tmp_path, folder, folder[2], name, **extra)
    assert main(args + ["--n", "5", "--out", str(tmp_path / "next.csv")]) == 0
    picked = [r["path"] for r in _read(tmp_path / "next.csv")]
    assert len(set(picked)) == 5 and not set(picked) & set(folder[2])


def test_two_shards_and_files_read_when_used_pick_what_one_picks_and_label_studio_tasks(tmp_path, folder):
    args = _setup(tmp_path, folder, folder[2], "bait")
    assert main(args + ["--n", "6", "--out", str(tmp_path / "one.csv")]) == 0
    assert main(args + ["--n", "6", "--out", str(tmp_path / "two.json"), "--format",
                        "label-studio", "--set", "execution.shards=2", "--set",
                        "execution.cpus_per_shard=0.5"]) == 0
    tasks = json.loads((tmp_path / "two.json").read_text())
    assert [t["data"]["path"] for t in tasks] == [r["path"] for r in _read(tmp_path / "one.csv")]
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=" + tasks[0]["data"]["path"]
    assert [t["data"]["rank"] for t in tasks] == list(range(1, 7))
    # the files decoded when used, by each shard its own: the same picks
    assert main(args + ["--n", "6", "--out", str(tmp_path / "files.csv"), "--set",
                        "data.in_memory=false", "--set", "execution.shards=2", "--set",
                        "execution.cpus_per_shard=0.5"]) == 0
    assert _read(tmp_path / "files.csv") == _read(tmp_path / "one.csv")


def test_a_checkpoint_instead_of_training(tmp_path, folder, capsys):
    classes = len({folder[1][p] for p in folder[2]})  # the classes the labels name
    torch.save(build_model("cnn_small", classes, 1).state_dict(), tmp_path / "w.pt")
    args = _setup(tmp_path, folder, folder[2])
    assert main(args + ["--n", "3", "--out", str(tmp_path / "n.csv"), "--checkpoint",
                        str(tmp_path / "w.pt")]) == 0
    assert "trained on" not in capsys.readouterr().out


@pytest.mark.parametrize("rows,extra,text", [
    ([["nope.png", "one"]], [], "line 2: 'nope.png' is not an image of the folder"),
    ([["d000.png", "zero"], ["d001.png", "one"], ["d000.png", "two"]], [],
     "line 4: 'd000.png' is listed twice (also on line 2)"),
    ([["d000.png", "zero"], ["d001.png", "zero"]], [], "1 class(es) ['zero']; a classifier needs "
                                                       "at least 2"),
    ([["d000.png", "zero"], ["d001.png", "one"]], ["--classes", "zero,two"],
     "line 3: label 'one' is not one of --classes zero,two"),
    ([["d000.png", "zero"], ["d001.png", "one"]], ["--n", "199"],
     "--n 199: only 198 items of"),
    ([["d000.png", "zero"], ["d001.png", "one"]], ["--n", "0"], "--n must be a positive integer"),
    ([["d000.png", "zero"], ["d001.png", "one"]], ["--labeled", "missing.csv"],
     "--labeled missing.csv: no such file"),
    ([["d000.png", "zero"], ["d001.png", "one"]], ["--set", "data.dataset=digits"],
     "select reads a folder of images (data.dataset=image_folder"),
])
def test_bad_input_exits_2_with_one_message(tmp_path, folder, capfd, rows, extra, text):
    args = _setup(tmp_path, folder, [])
    with (tmp_path / "labels.csv").open("a", newline="") as f:
        csv.writer(f).writerows(rows)
    if "--n" not in extra:
        extra = extra + ["--n", "3"]
    code = main(args + ["--out", str(tmp_path / "n.csv")] + extra)
    err = capfd.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and text in err, err
    assert not (tmp_path / "n.csv").exists()


def test_a_features_pool(tmp_path):
    """The rows of a features file, named by their numbers (``row,label``), with a linear head."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 2, (3, 8))
    y = rng.integers(0, 3, 500)
    np.save(tmp_path / "x.npy", (means[y] + rng.normal(size=(500, 8))).astype(np.float32))
    cfg = {"experiment": "rows", "data": {"dataset": "features",
                                         "features": str(tmp_path / "x.npy")},
           "model": {"name": "linear"}, "train": {"epochs": 10}, "strategy": {"name": "bait"}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    labeled = list(range(0, 500, 25))
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["row", "label"]] + [[i, f"c{y[i]}"] for i in labeled])
    args = ["select", str(tmp_path / "cfg.yaml"), "--labeled", str(tmp_path / "labels.csv"),
            "--n", "7", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(args + ["--out", str(tmp_path / "one.csv")]) == 0
    rows = [int(r["row"]) for r in _read(tmp_path / "one.csv")]
    assert len(set(rows)) == 7 and not set(rows) & set(labeled) and max(rows) < 500
    assert main(args + ["--out", str(tmp_path / "two.csv"), "--set", "execution.shards=2",
                        "--set", "execution.cpus_per_shard=0.5"]) == 0
    assert [int(r["row"]) for r in _read(tmp_path / "two.csv")] == rows
    with (tmp_path / "labels.csv").open("a", newline="") as f:
        csv.writer(f).writerow([500, "c0"])
    assert main(args + ["--out", str(tmp_path / "bad.csv")]) == 2
