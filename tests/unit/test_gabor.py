"""Gabor-initialised first layers (issue 12): the bank, the CNN's ``input_init``, the ViT's stem."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pipeline.configs import (
    BaselineModelConfig,
    ConfigError,
    TrainerConfig,
    ViTConfig,
    canonical_json,
    validate,
)
from pipeline.models.core import Stacked2dCore
from pipeline.models.gabor import FREQUENCIES, gabor_bank, gabor_init_
from pipeline.models.vit import ViTCore
from tests.factories import train_twice, vit_spec


def _dominant(filt: torch.Tensor) -> tuple[float, float]:
    """(frequency in cycles per pixel, orientation in [0, pi)) of the peak of a filter's spectrum."""
    pad = 64  # zero-pad for a finer frequency grid
    spec = torch.fft.fft2(filt.double(), s=(pad, pad)).abs()
    iy, ix = divmod(int(spec.argmax()), pad)
    fy = (iy if iy < pad // 2 else iy - pad) / pad
    fx = (ix if ix < pad // 2 else ix - pad) / pad
    return math.hypot(fx, fy), math.atan2(fy, fx) % math.pi


def test_bank_is_zero_mean_unit_norm_quadrature_pairs_at_the_stated_orientations():
    bank = gabor_bank(16, 15)
    assert bank.shape == (16, 15, 15) and bank.dtype == torch.float32
    assert torch.allclose(bank.sum(dim=(1, 2)), torch.zeros(16), atol=1e-5)
    assert torch.allclose(bank.norm(dim=(1, 2)), torch.ones(16), atol=1e-5)
    assert torch.equal(bank, gabor_bank(16, 15)), "deterministic: it adds nothing to the seed"
    for j in range(8):
        even, odd = bank[2 * j], bank[2 * j + 1]
        # the two members of a pair are in quadrature: (nearly) orthogonal
        assert abs(float((even * odd).sum())) < 0.1
        freq, theta = _dominant(even)
        want_theta = math.pi * j / 8
        gap = min(abs(theta - want_theta), math.pi - abs(theta - want_theta))
        assert gap < 0.2, (j, theta, want_theta)
        assert abs(freq - FREQUENCIES[j % len(FREQUENCIES)]) < 0.04, (j, freq)
    assert gabor_bank(5, 9).shape == (5, 9, 9)
    with pytest.raises(ValueError, match="n >= 1"):
        gabor_bank(0, 9)


def test_init_replaces_the_image_filters_only_and_keeps_the_scale():
    torch.manual_seed(0)
    weight = torch.empty(8, 4, 9, 9)
    torch.nn.init.xavier_normal_(weight)
    before = weight.clone()
    gabor_init_(weight, image_channels=1)
    assert torch.equal(weight[:, 1:], before[:, 1:]), "behaviour channels keep their weights"
    bank = gabor_bank(8, 9)
    cos = torch.nn.functional.cosine_similarity(weight[:, 0].flatten(1), bank.flatten(1))
    assert torch.allclose(cos, torch.ones(8), atol=1e-5)
    ratio = weight[:, 0].pow(2).mean().sqrt() / before[:, 0].pow(2).mean().sqrt()
    assert abs(float(ratio) - 1) < 1e-4


def test_cnn_input_init_gabor_and_the_default_unchanged():
    torch.manual_seed(3)
    plain = Stacked2dCore(4, 8, 9, 7, layers=2)
    torch.manual_seed(3)
    gabor = Stacked2dCore(4, 8, 9, 7, layers=2, input_init="gabor")
    w_plain, w_gabor = plain.features[0].conv.weight, gabor.features[0].conv.weight
    assert torch.equal(w_plain[:, 1:], w_gabor[:, 1:])
    assert not torch.allclose(w_plain[:, 0], w_gabor[:, 0])
    cos = torch.nn.functional.cosine_similarity(w_gabor[:, 0].flatten(1), gabor_bank(8, 9).flatten(1))
    assert bool((cos > 0.999).all())
    # later layers draw the same random numbers: the bank consumes none
    assert torch.equal(plain.features[1].conv.weight, gabor.features[1].conv.weight)
    with pytest.raises(ValueError, match="input_init"):
        Stacked2dCore(4, 8, 9, 7, input_init="dct")


def test_new_options_stay_out_of_stored_configs_and_bad_combinations_are_refused():
    assert "input_init" not in canonical_json(BaselineModelConfig())
    vit = BaselineModelConfig(core_type="vit", vit=ViTConfig())
    assert "stem" not in canonical_json(vit)
    assert "stem_channels" in canonical_json(
        BaselineModelConfig(core_type="vit", vit=ViTConfig(stem_channels=8))
    )
    with pytest.raises(ConfigError, match="needs a stem"):
        validate(BaselineModelConfig, {"core_type": "vit", "vit": {"stem_init": "gabor"}}, "model.config")
    with pytest.raises(ConfigError, match="vit.stem_init"):
        validate(BaselineModelConfig, {"core_type": "vit", "input_init": "gabor"}, "model.config")


def test_vit_stem_shapes_regulariser_and_gabor_start():
    torch.manual_seed(0)
    cfg = ViTConfig(
        dim=8, heads=2, layers=1, patch_size=4, patch_stride=4, stem_channels=6, stem_init="gabor"
    )
    core = ViTCore(cfg, input_channels=4, image_size=(36, 64), behavior_channels=3, gamma_input=1.0).eval()
    x = torch.randn(2, 4, 36, 64)
    assert core(x).shape == (2, 8, 9, 16)
    stem = core.stem[0].weight
    assert stem.shape == (6, 1, 9, 9)
    cos = torch.nn.functional.cosine_similarity(stem[:, 0].flatten(1), gabor_bank(6, 9).flatten(1))
    assert bool((cos > 0.999).all())
    # the smoothness penalty now falls on the stem (the first filters the image meets)
    stem.grad = None
    core.regularizer().backward()
    assert stem.grad is not None and core.patch.weight.grad is None
    even = ViTCore(cfg.model_copy(update={"stem_kernel": 4}), 4, (36, 64), 3)
    assert even(x).shape[-2:] == even.grid == (9, 16)


@pytest.mark.slow  # more than 10 s measured here (2 cores, shared)
def test_a_gabor_stem_vit_trains_reproducibly():
    vit = ViTConfig(
        dim=8, heads=2, layers=1, patch_size=4, patch_stride=4, stem_channels=4, stem_init="gabor"
    )
    spec = vit_spec(
        "sensorium.models.stacked_core_full_gauss_readout", BaselineModelConfig(core_type="vit", vit=vit)
    )
    spec = dataclasses.replace(spec, trainer_config=TrainerConfig(max_iter=2, lr_init=0.005))
    states = train_twice(spec)
    for k, v in states[0].items():
        assert torch.equal(v, states[1][k]), k
