"""pipeline.models.bank_core: the fixed Gabor bank's channels sit on the core's own map cells."""

from __future__ import annotations

import pytest
import torch

from pipeline.configs import BaselineModelConfig, ConfigError, canonical_json, validate
from pipeline.models.bank_core import BankedCore
from pipeline.models.build import ScanGeometry, stacked_core_full_gauss_readout
from pipeline.models.core import Stacked2dCore
from pipeline.models.gabor import gabor_bank
from pipeline.models.rf_map import MAP_KERNEL, feature_maps


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(input_kern=9, hidden_kern=10, layers=3, pad_input=False),  # the winner's: origin 3, 30 x 58
        dict(input_kern=8, hidden_kern=5, layers=2, pad_input=False),  # origin 3.5: between pixels
        dict(input_kern=8, hidden_kern=5, layers=2, pad_input=True),  # origin -0.5: off the image
        dict(input_kern=9, hidden_kern=7, layers=2, pad_input=False),  # origin 4
    ],
)
def test_bank_channels_are_the_bank_at_each_cells_pixel(kwargs):
    torch.manual_seed(0)
    core = Stacked2dCore(input_channels=2, hidden_channels=4, gamma_input=0.0, stack=-1, **kwargs)
    origin, _ = core.map_geometry()
    if origin < 0:
        with pytest.raises(ValueError, match="leaves the image"):
            BankedCore(core, pairs=3).eval()(torch.randn(1, 2, 36, 64))
        return
    banked = BankedCore(core, pairs=3).eval()
    x = torch.randn(2, 2, 36, 64)
    out = banked(x)
    learned = core(x)
    h, w = learned.shape[-2:]
    assert out.shape == (2, 4 + 9, h, w) and torch.equal(out[:, :4], learned)
    # eval-mode batch norm at its initial statistics: x / sqrt(1 + eps)
    bank = feature_maps(x[:, :1], gabor_bank(6, MAP_KERNEL)) / (1 + banked.norm.eps) ** 0.5
    for cell_y, cell_x in ((0, 0), (5, 11), (h - 1, w - 1)):
        # cell (i, j) is centred on input pixel origin + (i, j); between pixels the mean of the 2x2 around it
        ys = [int(origin + cell_y)] if origin % 1 == 0 else [int(origin + cell_y), int(origin + cell_y) + 1]
        xs = [int(origin + cell_x)] if origin % 1 == 0 else [int(origin + cell_x), int(origin + cell_x) + 1]
        expect = bank[:, :, ys][:, :, :, xs].mean(dim=(2, 3))
        assert torch.allclose(out[:, 4:, cell_y, cell_x], expect, atol=1e-5)
    assert banked.map_geometry() == core.map_geometry()


def test_the_bank_is_fixed_and_trains_only_its_norm():
    torch.manual_seed(0)
    core = Stacked2dCore(
        input_channels=1, hidden_channels=4, input_kern=5, hidden_kern=3, layers=2, gamma_input=0.0
    )
    banked = BankedCore(core, pairs=2)
    names = {name for name, _ in banked.named_parameters()}
    assert {"norm.weight", "norm.bias"} <= names and not any("bank" in n for n in names)
    assert "bank" not in banked.state_dict()  # rebuilt from the config, never read from a checkpoint
    banked(torch.randn(3, 1, 36, 64)).sum().backward()
    assert banked.norm.weight.grad is not None and core.features[0].conv.weight.grad is not None


def test_config_field_is_hash_neutral_and_builds_a_banked_model():
    assert '"bank_pairs"' not in canonical_json(BaselineModelConfig())
    with pytest.raises(ConfigError, match="bank_pairs"):
        validate(BaselineModelConfig, {"bank_pairs": -1}, "model.config")
    # refused when the experiment is added, not on a worker: a map off the image, a ViT without a bank
    off = {"bank_pairs": 2, "input_kern": 8, "hidden_kern": 5, "layers": 2, "pad_input": True}
    with pytest.raises(ConfigError, match="off the image"):
        validate(BaselineModelConfig, off, "model.config")
    with pytest.raises(ConfigError, match="ViT core has none"):
        validate(BaselineModelConfig, {"bank_pairs": 2, "core_type": "vit"}, "model.config")
    cfg = BaselineModelConfig(hidden_channels=4, layers=2, input_kern=5, hidden_kern=3, bank_pairs=2)
    assert '"bank_pairs":2' in canonical_json(cfg).replace(" ", "")
    scans = {"a": ScanGeometry(n_neurons=7, cortex_xy=torch.rand(7, 2).numpy(), n_trials=10)}
    model = stacked_core_full_gauss_readout(cfg, scans, input_channels=4, image_size=(36, 64), seed=1)
    assert isinstance(model.core, BankedCore)
    assert model.readout["a"].in_shape[0] == 4 + 6
    out = model(torch.randn(5, 4, 36, 64), "a", pupil_center=torch.zeros(5, 2))
    assert out.shape == (5, 7) and bool((out > 0).all())
