"""The notebooks of ``notebooks/``, executed top to bottom (nbclient, a real kernel) on a throwaway
database laid out as ``make demo`` leaves it: recordings in ``$SENSORIUM_DATA/demo``, an experiment file
(a tiny ensemble here, ``notebooks/tutorial.yaml`` by default). Any error in any cell fails the test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from pipeline.data.synth import SynthConfig, write_synthetic
from pipeline.settings import load_settings
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


def _execute(path: Path) -> nbformat.NotebookNode:
    book = nbformat.read(path, as_version=4)
    NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"], path.name
    assert any(o.output_type in ("display_data", "execute_result") for o in outputs), (
        f"{path.name} shows nothing"
    )
    return book


def _text(book: nbformat.NotebookNode) -> str:
    """Everything the notebook printed."""
    return "".join(o.get("text", "") for cell in book.cells if cell.cell_type == "code" for o in cell.outputs)


def _rows(prefix: str, table: type, where: str = "TRUE") -> int:
    """Rows of ``table`` under the notebooks' prefix. This process serves the session's own prefix (a
    process binds one), so the notebooks' schemas are read with plain SQL on a connection of its own."""
    import schemas

    conn = schemas.connect(load_settings())
    try:
        name = f'"{prefix}{table.__module__.rsplit(".", 1)[-1]}"."{table.table_name}"'
        return int(conn.query(f"SELECT count(*) FROM {name} WHERE {where}").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow
def test_the_series_runs_as_owner_and_as_read_only_analyst_then_cleans_up(demo_like, db, monkeypatch):
    """The owner ingests, trains, explores and loads a model (notebooks 1-3); the deployment's read-only
    analyst then runs all four on what is stored, writing nothing; the owner's notebook 4 submits and
    deletes what the series made."""
    from schemas.evaluation import Ensemble, Submission
    from schemas.fabrik import Experiment
    from schemas.training import TrainedModel

    names = [p.name for p in NOTEBOOKS]
    assert names == ["01_data.ipynb", "02_train.ipynb", "03_compare.ipynb", "04_submit.ipynb"]
    for path in NOTEBOOKS[:3]:  # in order: each builds on the one before
        _execute(path)
    experiment, ensemble = "experiment_name = 'nb_tiny'", "ensemble_name = 'nb_tiny'"
    assert _rows(demo_like, Experiment, experiment) == 1
    assert _rows(demo_like, TrainedModel) == 2, "notebook 2 trained both members"

    # the deployment's notebook service: the analyst role, no table creation, the notebooks' own
    # experiment not stored, so they show what is
    env = dict(os.environ)
    roles = subprocess.run(cli_argv("db", "roles", "--apply"), env=env, capture_output=True, text=True)
    assert roles.returncode == 0, roles.stdout + roles.stderr
    login = subprocess.run(
        cli_argv("db", "user", "add", "nb_analyst", "--role", "analyst"),
        env=dict(env, SENSORIUM_NEW_PASSWORD="analyst-password-1"),
        capture_output=True,
        text=True,
    )
    assert login.returncode == 0, login.stdout + login.stderr
    with monkeypatch.context() as analyst:
        for name, value in dict(
            DJ_HOST=str(db.db_dir),
            DJ_PORT="5432",
            DJ_USER="nb_analyst",
            DJ_PASS="analyst-password-1",
            SENSORIUM_CREATE_TABLES="false",
        ).items():
            analyst.setenv(name, value)
        analyst.delenv("SENSORIUM_NOTEBOOK_EXPERIMENT")  # the default, notebooks/tutorial.yaml
        printed = "".join(_text(_execute(path)) for path in NOTEBOOKS)
    assert "read-only login: 'tutorial' is not stored; showing 'nb_tiny'" in printed
    assert _rows(demo_like, Submission, ensemble) == 0, "the analyst recorded nothing"
    assert _rows(demo_like, TrainedModel) == 2 and _rows(demo_like, Experiment, experiment) == 1, (
        "the analyst deleted nothing"
    )

    # the owner again: submit, then clean up
    printed = _text(_execute(NOTEBOOKS[3]))
    assert "valid, recorded" in printed
    for table, where in ((Experiment, experiment), (TrainedModel, "TRUE"), (Ensemble, ensemble)):
        assert _rows(demo_like, table, where) == 0, f"{table.__name__} rows of nb_tiny are left"
    assert _rows(demo_like, Submission, ensemble) == 0
    assert not (db.home / "submission_notebook").exists()
