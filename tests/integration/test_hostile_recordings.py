"""Recordings crafted to run code while they are read: refused, and nothing they carry ever runs.

Two payload forms, as an attacker would write them: a raw pickle saved under a ``meta/`` ``.npy`` name,
and a genuine ``.npy`` object array one of whose elements is such an object. Each goes through the real
command line, in a folder and in a zip, with ``sensorium ingest`` and with ``sensorium db init
--recordings`` (the deployment's init step, run as the database owner). A legitimate pickled object array
of strings, as real recordings may hold, still ingests.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from recording_zip import zip_in_place

from pipeline.data.format import write_recording
from pipeline.data.synth import SynthConfig, synthesize
from tests.factories import cli_argv

MARKER = "PAYLOAD_RAN"


class _Payload:
    """Unpickling this calls ``eval``, which writes ``MARKER`` in the current folder."""

    def __reduce__(self):
        return (eval, (f"open({MARKER!r}, 'w').write('ran')",))


def _raw_pickle() -> bytes:
    return pickle.dumps(_Payload())


def _object_array() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array(["train", _Payload()], dtype=object), allow_pickle=True)
    return buf.getvalue()


PAYLOADS = {"raw-pickle": _raw_pickle, "object-array": _object_array}


def _crafted(source: Path, scratch: Path, payload: str, container: str) -> Path:
    """A copy of ``source`` whose ``meta/trials/tiers.npy`` is the payload, as a folder or a zip."""
    rec = scratch / "recordings" / source.name
    shutil.copytree(source, rec)
    (rec / "meta/trials/tiers.npy").write_bytes(PAYLOADS[payload]())
    if container == "folder":
        return rec
    return zip_in_place(rec)


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TQDM_DISABLE="1")
    return subprocess.run(
        cli_argv(*args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _scan_rows(folder_name: str) -> int:
    from schemas.data import Scan

    return len(Scan & {"folder_name": folder_name})


@pytest.fixture()
def fresh_source(tmp_path) -> Path:
    """A valid recording under a data key no other test uses."""
    rec, _ = synthesize(SynthConfig(n_neurons=12, n_trials=80, seed=31), 7)
    folder, _ = write_recording(
        rec, tmp_path / "src" / f"static{rec.data_key}-GrayImageNet-hostile", make_zip=False
    )
    return folder


@pytest.mark.parametrize("container", ["folder", "zip"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_ingest_refuses_pickle_payload_and_runs_nothing(db, fresh_source, tmp_path, payload, container):
    crafted = _crafted(fresh_source, tmp_path, payload, container)
    p = _cli(tmp_path, "ingest", "-q", str(crafted))
    output = p.stdout + p.stderr
    assert not (tmp_path / MARKER).exists(), "the payload ran during ingest"
    assert p.returncode != 0 and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "meta/trials/tiers.npy" in lines[0], output
    expected = "not .npy" if payload == "raw-pickle" else "calls builtins.eval"
    assert expected in lines[0], lines[0]
    assert _scan_rows(fresh_source.name) == 0


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_db_init_refuses_pickle_payload_and_runs_nothing(db, fresh_source, tmp_path, payload):
    crafted = _crafted(fresh_source, tmp_path, payload, "zip" if payload == "raw-pickle" else "folder")
    p = _cli(tmp_path, "db", "init", "--recordings", str(crafted.parent))
    output = p.stdout + p.stderr
    assert not (tmp_path / MARKER).exists(), "the payload ran during db init"
    assert p.returncode == 1 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "meta/trials/tiers.npy" in errors[0], output
    assert "1 failed" in output
    assert _scan_rows(fresh_source.name) == 0


def test_pickled_object_array_of_strings_still_ingests(db, fresh_source, tmp_path):
    from schemas.data import Scan

    tiers = np.load(fresh_source / "meta/trials/tiers.npy")
    buf = io.BytesIO()
    np.save(buf, tiers.astype(object), allow_pickle=True)  # how older tools wrote string arrays
    (fresh_source / "meta/trials/tiers.npy").write_bytes(buf.getvalue())
    p = _cli(tmp_path, "ingest", "-q", str(fresh_source))
    assert p.returncode == 0 and "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    assert "ingested from" in p.stdout
    key = {"folder_name": fresh_source.name}
    trials = (Scan.Trial & (Scan & key).proj()).to_dicts(order_by="trial_id")
    assert [t["tier"] for t in trials] == list(tiers.astype(str))
    assert not (tmp_path / MARKER).exists()
