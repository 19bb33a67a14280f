"""Sweep files → trials (sweeps/grid.py): the grid's product, dropped parameters of other
strategies, strategy variants, stable keys, errors that name the point, and every committed sweep
file (valid at every point, its masks fit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fishermask import preflight
from fishermask.config import from_dict
from fishermask.errors import ConfigError
from fishermask.sweeps.grid import absolute_tracking_uri, expand, load_sweep

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
BASE = {"experiment": "g", "data": {"dataset": "digits", "class_counts": [12, 12, 12, 40]},
        "budget": {"initial": 10, "query": 10, "rounds": 2}, "model": {"name": "cnn_small"},
        "strategy": {"name": "fishermask", "sparsity": 0.05}}


def test_grid_product_drops_foreign_params_and_dedupes():
    raw = dict(BASE, sweep={"strategy.name": ["random", "fishermask"],
                            "strategy.sparsity": [0.05, 0.1], "seed": [0, 1]})
    trials, points, notes = expand(raw)
    assert points == 8
    labels = sorted(t.label for t in trials)  # random ignores sparsity: 2 random + 4 fishermask
    assert labels == ["fishermask sparsity=0.05 seed=0", "fishermask sparsity=0.05 seed=1",
                      "fishermask sparsity=0.1 seed=0", "fishermask sparsity=0.1 seed=1",
                      "random seed=0", "random seed=1"]
    assert any("random: ignores sparsity" in n for n in notes)
    rnd = next(t for t in trials if t.label == "random seed=0")
    assert "sparsity" not in rnd.config["strategy"] and rnd.variant == "random"
    assert Path(rnd.config["data"]["data_dir"]).is_absolute()  # trials run in Tune's folders
    again, _, _ = expand(raw)
    assert [t.key for t in again] == [t.key for t in trials]  # stable keys


def test_grid_mapping_values_merge_into_the_section():
    raw = dict(BASE, sweep={"strategy": [{"name": "bait"}, {"sparsity": 0.1}]})
    trials, _, _ = expand(raw)
    assert [t.config["strategy"]["name"] for t in trials] == ["bait", "fishermask"]
    assert trials[1].config["strategy"]["sparsity"] == 0.1
    assert [t.variant for t in trials] == ["bait", "fishermask sparsity=0.1"]


def test_grid_strategy_variants_read_as_name_and_parameters():
    raw = dict(BASE, sweep={"strategy": [{"name": "fishermask"},
                                         {"name": "fishermask", "prob_scaling": False},
                                         {"name": "fishermask", "mask_subset": "first"}]})
    trials, _, _ = expand(raw)
    assert [t.variant for t in trials] == ["fishermask", "fishermask prob_scaling=False",
                                           "fishermask mask_subset=first"]
    assert len({t.key for t in trials}) == 3


@pytest.mark.parametrize("grid, message", [
    ({"seed": 3}, "non-empty list"),
    ({"seed": []}, "non-empty list"),
    ({"strategy.name": ["random", "nope"]}, "unknown strategy"),
    ({"train.lr": [-1]}, "train.lr"),
])
def test_grid_errors_name_the_point(grid, message):
    with pytest.raises(ConfigError, match=message):
        expand(dict(BASE, sweep=grid))


def test_quickstart_grid_and_tracking_uris(tmp_path, monkeypatch):
    from fishermask.strategies import STRATEGIES

    sweep = load_sweep(SWEEPS / "quickstart.yaml")
    names = {t.config["strategy"]["name"] for t in sweep.trials}
    assert names == set(STRATEGIES) - {"fishermask_authors"}
    assert len(sweep.trials) == 3 * len(names) and sweep.name == "quickstart"
    monkeypatch.chdir(tmp_path)
    assert absolute_tracking_uri("sqlite:///m.db") == f"sqlite:///{tmp_path.resolve()}/m.db"
    assert absolute_tracking_uri("http://h:5000") == "http://h:5000"


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_committed_sweep_file_expands(path):
    """Each sweep file validates for every grid point, names its experiment after itself (the
    report command in its header uses that name) and compares at least two strategies."""
    sweep = load_sweep(path)
    assert sweep.name == path.stem and sweep.experiment == path.stem
    assert 0 < len(sweep.trials) <= sweep.points  # equal configs collapse (e.g. random x sparsity)
    assert len({t.config["strategy"]["name"] for t in sweep.trials}) >= 2
    assert f"--experiment {path.stem}" in sweep.raw_text or path.stem == "quickstart"


def test_every_committed_sweep_passes_the_mask_capacity_check():
    files = sorted(SWEEPS.glob("*.yaml"))
    assert files
    for f in files:
        for t in load_sweep(f).trials:
            preflight.trial_mask_capacity(from_dict(t.config))  # raises if a mask cannot fit
