"""A ``<recording>.truth.npz`` that is not this project's ground truth: ignored with one warning.

The recording itself is valid competition data and the sidecar optional, so the scan is ingested in
full and only the GroundTruth row is left out. Each case synthesises its own recording (a seed of its
own, hence a data key of its own), so that no other test's scan of the same key is in the way.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.synth import SynthConfig, truth_path, write_synthetic
from tests.factories import cli_argv

REPO = Path(__file__).parents[2]
WARNING_TEXT = "ignoring ground-truth sidecar"


def _recording(tmp_path: Path, seed: int) -> Path:
    """A small fresh recording folder (with its zip and a valid sidecar) of data key 90000-<seed+1>-1."""
    (folder,) = write_synthetic(tmp_path, 1, SynthConfig(n_neurons=8, n_trials=60, seed=seed))
    return folder


def _spoil(sidecar: Path, damage: str, n_trials: int) -> str:
    """Replace the sidecar by a foreign one; returns what the warning must say about it."""
    truth = dict(np.load(sidecar))
    if damage == "no_expected":
        del truth["expected"]
        np.savez(sidecar, **truth)
        return "field 'expected' missing"
    if damage == "not_npz":
        sidecar.write_text("# some other tool's notes about this recording\n")
        return "the file is not an .npz archive"
    if damage == "wrong_shape":
        np.savez(sidecar, **{**truth, "expected": truth["expected"][: n_trials // 2]})
        return "field 'expected' has shape"
    raise AssertionError(damage)


def _assert_stored_without_truth(data_key: str, n_trials: int, n_neurons: int) -> None:
    """The whole scan is there (master, parts, trial order) and no ground truth."""
    from schemas.data import GroundTruth, Scan, TrialOrder

    key = {"data_key": data_key}
    assert len(Scan & key) == 1
    assert len(Scan.Trial & key) == n_trials and len(Scan.Neuron & key) == n_neurons
    assert len(Scan.TierInfo & key) == 3 and len(TrialOrder & key) == 1
    assert len(GroundTruth & key) == 0


@pytest.mark.parametrize(("damage", "seed"), [("no_expected", 201), ("not_npz", 202), ("wrong_shape", 203)])
def test_cli_ingests_recording_and_warns_once_about_foreign_sidecar(db, tmp_path, damage, seed):
    folder = _recording(tmp_path, seed)
    sidecar = truth_path(folder)
    said = _spoil(sidecar, damage, n_trials=60)
    p = subprocess.run(
        cli_argv("ingest", "-q", str(folder)),
        cwd=REPO,
        env=dict(os.environ),  # SENSORIUM_HOME and SENSORIUM_DB_PREFIX of the `db` fixture
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    data_key = f"90000-{seed + 1}-1"
    assert f"{data_key}: ingested from {folder}" in p.stdout
    warnings = [line for line in p.stderr.splitlines() if WARNING_TEXT in line]
    assert len(warnings) == 1, p.stderr
    assert warnings[0].startswith(f"WARNING usecases.ingest: {WARNING_TEXT} {sidecar}: {said}"), warnings[0]
    assert warnings[0].endswith("ingesting the recording without ground truth")
    _assert_stored_without_truth(data_key, 60, 8)


def test_library_ingest_of_zip_with_partial_sidecar(db, tmp_path, caplog):
    """schemas.data.ingest directly, from the zip (whose sidecar is the same file beside it)."""
    from usecases.ingest import ingest

    folder = _recording(tmp_path, 204)
    zip_path = folder.with_name(folder.name + ".zip")
    sidecar = truth_path(zip_path)
    assert sidecar == truth_path(folder)
    _spoil(sidecar, "no_expected", n_trials=60)
    with caplog.at_level(logging.WARNING, logger="schemas.data"):
        result = ingest(zip_path, cache_dir=db.cache_dir, progress=False)
    assert result.status == "inserted" and result.data_key == "90000-205-1"
    records = [r for r in caplog.records if WARNING_TEXT in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert str(sidecar) in message and "field 'expected' missing" in message and "\n" not in message
    _assert_stored_without_truth(result.data_key, 60, 8)


def test_valid_sidecar_is_still_stored(db, tmp_path, caplog):
    """The checks accept the generator's own sidecar: its ground truth is stored, without a warning."""
    from schemas.data import GroundTruth
    from usecases.ingest import ingest

    folder = _recording(tmp_path, 205)
    with caplog.at_level(logging.WARNING, logger="schemas.data"):
        result = ingest(folder, cache_dir=db.cache_dir, progress=False)
    assert result.status == "inserted"
    assert not [r for r in caplog.records if WARNING_TEXT in r.getMessage()]
    row = (GroundTruth & {"data_key": result.data_key}).fetch1()
    truth = np.load(truth_path(folder))
    assert np.array_equal(np.asarray(row["expected"]), truth["expected"])
    assert row["generator_config"]["seed"] == 205
