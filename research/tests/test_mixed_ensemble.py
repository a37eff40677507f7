"""research.mixed_ensemble: its ensemble score and its argument check."""

from __future__ import annotations

import numpy as np
import pytest

from research import mixed_ensemble as mixed


def _member(signal: np.ndarray, noise: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    return {"a/predictions": signal + noise, "a/targets": target, "a/trial_id": np.arange(len(target))}


def test_averaging_members_with_independent_errors_scores_higher_than_each():
    rng = np.random.default_rng(0)
    T, N = 4000, 3
    signal = rng.standard_normal((T, N))
    target = signal + rng.standard_normal((T, N))
    members = [_member(signal, 2 * rng.standard_normal((T, N)), target) for _ in range(3)]
    singles = [mixed.ensemble_score([m]) for m in members]
    both = mixed.ensemble_score(members)
    # corr(s + e_k, s + n) = 1 / sqrt(2 * 5) for one member, 1 / sqrt(2 * (1 + 4/3)) for three
    assert np.allclose(singles, 1 / np.sqrt(10), atol=0.03)
    assert abs(both - 1 / np.sqrt(2 * (1 + 4 / 3))) < 0.03
    same = mixed.ensemble_score([members[0], members[0]])
    assert same == pytest.approx(singles[0]), "a member averaged with itself changes nothing"


def test_members_must_predict_the_same_trials_and_combos_are_checked():
    rng = np.random.default_rng(1)
    a = _member(rng.standard_normal((5, 2)), 0.0, rng.standard_normal((5, 2)))
    b = dict(a, **{"a/trial_id": np.arange(5)[::-1]})
    with pytest.raises(ValueError, match="different trials"):
        mixed.ensemble_score([a, b])
    assert mixed.parse_combo("x:42, y_s1:43") == [("x", 42), ("y_s1", 43)]
    with pytest.raises(SystemExit, match="EXPERIMENT:SEED"):
        mixed.parse_combo("x42")
