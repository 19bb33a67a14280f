"""Small shared builders for tests (tiny, fast configs on real data)."""

from __future__ import annotations

from fishermask.config import from_dict


def tiny_config(tmp_path, **sections):
    raw = {
        "experiment": "tiny",
        "seed": 0,
        "data": {"dataset": "digits", "class_counts": [12, 12, 12, 40]},
        "budget": {"initial": 8, "query": 6, "rounds": 2},
        "model": {"name": "cnn_small"},
        "train": {"max_epochs": 3, "batch_size": 16},
        "strategy": {"name": "random"},
        "tracking": {"checkpoint_dir": str(tmp_path / "ckpt")},
    }
    for key, val in sections.items():
        if isinstance(val, dict):
            raw.setdefault(key, {}).update(val)
        else:
            raw[key] = val
    return from_dict(raw)
