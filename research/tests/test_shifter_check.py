"""research.shifter_check: a right, a scaled and a scrambled shifter, told apart."""

from __future__ import annotations

import numpy as np

from research import shifter_check


def test_compare_follows_each_axis():
    rng = np.random.default_rng(0)
    planted = rng.standard_normal((500, 2)) * 2.0
    right = shifter_check.compare(planted / 30 + 0.001 * rng.standard_normal((500, 2)), planted)
    assert right["x"]["corr"] > 0.99 and right["y"]["corr"] > 0.99
    assert abs(right["x"]["other_axis_corr"]) < 0.15
    scrambled = shifter_check.compare(planted[:, ::-1] / 30, planted)  # x follows the planted y
    assert abs(scrambled["x"]["corr"]) < 0.15 and scrambled["x"]["other_axis_corr"] > 0.99
