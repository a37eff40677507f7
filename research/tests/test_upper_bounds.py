"""research.upper_bounds: the same member trained as configured and with a planted part, on a tiny
teacher-world recording written by ``sensorium synth``."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
import yaml

from research import upper_bounds
from tests.factories import REPO, SOTA, TINY_MODEL, cli_argv

needs_kit = pytest.mark.skipif(not SOTA.exists(), reason="starter-kit checkpoint not found")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("upper-bounds")
    argv = cli_argv("synth", "--out", str(home / "data"), "--mice", "1", "--neurons", "20", "--trials", "200")
    p = subprocess.run(
        [*argv, "--stimulus", "teacher", "--teacher", str(SOTA)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    model = {k: v for k, v in TINY_MODEL.items() if k != "grid_mean_predictor"}
    experiment = {
        "name": "tiny_free",
        "dataset": {"fn": "sensorium.datasets.static_loaders", "config": {"scans": "all", "batch_size": 32}},
        "model": {
            "fn": "sensorium.models.stacked_core_full_gauss_readout",
            "config": {**model, "grid_mean_predictor": None, "init_mu": "rf_map"},
        },
        "trainer": {"fn": "sensorium.training.standard_trainer", "config": {"max_iter": 3, "patience": 3}},
        "seeds": [1],
    }
    (home / "tiny.yaml").write_text(yaml.safe_dump(experiment))
    return home


def run(home, mode: str, capsys) -> dict:
    upper_bounds.main(
        ["--home", str(home), "--mode", mode, "--seed", "1", "--experiment", str(home / "tiny.yaml")]
    )
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@needs_kit
def test_each_mode_trains_the_same_member_and_the_planted_drive_is_a_ceiling(home, capsys):
    results = {mode: run(home, mode, capsys) for mode in upper_bounds.MODES}
    assert all(r["epochs"] == 3 and r["seed"] == 1 for r in results.values())
    scores = {mode: r["best_validation_corr"] for mode, r in results.items()}
    # a 4-channel core trained 3 epochs on 140 images learns little of the teacher; the planted drive is it
    assert scores["planted-drive"] > scores["as-configured"] + 0.1, scores
    # the planted parts change the fit (the run is deterministic, so equal scores would mean no effect)
    assert scores["planted-positions"] != scores["as-configured"]
    assert scores["planted-shift"] != scores["as-configured"]


@needs_kit
def test_planted_positions_need_free_positions(home, tmp_path):
    experiment = yaml.safe_load((home / "tiny.yaml").read_text())
    experiment["model"]["config"].update(
        init_mu="uniform", grid_mean_predictor=TINY_MODEL["grid_mean_predictor"]
    )
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(experiment))
    with pytest.raises(SystemExit, match="needs free positions"):
        upper_bounds.main(["--home", str(home), "--mode", "planted-positions", "--experiment", str(path)])


@needs_kit
def test_planted_positions_plus_planted_shift_read_where_the_generator_put_each_neuron(home):
    """Both conversions together: positions started at the planted centres, the planted shift added, the
    readout of trial t reads neuron n at input pixel rf_center[n] + eye_shift[t] (the generator's frame)."""
    args = upper_bounds.parse_args(
        ["--home", str(home), "--mode", "planted-positions", "--experiment", str(home / "tiny.yaml")]
    )
    spec, model, scans, truth = upper_bounds.prepare(args)
    # planted_positions started them less the untrained shifter's mean shift, which rf_map has back
    upper_bounds.planted_shift(model, scans, truth, "rf_map")
    (key,) = scans
    readout, trials = model.readout[key], torch.tensor([0, 7, 42])
    model(**{k: v for k, v in scans[key].batch(trials).items()}, data_key=key)  # notes the trial ids
    with torch.no_grad():
        coords = readout.mu.reshape(-1, 2)[None] + model.shifter(None, key)[:, None]  # [B, N, 2]
    _, map_h, map_w = readout.in_shape
    origin, stride = model.core.map_geometry()
    pixels = origin + stride * (coords.double() + 1) / 2 * torch.tensor([map_w - 1, map_h - 1])
    h, w = scans[key].images.shape[-2:]
    rf = torch.as_tensor(truth[key]["rf_center"], dtype=torch.float64)
    planted = (rf + 1) / 2 * torch.tensor([w - 1, h - 1])  # [N, 2] pixels at the mean eye position
    expect = planted[None] + torch.as_tensor(truth[key]["eye_shift"], dtype=torch.float64)[trials][:, None]
    inside = ((coords.abs() < 1).all(-1)).all(0)  # clamped positions are not where the truth says
    assert inside.sum() >= 10
    assert torch.allclose(pixels[:, inside], expect[:, inside], atol=1e-4)


@needs_kit
def test_only_the_planted_modes_refuse_a_weight_average(home, tmp_path, capsys):
    """An averaged copy would not see a planted part, so those modes refuse ``ema_decay``; the
    experiment as configured trains with it (and validates the average, as the trainer does)."""
    experiment = yaml.safe_load((home / "tiny.yaml").read_text())
    experiment["trainer"]["config"]["ema_decay"] = 0.9
    path = tmp_path / "ema.yaml"
    path.write_text(yaml.safe_dump(experiment))
    with pytest.raises(SystemExit, match="planted modes patch the live model"):
        upper_bounds.main(["--home", str(home), "--mode", "planted-drive", "--experiment", str(path)])
    upper_bounds.main(
        ["--home", str(home), "--mode", "as-configured", "--seed", "1", "--experiment", str(path)]
    )
    averaged = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["best_validation_corr"]
    plain = run(home, "as-configured", capsys)["best_validation_corr"]
    assert averaged != plain  # the average is what was validated: deterministic runs, so equal = unused


@needs_kit
def test_trials_can_be_set_aside_from_training_and_from_validation(home, capsys):
    args = upper_bounds.parse_args(
        [
            "--home",
            str(home),
            "--mode",
            "as-configured",
            "--experiment",
            str(home / "tiny.yaml"),
            "--drop-train",
            "30",
        ]
    )
    _, _, scans, _ = upper_bounds.prepare(args)
    scan = next(iter(scans.values()))
    plain = upper_bounds.prepare(upper_bounds.parse_args(["--home", str(home), "--mode", "as-configured"]))[2]
    n_train = len(next(iter(plain.values())).tier_indices("train"))
    assert len(scan.tier_indices("train")) == n_train - 30
    assert (scan.tiers == upper_bounds.SET_ASIDE).sum() == (
        next(iter(plain.values())).tiers == "final_test"
    ).sum() + 30
    # set aside, then given back: the validation tier is whole again
    n_val = len(scan.tier_indices("validation"))
    aside = upper_bounds.set_aside(scans, "validation", seed=11, keep=5)
    assert len(scan.tier_indices("validation")) == 5
    upper_bounds.restore(scans, aside, "validation")
    assert len(scan.tier_indices("validation")) == n_val
    with pytest.raises(SystemExit, match="would leave none"):
        upper_bounds.set_aside(scans, "validation", seed=0, drop=n_val)
    with pytest.raises(SystemExit, match=f"cannot keep {n_val + 1} of them"):
        upper_bounds.set_aside(scans, "validation", seed=0, keep=n_val + 1)
    # validating on a few trials: the trainer's best score is on those, the printed validation_corr on all
    upper_bounds.main(
        [
            "--home",
            str(home),
            "--mode",
            "as-configured",
            "--seed",
            "1",
            "--experiment",
            str(home / "tiny.yaml"),
        ]
        + ["--validate-on", "8"]
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["validate_on"] == 8 and out["best_validation_corr"] != out["validation_corr"]
    for flag, value in (("--drop-train", "-1"), ("--validate-on", "1")):
        with pytest.raises(SystemExit):
            upper_bounds.parse_args(["--home", str(home), "--mode", "as-configured", flag, value])
