"""Training losses: the Poisson loss of the winner and the Gamma loss option (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.configs import ConfigError, TrainerConfig, canonical_json, validate
from pipeline.training.losses import gamma_loss, poisson_loss
from tests.factories import train_tiny


def test_gamma_loss_formula_and_minimum():
    pred = torch.tensor([[0.5, 2.0], [1.0, 0.1]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    eps = 1e-3
    expected = (y / (pred + eps) + torch.log(pred + eps)).sum()
    assert float(gamma_loss(pred, y, eps=eps)) == pytest.approx(float(expected))
    assert float(gamma_loss(pred, y, eps=eps, avg=True)) == pytest.approx(float(expected) / 4)
    # the minimum over the rate is at rate + eps = response, as for the Poisson loss
    rate = torch.linspace(0.2, 5.0, 2001, dtype=torch.float64)
    per = [float(gamma_loss(r.view(1, 1), torch.tensor([[1.7]], dtype=torch.float64), eps=0.0)) for r in rate]
    assert float(rate[int(np.argmin(per))]) == pytest.approx(1.7, abs=3e-3)


def test_gamma_loss_weighs_residuals_by_the_rate():
    # same relative error (2x) at a low and a high rate: Poisson penalises the high-rate trial far more,
    # the Gamma loss (scale-free) the same
    y = torch.tensor([[0.5, 5.0]], dtype=torch.float64)
    pred = 2 * y
    p = pred - y * torch.log(pred)
    p_min = y - y * torch.log(y)
    g = y / pred + torch.log(pred)
    g_min = 1 + torch.log(y)
    poisson_excess, gamma_excess = (p - p_min)[0], (g - g_min)[0]
    assert float(poisson_excess[1] / poisson_excess[0]) == pytest.approx(10.0)
    assert float(gamma_excess[1]) == pytest.approx(float(gamma_excess[0]))
    assert float(poisson_loss(pred, y)) == pytest.approx(float(p.sum()), rel=1e-9)


def test_gamma_loss_option_trains_and_keeps_the_default_hash():
    assert "GammaLoss" not in canonical_json(TrainerConfig())
    with pytest.raises(ConfigError, match="loss_function"):
        validate(TrainerConfig, {"loss_function": "MSE"}, "trainer.config")
    fast = dict(max_iter=3, lr_init=0.02, max_batches_per_epoch=2, restore_best=False)
    gamma = train_tiny(TrainerConfig(**fast, loss_function="GammaLoss"))
    plain = train_tiny(TrainerConfig(**fast))
    losses = [r.train_loss for r in gamma[3]]
    assert all(np.isfinite(losses))
    # a different objective reaches different weights from the same seed
    name = "core.features.layer0.conv.weight"
    assert not torch.equal(gamma[0].state_dict()[name], plain[0].state_dict()[name])
    again = train_tiny(TrainerConfig(**fast, loss_function="GammaLoss"))
    assert torch.equal(again[0].state_dict()[name], gamma[0].state_dict()[name])
