"""The vision-transformer core (its own key since issue 28; ``core_type: vit`` under the stacked keys
still loads): shapes, behaviour in every block, trains, hash-neutral."""

from __future__ import annotations

import pytest
import torch

from pipeline.configs import (
    BaselineModelConfig,
    ConfigError,
    ModulatedViTModelConfig,
    ViTConfig,
    ViTModelConfig,
    canonical_json,
    config_hash,
    validate,
)
from pipeline.models.vit import ViTCore
from pipeline.run import build_model, build_scans
from pipeline.training.trainer import train
from tests.factories import RECS, train_twice, vit_spec

VIT = ViTConfig(dim=8, heads=2, layers=2, patch_size=4, patch_stride=4)


def test_feature_map_shape_and_behaviour_reaches_the_blocks():
    torch.manual_seed(0)
    core = ViTCore(VIT, input_channels=4, image_size=(36, 64), behavior_channels=3).eval()
    x = torch.randn(5, 4, 36, 64)
    out = core(x)
    assert out.shape == (5, 8, 9, 16) and core.outchannels == 8
    other = x.clone()
    other[:, 1:] += 1.0  # only the (constant) behaviour channels change
    assert not torch.allclose(core(other), out)
    blind = ViTCore(VIT.model_copy(update={"behavior_injection": False}), 4, (36, 64), 3).eval()
    assert torch.equal(blind(other), blind(x)), "without injection the behaviour channels are ignored"
    overlapping = ViTCore(VIT.model_copy(update={"patch_stride": 2}), 4, (36, 64), 3)
    assert overlapping(x).shape == (5, 8, 17, 31)


def test_default_config_keeps_its_hash_and_bad_settings_are_refused():
    assert "core_type" not in canonical_json(BaselineModelConfig())
    assert config_hash("m", BaselineModelConfig(core_type="stacked2d")) == config_hash(
        "m", BaselineModelConfig()
    )
    with pytest.raises(ConfigError, match="multiple of heads"):
        validate(BaselineModelConfig, {"core_type": "vit", "vit": {"dim": 10, "heads": 4}}, "model.config")
    with pytest.raises(ConfigError, match="`vit` settings need core_type: vit"):
        validate(BaselineModelConfig, {"vit": {"dim": 8}}, "model.config")


@pytest.mark.slow  # more than 10 s measured here (2 cores, shared)
def test_vit_model_trains_reproducibly_under_the_same_readout_and_shifter():
    cfg = ViTModelConfig(vit=VIT)
    spec = vit_spec("sensorium.models.vit_core_full_gauss_readout", cfg)
    results = []
    for _ in range(2):
        scans = build_scans(RECS, spec.dataset_config, torch.device("cpu"))
        model = build_model(spec, RECS, scans)
        assert type(model.core).__name__ == "ViTCore" and model.shifter is not None
        result = train(
            model, scans, spec.trainer_config, batch_size=32, shuffle_seed=1, seed=3, progress=False
        )
        results.append(result)
    # it learns: the training objective falls every epoch (validation on this tiny data is too noisy)
    losses = [e.train_loss for e in results[0].history]
    assert len(losses) == 3 and all(a > b for a, b in zip(losses, losses[1:], strict=False)), losses
    for k, v in results[0].state_dict.items():
        assert torch.equal(v, results[1].state_dict[k]), k


def test_vit_core_under_the_winners_modulator():
    cfg = ModulatedViTModelConfig(
        vit=VIT,
        modulator_params={"include_gain": False, "include_history": False, "behav_state": False},
    )
    spec = vit_spec("sensorium.models.modulated_vit_core_full_gauss_readout", cfg)
    scans = build_scans(RECS, spec.dataset_config, torch.device("cpu"))
    model = build_model(spec, RECS, scans)
    key = next(iter(scans))
    batch = scans[key].batch(torch.arange(4))
    rates = model(**batch, data_key=key)
    assert rates.shape == (4, scans[key].n_neurons) and bool((rates > 0).all())


def test_local_mixing_is_an_addition_to_the_tokens_and_keeps_the_other_weights():
    torch.manual_seed(0)
    plain = ViTCore(VIT, 4, (36, 64), 3).eval()
    torch.manual_seed(0)
    local = ViTCore(VIT.model_copy(update={"local_kernel": 3}), 4, (36, 64), 3).eval()
    assert len(local.local) == VIT.layers and all(c.groups == VIT.dim for c in local.local)
    # the option's convolutions come last: every weight the plain core has starts the same
    for name, value in plain.state_dict().items():
        assert torch.equal(value, local.state_dict()[name]), name
    x = torch.randn(2, 4, 36, 64)
    assert local(x).shape == plain(x).shape
    assert not torch.allclose(local(x), plain(x), atol=1e-4), "the mixing changes the features"
    # the option is a pure addition to the residual stream: with its convolutions zeroed the two agree
    with torch.no_grad():
        for conv in local.local:
            conv.weight.zero_()
            conv.bias.zero_()
    assert torch.allclose(local(x), plain(x), atol=1e-6)
    with pytest.raises(ConfigError, match="local_kernel must be odd"):
        validate(ViTConfig, {"local_kernel": 4}, "model.config.vit")


def test_readout_of_every_block_concatenates_normalised_block_outputs():
    torch.manual_seed(0)
    core = ViTCore(VIT.model_copy(update={"readout_blocks": "all"}), 4, (36, 64), 3).eval()
    x = torch.randn(3, 4, 36, 64)
    out = core(x)
    assert core.outchannels == VIT.dim * VIT.layers and out.shape == (3, VIT.dim * VIT.layers, 9, 16)
    # the last block's part is exactly what the last-block core returns with the same weights
    torch.manual_seed(0)
    last = ViTCore(VIT, 4, (36, 64), 3).eval()
    last.load_state_dict({k: v for k, v in core.state_dict().items() if not k.startswith("block_norms")})
    assert torch.allclose(out[:, -VIT.dim :], last(x), atol=1e-6)
    # each block's features are layer-normed over the token width (mean 0 per token before the affine)
    first = out[:, : VIT.dim]
    assert torch.allclose(first.mean(1), torch.zeros_like(first.mean(1)), atol=1e-5)
    # the options stay out of the stored hash while at their defaults
    assert "readout_blocks" not in canonical_json(ViTConfig()) and "local_kernel" not in canonical_json(
        ViTConfig()
    )


def test_pixel_pathway_adds_full_resolution_linear_filters_beside_the_tokens():
    # patch 5, stride 4: token i's centre lies on input pixel 2 + 4 i, so the resampled tokens can be
    # compared with the plain core's tokens exactly there
    base = VIT.model_copy(update={"patch_size": 5, "patch_stride": 4})
    torch.manual_seed(0)
    plain = ViTCore(base, 4, (36, 64), 3).eval()
    torch.manual_seed(0)
    pixel = ViTCore(base.model_copy(update={"pixel_channels": 6, "pixel_kernel": 7}), 4, (36, 64), 3).eval()
    for name, value in plain.state_dict().items():
        assert torch.equal(value, pixel.state_dict()[name]), name
    x = torch.randn(3, 4, 36, 64)
    out = pixel(x)
    assert out.shape == (3, VIT.dim + 6, 36, 64) and pixel.outchannels == VIT.dim + 6
    tokens = plain(x)  # [3, dim, 8, 15]
    h, w = tokens.shape[-2:]
    at_centres = out[:, : VIT.dim, 2 : 2 + 4 * h : 4, 2 : 2 + 4 * w : 4]
    assert torch.allclose(at_centres, tokens, atol=1e-5)
    # between two centres the resampled value is the linear interpolation of the neighbours
    assert torch.allclose(out[:, : VIT.dim, 2, 4], (tokens[..., 0, 0] + tokens[..., 0, 1]) / 2, atol=1e-5)
    # the pathway is linear in the image at prediction time (an affine batch norm after a bias-free conv)
    lin = pixel.pixel

    def linear_part(images: torch.Tensor) -> torch.Tensor:
        return pixel(torch.cat([images, x[:, 1:]], dim=1))[:, VIT.dim :]

    a, b = torch.randn(3, 1, 36, 64), torch.randn(3, 1, 36, 64)
    zero = linear_part(torch.zeros_like(a))
    assert torch.allclose(
        linear_part(a + b) - zero, (linear_part(a) - zero) + (linear_part(b) - zero), atol=1e-4
    )
    assert not torch.allclose(linear_part(a), zero), "the filters respond to the image"
    # its filters start as the Gabor bank's quadrature pairs (zero mean) and are smoothed with the patches'
    weights = lin[0].weight[:, 0]
    assert torch.allclose(weights.sum(dim=(1, 2)), torch.zeros(6), atol=1e-5)
    smoothed = ViTCore(base.model_copy(update={"pixel_channels": 6, "pixel_kernel": 7}), 4, (36, 64), 3, 2.0)
    only_patch = ViTCore(base, 4, (36, 64), 3, 2.0)
    assert smoothed.regularizer() > only_patch.regularizer()


def test_tokens_are_resampled_at_their_true_centres_with_overlapping_patches_and_an_even_stem():
    # patch 6, stride 3 after a stem of even kernel 4 (its map is one pixel larger, shifted by half a
    # pixel): token i's centre is input pixel 2.5 - 0.5 + 3 i, a whole pixel again
    stem = VIT.model_copy(update={"patch_size": 6, "patch_stride": 3, "stem_channels": 2, "stem_kernel": 4})
    torch.manual_seed(0)
    plain = ViTCore(stem, 4, (36, 64), 3).eval()
    torch.manual_seed(0)
    pixel = ViTCore(stem.model_copy(update={"pixel_channels": 2, "pixel_kernel": 5}), 4, (36, 64), 3).eval()
    x = torch.randn(2, 4, 36, 64)
    tokens, out = plain(x), pixel(x)
    h, w = tokens.shape[-2:]
    assert (h, w) == (11, 20) and out.shape[-2:] == (36, 64)
    assert torch.allclose(out[:, : VIT.dim, 2 : 2 + 3 * h : 3, 2 : 2 + 3 * w : 3], tokens, atol=1e-5)
    # without the stem the centres fall between pixels (2.5 + 3 i): pixel 3 lies 1/6 of the way to token 1,
    # and pixels before token 0's centre take its value (border)
    no_stem = stem.model_copy(update={"stem_channels": 0})
    torch.manual_seed(0)
    plain = ViTCore(no_stem, 4, (36, 64), 3).eval()
    torch.manual_seed(0)
    pixel = ViTCore(
        no_stem.model_copy(update={"pixel_channels": 2, "pixel_kernel": 5}), 4, (36, 64), 3
    ).eval()
    tokens, out = plain(x), pixel(x)
    expected = tokens[..., 0, 0] * 5 / 6 + tokens[..., 0, 1] / 6
    assert torch.allclose(out[:, : VIT.dim, 0, 3], expected, atol=1e-5)
    assert torch.allclose(out[:, : VIT.dim, 0, 0], tokens[..., 0, 0], atol=1e-5)
    # without input smoothing there is no penalty, with the pathway or without
    assert float(pixel.regularizer()) == 0.0


def test_pixel_energy_pairs_the_filters_and_bad_settings_are_refused():
    cfg = VIT.model_copy(update={"pixel_channels": 4, "pixel_energy": True})
    torch.manual_seed(0)
    core = ViTCore(cfg, 4, (36, 64), 3).eval()
    out = core(torch.randn(2, 4, 36, 64))
    assert core.outchannels == VIT.dim + 4 + 2 and out.shape == (2, VIT.dim + 6, 36, 64)
    lin, energy = out[:, VIT.dim : VIT.dim + 4], out[:, VIT.dim + 4 :]
    assert torch.allclose(energy, (lin[:, 0::2] ** 2 + lin[:, 1::2] ** 2 + 1e-6).sqrt())
    with pytest.raises(ConfigError, match="pixel_kernel must be odd"):
        validate(ViTConfig, {"pixel_channels": 4, "pixel_kernel": 12}, "model.config.vit")
    with pytest.raises(ConfigError, match="pixel_channels must be even"):
        validate(ViTConfig, {"pixel_channels": 5, "pixel_energy": True}, "model.config.vit")
    assert "pixel" not in canonical_json(ViTConfig())


@pytest.mark.slow  # more than 10 s measured here (2 cores, shared)
def test_vit_model_with_the_pixel_pathway_trains_reproducibly():
    cfg = ViTModelConfig(vit=VIT.model_copy(update={"pixel_channels": 4}))
    states = train_twice(vit_spec("sensorium.models.vit_core_full_gauss_readout", cfg))
    assert any(k.startswith("core.pixel.") for k in states[0])
    for k, v in states[0].items():
        assert torch.equal(v, states[1][k]), k
