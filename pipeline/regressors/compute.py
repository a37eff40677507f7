"""Every regressor a dataset config asks for, computed from one in-memory recording (no database).

The regressor tables (``schemas.regressors``) compute and store the same things one table at a time;
this is for the benchmarks and other database-free runs. The returned dict has the form
``pipeline.data.loaders.build_scan_tensors`` takes (the same as ``schemas.regressors.fetch_regressors``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.configs import DatasetConfig
from pipeline.data.behavior import normalize_behavior
from pipeline.data.format import parse_timestamps
from pipeline.data.precision import response_precision
from pipeline.data.recording import KNOWN_TIERS, Recording
from pipeline.regressors.history import build_history_bank
from pipeline.regressors.splits import split_tiers
from pipeline.regressors.state import fit_network_state
from pipeline.regressors.trial_order import trial_order


def compute_regressors(rec: Recording, cfg: DatasetConfig) -> dict[str, Any]:
    """``behavior`` (T, 3) normalised, and as configured ``history`` (prefix (K+1, N), n_known_before
    (T,), lags), ``state`` (T, S), ``rank_id`` (T,) and the split's ``tiers`` (T,), file-index order."""
    stats = rec.statistics
    out: dict[str, Any] = {
        "behavior": normalize_behavior(
            np.asarray(rec.behavior, dtype=np.float32), stats["behavior"]["all"], cfg.behavior_normalization
        )
    }
    regs = cfg.regressors
    if regs is not None and (regs.history or regs.state or regs.rank):
        rule = regs.order_rule()
        rank = trial_order(parse_timestamps(rec.trials["frame_trial_ts"]), rec.trials["trial_idx"], rule).rank
        known = np.isin(rec.tiers, KNOWN_TIERS)
        # as the model sees them (see docs/model.md#normalisation), the input of history and state
        p = response_precision(stats["responses"]["all"]["std"])
        responses = np.asarray(rec.responses, dtype=np.float32) * p[None]
        if regs.history is not None:
            bank = build_history_bank(responses, rank, known, regs.history)
            out["history"] = (bank.prefix, bank.n_known_before, list(regs.history.lags))
        if regs.state is not None:
            out["state"] = fit_network_state(responses, rank, known, regs.state).state
        if regs.rank:
            out["rank_id"] = np.asarray(rank, dtype=np.int64)
    if cfg.split is not None:
        out["tiers"] = split_tiers(rec.tiers, cfg.split)
    return out
