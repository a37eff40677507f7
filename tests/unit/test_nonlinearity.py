"""Output nonlinearity option (issue 12): softplus with a fixed or learned beta, default ELU + 1 unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.configs import BaselineModelConfig, ModulatedModelConfig, config_hash
from pipeline.models import ScanGeometry, stacked_core_full_gauss_readout
from pipeline.models.modulated import modulated_stacked_core_full_gauss_readout
from pipeline.models.nonlinearity import EluPlusOne, Softplus

H, W, C_IN = 36, 64, 4


def scans(n_trials=None):
    rng = np.random.default_rng(0)
    return {"s1": ScanGeometry(7, rng.normal(size=(7, 2)) * 100.0, n_trials=n_trials)}


def images(b=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, C_IN, H, W, generator=g), torch.randn(b, 2, generator=g)


def test_softplus_formula_fixed_and_learned():
    x = torch.linspace(-30, 30, 121, dtype=torch.float64)
    for beta in (0.5, 1.0, 3.0):
        expected = np.log1p(np.exp(np.clip(beta * x.numpy(), None, 700))) / beta
        fixed = Softplus(beta)(x)
        learned = Softplus(beta, learn_beta=True).double()(x)
        np.testing.assert_allclose(fixed.numpy(), expected, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(learned.detach().numpy(), expected, rtol=1e-6, atol=1e-12)
        assert torch.all(fixed > 0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        Softplus(0.0)


def test_learned_beta_gets_a_gradient_and_fixed_beta_has_no_parameter():
    learned = Softplus(2.0, learn_beta=True)
    assert [n for n, _ in learned.named_parameters()] == ["log_beta"]
    assert learned.current_beta() == pytest.approx(2.0)
    learned(torch.linspace(-2, 2, 9)).sum().backward()
    assert learned.log_beta.grad is not None and learned.log_beta.grad.abs() > 0
    assert list(Softplus(2.0).parameters()) == [] and list(EluPlusOne().parameters()) == []


def test_default_is_elu_plus_one_with_the_same_hash_and_state_dict():
    cfg = BaselineModelConfig(hidden_channels=8)
    explicit = BaselineModelConfig(hidden_channels=8, output_nonlinearity="elu1", softplus_beta=1.0)
    assert config_hash("f", cfg) == config_hash("f", explicit)  # stored configurations keep their hash
    soft = BaselineModelConfig(hidden_channels=8, output_nonlinearity="softplus")
    assert config_hash("f", soft) != config_hash("f", cfg)
    base = stacked_core_full_gauss_readout(cfg, scans(), input_channels=C_IN, image_size=(H, W), seed=0)
    learned = stacked_core_full_gauss_readout(
        soft.model_copy(update={"learn_softplus_beta": True}),
        scans(),
        input_channels=C_IN,
        image_size=(H, W),
        seed=0,
    )
    # no new key by default (starter-kit checkpoints still import strictly); one scalar when learned
    assert set(learned.state_dict()) - set(base.state_dict()) == {"nonlinearity.log_beta"}
    assert not any("nonlinearity" in k for k in base.state_dict())
    x, pupil = images()
    base.eval()
    drive = base.readout_drive(x, "s1", pupil_center=pupil)
    torch.testing.assert_close(base(x, "s1", pupil_center=pupil), torch.nn.functional.elu(drive) + 1.0)


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_softplus_model_outputs_softplus_of_the_drive(beta):
    cfg = BaselineModelConfig(
        hidden_channels=8, output_nonlinearity="softplus", softplus_beta=beta, elu_offset=0.5
    )
    model = stacked_core_full_gauss_readout(
        cfg, scans(), input_channels=C_IN, image_size=(H, W), seed=0
    ).eval()
    x, pupil = images()
    drive = model.readout_drive(x, "s1", pupil_center=pupil)
    expected = torch.nn.functional.softplus(drive + 0.5, beta=beta)
    torch.testing.assert_close(model(x, "s1", pupil_center=pupil), expected)


def test_modulated_model_uses_the_configured_nonlinearity():
    n_trials = 40
    kw = {"input_channels": C_IN, "image_size": (H, W), "seed": 0}
    elu = modulated_stacked_core_full_gauss_readout(
        ModulatedModelConfig(hidden_channels=8), scans(n_trials), **kw
    )
    soft = modulated_stacked_core_full_gauss_readout(
        ModulatedModelConfig(hidden_channels=8, output_nonlinearity="softplus", softplus_beta=2.0),
        scans(n_trials),
        **kw,
    )
    g = torch.Generator().manual_seed(3)
    x, pupil = images(4)
    batch = {
        "pupil_center": pupil,
        "history": torch.rand(4, 7, 5, generator=g),
        "state": torch.rand(4, 10, generator=g),
        "rank_id": torch.randint(0, n_trials, (4,), generator=g),
    }
    elu.eval(), soft.eval()
    # the same parameters (same seed, no new ones): only the nonlinearity differs
    soft.load_state_dict(elu.state_dict())
    mod = elu.modulator["s1"]
    drive = elu.readout_drive(x, "s1", pupil_center=pupil)
    ref_elu = mod(drive, batch["history"], batch["state"], batch["rank_id"])
    ref_soft = mod(drive, batch["history"], batch["state"], batch["rank_id"], nonlinearity=Softplus(2.0))
    torch.testing.assert_close(elu(x, "s1", **batch), ref_elu)
    torch.testing.assert_close(soft(x, "s1", **batch), ref_soft)
    assert not torch.allclose(ref_elu, ref_soft)
    assert math.isfinite(float(soft(x, "s1", **batch).detach().sum()))
