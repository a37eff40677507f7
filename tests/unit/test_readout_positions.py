"""Readout positions in image pixels (pipeline.scoring.readout_positions): the inverse of the mapping that
starts readouts at receptive fields, the fit against planted centres, retinotopy, and a real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.configs import BaselineModelConfig, GridMeanPredictorConfig
from pipeline.models import ScanGeometry, stacked_core_full_gauss_readout
from pipeline.models.rf_map import readout_positions
from pipeline.scoring.readout_positions import (
    map_to_pixels,
    model_readout_pixels,
    normalised_to_pixels,
    position_fit,
    retinotopy_r2,
)

H, W = 36, 64


def test_map_to_pixels_inverts_the_start_at_receptive_fields():
    rng = np.random.default_rng(0)
    pixels = np.c_[rng.uniform(3, 60, 30), rng.uniform(3, 33, 30)]
    mu = readout_positions(pixels, (32, 60), origin=2.0, stride=1.0)
    assert np.allclose(map_to_pixels(mu, (32, 60), origin=2.0, stride=1.0), pixels)
    # the readout clamps its positions to the map: so does the mapping
    assert np.allclose(map_to_pixels(np.array([[-3.0, 5.0]]), (32, 60), 2.0, 1.0), [[2.0, 33.0]])


def test_normalised_centres_span_the_image():
    corners = normalised_to_pixels(np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]), (H, W))
    assert np.allclose(corners, [[0, 0], [W - 1, H - 1], [(W - 1) / 2, (H - 1) / 2]])


def test_position_fit_forgives_a_frame_change_but_not_scatter():
    rng = np.random.default_rng(1)
    planted = rng.uniform(0, 60, size=(40, 2))
    mirrored = np.c_[70 - planted[:, 0], 0.5 * planted[:, 1] + 3]  # mirrored in x, squeezed in y
    fit = position_fit(mirrored, planted)
    assert fit.affine_distance == pytest.approx(0.0, abs=1e-9) and fit.mean_distance > 5
    assert fit.corr_x == pytest.approx(-1.0) and fit.corr_y == pytest.approx(1.0)
    exact = position_fit(planted, planted)
    assert exact.mean_distance == 0 and exact.affine_distance == pytest.approx(0.0, abs=1e-9)
    noisy = position_fit(planted + rng.normal(scale=3.0, size=planted.shape), planted)
    assert 2.0 < noisy.mean_distance < 6.0 and 1.0 < noisy.affine_distance < noisy.mean_distance
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        position_fit(planted[:3], planted)


def test_retinotopy_is_one_for_an_affine_layout_and_low_for_a_shuffled_one():
    rng = np.random.default_rng(2)
    cortex = rng.uniform(-200, 200, size=(50, 2))
    layout = cortex @ np.array([[0.05, 0.01], [-0.02, 0.04]]) + [30, 18]
    assert retinotopy_r2(layout, cortex) == pytest.approx(1.0)
    assert retinotopy_r2(rng.permutation(layout), cortex) < 0.3
    assert np.isnan(retinotopy_r2(np.ones((10, 2)), cortex[:10]))


@pytest.mark.parametrize("predicted", [False, True], ids=["free positions", "grid mean predictor"])
def test_a_real_model_reads_where_its_positions_say(predicted):
    cortex = np.random.default_rng(3).normal(size=(9, 2)) * 100.0
    grid = GridMeanPredictorConfig(hidden_layers=1, hidden_features=8) if predicted else None
    cfg = BaselineModelConfig(hidden_channels=4, grid_mean_predictor=grid)
    model = stacked_core_full_gauss_readout(
        cfg, {"s1": ScanGeometry(9, cortex)}, input_channels=1, image_size=(H, W), seed=0
    )
    readout = model.readout["s1"]
    pixels = model_readout_pixels(model, "s1")
    assert pixels is not None and pixels.shape == (9, 2)
    _, map_h, map_w = readout.in_shape
    origin, stride = model.core.map_geometry()
    with torch.no_grad():
        mu = readout.mu.reshape(-1, 2).double().numpy()
    assert np.allclose(pixels, origin + stride * (np.clip(mu, -1, 1) + 1) / 2 * [map_w - 1, map_h - 1])
    assert (pixels >= 0).all() and (pixels[:, 0] <= W - 1).all() and (pixels[:, 1] <= H - 1).all()
    assert model_readout_pixels(model, "no such scan") is None
    if model.shifter is not None:  # the mean shift over the trials moves every neuron alike
        pupil = torch.zeros(5, 2)
        shifted = model_readout_pixels(model, "s1", pupil)
        assert shifted is not None and np.ptp(shifted - pixels, axis=0) == pytest.approx([0, 0], abs=1e-4)


def test_a_model_without_a_gaussian_readout_has_no_positions():
    assert model_readout_pixels(torch.nn.Linear(2, 2), "s1") is None
