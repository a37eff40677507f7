"""The synthetic generator: real format, determinism, planted effects."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.format import parse_timestamps, read_recording
from pipeline.data.synth import SynthConfig, synthesize, truth_path
from pipeline.regressors.trial_order import trial_order

CFG = SynthConfig(n_neurons=20, n_trials=150, seed=5)


def test_deterministic_for_a_seed():
    a, ta = synthesize(CFG, 0)
    b, tb = synthesize(CFG, 0)
    c, _ = synthesize(SynthConfig(**{**CFG.__dict__, "seed": 6}), 0)
    assert np.array_equal(a.responses, b.responses) and np.array_equal(a.images, b.images)
    assert np.array_equal(ta["expected"], tb["expected"])
    assert not np.array_equal(a.responses, c.responses)


def test_real_format_shapes_and_tiers():
    rec, truth = synthesize(CFG, 0)
    T, N = rec.n_trials, rec.n_neurons
    assert rec.images.shape == (T, 1, 144, 256)
    assert rec.behavior.shape == (T, 3) and rec.pupil_center.shape == (T, 2)
    assert rec.neurons["cell_motor_coordinates"].shape == (N, 3)
    assert len(rec.trials) == 12  # the neuralpredictors docstring's 12 meta/trials entries
    assert set(rec.tiers) == {"train", "validation", "test"}
    assert rec.trial_idx_is_numeric
    assert np.asarray(rec.statistics["images"]["all"]["mean"]).shape == ()
    assert rec.statistics["responses"]["all"]["std"].shape == (N,)
    test_ids = rec.trials["frame_image_id"][rec.tiers == "test"]
    _, counts = np.unique(test_ids, return_counts=True)
    assert np.all(counts == 10), "every test image is shown 10 times"
    assert np.all(rec.responses >= 0) and np.all(truth["expected"] > 0)


def test_competition_recording():
    rec, truth = synthesize(SynthConfig(**{**CFG.__dict__, "competition": True}), 1)
    held_out = np.isin(rec.tiers, ["test", "final_test"])
    assert "final_test" in set(rec.tiers)
    assert not rec.trial_idx_is_numeric
    assert all(len(s) == 32 for s in rec.trials["trial_idx"])
    assert np.all(rec.responses[held_out] == 0)
    assert np.all(truth["responses"][held_out].sum(1) > 0), "the truth keeps the withheld responses"
    assert np.array_equal(rec.responses[~held_out], truth["responses"][~held_out])


def test_timestamps_have_one_second_resolution_and_ties():
    rec, truth = synthesize(SynthConfig(**{**CFG.__dict__, "n_trials": 600}), 0)
    ts = parse_timestamps(rec.trials["frame_trial_ts"])
    assert np.all(ts.astype("datetime64[s]") == ts)
    order = trial_order(ts, rec.trials["trial_idx"])
    assert order.n_tied > 0
    # the true order is the presentation position; it agrees with the recovered one across seconds
    assert order.consistent
    assert np.array_equal(rec.trials["trial_idx"], truth["time_rank"])


def test_expected_response_explains_responses():
    """The oracle is informative: per-neuron correlation of truth and responses is well above zero."""
    rec, truth = synthesize(SynthConfig(**{**CFG.__dict__, "n_trials": 400}), 0)
    y, e = rec.responses, truth["expected"]
    corr = [np.corrcoef(y[:, n], e[:, n])[0, 1] for n in range(rec.n_neurons)]
    assert 0.4 < np.mean(corr) < 0.95


def test_written_files_match_sidecar(synth_dir):
    for folder in sorted(p for p in synth_dir.iterdir() if p.is_dir()):
        rec = read_recording(folder, progress=False)
        truth = np.load(truth_path(folder))
        assert truth["expected"].shape == rec.responses.shape
        known = np.isin(rec.tiers, ["train", "validation"])
        assert np.array_equal(truth["responses"][known], rec.responses[known])


def test_full_scale_has_the_real_sizes_and_tiers():
    from pipeline.data.synth import FULL_SIZES, _schedule, scale_configs

    configs = scale_configs("full", seed=3)
    assert [(c.n_neurons, c.n_trials) for c in configs] == list(FULL_SIZES)
    assert [c.competition for c in configs] == [False] * 5 + [True]  # the last like 27204-5-13
    assert all(c.seed == 3 for c in configs)
    for c in configs:
        n_train, n_val, n_test_img, n_final_img = _schedule(c, c.n_trials)
        assert n_test_img == 100 and n_final_img == (100 if c.competition else 0)  # 1000 test trials
        assert 0.07 < n_val / c.n_trials < 0.09 and n_train > 4000
    assert len(scale_configs("demo")) == 2 and scale_configs("demo")[1].competition


def test_unknown_scale_is_refused():
    from pipeline.data.synth import SynthConfigError, scale_configs

    with pytest.raises(SynthConfigError, match="scale"):
        scale_configs("huge")


def test_parallel_writing_gives_the_same_files(tmp_path):
    from pipeline.data.synth import mouse_configs, write_configs

    configs = mouse_configs(3, SynthConfig(n_neurons=6, n_trials=60, seed=2, competition=True))
    one = write_configs(tmp_path / "one", configs, make_zip=False)
    two = write_configs(tmp_path / "two", configs, make_zip=False, jobs=2)
    assert [p.name for p in one] == [p.name for p in two]
    for a, b in zip(one, two, strict=True):
        files = sorted(f.relative_to(a) for f in a.rglob("*.npy"))
        assert files == sorted(f.relative_to(b) for f in b.rglob("*.npy"))
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_world_holds_what_the_recording_was_generated_from():
    from scipy import ndimage

    from pipeline.data.images import rescale_bilinear
    from pipeline.data.synth import MODEL_SCALE, softplus, synthesize_world

    world = synthesize_world(CFG, 0)
    rec, truth = synthesize(CFG, 0)
    # synthesize() is the world without its intermediates, bit for bit
    assert np.array_equal(world.recording.responses, rec.responses)
    assert all(np.array_equal(world.truth[k], truth[k]) for k in truth)
    # time order: file i is presentation time_of_file[i]; world.order goes back
    order = world.order
    assert np.array_equal(world.time_of_file, truth["time_rank"])
    assert np.array_equal(world.tiers, rec.tiers[order])
    assert np.array_equal(world.expected.astype(np.float32), truth["expected"][order])
    assert np.array_equal(world.responses.astype(np.float32), truth["responses"][order])
    assert np.allclose(world.rate_scale * softplus(world.pre), world.expected, rtol=1e-12, atol=0)
    assert np.all(world.gain > 0) and world.base_rate.shape == (CFG.n_neurons,)
    # the planted drive is the Gabor response to the recorded images, shifted with the eye
    view = (rescale_bilinear(rec.images[order][:, 0].astype(np.float32), MODEL_SCALE) - 128.0) / 45.0
    for t in range(len(view)):
        s = world.eye_shift[t]
        view[t] = ndimage.shift(view[t], (-s[1], -s[0]), order=1, mode="nearest")
    flat = view.reshape(len(view), -1)
    lin, quad = flat @ world.even.T, flat @ world.odd.T
    drive = world.simple * lin + (1 - world.simple) * np.sqrt(lin**2 + quad**2)
    assert np.allclose((drive - drive.mean(0)) / (drive.std(0) + 1e-9), world.drive, atol=1e-9)
    assert np.allclose(world.drive.mean(0), 0, atol=1e-9) and np.allclose(world.drive.std(0), 1, atol=1e-6)
    # the softplus argument is 0.3 + image weight x drive + the modulators (here none but behaviour,
    # which has rank 2: pupil and running; the stored image weights are float32)
    bare = synthesize_world(SynthConfig(**{**CFG.__dict__, "latent_weight": 0.0, "history_fraction": 0.0}), 0)
    rest = bare.pre - 0.3 - bare.truth["image_weight"] * bare.drive
    sv = np.linalg.svd(rest, compute_uv=False)
    assert sv[2] < 1e-6 * sv[0], sv[:4]


class _Flat:
    """A stimulus model without torch: every neuron's drive is a fixed mix of the images' mean
    brightness and the raw eye position, neurons at fixed places (the plug of another stimulus model)."""

    name = "flat"

    def __init__(self, wrong_shape: bool = False) -> None:
        self.wrong_shape = wrong_shape

    def plant(self, inp):
        from pipeline.data.synth import PlantedDrive

        T, N = len(inp.images), inp.cfg.n_neurons
        brightness = inp.images.reshape(T, -1).mean(1)
        mix = np.linspace(-1, 1, N)
        raw = np.outer(brightness, mix) + np.outer(inp.pupil_center[:, 0], 1 - np.abs(mix))
        drive = (raw - raw.mean(0)) / raw.std(0)
        return PlantedDrive(
            coords=np.column_stack([np.arange(N), np.arange(N), inp.depth]),
            rf_center=np.zeros((N, 2)),
            drive=drive[:, : N - 1] if self.wrong_shape else drive,
            eye_shift=np.zeros((T, 2)),
            trial_truth={"brightness": brightness},
            truth={"mix": mix},
        )


def test_another_stimulus_model_replaces_the_drive_and_nothing_else():
    from pipeline.data.synth import softplus, synthesize_world

    gabor = synthesize_world(CFG, 1)
    flat = synthesize_world(CFG, 1, _Flat())
    assert gabor.stimulus == "gabor" and flat.stimulus == "flat"
    assert flat.even.shape == (CFG.n_neurons, 0) and np.isnan(flat.simple).all()
    order = flat.order
    # the model's drive, planted; its entries in the sidecar (per-trial ones in file order)
    assert np.array_equal(flat.truth["drive"], flat.drive[flat.time_of_file].astype(np.float32))
    brightness = flat.recording.images.reshape(CFG.n_trials, -1).mean(1)
    assert np.array_equal(flat.truth["brightness"], brightness)
    assert np.array_equal(flat.truth["mix"], np.linspace(-1, 1, CFG.n_neurons))
    assert np.array_equal(flat.truth["eye_shift"], np.zeros((CFG.n_trials, 2), np.float32))
    assert np.array_equal(flat.recording.neurons["cell_motor_coordinates"][:, 0], np.arange(CFG.n_neurons))
    # the same stream for everything else: images, behaviour, eye, latents, drift, file order, depths
    same = ("images", "behavior", "pupil_center")
    assert all(np.array_equal(getattr(flat.recording, k), getattr(gabor.recording, k)) for k in same)
    for key in ("latents", "latent_loadings", "gain", "gain_coupling", "history_weight", "time_rank"):
        assert np.array_equal(flat.truth[key], gabor.truth[key]), key
    depth = flat.recording.neurons["cell_motor_coordinates"][:, 2]
    assert np.array_equal(depth, gabor.recording.neurons["cell_motor_coordinates"][:, 2])
    assert np.array_equal(flat.recording.neurons["unit_ids"], gabor.recording.neurons["unit_ids"])
    assert not np.array_equal(flat.recording.responses, gabor.recording.responses)
    # and the rate is built from the planted drive as in the Gabor world
    assert np.allclose(flat.rate_scale * softplus(flat.pre), flat.expected, rtol=1e-12, atol=0)
    assert np.array_equal(flat.expected.astype(np.float32), flat.truth["expected"][order])
    # the Gabor world has none of the stimulus model's entries
    assert "drive" not in gabor.truth and "mix" not in gabor.truth


def test_a_stimulus_model_with_wrong_shapes_is_refused():
    from pipeline.data.synth import synthesize_world

    with pytest.raises(ValueError, match=r"drive \(150, 19\) \(expected \(150, 20\)\)"):
        synthesize_world(CFG, 0, _Flat(wrong_shape=True))
