"""benchmarks/shifter_check.py: a right, a scaled and a scrambled shifter, told apart."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SPEC = importlib.util.spec_from_file_location(
    "shifter_check", Path(__file__).resolve().parents[2] / "benchmarks" / "shifter_check.py"
)
shifter_check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(shifter_check)


def test_compare_follows_each_axis():
    rng = np.random.default_rng(0)
    planted = rng.standard_normal((500, 2)) * 2.0
    right = shifter_check.compare(planted / 30 + 0.001 * rng.standard_normal((500, 2)), planted)
    assert right["x"]["corr"] > 0.99 and right["y"]["corr"] > 0.99
    assert abs(right["x"]["other_axis_corr"]) < 0.15
    scrambled = shifter_check.compare(planted[:, ::-1] / 30, planted)  # x follows the planted y
    assert abs(scrambled["x"]["corr"]) < 0.15 and scrambled["x"]["other_axis_corr"] > 0.99
