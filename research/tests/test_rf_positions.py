"""research.rf_positions: position errors up to an affine frame, and per-neuron correlations."""

from __future__ import annotations

import numpy as np

from research import rf_positions


def test_affine_error_forgives_the_frame_not_the_neurons():
    rng = np.random.default_rng(0)
    planted = rng.uniform(0, [63, 35], (200, 2))
    # the readout's frame: mirrored, scaled and shifted against the generator's
    frame = planted * np.array([-1 / 30, 1 / 17]) + np.array([0.1, -1.0])
    error, corr = rf_positions.affine_error(frame, planted)
    assert error < 1e-9 and corr[0] < -0.999 and corr[1] > 0.999
    jittered = frame + np.array([1 / 30, 1 / 17]) * rng.standard_normal((200, 2)) * 2.0  # 2 px per axis
    error, _ = rf_positions.affine_error(jittered, planted)
    assert 2.0 < error < 3.2  # the mean distance of a 2-px-per-axis Gaussian error is 2.5 px


def test_per_neuron_corr_matches_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((50, 4)), rng.standard_normal((50, 4))
    b[:, 0] = 2 * a[:, 0] + 1
    expect = [np.corrcoef(a[:, n], b[:, n])[0, 1] for n in range(4)]
    assert np.allclose(rf_positions.per_neuron_corr(a, b), expect) and abs(expect[0] - 1) < 1e-12
