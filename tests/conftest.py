"""Shared fixtures: small synthetic recordings, and a throwaway schema prefix on the embedded server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.data.synth import SynthConfig, write_synthetic

SMALL = SynthConfig(n_neurons=20, n_trials=150, seed=11)
HEARTBEAT_S = 0.5
WORKER_TIMEOUT_S = 3.0


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """Two small recordings (the second competition-style), as folders and zips, with truth sidecars."""
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, 2, SynthConfig(**{**SMALL.__dict__, "competition": True}))
    return out


@pytest.fixture()
def recording_copy(synth_dir, tmp_path) -> Path:
    """A private, writable copy of the first (pre-training-style) recording folder."""
    src = sorted(p for p in synth_dir.iterdir() if p.is_dir())[0]
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def db(tmp_path_factory):
    """An activated throwaway prefix on an embedded PostgreSQL; dropped and stopped at the end."""
    import schemas
    from pipeline.database import remove_embedded_server
    from pipeline.settings import load_settings

    home = Path(tmp_path_factory.mktemp("home"))
    prefix = f"test{os.getpid()}_"
    os.environ["SENSORIUM_HOME"] = str(home)
    os.environ["SENSORIUM_DB_PREFIX"] = prefix
    os.environ.pop("DJ_HOST", None)
    # short worker timings, inherited by the worker processes tests start: a killed worker's jobs are
    # re-queued after 3 s instead of a minute
    os.environ.update(
        SENSORIUM_HEARTBEAT_S=str(HEARTBEAT_S), SENSORIUM_WORKER_TIMEOUT_S=str(WORKER_TIMEOUT_S)
    )
    settings = load_settings()
    conn = schemas.activate(settings=settings)
    yield settings
    schemas.drop(prefix, conn)
    conn.close()
    remove_embedded_server(settings.db_dir)
