"""Committed notebooks carry no outputs, no execution counts and import what they need from the package."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["01_data", "02_train", "03_compare", "04_submit"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    book = json.loads(path.read_text())
    for cell in book["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_defines_nothing_the_package_needs(path):
    code = "\n".join(
        "".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"
    )
    assert not re.search(r"^\s*(def|class) ", code, re.M), f"{path.name} defines a function or class"
    assert re.search(r"^from usecases\.notebook import .*\bopen_database\b", code, re.M), path.name
    assert "settings = open_database()" in code, f"{path.name} opens the database through the package"
