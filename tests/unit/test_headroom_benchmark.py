"""benchmarks/headroom.py rebuilds the generator's expected rate exactly before it changes anything."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from pipeline.data.synth import SynthConfig

SPEC = importlib.util.spec_from_file_location(
    "headroom", Path(__file__).resolve().parents[2] / "benchmarks" / "headroom.py"
)
headroom = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(headroom)


def test_rebuilt_rate_is_the_planted_one_and_each_change_costs():
    it = headroom.regenerate(SynthConfig(n_neurons=40, n_trials=400, seed=3), 0)
    true = headroom.drive(it, 0.0)
    # the recorded internals reproduce the truth: same drive -> the stored expected rate
    assert np.allclose(headroom.rate_with_drive(it, true, true), it.expected, rtol=1e-5)
    # and the drive recomputed from the stored images, filters and mix moves the rate as planted: with
    # a wrong eye shift the rebuilt rate differs from the truth
    assert not np.allclose(headroom.rate_with_drive(it, headroom.drive(it, None), true), it.expected)
    # the recomputed drive is the generator's: without latents and history, what is left of the softplus
    # argument after 0.3 + weight x standardised drive is the behaviour term, of rank 2 (pupil, running)
    bare = headroom.regenerate(
        SynthConfig(n_neurons=40, n_trials=400, seed=3, latent_weight=0.0, history_fraction=0.0), 0
    )
    d = headroom.drive(bare, 0.0)
    rest = bare.pre - 0.3 - bare.image_weight * (d - d.mean(0)) / (d.std(0) + 1e-9)
    sv = np.linalg.svd(rest, compute_uv=False)
    assert sv[2] < 1e-6 * sv[0], sv[:4]
    wrong = headroom.drive(bare, None)  # the drive without the eye shift is not it
    rest = bare.pre - 0.3 - bare.image_weight * (wrong - wrong.mean(0)) / (wrong.std(0) + 1e-9)
    assert np.linalg.svd(rest, compute_uv=False)[2] > 1e-2
    scores = headroom.ceilings(it, errors=(1.0,))
    assert abs(scores["rebuilt (nothing changed)"] - scores["oracle"]) < 1e-6
    assert scores["eye shift ignored"] < scores["eye shift off by 1.0 px"] < scores["oracle"]
    assert scores["latents from the past (lag 1)"] < scores["oracle"]
