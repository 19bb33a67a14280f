"""An image folder read when used (``data.in_memory: false``) on Ray shards: each shard decodes
only the files of its own range, and 2 shards pick what one process picks from the same images
held in memory (margin and BAIT on a small CNN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fishermask.data import DataParams, ImageData, ImageFiles, load_experiment_data
from fishermask.execution.local import LocalExecutor
from fishermask.models import build_model
from fishermask.strategies import SelectionContext, build_strategy
from tests.execution.conftest import ray_executor

pytestmark = pytest.mark.integration  # Ray actors
BATCH = 32


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """The same folder (3 classes, 400 grey images) in memory and as files."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir()
        for i in range(133):
            img = rng.integers(0, 120, (12, 12)) + 60 * c
            Image.fromarray(img.astype(np.uint8)).save(root / f"c{c}" / f"{i}.png")
    kw = dict(dataset="image_folder", data_dir=str(root), image_size=12, test_fraction=0.1)
    mem = load_experiment_data(DataParams(**kw), seed=1).pool
    files = load_experiment_data(DataParams(**kw, in_memory=False), seed=1).pool
    assert isinstance(mem, ImageData) and isinstance(files, ImageFiles)
    return mem, files


def _select(ex, pool, name, n=12):
    torch.manual_seed(0)
    model = build_model("cnn_small", 3, 1).eval()
    labeled = np.arange(0, len(pool), 9)
    ex.bind(pool)
    ex.set_model(model)
    ctx = SelectionContext(model=model, executor=ex, labeled=labeled,
                           unlabeled=np.setdiff1d(np.arange(len(pool)), labeled),
                           num_classes=3, rng=np.random.default_rng(0))
    params = {"oversample": 2} if name == "bait" else {}
    return build_strategy(name, **params).run_round(ctx, n).indices.tolist()


def test_shards_decode_their_own_files_and_pick_what_one_process_picks(ray_session, pools):
    mem, files = pools
    torch.set_num_threads(1)
    local = LocalExecutor(device="cpu", batch_size=BATCH)
    expected = {name: _select(local, mem, name) for name in ("margin", "bait")}
    ex = ray_executor(2, BATCH)
    try:
        ex.bind(files)
        assert [s["read_rows"] for s in ex.shard_stats()] == [0, 0]  # a description: no pixels
        assert _select(ex, files, "margin") == expected["margin"]
        stats = ex.shard_stats()
        reads = [s["read_rows"] for s in stats]
        assert sum(reads) == len(files) - len(np.arange(0, len(files), 9)) and min(reads) > 0
        spans = sorted(s["read_span"] for s in stats)
        assert spans[0][1] < spans[1][0]  # disjoint ranges: no shard opened the other's files
        assert _select(ex, files, "bait") == expected["bait"]
    finally:
        ex.close()
