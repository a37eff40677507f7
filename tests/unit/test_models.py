"""The baseline model (pipeline.models): shapes, NP-compatible names, regularisers, readout maths, seeding."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.configs import BaselineModelConfig, GridMeanPredictorConfig
from pipeline.models import (
    FullGaussian2d,
    LaplaceL2norm,
    ScanGeometry,
    Stacked2dCore,
    core_output_shape,
    normalize_source_grid,
    stacked_core_full_gauss_readout,
)

H, W = 36, 64
C_IN = 4


def small_cfg(**overrides) -> BaselineModelConfig:
    return BaselineModelConfig(**{"hidden_channels": 8, **overrides})


def scans_of(*sizes: int, seed: int = 0) -> dict[str, ScanGeometry]:
    rng = np.random.default_rng(seed)
    return {f"s{i + 1}": ScanGeometry(n, rng.normal(size=(n, 2)) * 100.0) for i, n in enumerate(sizes)}


def build(cfg: BaselineModelConfig | None = None, scans=None, seed: int = 0):
    cfg = cfg or small_cfg()
    scans = scans or scans_of(7)
    return stacked_core_full_gauss_readout(cfg, scans, input_channels=C_IN, image_size=(H, W), seed=seed)


def batch(b: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, C_IN, H, W, generator=g), torch.randn(b, 2, generator=g)


# ---------------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------------


def test_output_shapes_and_positivity_for_two_scans():
    model = build(scans=scans_of(7, 12))
    images, pupil = batch()
    for mode in (model.train, model.eval):
        mode()
        for key, n in (("s1", 7), ("s2", 12)):
            rates = model(images, key, pupil_center=pupil)
            assert rates.shape == (3, n)
            assert torch.all(rates > 0)
            assert model.readout_drive(images, key, pupil_center=pupil).shape == (3, n)


@pytest.mark.parametrize(("hidden_kern", "expected"), [(7, (28, 56)), (10, (31, 59))])
def test_core_output_size(hidden_kern, expected):
    core = Stacked2dCore(
        C_IN,
        8,
        input_kern=9,
        hidden_kern=hidden_kern,
        layers=4,
        pad_input=False,
        stack=-1,
        depth_separable=True,
    )
    assert core_output_shape(core, (C_IN, H, W)) == (8, *expected)
    assert core.training  # the dummy forward restores train mode


def test_stack_none_concatenates_all_layers():
    core = Stacked2dCore(C_IN, 8, input_kern=9, hidden_kern=7, layers=3, pad_input=False, stack=None)
    assert core_output_shape(core, (C_IN, H, W)) == (24, 28, 56)
    assert core.outchannels == 24


def test_stacking_layers_whose_maps_grow_is_refused_at_config_time():
    from pipeline.configs import ConfigError, validate

    # an even hidden kernel grows every hidden layer's map by a pixel: the layers cannot be concatenated,
    # which would otherwise surface as a size mismatch inside the first forward pass of a training run
    with pytest.raises(ConfigError, match="grows each hidden layer's map by one pixel"):
        validate(BaselineModelConfig, {"stack": None, "hidden_kern": 10}, "model.config")
    assert validate(BaselineModelConfig, {"stack": None, "hidden_kern": 9}, "model.config").stack is None
    assert validate(BaselineModelConfig, {"stack": -1, "hidden_kern": 10}, "model.config").stack == -1


# ---------------------------------------------------------------------------------------------------
# NP 0.3.0 naming
# ---------------------------------------------------------------------------------------------------

# From neuralpredictors 0.3.0 (Stacked2dCore with depth_separable=True, bias=False, batch_norm=True;
# MultiReadoutSharedParametersBase of FullGaussian2d with a cortex grid_mean_predictor, hidden_layers=1,
# final_tanh=True; MLPShifter with shift_layers=3; FiringRateEncoder), one data_key "s1", 4 layers,
# in state_dict order.
NP030_KEYS = [
    "core._input_weights_regularizer.laplace.filter",
    "core.features.layer0.conv.weight",
    *[f"core.features.layer0.norm.{s}" for s in ("weight", "bias", "running_mean", "running_var")],
    "core.features.layer0.norm.num_batches_tracked",
]
for _l in (1, 2, 3):
    NP030_KEYS += [
        f"core.features.layer{_l}.ds_conv.in_depth_conv.weight",
        f"core.features.layer{_l}.ds_conv.spatial_conv.weight",
        f"core.features.layer{_l}.ds_conv.out_depth_conv.weight",
        f"core.features.layer{_l}.norm.weight",
        f"core.features.layer{_l}.norm.bias",
        f"core.features.layer{_l}.norm.running_mean",
        f"core.features.layer{_l}.norm.running_var",
        f"core.features.layer{_l}.norm.num_batches_tracked",
    ]
NP030_KEYS += [
    "readout.s1.sigma",
    "readout.s1._features",
    "readout.s1.bias",
    "readout.s1.source_grid",
    "readout.s1.mu_transform.0.weight",
    "readout.s1.mu_transform.0.bias",
    "readout.s1.mu_transform.2.weight",
    "readout.s1.mu_transform.2.bias",
    "shifter.s1.mlp.0.weight",
    "shifter.s1.mlp.0.bias",
    "shifter.s1.mlp.2.weight",
    "shifter.s1.mlp.2.bias",
    "shifter.s1.mlp.4.weight",
    "shifter.s1.mlp.4.bias",
]


def test_state_dict_keys_match_neuralpredictors_030():
    model = build(small_cfg(), scans_of(7))
    sd = model.state_dict()
    assert list(sd) == NP030_KEYS
    c, n = 8, 7
    assert sd["readout.s1._features"].shape == (1, c, 1, n)
    assert sd["readout.s1.sigma"].shape == (1, n, 2, 2)
    assert sd["readout.s1.bias"].shape == (n,)
    assert sd["readout.s1.source_grid"].shape == (n, 2)
    assert sd["readout.s1.mu_transform.0.weight"].shape == (30, 2)
    assert sd["readout.s1.mu_transform.2.weight"].shape == (2, 30)
    assert sd["core.features.layer0.conv.weight"].shape == (c, C_IN, 9, 9)
    assert sd["core.features.layer1.ds_conv.spatial_conv.weight"].shape == (c, 1, 7, 7)
    assert sd["shifter.s1.mlp.0.weight"].shape == (5, 2)
    assert sd["shifter.s1.mlp.4.weight"].shape == (2, 5)
    # a checkpoint with these names loads strictly into a freshly built model
    build(small_cfg(), scans_of(7), seed=5).load_state_dict(sd, strict=True)


def test_learned_grid_is_named_mu():
    sd = build(small_cfg(grid_mean_predictor=None, shifter=False)).state_dict()
    readout_keys = [k for k in sd if k.startswith("readout.")]
    assert readout_keys == ["readout.s1._mu", "readout.s1.sigma", "readout.s1._features", "readout.s1.bias"]
    assert sd["readout.s1._mu"].shape == (1, 7, 1, 2)
    assert not any(k.startswith("shifter.") for k in sd)


# ---------------------------------------------------------------------------------------------------
# regularisers
# ---------------------------------------------------------------------------------------------------


def _laplace_reference(weight: np.ndarray, avg: bool) -> float:
    """sum (or mean) over filters of (L * w)^2 with zero padding 1, over sum (or mean) of w^2, by loops."""
    lap = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=np.float64)
    out_c, in_c, k1, k2 = weight.shape
    num, count = 0.0, 0
    for o in range(out_c):
        for i in range(in_c):
            padded = np.zeros((k1 + 2, k2 + 2))
            padded[1:-1, 1:-1] = weight[o, i]
            for y in range(k1):
                for x in range(k2):
                    num += float((padded[y : y + 3, x : x + 3] * lap).sum()) ** 2
                    count += 1
    den = float((weight.astype(np.float64) ** 2).sum())
    return (num / count) / (den / weight.size) if avg else num / den


@pytest.mark.parametrize("avg", [False, True])
def test_laplace_regulariser_matches_loop_reference(avg):
    weight = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    got = LaplaceL2norm(padding=None)(weight, avg=avg).item()
    assert got == pytest.approx(_laplace_reference(weight.numpy(), avg), rel=1e-5)


def test_core_regulariser_is_gamma_input_times_laplace():
    core = Stacked2dCore(
        C_IN, 4, input_kern=5, hidden_kern=3, layers=2, gamma_input=2.5, depth_separable=True
    )
    ref = _laplace_reference(core.features[0].conv.weight.detach().numpy(), avg=False)
    assert core.regularizer().item() == pytest.approx(2.5 * ref, rel=1e-5)


def test_readout_l1_and_total_regulariser():
    cfg = small_cfg(gamma_readout=0.3, gamma_input=1.7)
    model = build(cfg)
    with torch.no_grad():
        model.readout["s1"]._features.normal_()
    feats = model.readout["s1"].features
    assert model.readout.regularizer("s1").item() == pytest.approx(0.3 * feats.abs().sum().item(), rel=1e-6)
    total = model.core.regularizer() + model.readout.regularizer("s1")
    assert model.regularizer("s1").item() == pytest.approx(total.item(), rel=1e-6)
    assert model.regularizer("s1").ndim == 0


# ---------------------------------------------------------------------------------------------------
# readout maths
# ---------------------------------------------------------------------------------------------------


def _bilinear(fmap: np.ndarray, px: float, py: float) -> float:
    """Bilinear value of fmap [h, w] at normalised (x, y) in [-1, 1] with align_corners=True, zero outside."""
    h, w = fmap.shape
    x, y = (px + 1) / 2 * (w - 1), (py + 1) / 2 * (h - 1)
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * fmap[yy, xx]
    return total


def test_readout_eval_equals_hand_bilinear_interpolation_with_shift():
    c, h, w = 2, 5, 9
    readout = FullGaussian2d((c, h, w), outdims=3, bias=True, init_mu_range=0.5, init_sigma=0.1).eval()
    mu = torch.tensor([[0.3, -0.45], [-0.8, 0.1], [0.0, 0.0]])
    with torch.no_grad():
        readout._mu.copy_(mu.view(1, 3, 1, 2))
        readout._features.copy_(torch.tensor([[1.5, -0.5, 2.0], [0.25, 1.0, -1.0]]).view(1, c, 1, 3))
        readout.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    fmap = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(3))
    shift = torch.tensor([[0.0, 0.0], [0.12, -0.3]])
    out = readout(fmap, shift=shift)
    feats = readout.features.detach().view(c, 3).numpy()
    for b in range(2):
        for n in range(3):
            px, py = (mu[n] + shift[b]).tolist()  # x indexes width, y indexes height
            expected = sum(feats[ch, n] * _bilinear(fmap[b, ch].numpy(), px, py) for ch in range(c))
            expected += readout.bias[n].item()
            assert out[b, n].item() == pytest.approx(expected, abs=1e-5)


def test_readout_linear_map_reads_pixel_coordinates():
    """A map equal to its own column index returns the x pixel coordinate: checks the (x, y) convention."""
    h, w = 4, 7
    readout = FullGaussian2d((1, h, w), outdims=1, bias=False, init_mu_range=0.5, init_sigma=0.1).eval()
    with torch.no_grad():
        readout._mu.copy_(torch.tensor([0.5, -1.0]).view(1, 1, 1, 2))
        readout._features.fill_(1.0)
    cols = torch.arange(w, dtype=torch.float32).expand(1, 1, h, w)
    assert readout(cols).item() == pytest.approx((0.5 + 1) / 2 * (w - 1), abs=1e-5)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(1, 1, h, w)
    assert readout(rows).item() == pytest.approx(0.0, abs=1e-6)


def test_training_samples_differ_eval_is_deterministic():
    model = build()
    images, pupil = batch()
    model.train()
    torch.manual_seed(0)
    a = model(images, "s1", pupil_center=pupil)
    b = model(images, "s1", pupil_center=pupil)
    assert not torch.allclose(a, b)
    torch.manual_seed(0)
    assert torch.equal(a, model(images, "s1", pupil_center=pupil))  # the global RNG drives the sampling
    model.eval()
    assert torch.equal(model(images, "s1", pupil_center=pupil), model(images, "s1", pupil_center=pupil))


def test_training_positions_sampled_per_image_and_clamped():
    torch.manual_seed(0)  # not the global stream's state after whichever tests ran before
    readout = FullGaussian2d((2, 5, 5), outdims=4, init_mu_range=1.0, init_sigma=2.0).train()
    grid = readout.sample_grid(batch_size=3)
    assert grid.shape == (3, 4, 1, 2)
    assert not torch.equal(grid[0], grid[1])
    assert grid.abs().max() <= 1.0
    # grid_sample's CPU kernels run ~10x slower on a grid with the batch axis innermost (the einsum's)
    assert grid.is_contiguous()


# ---------------------------------------------------------------------------------------------------
# grid mean predictor
# ---------------------------------------------------------------------------------------------------


def test_source_grid_normalisation():
    xy = np.array([[0.0, 0.0], [10.0, 2.0], [20.0, 4.0], [30.0, 10.0]])
    got = normalize_source_grid(xy)
    centred = xy - xy.mean(axis=0)
    np.testing.assert_allclose(got, centred / np.abs(centred).max(), rtol=1e-6)  # one scale for both axes
    assert np.abs(got).max() == pytest.approx(1.0)
    np.testing.assert_allclose(got.mean(axis=0), 0.0, atol=1e-6)


def test_grid_predictor_positions_depend_on_cortex_coordinates():
    scans = scans_of(20)
    model = build(scans=scans)
    readout = model.readout["s1"]
    np.testing.assert_allclose(
        readout.source_grid.numpy(), normalize_source_grid(scans["s1"].cortex_xy), rtol=1e-6
    )
    mu = readout.mu
    assert mu.shape == (1, 20, 1, 2)
    assert mu.abs().max() <= 1.0
    assert len({tuple(np.round(p, 6)) for p in mu.detach().view(20, 2).numpy()}) == 20
    # same MLP, other coordinates -> other positions
    other = build(scans={"s1": ScanGeometry(20, scans["s1"].cortex_xy[::-1].copy())})
    torch.testing.assert_close(other.readout["s1"].mu, mu.flip(1))


def test_grid_predictor_architecture_follows_config():
    gmp = GridMeanPredictorConfig(hidden_layers=2, hidden_features=6, nonlinearity="ReLU", final_tanh=False)
    mlp = build(small_cfg(grid_mean_predictor=gmp)).readout["s1"].mu_transform
    kinds = [type(m).__name__ for m in mlp]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] == [6, 6, 2]


# ---------------------------------------------------------------------------------------------------
# seeding, encoder behaviour, devices
# ---------------------------------------------------------------------------------------------------


def test_seed_controls_initialisation():
    a, b, c = build(seed=1).state_dict(), build(seed=1).state_dict(), build(seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["core.features.layer0.conv.weight"], c["core.features.layer0.conv.weight"])
    assert not torch.equal(a["readout.s1.sigma"], c["readout.s1.sigma"])


def test_shifter_needs_pupil_center_and_batch_kwargs_are_ignored():
    model = build().eval()
    images, pupil = batch()
    with pytest.raises(ValueError, match="pupil_center"):
        model(images, "s1")
    extra = {"responses": torch.zeros(3, 7), "behavior": torch.zeros(3, 3), "trial_id": torch.arange(3)}
    out = model(images=images, data_key="s1", pupil_center=pupil, **extra)
    assert torch.equal(out, model(images, "s1", pupil_center=pupil))
    no_shift = build(small_cfg(shifter=False)).eval()
    assert no_shift(images, "s1").shape == (3, 7)


def test_shift_changes_eval_output():
    model = build().eval()
    images, pupil = batch()
    assert not torch.allclose(
        model(images, "s1", pupil_center=pupil), model(images, "s1", pupil_center=-pupil)
    )


def test_detach_core_stops_core_gradients():
    model = build()
    images, pupil = batch()
    model(images, "s1", pupil_center=pupil, detach_core=True).sum().backward()
    assert model.core.features[0].conv.weight.grad is None
    assert model.readout["s1"].sigma.grad is not None


def test_elu_offset_shifts_output():
    images, pupil = batch()
    base = build(small_cfg(elu_offset=0.0)).eval()
    drive = base.readout_drive(images, "s1", pupil_center=pupil)
    shifted = build(small_cfg(elu_offset=-1.0)).eval()
    expected = torch.nn.functional.elu(drive - 1.0) + 1.0
    torch.testing.assert_close(shifted(images, "s1", pupil_center=pupil), expected)


def test_model_follows_dtype_moves():
    model = build().to(torch.float64).train()
    images, pupil = batch()
    out = model(images.double(), "s1", pupil_center=pupil.double())
    assert out.dtype == torch.float64


def test_no_hard_coded_device():
    for path in (Path(__file__).resolve().parents[2] / "pipeline" / "models").glob("*.py"):
        assert "cuda" not in path.read_text().lower(), path
