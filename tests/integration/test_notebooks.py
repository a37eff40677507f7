"""The notebooks of ``notebooks/``, executed top to bottom (nbclient, a real kernel) on a throwaway
database laid out as ``make demo`` leaves it: recordings in ``$SENSORIUM_DATA/demo``, an experiment file
(a tiny ensemble here, ``experiments/demo.yaml`` in the demo). Any error in any cell fails the test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from pipeline.data.synth import SynthConfig, write_synthetic
from tests.factories import cli_argv, long_experiment

REPO = Path(__file__).parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture()
def demo_like(db, tmp_path, monkeypatch):
    """A fresh schema prefix on the test server, recordings where the demo writes them, an experiment."""
    import schemas

    prefix = f"nb{os.getpid()}_"
    data = tmp_path / "data"
    write_synthetic(data / "demo", 2, SynthConfig(n_neurons=20, n_trials=150, seed=12))
    spec = long_experiment("nb_tiny", "all", max_iter=2)
    spec.pop("seeds")
    spec["members"] = [{"seed": 1}, {"seed": 2}]
    spec["ensemble"] = {"comment": "notebook test"}
    experiment = tmp_path / "nb_tiny.yaml"
    experiment.write_text(yaml.safe_dump(spec))
    # the kernel inherits this process's environment
    monkeypatch.setenv("SENSORIUM_DB_PREFIX", prefix)
    monkeypatch.setenv("SENSORIUM_DATA", str(data))
    monkeypatch.setenv("SENSORIUM_NOTEBOOK_EXPERIMENT", str(experiment))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    yield prefix
    conn = schemas.connect(db)  # the session's owner login (the test may have switched to the analyst)
    schemas.drop(prefix, conn)
    conn.close()


def _execute(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"], path.name
    assert any(o.output_type in ("display_data", "execute_result") for o in outputs), (
        f"{path.name} shows nothing"
    )


@pytest.mark.slow
def test_every_notebook_runs_top_to_bottom_as_owner_then_as_read_only_analyst(demo_like, db, monkeypatch):
    from schemas.evaluation import Submission

    names = [p.name for p in NOTEBOOKS]
    assert names == ["01_data.ipynb", "02_train.ipynb", "03_compare.ipynb", "04_submit.ipynb"]
    for path in NOTEBOOKS:  # in order: each builds on the one before, as on the demo's database
        _execute(path)

    # the deployment's notebook service: the analyst role, no table creation, an experiment not stored
    env = dict(os.environ)
    roles = subprocess.run(
        cli_argv("db", "roles", "--apply"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert roles.returncode == 0, roles.stdout + roles.stderr
    login = subprocess.run(
        cli_argv("db", "user", "add", "nb_analyst", "--role", "analyst"),
        env=dict(env, SENSORIUM_NEW_PASSWORD="analyst-password-1"),
        capture_output=True,
        text=True,
    )
    assert login.returncode == 0, login.stdout + login.stderr
    recorded = len(Submission & {"ensemble_name": "nb_tiny"})
    for name, value in dict(
        DJ_HOST=str(db.db_dir),
        DJ_PORT="5432",
        DJ_USER="nb_analyst",
        DJ_PASS="analyst-password-1",
        SENSORIUM_CREATE_TABLES="false",
        SENSORIUM_NOTEBOOK_EXPERIMENT=str(REPO / "experiments" / "demo.yaml"),
    ).items():
        monkeypatch.setenv(name, value)
    for path in NOTEBOOKS:
        _execute(path)
    assert len(Submission & {"ensemble_name": "nb_tiny"}) == recorded, "the analyst recorded nothing"
