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
