"""Metrics (docs/model.md#metrics) against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.scoring.evaluate import score_tier
from pipeline.scoring.metrics import (
    corr,
    correlation_to_average,
    fev_and_feve,
    mean_feve,
    single_trial_correlation,
)

# one neuron, two images shown twice: image A -> 1, 3; image B -> 5, 7
Y = np.array([[1.0], [3.0], [5.0], [7.0]])
P = np.array([[2.0], [2.0], [6.0], [6.0]])
IDS = np.array([10, 10, 20, 20])


def test_single_trial_correlation_by_hand():
    # deviations y: -3 -1 1 3 (std sqrt 5), p: -2 -2 2 2 (std 2), covariance 4 -> 4 / (2 sqrt 5)
    assert single_trial_correlation(Y, P)[0] == pytest.approx(4 / (2 * np.sqrt(5)), abs=1e-7)


def test_corr_of_small_vectors_by_hand():
    # y1 = 1 2 3, y2 = 1 2 4: covariance 1, std 0.8165 and 1.2472 -> 0.98198
    assert corr(np.array([1.0, 2, 3]), np.array([1.0, 2, 4]))[()] == pytest.approx(0.981981, abs=1e-6)


def test_constant_prediction_gives_zero_not_nan():
    assert single_trial_correlation(Y, np.ones_like(Y))[0] == 0.0


def test_correlation_to_average_by_hand():
    # image means of responses 2, 6 and of predictions 2, 6: perfectly correlated
    assert correlation_to_average(Y, P, IDS)[0] == pytest.approx(1.0, abs=1e-7)
    # averaging is per image id, wherever the trials are
    perm = np.array([2, 0, 3, 1])
    assert correlation_to_average(Y[perm], P[perm], IDS[perm])[0] == pytest.approx(1.0, abs=1e-7)


def test_fev_and_feve_by_hand():
    # total variance (ddof 1) of 1 3 5 7 = 20/3; noise variance = mean(2, 2) = 2
    # FEV = (20/3 - 2) / (20/3) = 0.7; MSE = 1; FEVE = 1 - (1 - 2) / (20/3 - 2) = 1 + 3/14
    fev, feve = fev_and_feve(Y, P, IDS)
    assert fev[0] == pytest.approx(0.7)
    assert feve[0] == pytest.approx(1 + 3 / 14)


def test_feve_of_worse_prediction_by_hand():
    worse = np.array([[4.0], [4.0], [4.0], [4.0]])  # MSE = (9 + 1 + 1 + 9) / 4 = 5
    _, feve = fev_and_feve(Y, worse, IDS)
    assert feve[0] == pytest.approx(1 - (5 - 2) / (20 / 3 - 2))


def test_mean_feve_uses_only_neurons_above_threshold():
    mean, n = mean_feve(np.array([0.1, 0.2, 0.5]), np.array([9.0, 0.4, 0.6]))
    assert (mean, n) == (pytest.approx(0.5), 2)
    assert np.isnan(mean_feve(np.array([0.0]), np.array([1.0]))[0])


def test_feve_needs_repeats():
    with pytest.raises(ValueError, match="shown at least twice"):
        fev_and_feve(Y, P, np.arange(4))


def test_score_tier_matches_metrics_and_rejects_bad_input():
    rng = np.random.default_rng(0)
    y = rng.gamma(2.0, 1.0, (40, 5))
    p = y + rng.normal(0, 1.0, y.shape)
    ids = np.repeat(np.arange(10), 4)
    s = score_tier(y, p, ids)
    assert s.single_trial_correlation == pytest.approx(single_trial_correlation(y, p).mean())
    assert s.correlation_to_average == pytest.approx(correlation_to_average(y, p, ids).mean())
    assert s.n_trials == 40 and s.per_neuron_feve is not None
    assert score_tier(y, p, np.arange(40)).feve is None  # no repeats: no FEVE
    with pytest.raises(ValueError, match="non-finite"):
        score_tier(y, np.full_like(y, np.nan), ids)
    with pytest.raises(ValueError, match="differ in shape"):
        score_tier(y, p[:, :3], ids)
