"""The residual decomposition of research.residuals against a planted truth it must recover."""

from __future__ import annotations

import numpy as np

from research import residuals


def test_explained_share_of_a_planted_component() -> None:
    rng = np.random.default_rng(0)
    T, N = 2000, 5
    shared, own = rng.standard_normal(T), rng.standard_normal((T, N))
    noise = rng.standard_normal((T, N))
    weights = np.array([0.5, 1.0, 1.0, 1.5, 2.0])
    r = np.outer(shared, weights) + noise
    r -= r.mean(0)
    # population share of the planted part: sum w^2 / (sum w^2 + N) with unit variances
    planted = (weights**2).sum() / ((weights**2).sum() + N)
    assert abs(residuals.explained(r, [shared]) - planted) < 0.03
    assert residuals.explained(r, [own]) < 0.05  # an unrelated per-neuron column explains ~nothing
    assert residuals.explained(r, [shared, noise]) > 0.999  # everything planted: all of it


def test_history_proxies_follow_presentation_order() -> None:
    rng = np.random.default_rng(1)
    T, N = 30, 3
    time_rank = rng.permutation(T)  # file i was shown at position time_rank[i]
    resp_time = rng.gamma(2.0, 1.0, (T, N))
    truth = {"time_rank": time_rank, "responses": resp_time[time_rank]}  # file order
    last, last10 = residuals.history_proxies(truth)
    compressed = np.log1p(resp_time / resp_time.mean(0))
    i = int(np.flatnonzero(time_rank == 15)[0])  # the file shown 16th
    np.testing.assert_allclose(last[i], compressed[14])
    np.testing.assert_allclose(last10[i], compressed[5:15].mean(0))
    assert np.isnan(last10[np.flatnonzero(time_rank == 9)[0]]).all()  # fewer than 10 predecessors
    assert np.isnan(last[np.flatnonzero(time_rank == 0)[0]]).all()
