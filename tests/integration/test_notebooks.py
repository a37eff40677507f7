"""The notebooks of ``notebooks/``, executed top to bottom (nbclient, a real kernel) on a throwaway
database laid out as ``make demo`` leaves it: recordings in ``$SENSORIUM_DATA/demo``, an experiment file
(a tiny ensemble here, ``experiments/demo.yaml`` in the demo). Any error in any cell fails the test."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from test_worker import long_experiment

from pipeline.data.synth import SynthConfig, write_synthetic

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
    schemas.drop(prefix)


def test_every_notebook_runs_top_to_bottom(demo_like):
    assert [p.name for p in NOTEBOOKS] == [
        "01_data.ipynb",
        "02_train.ipynb",
        "03_compare.ipynb",
        "04_submit.ipynb",
    ]
    for path in NOTEBOOKS:  # in order: each builds on the one before, as on the demo's database
        book = nbformat.read(path, as_version=4)
        NotebookClient(
            book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
        outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert any(o.output_type in ("display_data", "execute_result") for o in outputs), (
            f"{path.name} shows nothing"
        )
