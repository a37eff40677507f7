"""Shared fixtures: small synthetic recordings, and a throwaway schema prefix on the embedded server; the
test tiers (markers) applied by rule. Shared helpers (factories, the command-line runner): tests/factories.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.data.synth import SynthConfig, write_synthetic

SMALL = SynthConfig(n_neurons=20, n_trials=150, seed=11)
HEARTBEAT_S = 0.5
WORKER_TIMEOUT_S = 3.0

# -- test tiers ------------------------------------------------------------------------------------------
# The markers are registered in pyproject.toml. `database`, `gpu` and `external` follow from where a test
# lives and what it uses (the rules below); `slow` and `soak` are written in the test modules, from
# measured durations. `make test-fast` leaves out all five; `make test` runs everything.

TESTS = Path(__file__).parent
# every database fixture (session_scans, ingested, logins, scored, ...) depends on `db`, and an item's
# fixturenames hold the whole closure, so naming `db` catches them all
DATABASE_FIXTURES = frozenset({"db"})
# by folder (the first part of the path under tests/)
FOLDER_MARKS = {
    "integration": ("database",),  # the real PostgreSQL: the session's server, or one the test starts
    "gpu": ("gpu",),  # a CUDA device (tests/gpu/conftest.py skips them without one)
    "deploy": ("external", "slow"),  # a Docker engine, image builds, shellcheck
}
# by module (path under tests/)
MODULE_MARKS = {
    "integration/test_notebooks.py": ("external",),  # notebooks run on a Jupyter kernel (nbclient)
    "integration/test_report.py": ("external",),  # the report, rendered in Chromium via chromedriver
    "gpu/test_cuda_worker.py": ("database",),  # starts an embedded server of its own
}


def tier_marks(item: pytest.Item) -> set[str]:
    """The tier markers the rules give ``item`` (on top of any written in its module)."""
    try:
        where = Path(item.path).relative_to(TESTS).as_posix()
    except ValueError:  # collected from outside tests/
        return set()
    marks = set(FOLDER_MARKS.get(where.split("/", 1)[0], ())) | set(MODULE_MARKS.get(where, ()))
    if DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        marks.add("database")
    return marks


def pytest_collection_modifyitems(config, items):
    for item in items:
        present = {m.name for m in item.iter_markers()}
        for name in sorted(tier_marks(item) - present):
            item.add_marker(getattr(pytest.mark, name))


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
