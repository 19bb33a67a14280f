"""The report's numbers on hand-made values (reports/data.py): AUBC, paired and unpaired differences
with their intervals, labels needed to reach a target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fishermask.reports.data import aubc, diff_ci, labels_to_reach


def test_aubc_is_the_mean_height_over_the_budget():
    assert aubc([10, 20, 30], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert aubc([10, 20, 40], [0.0, 1.0, 1.0]) == pytest.approx((5 + 20) / 30)
    assert aubc([10], [0.7]) == 0.7


def test_diff_ci_paired_by_seed_and_unpaired():
    d = diff_ci({0: 0.6, 1: 0.7, 2: 0.8}, {0: 0.5, 1: 0.5, 2: 0.6, 3: 0.9})
    assert d["paired"] and d["n"] == 3
    assert d["diff"] == pytest.approx(0.5 / 3)
    diffs = np.array([0.1, 0.2, 0.2])
    assert d["ci"] == pytest.approx(4.302653 * diffs.std(ddof=1) / math.sqrt(3), rel=1e-5)
    u = diff_ci({0: 0.6, 1: 0.8}, {5: 0.5, 6: 0.5})
    assert not u["paired"] and u["diff"] == pytest.approx(0.2) and u["ci"] > 0
    assert math.isnan(diff_ci({0: 0.6}, {0: 0.5})["ci"])  # one pair: no interval


def test_labels_to_reach():
    assert labels_to_reach(np.array([10, 20, 30]), np.array([0.5, 0.8, 0.9]), 0.8) == 20
    assert labels_to_reach(np.array([10, 20]), np.array([0.5, 0.6]), 0.9) is None
