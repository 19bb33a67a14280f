"""An image folder read when used (``data.in_memory: false``): the same inputs as in memory, a
description that pickles without pixels, reads counted, and factories that return pools on disk."""

from __future__ import annotations

import pickle
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from fishermask.data import DataParams, FeatureData, ImageData, ImageFiles, load_experiment_data
from fishermask.data import files as files_module
from fishermask.errors import DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of 30 colour PNGs of odd sizes (resized when read)."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cat"):
        (root / c).mkdir()
        for i in range(30):
            shape = (18 + i % 5, 22, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _load(folder, in_memory, **extra):
    cfg = DataParams(dataset="image_folder", data_dir=str(folder), image_size=16,
                     in_memory=in_memory, **extra)
    return load_experiment_data(cfg, seed=3)


def test_files_give_the_inputs_and_pool_of_the_images_in_memory(folder):
    mem, files = _load(folder, True), _load(folder, False)
    assert isinstance(mem.pool, ImageData) and isinstance(files.pool, ImageFiles)
    assert files.pool.image_shape == mem.pool.image_shape == (3, 16, 16)
    assert torch.equal(files.pool.targets, mem.pool.targets)
    assert np.array_equal(files.pool_source_index, mem.pool_source_index)
    idx = [5, 0, 17, 5]
    assert torch.equal(files.pool.inputs(idx), mem.pool.inputs(idx))
    assert torch.equal(files.test.inputs(), mem.test.inputs())
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(files.pool.inputs(idx, augment=True, generator=gen_a),
                       mem.pool.inputs(idx, augment=True, generator=gen_b))
    assert files.pool.class_counts().tolist() == mem.pool.class_counts().tolist()


def test_a_description_reads_only_what_it_is_asked_for(folder):
    pool = _load(folder, False).pool
    shard = pickle.loads(pickle.dumps(pool.for_shards()))
    assert shard.targets is None and shard.read_rows == 0
    assert len(pickle.dumps(pool.for_shards())) < 100 * len(pool)  # paths, not 768-byte images
    shard.inputs([40, 10, 12])
    assert shard.read_rows == 3 and shard.read_span == (10, 40)
    part = pool.subset([3, 4], torch.tensor([1, 0]), ["x", "y"])
    assert part.classes == ["x", "y"] and torch.equal(part.inputs(), pool.inputs([3, 4]))


def test_statistics_come_from_a_seeded_sample_of_the_train_split(folder, monkeypatch):
    decoded = []
    decode = files_module.decode_images
    monkeypatch.setattr(files_module, "decode_images",
                        lambda root, paths, *a: decoded.append(len(paths)) or decode(root, paths, *a))
    monkeypatch.setattr(files_module, "STATS_SAMPLE", 20)
    a, b = _load(folder, False), _load(folder, False)
    assert decoded == [20, 20]  # loading decodes the sample only
    assert a.pool.mean == b.pool.mean and a.pool.std == b.pool.std
    full = _load(folder, True).pool
    assert a.pool.mean != full.mean
    assert np.allclose(a.pool.mean, full.mean, atol=0.05)


def test_an_unreadable_file_is_named_when_it_is_read(folder, tmp_path):
    root = tmp_path / "f"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(root / c / f"{i}.png")
    pool = _load(root, False, test_fraction=0.5).pool
    assert pool.in_channels == 1
    bad = pool.paths[2]
    with open(bad, "wb") as f:
        f.write(b"not a png")
    pool.inputs([0, 1])
    with pytest.raises(DataError, match=f"cannot read the image {bad}"):
        pool.inputs([2])


def test_in_memory_false_is_for_image_folders():
    with pytest.raises(ValueError, match="data.in_memory=false reads the files of an image "
                                         "folder .* 'digits' is read into memory"):
        DataParams(dataset="digits", in_memory=False)


def test_a_factory_may_return_a_features_pool(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", rng.normal(size=(120, 4)).astype(np.float32))
    (tmp_path / "feats.py").write_text(textwrap.dedent(f"""
        import numpy as np
        from fishermask.data import FeatureData

        def make(n_test=20):
            y = np.arange(120) % 3
            x = {str(tmp_path / "x.npy")!r}
            rows = np.arange(120)
            return (FeatureData(x, y[n_test:], list("abc"), rows[n_test:]),
                    FeatureData(x, y[:n_test], list("abc"), rows[:n_test]))

        def wrong():
            return [1, 2]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_experiment_data(DataParams(dataset="feats:make", args={"n_test": 30},
                                           class_counts=[10, 20, 0]), seed=0)
    assert isinstance(data.pool, FeatureData) and len(data.pool) == 30
    assert data.pool.class_counts().tolist() == [10, 20] and len(data.test) == 20
    assert np.all(np.diff(data.pool.rows) > 0)  # a features pool stays in file order
    with pytest.raises(DataError, match="each a fishermask.data.ImageData, ImageFiles or "
                                        "FeatureData; it returned a list"):
        load_experiment_data(DataParams(dataset="feats:wrong"), seed=0)
