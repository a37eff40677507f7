"""Losses (SPEC 2.5)."""

from __future__ import annotations

import math

import torch


def poisson_loss(
    prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-12, avg: bool = False
) -> torch.Tensor:
    """Poisson negative log-likelihood without the constant: sum (or mean) of y_hat - y * log(y_hat + eps).

    Args:
        prediction: [B, N] positive rates.
        target: [B, N] responses.
    """
    loss = prediction - target * torch.log(prediction + eps)
    return loss.mean() if avg else loss.sum()


def loss_scale(n_trials_total: int, batch_size: int) -> float:
    """sqrt(T_d / B): T_d counts every trial of the scan, all tiers (SPEC 2.5, 8.7)."""
    return math.sqrt(n_trials_total / batch_size)
