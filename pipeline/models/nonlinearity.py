"""Output nonlinearities: the readout drive [B, N] -> positive rates [B, N].

``elu1`` is the model's original ELU(x) + 1 (neuralpredictors' ``FiringRateEncoder`` and the winner's
modulator). ``softplus`` is log(1 + exp(beta x)) / beta, with ``beta`` fixed or learned (one scalar, kept
positive as exp(log_beta)); the SENSORIUM 2023 winner reported a gain from it. ELU + 1 is linear above
zero and decays exponentially to 0 below; softplus is smooth everywhere, and beta sets how sharp its bend
is (large beta: close to ReLU). The encoder adds its ``elu_offset`` before either.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.configs import ModelConfigBase


class EluPlusOne(nn.Module):
    """ELU(x) + 1 > 0 (no parameters: state_dicts stay what they were)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x) + 1.0


class Softplus(nn.Module):
    """log(1 + exp(beta x)) / beta > 0, beta fixed or learned (parameter ``log_beta``, a scalar)."""

    def __init__(self, beta: float = 1.0, learn_beta: bool = False) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"softplus beta must be > 0, got {beta}")
        self.learn_beta = learn_beta
        if learn_beta:
            self.log_beta = nn.Parameter(torch.tensor(math.log(beta)))
        else:
            self.beta = float(beta)

    def current_beta(self) -> float:
        return float(self.log_beta.detach().exp()) if self.learn_beta else self.beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.learn_beta:
            return F.softplus(x, beta=self.beta)
        # F.softplus takes beta as a number only: the same function with a tensor beta (differentiable in
        # it; above its threshold softplus(z) = z, so large inputs give x exactly, as with a fixed beta)
        beta = self.log_beta.exp().to(x.dtype)
        return F.softplus(beta * x) / beta


def output_nonlinearity(cfg: ModelConfigBase) -> nn.Module:
    """The module ``cfg.output_nonlinearity`` names."""
    if cfg.output_nonlinearity == "elu1":
        return EluPlusOne()
    return Softplus(cfg.softplus_beta, cfg.learn_softplus_beta)
