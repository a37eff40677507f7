"""Ingest into a real PostgreSQL (embedded pgserver, throwaway prefix)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import schemas
from pipeline.data.format import RecordingFormatError, read_recording, write_recording
from pipeline.data.synth import SynthConfig, synthesize
from pipeline.regressors.trial_order import trial_order
from tests.factories import cli_argv

REPO = Path(__file__).parents[2]


def _counts(settings) -> dict:
    from schemas.data import Scan

    return schemas.table_counts(Scan.connection, settings.db_prefix)


def _folders(synth_dir: Path) -> list[Path]:
    return sorted(p for p in synth_dir.iterdir() if p.is_dir())


def test_ingest_stores_identical_arrays_and_is_idempotent(db, synth_dir):
    from schemas.data import Scan, TrialOrder
    from usecases.ingest import ingest

    for folder in _folders(synth_dir):
        zip_path = folder.with_name(folder.name + ".zip")
        result = ingest(zip_path, cache_dir=db.cache_dir, progress=False)
        key = {"data_key": result.data_key}
        assert result.status in ("inserted", "exists")
        before = _counts(db)
        again = ingest(folder, cache_dir=db.cache_dir, progress=False)  # the folder: same content
        assert again.status == "exists" and again.checksum == result.checksum
        assert _counts(db) == before

        source = read_recording(folder, progress=False)
        stored = Scan().fetch_recording(key)
        for var in ("images", "responses", "behavior", "pupil_center"):
            a, b = source.trial_variable(var), stored.trial_variable(var)
            assert a.dtype == b.dtype and np.array_equal(a, b), var
        for name, arr in source.trials.items():
            assert np.array_equal(arr, stored.trials[name]), name
        for name, arr in source.neurons.items():
            assert np.array_equal(arr, stored.neurons[name]), name
        assert (Scan & key).fetch1("checksum") == source.checksum
        assert (Scan & key).fetch1("trial_idx_hashed") == (not source.trial_idx_is_numeric)
        assert len(TrialOrder & key) == 1


def test_stored_recording_writes_back_the_same_format(db, synth_dir, tmp_path):
    """What the database holds is enough to write the recording again, byte-identical in content."""
    from schemas.data import Scan
    from usecases.ingest import ingest

    folder = _folders(synth_dir)[0]
    result = ingest(folder, cache_dir=db.cache_dir, progress=False)
    stored = Scan().fetch_recording({"data_key": result.data_key})
    out, _ = write_recording(stored, tmp_path / folder.name, make_zip=False)
    assert read_recording(out, progress=False).checksum == result.checksum


def test_trial_order_table_with_ties(db, synth_dir):
    from schemas.data import Scan, TrialOrder
    from usecases.ingest import ingest

    for folder in _folders(synth_dir):
        result = ingest(folder, cache_dir=db.cache_dir, progress=False)
        key = {"data_key": result.data_key}
        truth = np.load(folder.with_name(folder.name + ".truth.npz"))
        rows = (Scan.Trial * TrialOrder.Trial & key).to_dicts(order_by="trial_id")
        rank = np.array([r["rank"] for r in rows])
        seconds = np.array([r["frame_trial_ts"].timestamp() for r in rows])
        true_rank = truth["time_rank"]
        _, inverse, counts = np.unique(seconds, return_inverse=True, return_counts=True)
        tied = counts[inverse] > 1
        # across seconds the recovered order is the true order; within a tied second ties keep file order
        assert np.array_equal(rank[~tied], true_rank[~tied])
        assert np.all(np.diff(seconds[np.argsort(rank)]) >= 0)
        row = (TrialOrder & key).fetch1()
        assert row["n_tied"] == int(tied.sum())
        if row["trial_idx_numeric"]:
            assert row["consistent"] is True
            assert row["n_rank_mismatch"] == int((rank != true_rank).sum())
        else:
            assert row["consistent"] is None


@pytest.mark.parametrize(
    "damage", ["missing_file", "missing_trial", "wrong_shape", "nan", "unknown_tier", "truncated_zip"]
)
def test_bad_recordings_leave_database_unchanged(db, recording_copy, damage):
    from usecases.ingest import ingest

    target: Path = recording_copy
    if damage == "missing_file":
        (target / "meta/neurons/unit_ids.npy").unlink()
    elif damage == "missing_trial":
        (target / "data/pupil_center/3.npy").unlink()
    elif damage == "wrong_shape":
        np.save(target / "data/behavior/2.npy", np.zeros(4, dtype=np.float32))
    elif damage == "nan":
        np.save(target / "data/pupil_center/1.npy", np.array([np.nan, 1.0], dtype=np.float32))
    elif damage == "unknown_tier":
        tiers = np.load(target / "meta/trials/tiers.npy")
        tiers[-1] = "bonus"
        np.save(target / "meta/trials/tiers.npy", tiers)
    elif damage == "truncated_zip":
        rec = read_recording(target, progress=False)
        shutil.rmtree(target)
        _, zip_path = write_recording(rec, target)
        data = zip_path.read_bytes()
        zip_path.write_bytes(data[: len(data) * 2 // 3])
        target = zip_path
    before = _counts(db)
    with pytest.raises(RecordingFormatError):
        ingest(target, cache_dir=db.cache_dir, progress=False)
    assert _counts(db) == before


def test_different_recording_under_existing_key_is_refused(db, synth_dir, tmp_path):
    from schemas.data import Scan
    from usecases.ingest import IngestConflictError, ingest

    folder = _folders(synth_dir)[0]
    first = ingest(folder, cache_dir=db.cache_dir, progress=False)
    stored = (Scan & {"data_key": first.data_key}).fetch1("checksum")
    other = tmp_path / folder.name
    shutil.copytree(folder, other)
    arr = np.load(other / "data/responses/0.npy")
    np.save(other / "data/responses/0.npy", arr * 2)
    before = _counts(db)
    with pytest.raises(IngestConflictError, match="already stored"):
        ingest(other, cache_dir=db.cache_dir, progress=False)
    assert _counts(db) == before
    assert (Scan & {"data_key": first.data_key}).fetch1("checksum") == stored


def test_failure_during_insert_rolls_back(db, monkeypatch):
    """A crash half-way through the insert leaves no Scan row and no part rows."""
    from schemas.data import Scan
    from usecases.ingest import ingest

    rec, _ = synthesize(SynthConfig(n_neurons=10, n_trials=120, seed=99), 3)
    base = Path(db.home) / "rollback"
    folder, _ = write_recording(rec, base / f"static{rec.data_key}-GrayImageNet-x", make_zip=False)

    def explode(*args, **kwargs):
        raise RuntimeError("simulated crash while inserting trials")

    monkeypatch.setattr(Scan.Trial, "insert", explode)
    before = _counts(db)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest(folder, cache_dir=db.cache_dir, progress=False)
    monkeypatch.undo()
    assert _counts(db) == before
    assert len(Scan & {"data_key": rec.data_key}) == 0
    assert ingest(folder, cache_dir=db.cache_dir, progress=False).status == "inserted"


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen(
        cli_argv(*args),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_ingests_store_once(db, tmp_path):
    from schemas.data import Scan

    rec, _ = synthesize(SynthConfig(n_neurons=15, n_trials=200, seed=123), 4)
    folder, zip_path = write_recording(rec, tmp_path / f"static{rec.data_key}-GrayImageNet-y")
    procs = [_cli("ingest", "-q", str(zip_path)), _cli("ingest", "-q", str(folder))]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    messages = " ".join(out for out, _ in outs)
    assert messages.count("ingested from") == 1 and messages.count("already stored") == 1, messages
    key = {"data_key": rec.data_key}
    assert len(Scan & key) == 1
    assert len(Scan.Trial & key) == rec.n_trials and len(Scan.Neuron & key) == rec.n_neurons


def test_cli_status_json_and_ingest_errors(db, recording_copy):
    (recording_copy / "data/images/0.npy").unlink()
    p = _cli("ingest", "-q", str(recording_copy))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1
    assert "error:" in out and "data/images" in out and "0.npy" in out

    p = _cli("db", "status", "--json")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    status = json.loads(out)
    assert status["prefix"] == db.db_prefix and status["embedded"] is True
    tables = status["tables"][f"{db.db_prefix}data"]
    from schemas.data import Scan

    assert tables["scan"] == len(Scan())
    assert {"scan", "scan__trial", "scan__neuron", "__trial_order", "__trial_order__trial"} <= set(tables)


def test_trial_order_matches_pure_function(db, synth_dir):
    from schemas.data import Scan, TrialOrder
    from usecases.ingest import ingest

    folder = _folders(synth_dir)[1]
    result = ingest(folder, cache_dir=db.cache_dir, progress=False)
    key = {"data_key": result.data_key}
    rec = Scan().fetch_recording(key)
    from pipeline.data.format import parse_timestamps

    expected = trial_order(parse_timestamps(rec.trials["frame_trial_ts"]), rec.trials["trial_idx"])
    ranks = [r["rank"] for r in (TrialOrder.Trial & key).to_dicts(order_by="trial_id")]
    assert np.array_equal(ranks, expected.rank)
