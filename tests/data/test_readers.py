"""The readers (data/readers.py) on real files: the shared FashionMNIST copy, CIFAR-10 and image
folders that the tests write themselves, and the messages for missing data.  No mocks."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fishermask.config import DataConfig
from fishermask.data import (SETTINGS, ImageData, load_experiment_data)
from fishermask.errors import ConfigError, DataError

SHARED_DATA = Path(os.environ.get("FISHERMASK_SHARED_DATA")
                   or Path(__file__).resolve().parents[3] / "shared" / "data")
FMNIST_RAW = SHARED_DATA / "FashionMNIST" / "raw"
needs_fmnist = pytest.mark.skipif(not FMNIST_RAW.is_dir(), reason=f"no shared FashionMNIST at {FMNIST_RAW}")


def counts(d: ImageData) -> list[int]:
    return np.bincount(d.targets.numpy(), minlength=d.num_classes).tolist()


# ----------------------------------------------------------------------------- FashionMNIST


@pytest.fixture(scope="module")
def fmnist_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("FISHERMASK_CACHE")
    os.environ["FISHERMASK_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("FISHERMASK_CACHE")
    else:
        os.environ["FISHERMASK_CACHE"] = old


@needs_fmnist
def test_fashion_mnist_setting1_from_gz_copy(fmnist_cache):
    cfg = DataConfig(dataset="fashion_mnist", data_dir=str(SHARED_DATA), setting=1)
    e = load_experiment_data(cfg, seed=0)
    assert counts(e.pool) == SETTINGS[1] == [250, 5000, 250, 250]
    assert e.class_ids == [0, 1, 2, 3] and e.pool.classes[:2] == ["T-shirt/top", "Trouser"]
    assert counts(e.test) == [1000] * 4 and len(e.test) == 4000
    assert e.pool.image_shape == (1, 28, 28) and e.pool.mean == (0.2860,) and e.pool.std == (0.3530,)
    assert not np.all(np.diff(e.pool.targets.numpy()) >= 0)
    # unpacked once into the cache; the read-only shared folder is untouched
    raw = fmnist_cache / "datasets" / "FashionMNIST" / "raw"
    stamp = (raw / "train-images-idx3-ubyte").stat().st_mtime_ns
    assert sorted(p.name for p in FMNIST_RAW.iterdir()) == sorted(
        f"{n}-idx{d}-ubyte.gz" for n, d in [("train-images", 3), ("train-labels", 1),
                                            ("t10k-images", 3), ("t10k-labels", 1)])
    again = load_experiment_data(cfg, seed=0)
    assert (raw / "train-images-idx3-ubyte").stat().st_mtime_ns == stamp
    assert np.array_equal(again.pool_source_index, e.pool_source_index)


@needs_fmnist
def test_fashion_mnist_setting2(fmnist_cache):
    e = load_experiment_data(DataConfig(dataset="fashion_mnist", data_dir=str(SHARED_DATA), setting=2), 1)
    assert counts(e.pool) == [250] * 9 + [5000] and e.class_ids == list(range(10))
    assert counts(e.test) == [1000] * 10
    # the pool really comes from the train split: source indices are distinct and in range
    assert len(np.unique(e.pool_source_index)) == 7250 and e.pool_source_index.max() < 60000
    # a data_dir with the unpacked files (here: the cache) is loaded by torchvision directly
    direct = DataConfig(dataset="fashion_mnist", data_dir=str(fmnist_cache / "datasets"), setting=2)
    assert torch.equal(load_experiment_data(direct, 1).pool.images, e.pool.images)


def test_missing_fashion_mnist_and_cifar10_name_both_fixes(tmp_path):
    for dataset, folder, files in [("fashion_mnist", "FashionMNIST/raw", "train-images-idx3-ubyte"),
                                   ("cifar10", "cifar-10-batches-py", "data_batch_1")]:
        with pytest.raises(DataError) as info:
            load_experiment_data(DataConfig(dataset=dataset, data_dir=str(tmp_path)), seed=0)
        msg = str(info.value)
        assert "data.download=true" in msg and str(tmp_path / folder) in msg and files in msg
    assert list(tmp_path.iterdir()) == []  # nothing written


# ----------------------------------------------------------------------------- CIFAR-10


def write_cifar(root: Path, per_batch: int = 20, n_test: int = 30) -> dict:
    """A tiny CIFAR-10 in the python format (dicts with bytes keys, as Python 3 pickles them)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n)]
        out[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f)
    label_names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                   b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": label_names, b"num_vis": 3072}, f)
    return out


def test_cifar10_loader_on_written_batches(tmp_path):
    written = write_cifar(tmp_path)
    train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    cfg = DataConfig(dataset="cifar10", data_dir=str(tmp_path), class_counts=[3, 10, 0, 2])
    e = load_experiment_data(cfg, seed=5)
    assert e.class_ids == [0, 1, 3] and e.pool.classes == ["airplane", "automobile", "cat"]
    assert counts(e.pool) == [3, 10, 2] and e.pool.image_shape == (3, 32, 32)
    assert np.array_equal(e.pool.images.numpy(), train[e.pool_source_index])
    assert e.pool.mean == (0.4914, 0.4822, 0.4465) and e.pool.std == (0.2470, 0.2435, 0.2616)
    test_labels = np.array(written["test_batch"][1])
    assert counts(e.test) == [int((test_labels == c).sum()) for c in (0, 1, 3)]
    keep = np.isin(test_labels, [0, 1, 3])
    assert np.array_equal(e.test.images.numpy(), written["test_batch"][0][keep].reshape(-1, 3, 32, 32))
    whole = load_experiment_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path)), seed=0)
    assert len(whole.pool) == 100 and len(whole.test) == 30 and whole.pool.num_classes == 10
    with pytest.raises(ConfigError, match=r"class 1 \('automobile'\) asks for 11 but the train split has 10"):
        load_experiment_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path), class_counts=[1, 11]), 0)


# ----------------------------------------------------------------------------- image folder


def write_pngs(folder: Path, classes: dict[str, int], mode: str = "L", size=(10, 12), start=0):
    from PIL import Image

    rng = np.random.default_rng(start)
    for name, n in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(
                folder / name / f"{start + i}.png")


def test_image_folder_holdout(tmp_path):
    write_pngs(tmp_path, {"ant": 10, "bee": 20, "cat": 10, "dog": 10})
    cfg = DataConfig(dataset="image_folder", data_dir=str(tmp_path), image_size=8, test_fraction=0.2)
    e = load_experiment_data(cfg, seed=0)
    assert e.pool.classes == ["ant", "bee", "cat", "dog"] and e.pool.image_shape == (1, 8, 8)
    assert counts(e.test) == [2, 4, 2, 2] and counts(e.pool) == [8, 16, 8, 8]
    x = e.pool.images.double() / 255
    assert e.pool.mean[0] == pytest.approx(float(x.mean()), abs=1e-6)
    assert torch.equal(load_experiment_data(cfg, seed=0).pool.images, e.pool.images)
    sub = load_experiment_data(cfg.model_copy(update={"class_counts": [0, 10, 3]}), seed=0)
    assert sub.class_ids == [1, 2] and sub.pool.classes == ["bee", "cat"] and counts(sub.pool) == [10, 3]
    with pytest.raises(ConfigError, match="data.setting=2 needs 10 classes"):
        load_experiment_data(cfg.model_copy(update={"setting": 2}), seed=0)


def test_image_folder_train_test_and_rgb(tmp_path):
    write_pngs(tmp_path / "train", {"a": 4, "b": 6}, mode="L")
    write_pngs(tmp_path / "train", {"b": 1}, mode="RGB", start=100)  # one colour image -> RGB
    write_pngs(tmp_path / "test", {"b": 3}, mode="L", start=200)  # test may lack a class
    e = load_experiment_data(DataConfig(dataset="image_folder", data_dir=str(tmp_path), image_size=6), 0)
    assert e.pool.image_shape == (3, 6, 6) and len(e.pool.mean) == 3
    assert counts(e.pool) == [4, 7] and counts(e.test) == [0, 3] and e.test.classes == ["a", "b"]
    # a grayscale image in RGB mode has equal channels
    gray = e.test.images
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])


def test_image_folder_missing_empty_or_half_split(tmp_path):
    for root in (tmp_path / "nope", tmp_path):
        with pytest.raises(DataError, match=r"one sub-folder per class.*train/<class>"):
            load_experiment_data(DataConfig(dataset="image_folder", data_dir=str(root)), seed=0)
    write_pngs(tmp_path / "train", {"a": 3, "b": 3})
    with pytest.raises(DataError, match="only one of train/ and test/"):
        load_experiment_data(DataConfig(dataset="image_folder", data_dir=str(tmp_path)), seed=0)
