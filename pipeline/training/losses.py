"""Losses (see docs/model.md#loss)."""

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


def gamma_loss(
    prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-3, avg: bool = False
) -> torch.Tensor:
    """Gamma negative log-likelihood at a fixed shape, without constants: sum (or mean) of
    y / (y_hat + eps) + log(y_hat + eps) (issue 12, ``loss_function: GammaLoss``).

    With multiplicative noise (variance proportional to the squared mean) this is the likelihood whose
    maximum weighs every trial by its own noise level; the Poisson loss assumes variance equal to the mean
    and so lets the high-rate trials dominate. The shape only scales the loss and is dropped. ``eps``
    bounds the loss when a rate approaches 0 (ELU + 1 can): it is 1e-3 of the unit-variance response scale
    the models see. The minimum over y_hat is at y_hat + eps = y, as for the Poisson loss.

    Args:
        prediction: [B, N] positive rates.
        target: [B, N] responses (>= 0; a response of exactly 0 contributes log(y_hat + eps)).
    """
    rate = prediction + eps
    loss = target / rate + torch.log(rate)
    return loss.mean() if avg else loss.sum()


#: ``TrainerConfig.loss_function`` -> loss
LOSSES = {"PoissonLoss": poisson_loss, "GammaLoss": gamma_loss}


def loss_scale(n_trials_total: int, batch_size: int) -> float:
    """sqrt(T_d / B): T_d counts every trial of the scan, all tiers (docs/model.md#loss)."""
    return math.sqrt(n_trials_total / batch_size)
