"""The leave-one-out oracle (issue 29) against a direct Python loop over trials and neurons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.scoring.metrics import (
    FEV_THRESHOLD,
    explainable_variance,
    fev_and_feve,
    leave_one_out_means,
    leave_one_out_oracle,
    leave_one_out_score,
    repeated_trials,
)


def _loop_oracle(responses: np.ndarray, image_ids: np.ndarray) -> tuple[list[float], int, int]:
    """Per neuron, the competition's correlation (ddof 0, eps 1e-8) of each repeated trial with the mean of
    the other repeats of its image, written as plain loops; plus the trials and images used."""
    trials_of: dict[int, list[int]] = {}
    for t, image in enumerate(image_ids.tolist()):
        trials_of.setdefault(image, []).append(t)
    used = [t for t in range(len(image_ids)) if len(trials_of[int(image_ids[t])]) >= 2]
    out = []
    for n in range(responses.shape[1]):
        y = [float(responses[t, n]) for t in used]
        o = []
        for t in used:
            others = [float(responses[s, n]) for s in trials_of[int(image_ids[t])] if s != t]
            o.append(sum(others) / len(others))
        my, mo = sum(y) / len(y), sum(o) / len(o)
        sy = math.sqrt(sum((v - my) ** 2 for v in y) / len(y))
        so = math.sqrt(sum((v - mo) ** 2 for v in o) / len(o))
        products = [(a - my) / (sy + 1e-8) * (b - mo) / (so + 1e-8) for a, b in zip(y, o, strict=True)]
        out.append(sum(products) / len(products))
    n_images = len({int(image_ids[t]) for t in used})
    return out, len(used), n_images


def _data(seed: int = 0, n_neurons: int = 7):
    """Responses with an image signal: 12 images shown once, 5 twice, 4 three times, 3 ten times,
    shuffled in time."""
    rng = np.random.default_rng(seed)
    counts = [1] * 12 + [2] * 5 + [3] * 4 + [10] * 3
    image_ids = np.repeat(np.arange(100, 100 + len(counts)), counts)
    rng.shuffle(image_ids)
    signal = rng.gamma(2.0, 1.0, size=(len(counts), n_neurons))
    responses = signal[image_ids - 100] + rng.normal(0, 0.8, size=(len(image_ids), n_neurons))
    return responses.astype(np.float32), image_ids


def test_matches_a_direct_loop_with_single_and_many_repeats():
    responses, image_ids = _data()
    expected, n_trials, n_images = _loop_oracle(responses, image_ids)
    got = leave_one_out_oracle(responses, image_ids)
    assert got.shape == (responses.shape[1],)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert n_trials == 2 * 5 + 3 * 4 + 10 * 3 and n_images == 12
    score = leave_one_out_score(responses, image_ids)
    assert (score.n_trials, score.n_images) == (n_trials, n_images)
    assert score.correlation == pytest.approx(float(np.mean(expected)))
    assert all(0.2 < c < 1 for c in expected), "the planted image signal is found"


def test_images_shown_once_are_left_out():
    responses, image_ids = _data(seed=1)
    mask = repeated_trials(image_ids)
    assert mask.sum() == 52 and not np.isin(image_ids[mask], np.arange(100, 112)).any()
    # changing the responses of the images shown once changes nothing
    changed = responses.copy()
    changed[~mask] = 1e3 * np.random.default_rng(2).normal(size=changed[~mask].shape)
    np.testing.assert_array_equal(
        leave_one_out_oracle(changed, image_ids), leave_one_out_oracle(responses, image_ids)
    )


def test_the_predictor_is_the_mean_of_the_other_repeats():
    responses = np.array([[1.0], [2.0], [6.0], [5.0], [7.0], [9.0]])
    image_ids = np.array([3, 3, 3, 8, 4, 4])  # image 3 three times, 8 once, 4 twice
    mask, others = leave_one_out_means(responses, image_ids)
    assert mask.tolist() == [True, True, True, False, True, True]
    np.testing.assert_allclose(others[:, 0], [4.0, 3.5, 1.5, 9.0, 7.0])


def test_constant_neurons_give_zero_correlation_and_no_fev_without_nan_warnings():
    responses, image_ids = _data(seed=3, n_neurons=4)
    responses[:, 1] = 0.0  # silent
    responses[:, 3] = 2.5  # constant
    with np.errstate(all="raise"):
        corr = leave_one_out_oracle(responses, image_ids)
        score = leave_one_out_score(responses, image_ids)
    assert np.all(np.isfinite(corr)) and corr[1] == 0.0 and corr[3] == 0.0
    np.testing.assert_array_equal(score.per_neuron_correlation, corr)
    assert np.isnan(score.per_neuron_fev[[1, 3]]).all() and np.isfinite(score.per_neuron_fev[[0, 2]]).all()
    assert score.fev == pytest.approx(float(np.mean(score.per_neuron_fev[[0, 2]])))


def test_fev_is_the_fev_of_the_existing_metric():
    responses, image_ids = _data(seed=4)
    fev, _ = fev_and_feve(responses, np.zeros_like(responses), image_ids)
    np.testing.assert_allclose(explainable_variance(responses, image_ids), fev)
    score = leave_one_out_score(responses, image_ids)
    assert score.n_neurons_fev == int((fev >= FEV_THRESHOLD).sum())


def test_no_repeats_is_refused():
    responses = np.random.default_rng(5).normal(size=(20, 3))
    with pytest.raises(ValueError, match="shown at least twice"):
        leave_one_out_oracle(responses, np.arange(20))
    with pytest.raises(ValueError, match="shown at least twice"):
        leave_one_out_score(responses, np.arange(20))


def test_pure_noise_gives_about_zero_and_a_pure_signal_one():
    rng = np.random.default_rng(6)
    image_ids = np.repeat(np.arange(50), 4)
    noise = rng.normal(size=(200, 30))
    assert abs(float(leave_one_out_oracle(noise, image_ids).mean())) < 0.05
    signal = rng.normal(size=(50, 30))[image_ids]
    np.testing.assert_allclose(leave_one_out_oracle(signal, image_ids), 1.0, atol=1e-6)
