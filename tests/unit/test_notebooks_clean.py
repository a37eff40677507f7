"""Committed notebooks carry no outputs, no execution counts and import what they need from the package;
the executed copies of ``docs/notebooks/`` (written by ``docs/render_notebooks.py``) are the one place
with outputs, and they hold the same cells as the notebooks."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
RENDERED = REPO / "docs" / "notebooks"
#: the largest figure accepted in an executed copy (modest dpi keeps the docs site light)
MAX_IMAGE_BYTES = 300_000


def _book(path: Path) -> dict:
    return json.loads(path.read_text())


def _code(book: dict) -> list[str]:
    return ["".join(c["source"]) for c in book["cells"] if c["cell_type"] == "code"]


def test_the_four_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["01_data", "02_train", "03_compare", "04_submit"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    for cell in _book(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_defines_nothing_the_package_needs(path):
    code = "\n".join(_code(_book(path)))
    assert not re.search(r"^\s*(def|class) ", code, re.M), f"{path.name} defines a function or class"
    assert re.search(r"^from usecases\.notebook import .*\bopen_database\b", code, re.M), path.name
    assert "settings = open_database()" in code, f"{path.name} opens the database through the package"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_explains_each_step(path):
    """Prose before each section: at least as many markdown cells as a third of the code cells."""
    cells = _book(path)["cells"]
    prose = [c for c in cells if c["cell_type"] == "markdown"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# "), path.name
    assert len(prose) * 3 >= len(cells) - len(prose), f"{path.name}: explain the steps in markdown cells"


def test_the_series_shows_each_step_in_plain_sight():
    """populate, load_model and the cascading delete are called in the notebooks, not behind a helper."""
    code = {p.stem: "\n".join(_code(_book(p))) for p in NOTEBOOKS}
    assert "ingest(" in code["01_data"]
    assert "add_experiment(spec)" in code["02_train"]
    assert re.search(r"^\s*results = populate\(", code["02_train"], re.M)
    assert "TrainedModel().load_model(key" in code["03_compare"]
    assert ".delete(prompt=False" in code["04_submit"]


def test_every_notebook_has_an_executed_copy_with_the_same_cells():
    copies = sorted(RENDERED.glob("*.ipynb"))
    assert [p.name for p in copies] == [p.name for p in NOTEBOOKS], (
        "docs/notebooks/ must hold one executed copy per notebook: run docs/render_notebooks.py"
    )

    def cells(path: Path) -> list[tuple[str, str]]:
        return [(c["cell_type"], "".join(c["source"])) for c in _book(path)["cells"]]

    for path in NOTEBOOKS:
        assert cells(RENDERED / path.name) == cells(path), (
            f"docs/notebooks/{path.name} is out of date: run .venv/bin/python docs/render_notebooks.py"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_copy_has_outputs_no_errors_clean_metadata_small_images(path):
    copy = RENDERED / path.name
    if not copy.exists():
        pytest.fail(f"no executed copy docs/notebooks/{path.name}: run docs/render_notebooks.py")
    book = _book(copy)
    assert set(book["metadata"]) <= {"kernelspec", "language_info"}, f"{copy.name}: clean the metadata"
    outputs = [o for c in book["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert outputs, f"{copy.name} has no outputs"
    assert not [o for o in outputs if o["output_type"] == "error"], f"{copy.name} holds an error"
    assert not [o for o in outputs if o.get("name") == "stderr"], f"{copy.name} holds stderr output"
    for cell in book["cells"]:
        assert "execution" not in cell.get("metadata", {}), f"{copy.name}: timing metadata left in"
    for o in outputs:
        image = o.get("data", {}).get("image/png")
        if image:
            size = len(base64.b64decode("".join(image)))
            assert size <= MAX_IMAGE_BYTES, f"{copy.name}: a {size}-byte figure (lower its size or dpi)"
    text = json.dumps(book)
    assert "sensorium-docs-" not in text, f"{copy.name} names the temporary world"
