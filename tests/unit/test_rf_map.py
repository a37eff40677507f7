"""Receptive-field mapping for the readout's start (model.config.init_mu: rf_map, issue 12)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from pipeline.configs import (
    BaselineModelConfig,
    ConfigError,
    DatasetConfig,
    TrainerConfig,
    ViTConfig,
    canonical_json,
    validate,
)
from pipeline.data.images import rescale_bilinear
from pipeline.data.synth import MODEL_SCALE, SynthConfig, synthesize
from pipeline.models import rf_map
from pipeline.models.core import Stacked2dCore
from pipeline.models.gabor import gabor_bank
from pipeline.models.rf_map import (
    MAP_KERNEL,
    _peaks,
    correlation_maps,
    map_receptive_fields,
    mapped_subset,
    readout_positions,
    retinotopic_fit,
)
from pipeline.models.vit import ViTCore
from pipeline.run import RunSpec, build_model, build_scans, run_training, start_as_configured, start_at_rf_map
from pipeline.training.progress import PROGRESS_LOGGER
from pipeline.training.trainer import train
from tests.factories import RECS


def _true_centres_px(truth: dict, h: int, w: int) -> np.ndarray:
    rf = truth["rf_center"].astype(np.float64)  # normalised [-1, 1] (x, y)
    return np.stack([(rf[:, 0] + 1) / 2 * (w - 1), (rf[:, 1] + 1) / 2 * (h - 1)], axis=1)


@pytest.mark.slow  # more than 10 s measured here (2 cores, shared)
def test_mapping_finds_the_planted_receptive_fields():
    """On a synthetic recording (planted Gabor / energy receptive fields, eye shifts, state, history),
    the mapped centres lie within one or two pixels of the planted ones, much closer than chance."""
    rec, truth = synthesize(SynthConfig(n_neurons=60, n_trials=700, seed=5))
    train = np.asarray(rec.tiers) == "train"
    images = rescale_bilinear(rec.images[train][:, 0].astype(np.float32), MODEL_SCALE)
    images = (images - images.mean()) / images.std()
    h, w = images.shape[1:]
    rf = map_receptive_fields(
        torch.from_numpy(images[:, None]),
        torch.from_numpy(np.asarray(rec.responses[train], dtype=np.float32)),
        np.asarray(rec.neurons["cell_motor_coordinates"], dtype=np.float64)[:, :2],
    )
    true = _true_centres_px(truth, h, w)
    error = np.linalg.norm(rf.centres - true, axis=1)
    assert rf.centres.shape == rf.peaks.shape == (60, 2)
    assert np.median(error) < 1.6, np.median(error)  # 1.2 px here; 0.8 px at demo size
    # the retinotopic fit is what makes the start reliable: single peaks stray further on average
    assert error.mean() < np.linalg.norm(rf.peaks - true, axis=1).mean()
    shuffled = np.linalg.norm(rf.centres - true[np.random.default_rng(0).permutation(60)], axis=1)
    assert np.median(shuffled) > 3 * np.median(error)


@pytest.mark.slow  # about 10 s here
def test_a_capped_map_places_the_unmapped_neurons_by_the_fit():
    """rf_map_neurons: 150 of 240 neurons mapped; the other 90 start on the retinotopic fit made on them,
    within a pixel or two of their planted centres like the mapped ones (the full map: 0.95 px median
    here, the capped one 1.14 px; fewer peaks make the cubic fit less certain, hence the config's
    minimum of 100)."""
    rec, truth = synthesize(SynthConfig(n_neurons=240, n_trials=700, seed=5))
    train = np.asarray(rec.tiers) == "train"
    images = rescale_bilinear(rec.images[train][:, 0].astype(np.float32), MODEL_SCALE)
    images = torch.from_numpy(((images - images.mean()) / images.std())[:, None])
    responses = torch.from_numpy(np.asarray(rec.responses[train], dtype=np.float32))
    cortex = np.asarray(rec.neurons["cell_motor_coordinates"], dtype=np.float64)[:, :2]
    true = _true_centres_px(truth, *images.shape[-2:])
    part = map_receptive_fields(images, responses, cortex, max_neurons=150)
    assert part.mapped.sum() == 150 and np.isnan(part.peaks[~part.mapped]).all()
    error = np.linalg.norm(part.centres - true, axis=1)
    assert np.median(error) < 1.6 and np.median(error[~part.mapped]) < 1.6, error
    shuffled = np.linalg.norm(part.centres - true[np.random.default_rng(0).permutation(240)], axis=1)
    assert np.median(shuffled) > 3 * np.median(error[~part.mapped])


def _direct_maps(images: torch.Tensor, responses: torch.Tensor) -> np.ndarray:
    """correlation_maps without smoothing, in float64 and the plain way: every feature at every pixel
    z-scored over trials, correlated with every neuron's log1p-scaled response, squared and summed."""
    T, _, H, W = images.shape
    bank = gabor_bank(2 * rf_map.MAP_PAIRS, MAP_KERNEL).double()
    lin = torch.nn.functional.conv2d(images.double(), bank[:, None], padding=MAP_KERNEL // 2)
    feats = torch.cat([lin, torch.sqrt(lin[:, 0::2] ** 2 + lin[:, 1::2] ** 2)], 1).reshape(T, -1, H * W)
    r = torch.log1p(responses.double().clamp_min(0) / responses.double().clamp_min(0).mean(0))
    maps = np.zeros((responses.shape[1], H * W))
    for n in range(responses.shape[1]):
        for j in range(feats.shape[1]):
            for p in range(H * W):
                f = feats[:, j, p]
                if f.std() > 1e-9 * max(f.abs().max().item(), 1.0):  # a constant feature: no correlation
                    maps[n, p] += np.corrcoef(r[:, n].numpy(), f.numpy())[0, 1] ** 2
    return maps.reshape(-1, H, W)


@pytest.mark.parametrize("bank_pairs", [24, 10, 6])  # 10, 6: a last filtering group short or alone
def test_correlation_maps_match_a_direct_loop_for_any_chunking(bank_pairs, monkeypatch):
    monkeypatch.setattr(rf_map, "MAP_PAIRS", bank_pairs)  # as benchmarks/memory.py --rf-map-pairs does
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(30, 1, 5, 7, generator=gen) + 0.5  # features with a mean: the variance's mean term
    responses = torch.rand(30, 3, generator=gen) ** 3
    direct = _direct_maps(images, responses)
    for pairs in (1, 2, 3):  # 3: uneven chunks within each filtering group of 8 pairs
        maps = correlation_maps(images, responses, pairs_per_chunk=pairs, smooth_px=0)
        assert maps.shape == (3, 5, 7)
        np.testing.assert_allclose(maps, direct, rtol=2e-5, atol=1e-6)


def test_a_region_the_same_in_every_image_maps_to_nothing():
    gen = torch.Generator().manual_seed(4)
    images = torch.randn(40, 1, 20, 30, generator=gen)
    images[..., 22:] = 3.0  # a blank border of value 3 in every image, wider than the filters' reach
    responses = torch.rand(40, 4, generator=gen) ** 3
    maps = correlation_maps(images, responses, smooth_px=0)
    assert maps[..., 28:].max() < 1e-6 * maps.max()  # rounding made 5 % of the maximum there before


def test_peaks_are_refined_below_a_pixel():
    yy, xx = np.mgrid[0:20, 0:30].astype(float)
    blob = np.exp(-((xx - 12.3) ** 2 + (yy - 7.6) ** 2) / (2 * 2.0**2))
    ((x, y),) = _peaks(blob[None])
    assert abs(x - 12.3) < 0.1 and abs(y - 7.6) < 0.1
    edge = np.zeros((1, 5, 5))
    edge[0, 0, 4] = 1.0  # a peak on the border is kept as it is
    assert _peaks(edge).tolist() == [[4.0, 0.0]]


def test_retinotopic_fit_ignores_stray_peaks():
    rng = np.random.default_rng(1)
    coords = rng.uniform(0, 800, (80, 2))
    z = (coords - 400) / 400
    smooth = np.stack(
        [30 + 20 * np.sin(1.3 * z[:, 0]) + 3 * z[:, 1], 17 + 10 * z[:, 1] + 2 * z[:, 0] ** 2], 1
    )
    peaks = smooth + 0.2 * rng.standard_normal(smooth.shape)
    stray = rng.permutation(80)[:15]
    peaks[stray] = rng.uniform(0, [63, 35], (15, 2))  # weak neurons: peaks anywhere
    fitted, inliers = retinotopic_fit(peaks, coords)
    assert np.abs(fitted - smooth).max() < 1.0
    assert inliers[stray].mean() < 0.3 and inliers[np.setdiff1d(np.arange(80), stray)].all()
    few, keep = retinotopic_fit(peaks[:5], coords[:5])  # too few neurons for any map
    assert np.allclose(few, peaks[:5].mean(0)) and keep.all()
    plane = np.c_[coords[:20] @ [0.05, 0.01], coords[:20] @ [0.0, 0.03]] + 2.0
    linear, _ = retinotopic_fit(plane, coords[:20])  # 20 neurons: a linear map, exact for a plane
    assert np.allclose(linear, plane)


def test_readout_coordinates_follow_the_maps_cells():
    # a full-size map: pixel 0 is -1, the last pixel +1 (align_corners=True)
    assert np.allclose(readout_positions(np.array([[0.0, 0.0], [63.0, 35.0]]), (36, 64)), [[-1, -1], [1, 1]])
    # a token map of 20 x 11 tokens 3 px apart, the first centred at pixel 2.5
    pos = readout_positions(np.array([[2.5, 2.5], [59.5, 32.5], [31.0, 17.5]]), (11, 20), 2.5, 3.0)
    assert np.allclose(pos, [[-1, -1], [1, 1], [0, 0]])


def _support_centre(core: torch.nn.Module, x: torch.Tensor, cell: tuple[int, int]) -> tuple[float, float]:
    """Centre (x, y) in input pixels of the inputs that reach output ``cell`` (midpoint of the support of
    the gradient of that cell's channel sum)."""
    x = x.clone().requires_grad_(True)
    core(x)[0, :, cell[0], cell[1]].sum().backward()
    reach = x.grad[0].abs().sum(0) > 0
    ys, xs = np.nonzero(reach.numpy())
    return (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(input_kern=9, hidden_kern=10, layers=3, pad_input=False),  # the winner's: 30 x 58 maps
        dict(input_kern=9, hidden_kern=7, layers=4, pad_input=True),  # the baseline's: the image's size
        dict(input_kern=8, hidden_kern=5, layers=2, pad_input=True),  # an even input kernel
    ],
)
def test_cnn_map_geometry_is_where_each_cell_looks(kwargs):
    torch.manual_seed(0)
    core = Stacked2dCore(input_channels=1, hidden_channels=4, gamma_input=0.0, stack=-1, **kwargs).eval()
    origin, stride = core.map_geometry()
    x = torch.randn(1, 1, 36, 64)
    for cell in ((14, 28), (15, 29)):  # far enough from the border for the whole support to fit
        cx, cy = _support_centre(core, x, cell)
        assert (cx, cy) == (origin + stride * cell[1], origin + stride * cell[0]), (cell, cx, cy, origin)


def test_vit_map_geometry_is_its_patch_centres():
    torch.manual_seed(0)
    core = ViTCore(ViTConfig(dim=8, heads=2, layers=1, patch_size=6, patch_stride=3), 1, (36, 64), 0)
    origin, stride = core.map_geometry()
    x = torch.randn(1, 1, 36, 64, requires_grad=True)
    core.patch(x)[0, :, 4, 7].sum().backward()  # the patch embedding: one token sees one patch
    ys, xs = np.nonzero(x.grad[0, 0].abs().numpy() > 0)
    assert ((xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2) == (
        origin + 7 * stride,
        origin + 4 * stride,
    )
    pixel = ViTCore(ViTConfig(dim=8, heads=2, layers=1, pixel_channels=2), 1, (36, 64), 0)
    assert pixel.map_geometry() == (0.0, 1.0)  # its map is the image's own pixels


def test_a_neuron_cap_maps_a_strided_subset_and_no_cap_changes_nothing_below_it():
    gen = torch.Generator().manual_seed(0)
    images, responses = torch.randn(40, 1, 12, 16, generator=gen), torch.rand(40, 90, generator=gen)
    cortex = np.random.default_rng(0).uniform(0, 9, (90, 2))
    full = map_receptive_fields(images, responses, cortex)
    assert full.mapped.all()
    for cap in (90, 500):  # a cap at or above the scan's neurons is no cap: the same map, bit for bit
        same = map_receptive_fields(images, responses, cortex, max_neurons=cap)
        assert np.array_equal(same.centres, full.centres) and np.array_equal(same.peaks, full.peaks)
    part = map_receptive_fields(images, responses, cortex, max_neurons=45)
    assert np.flatnonzero(part.mapped).tolist() == mapped_subset(90, 45).tolist()
    assert part.mapped.sum() == 45 and part.mapped[0] and part.mapped[-1]  # spread over the whole index
    assert np.isnan(part.peaks[~part.mapped]).all() and not part.inliers[~part.mapped].any()
    # a mapped neuron's peak does not depend on which others were mapped (up to the product's rounding,
    # whose blocking may follow the matrix's width)
    assert np.allclose(part.peaks[part.mapped], full.peaks[part.mapped], rtol=0, atol=1e-4)
    assert np.isfinite(part.centres).all()
    with pytest.raises(ValueError, match="max_neurons must be at least 1"):
        map_receptive_fields(images, responses, cortex, max_neurons=0)


def test_config_refuses_rf_map_with_a_grid_mean_predictor_and_stays_hash_neutral():
    assert '"init_mu"' not in canonical_json(BaselineModelConfig())
    assert '"rf_map_neurons"' not in canonical_json(BaselineModelConfig())
    with pytest.raises(ConfigError, match="set init_mu: rf_map"):
        validate(BaselineModelConfig, {"rf_map_neurons": 400}, "model.config")
    with pytest.raises(ConfigError, match="rf_map_neurons"):
        validate(
            BaselineModelConfig,
            {"init_mu": "rf_map", "grid_mean_predictor": None, "rf_map_neurons": 99},
            "model.config",
        )
    capped = validate(
        BaselineModelConfig, {"init_mu": "rf_map", "grid_mean_predictor": None, "rf_map_neurons": 400}, "m"
    )
    assert capped.rf_map_neurons == 400
    with pytest.raises(ConfigError, match="grid_mean_predictor: null"):
        validate(BaselineModelConfig, {"init_mu": "rf_map"}, "model.config")
    with pytest.raises(ConfigError, match="init_mu"):
        validate(BaselineModelConfig, {"init_mu": "sta", "grid_mean_predictor": None}, "model.config")


def _spec(**update) -> RunSpec:
    cfg = BaselineModelConfig(
        hidden_channels=4, layers=2, input_kern=5, hidden_kern=3, grid_mean_predictor=None, init_mu="rf_map"
    )
    return RunSpec(
        "sensorium.datasets.static_loaders",
        DatasetConfig(batch_size=32),
        "sensorium.models.stacked_core_full_gauss_readout",
        cfg.model_copy(update=update),
        "sensorium.training.standard_trainer",
        TrainerConfig(max_iter=2, patience=3, lr_decay_steps=1, lr_init=0.005),
        seed=3,
    )


def test_readout_reads_at_the_map_on_average_and_only_training_trials_count():
    """With a shifter the readout reads at mu + shift(pupil): the start takes the untrained shifter's
    mean shift off, so the positions read at match the map on average over the training trials; the map
    never looks at validation or test responses (made NaN here: same start, no error)."""
    starts = []
    for hide in (False, True):
        scans = build_scans(RECS, DatasetConfig(batch_size=32), torch.device("cpu"))
        if hide:
            for scan in scans.values():
                held_out = torch.from_numpy(np.flatnonzero(scan.tiers != "train"))
                scan.responses[held_out] = float("nan")
        spec = _spec()
        model = build_model(spec, RECS, scans)
        maps = start_at_rf_map(model, scans, _geometry(RECS))
        for key, scan in scans.items():
            idx = torch.from_numpy(scan.tier_indices("train"))
            with torch.no_grad():
                read_at = model.readout[key].mu.reshape(-1, 2) + model.shifter(
                    scan.pupil_center[idx], key
                ).mean(0)
            origin, stride = model.core.map_geometry()
            expect = readout_positions(
                maps[key].centres, tuple(model.readout[key].in_shape[1:]), origin, stride
            )
            assert torch.allclose(read_at, torch.as_tensor(expect, dtype=read_at.dtype), atol=1e-6)
        starts.append({k: model.readout[k].mu.detach().clone() for k in scans})
    for k in starts[0]:
        assert torch.equal(starts[0][k], starts[1][k]), "held-out responses changed the start"


def test_the_start_maps_at_most_the_capped_neurons_of_each_scan():
    scans = build_scans(RECS, DatasetConfig(batch_size=32), torch.device("cpu"))
    model = build_model(_spec(), RECS, scans)
    maps = start_at_rf_map(model, scans, _geometry(RECS), max_neurons=6)
    for key, rf in maps.items():
        n = scans[key].responses.shape[1]
        assert np.flatnonzero(rf.mapped).tolist() == mapped_subset(n, 6).tolist() and len(rf.mapped) == n
        assert np.isnan(rf.peaks[~rf.mapped]).all() and np.isfinite(rf.peaks[rf.mapped]).any()


def test_the_configured_start_maps_only_with_init_mu_rf_map():
    """start_as_configured: nothing to do with the uniform start (the drawn positions stay, no map);
    with rf_map the same start as start_at_rf_map's."""
    scans = build_scans(RECS, DatasetConfig(batch_size=32), torch.device("cpu"))
    uniform = _spec(init_mu="uniform")
    model = build_model(uniform, RECS, scans)
    drawn = {k: model.readout[k].mu.detach().clone() for k in scans}
    assert start_as_configured(uniform, model, scans, _geometry(RECS)) == {}
    assert all(torch.equal(model.readout[k].mu, drawn[k]) for k in scans)
    configured, direct = build_model(_spec(), RECS, scans), build_model(_spec(), RECS, scans)
    assert sorted(start_as_configured(_spec(), configured, scans, _geometry(RECS))) == sorted(scans)
    start_at_rf_map(direct, scans, _geometry(RECS))
    assert all(torch.equal(configured.readout[k].mu, direct.readout[k].mu) for k in scans)
    assert not all(torch.equal(configured.readout[k].mu, drawn[k]) for k in scans)


@pytest.mark.slow  # a training run on a 130-neuron recording, 3-5 s here
def test_training_maps_as_many_neurons_as_the_config_says(caplog):
    """run_training passes model.config.rf_map_neurons to the map: 100 of a 130-neuron scan."""
    rec, _ = synthesize(SynthConfig(n_neurons=130, n_trials=200, seed=4))
    spec = _spec(rf_map_neurons=100)
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        run_training(spec, {rec.data_key: rec}, torch.device("cpu"), progress=True)
    assert "of 100 mapped neurons' peaks on the retinotopic fit; 130 neurons" in caplog.text, caplog.text


def test_rf_map_refuses_a_predicted_grid_and_bad_inputs():
    scans = build_scans(RECS, DatasetConfig(batch_size=32), torch.device("cpu"))
    spec = _spec(init_mu="uniform", grid_mean_predictor=BaselineModelConfig().grid_mean_predictor)
    model = build_model(spec, RECS, scans)
    with pytest.raises(ValueError, match="free readout positions"):
        start_at_rf_map(model, scans, _geometry(RECS))
    images, responses = torch.randn(30, 1, 12, 16), torch.rand(30, 4)
    with pytest.raises(ValueError, match=r"cortex_xy must be \(4, 2\)"):
        map_receptive_fields(images, responses, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="cortex coordinates must be finite"):
        map_receptive_fields(images, responses, np.full((4, 2), np.nan))
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images of the training trials must be finite"):
        map_receptive_fields(bad, responses, np.zeros((4, 2)))
    silent = responses.clone()
    silent[:, 0] = 0.0  # a silent neuron has no peak; it gets the fit's (here: the mean) position
    rf = map_receptive_fields(images, silent, np.random.default_rng(0).uniform(0, 9, (4, 2)))
    assert np.isnan(rf.peaks[0]).all() and not rf.inliers[0] and np.isfinite(rf.centres).all()
    with pytest.raises(ValueError, match="nothing to map"):
        map_receptive_fields(images, torch.zeros(30, 4), np.zeros((4, 2)))


def test_start_is_reproducible_and_training_from_it_too():
    states = []
    for _ in range(2):
        scans = build_scans(RECS, DatasetConfig(batch_size=32), torch.device("cpu"))
        spec = _spec()
        model = build_model(spec, RECS, scans)
        start_at_rf_map(model, scans, _geometry(RECS))
        result = train(
            model, scans, spec.trainer_config, batch_size=32, shuffle_seed=1, seed=3, progress=False
        )
        states.append(result.state_dict)
    for k, v in states[0].items():
        assert torch.equal(v, states[1][k]), k


def _geometry(recs):
    from pipeline.run import scan_geometry

    return {k: scan_geometry(r) for k, r in recs.items()}
