"""The pool (data/pool.py) on scikit-learn's digits: shapes, imbalance settings, the seeded draw,
normalisation, augmentation and the initial labeled set."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from fishermask.config import DataConfig
from fishermask.data import (ExperimentData, ImageData, initial_labeled,
                             load_experiment_data)
from fishermask.errors import ConfigError

def counts(d: ImageData) -> list[int]:
    return np.bincount(d.targets.numpy(), minlength=d.num_classes).tolist()


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_stratified_test():
    e = load_experiment_data(DataConfig(dataset="digits", test_fraction=0.3), seed=0)
    assert isinstance(e, ExperimentData)
    pool, test = e.pool, e.test
    assert pool.images.dtype == torch.uint8 and pool.targets.dtype == torch.int64
    assert pool.image_shape == (1, 8, 8) and pool.in_channels == 1 and pool.num_classes == 10
    assert len(pool) + len(test) == 1797 and len(test) == 540
    assert pool.classes == [str(i) for i in range(10)] and e.class_ids == list(range(10))
    assert int(pool.images.max()) <= 255 and int(pool.images.max()) > 200  # 0..16 scaled by 16
    # stratified: every class's share of the test set is within one image of 30 %
    per_class = np.array(counts(pool)) + np.array(counts(test))
    assert np.all(np.abs(np.array(counts(test)) - 0.3 * per_class) <= 1)
    # pool is stored shuffled, not sorted by class
    assert not np.all(np.diff(pool.targets.numpy()) >= 0)
    assert sorted(e.pool_source_index.tolist()) == list(range(len(pool)))
    # mean/std computed from the train split
    x = pool.images.double() / 255
    assert pool.mean[0] == pytest.approx(float(x.mean()), abs=1e-6)
    assert pool.std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-6)
    assert test.mean == pool.mean and test.std == pool.std


def test_digits_class_counts_drop_and_renumber():
    e = load_experiment_data(DataConfig(dataset="digits", class_counts=[5, 0, 30, 0, 10]), seed=3)
    assert e.class_ids == [0, 2, 4]
    assert e.pool.classes == ["0", "2", "4"] and e.test.classes == ["0", "2", "4"]
    assert counts(e.pool) == [5, 30, 10]
    assert set(e.test.targets.tolist()) == {0, 1, 2}
    full = load_experiment_data(DataConfig(dataset="digits"), seed=3)  # same hold-out for a seed
    assert len(e.test) == sum(counts(full.test)[c] for c in (0, 2, 4))


def test_counts_above_available_raise_precise_config_error():
    with pytest.raises(ConfigError) as info:
        load_experiment_data(DataConfig(dataset="digits", class_counts=[10, 500]), seed=0)
    msg = str(info.value)
    assert "data.class_counts" in msg and "class 1" in msg and "500" in msg and "127" in msg
    assert "class 0" not in msg
    with pytest.raises(ConfigError, match=r"data\.setting=1.*class 1 \('1'\) asks for 5000"):
        load_experiment_data(DataConfig(dataset="digits", setting=1), seed=0)
    with pytest.raises(ConfigError, match="needs 11 classes"):
        load_experiment_data(DataConfig(dataset="digits", class_counts=[1] * 11), seed=0)


def test_determinism_and_seed_dependence():
    cfg = DataConfig(dataset="digits", class_counts=[20, 40, 0, 60])
    a, b = load_experiment_data(cfg, seed=7), load_experiment_data(cfg, seed=7)
    assert torch.equal(a.pool.images, b.pool.images) and torch.equal(a.pool.targets, b.pool.targets)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.targets, b.test.targets)
    assert np.array_equal(a.pool_source_index, b.pool_source_index)
    c = load_experiment_data(cfg, seed=8)
    assert not np.array_equal(a.pool_source_index, c.pool_source_index)
    assert counts(c.pool) == [20, 40, 60]


# ----------------------------------------------------------------------------- ImageData


def test_inputs_normalisation_subset_and_indexing():
    pool = load_experiment_data(DataConfig(dataset="digits"), seed=0).pool
    idx = np.array([5, 0, 17])
    x = pool.inputs(idx)
    assert x.dtype == torch.float32 and x.shape == (3, 1, 8, 8)
    want = (pool.images[idx].float() / 255 - pool.mean[0]) / pool.std[0]
    torch.testing.assert_close(x, want)
    torch.testing.assert_close(pool.inputs(torch.tensor(idx)), want)
    assert pool.inputs(3).shape == (1, 1, 8, 8)
    sub = pool.subset(idx)
    assert len(sub) == 3 and torch.equal(sub.targets, pool.targets[idx]) and sub.classes == pool.classes
    torch.testing.assert_close(sub.inputs(np.arange(3)), want)
    full = pool.inputs(None)  # all of it, roughly standardised
    assert abs(float(full.mean())) < 1e-3 and abs(float(full.std()) - 1) < 1e-2


def test_augmentation_is_deterministic_crop_and_flip():
    pool = load_experiment_data(DataConfig(dataset="digits"), seed=0).pool
    idx = np.arange(64)
    base = pool.inputs(idx)
    torch.manual_seed(123)
    assert torch.equal(pool.inputs(idx), base)  # augment=False: no randomness
    a = pool.inputs(idx, augment=True, generator=torch.Generator().manual_seed(1))
    b = pool.inputs(idx, augment=True, generator=torch.Generator().manual_seed(1))
    c = pool.inputs(idx, augment=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, base)
    # each augmented sample is one of the 9 x 9 x 2 crops (zero padding 4) of its image, flipped or not
    padded = torch.nn.functional.pad(pool.images[idx], (4, 4, 4, 4)).float() / 255
    padded = (padded - pool.mean[0]) / pool.std[0]
    for k in range(len(idx)):
        crops = [padded[k, :, i:i + 8, j:j + 8] for i in range(9) for j in range(9)]
        crops += [cr.flip(-1) for cr in crops]
        assert any(torch.allclose(a[k], cr) for cr in crops)


def test_initial_labeled():
    pool = load_experiment_data(DataConfig(dataset="digits"), seed=0).pool
    got = initial_labeled(pool, 50, np.random.default_rng(4))
    assert got.dtype == np.int64 and len(got) == 50 and len(set(got.tolist())) == 50
    assert np.all(np.diff(got) > 0) and got.min() >= 0 and got.max() < len(pool)
    assert np.array_equal(got, initial_labeled(pool, 50, np.random.default_rng(4)))
    assert len(initial_labeled(pool, len(pool), np.random.default_rng(0))) == len(pool)
    with pytest.raises(ConfigError, match="budget.initial"):
        initial_labeled(pool, len(pool) + 1, np.random.default_rng(0))


