"""Trial order from 1-second timestamps (docs/model.md#trial-order, docs/model.md#fix-trial-order)."""

from __future__ import annotations

import numpy as np

from pipeline.regressors.trial_order import trial_order


def _ts(seconds):
    return np.datetime64("2020-01-01T10:00:00") + np.array(seconds).astype("timedelta64[s]")


def test_ties_keep_file_order():
    # file index:        0   1   2   3   4
    seconds = np.array([5, 3, 5, 1, 3])
    result = trial_order(_ts(seconds), np.array(["a", "b", "c", "d", "e"]))
    assert result.sort_id.tolist() == [3, 1, 4, 0, 2]  # ties (1,4) and (0,2) in ascending file index
    assert result.rank.tolist() == [3, 1, 4, 0, 2]
    assert result.n_tied == 4
    assert result.trial_idx_numeric is False and result.consistent is None


def test_check_against_numeric_trial_idx():
    seconds = np.array([5, 3, 5, 1, 3])
    true_idx = np.array([4, 1, 3, 0, 2])  # true order: 3, 1, 4, 2, 0 -> file 4 before 1? no: 1 then 4
    result = trial_order(_ts(seconds), true_idx)
    assert result.consistent
    # stable sort puts file 0 before file 2 (same second) but the truth has 2 before 0
    assert result.n_rank_mismatch == 2


def test_inconsistent_trial_idx_is_reported():
    result = trial_order(_ts([1, 2, 3]), np.array(["2", "1", "0"]))
    assert result.trial_idx_numeric and result.consistent is False
    assert result.n_rank_mismatch == 2


def test_rank_inverts_sort_id():
    rng = np.random.default_rng(0)
    seconds = rng.integers(0, 50, 200)
    result = trial_order(_ts(seconds), np.arange(200))
    assert np.array_equal(result.sort_id[result.rank], np.arange(200))
    assert np.all(np.diff(seconds[result.sort_id]) >= 0)


def test_exact_rule_breaks_ties_with_numeric_trial_idx_and_says_so():
    seconds = np.array([5, 3, 5, 1, 3])
    true_idx = np.array([4, 1, 3, 0, 2])
    exact = trial_order(_ts(seconds), true_idx, rule="exact")
    assert exact.rule == "timestamp+trial_idx" and exact.n_rank_mismatch == 0
    assert exact.sort_id.tolist() == [3, 1, 4, 2, 0]  # the true presentation order
    hashed = trial_order(_ts(seconds), np.array(["a", "b", "c", "d", "e"]), rule="exact")
    assert hashed.rule == "timestamp (trial_idx hashed)"
    assert (
        hashed.rank.tolist() == trial_order(_ts(seconds), np.array(["a", "b", "c", "d", "e"])).rank.tolist()
    )
    assert trial_order(_ts(seconds), true_idx).rule == "timestamp"


def test_one_order_rule_per_dataset():
    import pytest

    from pipeline.configs import ConfigError, RegressorsConfig, validate

    cfg = {
        "history": {"trial_order": "exact"},
        "state": {"trial_order": "exact"},
        "rank": True,
        "rank_order": "exact",
    }
    assert validate(RegressorsConfig, cfg).order_rule() == "exact"
    with pytest.raises(ConfigError, match="use one time order for all"):
        validate(RegressorsConfig, {**cfg, "rank_order": "timestamp"}, "dataset.config.regressors")
