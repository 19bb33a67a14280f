"""Pools of precomputed features (data/features.py) on real .npy files: rows read on demand and
only those, a description that pickles without the data, float16 files, the config's checks, and
the pool drawn from them as from images."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fishermask.config import from_dict
from fishermask.data import FeatureData, load_experiment_data
from fishermask.errors import ConfigError, DataError


def _files(folder, n=400, d=6, c=3, dtype=np.float32, test=90, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(dtype)
    y = rng.integers(0, c, n)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    np.save(folder / "tx.npy", rng.normal(size=(test, d)).astype(dtype))
    np.save(folder / "ty.npy", rng.integers(0, c, test))
    return x, y


def _cfg(folder, **data):
    return from_dict({"data": {"dataset": "features", "features": str(folder / "x.npy"),
                               "labels": str(folder / "y.npy"), **data},
                      "model": {"name": "linear"}})


def test_reads_only_the_rows_it_is_asked_for(tmp_path):
    x, y = _files(tmp_path)
    rows = np.array([7, 3, 399, 3, 120])
    fd = FeatureData(tmp_path / "x.npy", y[rows], ["a", "b", "c"], rows)
    got = fd.inputs([4, 0, 2])
    assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(x[[120, 7, 399]]))
    assert fd.read_rows == 3 and fd.read_span == (0, 4)
    assert len(fd) == 5 and fd.in_channels == 6 and fd.image_shape == (6,)
    sub = fd.subset([4, 1], torch.tensor([0, 1]), ["p", "q"])
    assert sub.rows.tolist() == [120, 3] and sub.classes == ["p", "q"]
    assert torch.equal(sub.inputs(), torch.from_numpy(x[[120, 3]]))


def test_a_pickled_description_carries_no_rows(tmp_path):
    x, y = _files(tmp_path, n=20000, d=32)
    fd = FeatureData(tmp_path / "x.npy", y, ["a", "b", "c"])
    fd.inputs(np.arange(100))  # the file is mapped here
    blob = pickle.dumps(fd.for_shards())
    assert len(blob) < 5000 < x.nbytes  # the path, not the 2.6 MB of features
    back = pickle.loads(blob)
    assert back.targets is None and back.read_rows == 0  # counted where it is read
    assert torch.equal(back.inputs([19999]), torch.from_numpy(x[[19999]]))


def test_float16_files_are_read_as_float32(tmp_path):
    x, y = _files(tmp_path, dtype=np.float16)
    fd = FeatureData(tmp_path / "x.npy", y, ["a", "b", "c"])
    assert torch.equal(fd.inputs([1, 2]), torch.from_numpy(x[[1, 2]].astype(np.float32)))


def test_bad_files_are_named(tmp_path):
    np.save(tmp_path / "int.npy", np.zeros((4, 3), dtype=np.int32))
    np.save(tmp_path / "vec.npy", np.zeros(4, dtype=np.float32))
    for name in ("int.npy", "vec.npy"):
        with pytest.raises(DataError, match="give float32 or float16 rows"):
            FeatureData(tmp_path / name, None, ["a"])
    np.save(tmp_path / "x.npy", np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(DataError, match="4 rows but 3 labels"):
        FeatureData(tmp_path / "x.npy", [0, 1, 0], ["a", "b"])
    with pytest.raises(DataError, match=r"row indices outside \[0, 4\)"):
        FeatureData(tmp_path / "x.npy", None, ["a"], np.array([4]))


def test_a_pool_of_features_is_drawn_like_a_pool_of_images(tmp_path):
    x, y = _files(tmp_path)
    held = load_experiment_data(_cfg(tmp_path).data, 0)  # a stratified hold-out of 30 %
    assert len(held.pool) + len(held.test) == 400 and len(held.test) == 120
    assert not set(held.pool.rows.tolist()) & set(held.test.rows.tolist())
    counted = load_experiment_data(_cfg(tmp_path, class_counts=[20, 0, 40],
                                        test_features=str(tmp_path / "tx.npy"),
                                        test_labels=str(tmp_path / "ty.npy")).data, 3)
    assert counted.pool.class_counts().tolist() == [20, 40] and counted.pool.classes == ["0", "2"]
    assert np.array_equal(y[counted.pool.rows], np.where(counted.pool.targets.numpy() == 0, 0, 2))
    assert counted.test.path.endswith("tx.npy") and set(counted.test.targets.tolist()) == {0, 1}
    again = load_experiment_data(_cfg(tmp_path, class_counts=[20, 0, 40]).data, 3)
    assert np.array_equal(again.pool_source_index, load_experiment_data(
        _cfg(tmp_path, class_counts=[20, 0, 40]).data, 3).pool_source_index)  # seeded


@pytest.mark.parametrize("data,text", [
    ({"features": None}, "needs data.features"),
    ({"test_features": "t.npy"}, "give both data.test_features and data.test_labels"),
    ({"augment": True}, "features take none"),
])
def test_config_checks(tmp_path, data, text):
    _files(tmp_path)
    with pytest.raises(ConfigError, match=text):
        _cfg(tmp_path, **data)
    with pytest.raises(ConfigError, match="belong to data.dataset=features"):
        from_dict({"data": {"dataset": "digits", "features": "x.npy"}})
