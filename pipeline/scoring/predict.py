"""Model predictions over a scan's trials, in file-index order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from pipeline.data.loaders import ScanTensors


@torch.no_grad()
def predict_indices(
    model: torch.nn.Module,
    scan: ScanTensors,
    idx: np.ndarray,
    batch_size: int = 128,
    precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> np.ndarray:
    """(len(idx), N) predicted responses for the trials ``idx``, in eval mode (restores the mode after).

    ``precision`` makes the context of each forward pass (e.g. the trainer's bf16 autocast).
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(idx), batch_size):
            batch = scan.batch(idx[start : start + batch_size])
            with precision():
                pred = model(**batch, data_key=scan.data_key)
            out.append(pred.float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, scan.n_neurons), dtype=np.float32)
    return np.concatenate(out)


def predict_tier(
    model: torch.nn.Module,
    scan: ScanTensors,
    tier: str,
    batch_size: int = 128,
    precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions, targets (normalised responses) and file indices of one tier: (n, N), (n, N), (n,)."""
    idx = scan.tier_indices(tier)
    pred = predict_indices(model, scan, idx, batch_size, precision)
    target = (
        scan.responses[torch.as_tensor(idx, dtype=torch.long, device=scan.responses.device)].cpu().numpy()
    )
    return pred, target, idx


def predict_all(model: torch.nn.Module, scan: ScanTensors, batch_size: int = 128) -> np.ndarray:
    """(T, N) predictions for every trial of the scan, all tiers, file-index order."""
    return predict_indices(model, scan, np.arange(scan.n_trials), batch_size)
