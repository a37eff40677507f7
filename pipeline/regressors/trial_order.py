"""Trial order in time from the presentation timestamps (see docs/model.md#trial-order and
docs/model.md#fix-trial-order).

File indices are a random permutation of the presentation order and ``trial_idx`` is hashed in the
competition recordings, so the order comes from ``frame_trial_ts`` (1-second resolution). The winner
sorted with an unstable ``np.argsort``, leaving trials within the same second in arbitrary order; here the
sort is stable (ties keep ascending file index), so the result is reproducible. Where ``trial_idx`` is
numeric (the true presentation order) the result is checked against it.

Rule ``exact``: where ``trial_idx`` is numeric (pre-training recordings) it breaks the ties
within a second, so the order is the true presentation order; where it is hashed the stable timestamp
order is all there is. :attr:`TrialOrderResult.rule` says which rule was applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.data.recording import trial_idx_numeric


@dataclass(frozen=True)
class TrialOrderResult:
    """Time order of the trials of one recording.

    Attributes:
        sort_id: (T,) file indices in time order.
        rank: (T,) time rank of each file index (inverse permutation of ``sort_id``).
        n_tied: number of trials that share their timestamp with another trial.
        trial_idx_numeric: whether ``trial_idx`` could be checked (not hashed).
        consistent: timestamps never decrease along ``trial_idx`` order (None when hashed).
        n_rank_mismatch: trials whose timestamp rank differs from their ``trial_idx`` rank; nonzero only
            inside tied seconds when ``consistent`` (None when hashed).
    """

    sort_id: np.ndarray
    rank: np.ndarray
    n_tied: int
    trial_idx_numeric: bool
    consistent: bool | None
    n_rank_mismatch: int | None
    rule: str = "timestamp"  # timestamp | timestamp+trial_idx | timestamp (trial_idx hashed)


def trial_order(
    timestamps: np.ndarray, trial_idx: np.ndarray, rule: Literal["timestamp", "exact"] = "timestamp"
) -> TrialOrderResult:
    """Recover the presentation order.

    Args:
        timestamps: (T,) ``datetime64`` presentation times (see ``pipeline.data.format.parse_timestamps``).
        trial_idx: (T,) ``meta/trials/trial_idx`` as stored (integers or hashed strings).
        rule: ``timestamp`` (stable sort of the timestamps; ties keep file order) or ``exact`` (ties
            broken by a numeric ``trial_idx``; the timestamp order where it is hashed).

    Returns:
        The order, with the number of ties, the check against ``trial_idx`` and the rule applied.
    """
    ts = np.asarray(timestamps).astype("datetime64[us]").astype(np.int64)
    numeric = trial_idx_numeric(np.asarray(trial_idx))
    if rule == "exact" and numeric is not None:
        sort_id = np.lexsort((numeric, ts))  # by timestamp, then by trial_idx within a second
        applied = "timestamp+trial_idx"
    else:
        sort_id = np.argsort(ts, kind="stable")
        applied = "timestamp" if rule == "timestamp" else "timestamp (trial_idx hashed)"
    rank = np.empty_like(sort_id)
    rank[sort_id] = np.arange(len(sort_id))
    _, inverse, counts = np.unique(ts, return_inverse=True, return_counts=True)
    n_tied = int((counts[inverse] > 1).sum())

    if numeric is None:
        return TrialOrderResult(sort_id, rank, n_tied, False, None, None, applied)
    true_order = np.argsort(numeric, kind="stable")
    consistent = bool(np.all(np.diff(ts[true_order]) >= 0))
    true_rank = np.empty_like(true_order)
    true_rank[true_order] = np.arange(len(true_order))
    mismatch = int((true_rank != rank).sum())
    return TrialOrderResult(sort_id, rank, n_tied, True, consistent, mismatch, applied)
