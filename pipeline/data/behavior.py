"""Behaviour normalisation: the baseline's ``std`` (docs/model.md#normalisation) and the winner's
``minmax01`` (docs/model.md#behaviour-normalisation)."""

from __future__ import annotations

from typing import Literal

import numpy as np

Method = Literal["std", "minmax01"]


def normalize_behavior(behavior: np.ndarray, stats: dict[str, np.ndarray], method: Method) -> np.ndarray:
    """Normalise (T, 3) behaviour = [pupil, d pupil, running] with ``statistics/behavior/all``.

    ``std``: b_k / std_k (no centring). ``minmax01``: pupil to [0, 1] by min and max; its derivative
    divided by its std (its mean is about 0); running as |b| / max(-min, max), also in [0, 1] (the sign of
    the running direction is dropped, as in the winning entry).

    Returns:
        (T, 3) float32.
    """
    b = np.asarray(behavior, dtype=np.float64)
    std = np.asarray(stats["std"], dtype=np.float64)
    safe_std = np.where(std > 0, std, 1.0)
    if method == "std":
        return (b / safe_std).astype(np.float32)
    if method == "minmax01":
        lo = np.asarray(stats["min"], dtype=np.float64)
        hi = np.asarray(stats["max"], dtype=np.float64)
        out = np.empty_like(b)
        span = hi[0] - lo[0]
        out[:, 0] = (b[:, 0] - lo[0]) / (span if span > 0 else 1.0)
        out[:, 1] = b[:, 1] / safe_std[1]
        run_scale = max(-lo[2], hi[2])
        out[:, 2] = np.abs(b[:, 2]) / (run_scale if run_scale > 0 else 1.0)
        return out.astype(np.float32)
    raise ValueError(f"unknown behaviour normalisation {method!r}; expected 'std' or 'minmax01'")
