"""The per-neuron response precision p_n that responses are multiplied by (docs/model.md#normalisation).

NumPy only: the database tables that score and compute regressors use it, and reading them must not
load torch.
"""

from __future__ import annotations

import numpy as np


def response_precision(std: np.ndarray) -> np.ndarray:
    """(N,) factor p_n applied to responses: 1/std, with std floored at 1% of its mean
    (docs/model.md#normalisation)."""
    std = np.asarray(std, dtype=np.float64)
    floor = 0.01 * std.mean()
    return (1.0 / np.where(std > floor, std, floor)).astype(np.float32)
