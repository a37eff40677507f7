"""What ``sensorium train`` prints: one line per epoch while it trains (none with ``-q``), a table of the
rows made and failed, each failed model once by its experiment and seed, and a final score line per
trained model. The real command line in a subprocess, on the session's database."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from tests.factories import cli_argv, long_experiment

pytestmark = pytest.mark.slow  # four command-line runs, each importing torch and DataJoint

#: an epoch line of ``label``; the fields as pipeline.training.progress writes them
EPOCH = (
    r"{label}: epoch (\d+)/(\d+)  loss \S+  val corr -?\d\.\d{{4}}  [\d.]+ s/epoch  "
    r"(up to .+ left|last epoch)"
)


@pytest.fixture(scope="module")
def scans(session_scans) -> list[str]:
    return session_scans


def _train(tmp_path, spec: dict, *flags: str, before: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``sensorium [before] train FILE [flags]`` on the session's database (its environment inherited)."""
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        cli_argv(*before, "train", str(path), "--device", "cpu", *flags),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_train_prints_each_epoch_and_a_final_score(scans, tmp_path):
    proc = _train(tmp_path, long_experiment("talk", scans, seeds=(904,), max_iter=2))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    epochs = [
        m for m in (re.fullmatch(EPOCH.format(label=re.escape("talk (seed 904)")), x) for x in lines) if m
    ]
    assert [(int(m[1]), int(m[2])) for m in epochs] == [(1, 2), (2, 2)], proc.stdout
    assert "up to" in epochs[0][3] and epochs[1][3] == "last epoch"
    # the table: a header and one aligned row per table that made something
    header = next(i for i, x in enumerate(lines) if re.fullmatch(r"table\s+made\s+failed", x))
    rows = []
    for x in lines[header + 1 :]:
        if not re.fullmatch(r"\w+\s+\d+\s+\d+", x):
            break
        rows.append(x)
    assert any(re.fullmatch(r"TrainedModel\s+1\s+0", x) for x in rows), proc.stdout
    assert len({len(x) for x in [lines[header], *rows]}) == 1, "the table's columns line up"
    # a final line per trained model and scored test tier: correlation, oracle and the share of it
    scores = [x for x in lines if x.startswith("score  talk (seed 904)")]
    assert scores, proc.stdout
    assert all(
        re.search(r"test corr +-?\d\.\d{3}  (LOO )?oracle +-?\d\.\d{3}( \(-?\d+% of it\))?$", x)
        for x in scores
    )


def test_quiet_train_prints_no_epoch_lines(scans, tmp_path):
    proc = _train(tmp_path, long_experiment("hush", scans, seeds=(907,), max_iter=2), before=("-q",))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TrainedModel" in proc.stdout, "a model was trained (its results print)"
    assert not re.search(r"epoch \d+/\d+", proc.stdout + proc.stderr), proc.stdout + proc.stderr


@pytest.mark.parametrize("reserve", [False, True], ids=["plain", "reserve-jobs"])
def test_a_failed_model_is_reported_once_by_experiment_and_seed(scans, tmp_path, reserve):
    from schemas.fabrik import experiment_models
    from schemas.training import TrainedModel

    # two seeds: the same configs and seed would be one model, named by both experiments
    name, seed = ("blowup_jobs", 906) if reserve else ("blowup_plain", 905)
    spec = long_experiment(name, scans, seeds=(seed,), max_iter=2, lr_init=1e12)
    proc = _train(tmp_path, spec, *(["--reserve-jobs"] if reserve else []))
    both = proc.stdout + proc.stderr
    assert proc.returncode == 1, both
    assert both.count("TrainingDivergedError") == 1, both
    assert re.search(rf"failed: TrainedModel {name} \(seed {seed}\): TrainingDivergedError: ", proc.stdout), (
        both
    )
    assert "model_hash" not in both
    if reserve:  # the job table's error, as `sensorium jobs --errors` lists it, names the model too
        from jobs.admin import errors

        key = (TrainedModel.key_source & experiment_models(name)).keys()[0]
        (listed,) = [e for e in errors("TrainedModel") if all(key[k] == v for k, v in e["key"].items())]
        assert listed["model"] == f"{name} (seed {seed})", listed
        assert listed["message"].startswith("TrainingDivergedError: "), listed
