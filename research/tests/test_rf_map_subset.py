"""research.rf_map_subset: the full map and strided subsets of it on a small synthetic recording."""

from __future__ import annotations

import re

import pytest

from pipeline.data.synth import SynthConfig, write_synthetic
from research import rf_map_subset


@pytest.mark.slow  # about 6-15 s here: a 120-neuron recording of 700 trials, mapped twice
def test_every_size_below_the_scans_neurons_is_mapped_and_measured(tmp_path, capsys):
    write_synthetic(tmp_path, 1, SynthConfig(n_neurons=120, n_trials=700, seed=5))
    rf_map_subset.main(["--data", str(tmp_path), "--sizes", "100,200"])
    out = capsys.readouterr().out
    pattern = r"^\s+(\S+) neurons mapped: .*from the full map ([\d.]+) px; .*centres ([\d.]+) px \(affine"
    lines = re.findall(pattern, out, re.M)
    assert [size for size, *_ in lines] == ["all", "100"], out  # 200 >= the scan's 120: not a subset
    assert float(lines[0][1]) == 0.0 and float(lines[1][1]) > 0.0, out
    # both within a few pixels of the planted centres (36 x 64 images)
    assert float(lines[0][2]) < 2.0 and float(lines[1][2]) < 2.0, out  # 1.07 and 1.09 px here
