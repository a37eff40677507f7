"""The documentation stays self-contained: no file points outside the repository, the README stays short.

Users see the repository and the docs site built from ``docs/``, nothing beside the checkout, so no file
may cite the team's reference notes by their old names (the ``SPEC`` sections, ``DESIGN.md``) or a path
out of the checkout into ``../shared``: the model page (``docs/model.md``) says it in the project's own
words, and code comments point to its sections. Every such pointer must name an anchor that exists, and
every page must be in the site's navigation. These checks read files only, so they run without MkDocs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# not part of the repository's content: tools' state, build outputs, local worlds (.gitignore)
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "site",
    "build",
    ".sensorium",
    "demo-data",
    "lab",
    "secrets",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".import_linter_cache",
    ".grimp_cache",
}
BINARY_SUFFIXES = {".png", ".jpg", ".pth", ".pt", ".npy", ".npz", ".zip", ".gz", ".pdf", ".pyc"}
# the old names of the reference notes, and paths out of the checkout
OUTSIDE = re.compile(r"\bSPEC\b|SPEC\.md|DESIGN\.md|\.\./shared")
# files that may match: this test (it names the patterns)
ALLOWED = {Path("tests/unit/test_docs.py")}
MODEL_ANCHOR = re.compile(r"model\.md#([A-Za-z0-9_-]+)")
README_MAX_LINES = 300


def repo_text_files() -> list[Path]:
    """Every text file of the checkout outside tools' state and build outputs, relative to the root."""
    found = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if not path.is_file() or path.suffix in BINARY_SUFFIXES or rel.parts[0] in SKIPPED_DIRS:
            continue
        data = path.read_bytes()[:100_000]
        if b"\0" in data:
            continue
        found.append(rel)
    return found


@pytest.fixture(scope="module")
def texts() -> dict[Path, str]:
    return {rel: (REPO / rel).read_text(errors="replace") for rel in repo_text_files()}


def test_no_reference_outside_the_repository(texts: dict[Path, str]) -> None:
    hits = [
        f"{rel}:{number}: {line.strip()}"
        for rel, text in texts.items()
        if rel not in ALLOWED
        for number, line in enumerate(text.splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert not hits, "cite docs/model.md#<section> instead of:\n" + "\n".join(hits)


def test_model_page_anchors_exist(texts: dict[Path, str]) -> None:
    """Every ``model.md#x`` in code, comments and pages names a heading anchor of docs/model.md."""
    anchors = set(re.findall(r"\{#([A-Za-z0-9_-]+)\}", (REPO / "docs/model.md").read_text()))
    assert {"history", "network-state", "gain", "ensembles", "metrics", "deviations"} <= anchors
    missing = sorted(
        f"{rel}: model.md#{name}"
        for rel, text in texts.items()
        if rel not in ALLOWED
        for name in MODEL_ANCHOR.findall(text)
        if name not in anchors
    )
    assert not missing, "no such anchor in docs/model.md:\n" + "\n".join(missing)


def test_readme_short_and_without_issue_numbers() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert not re.search(r"issue\s*#?\d+", text, re.IGNORECASE)


def _nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    return []


def test_every_page_is_in_the_nav() -> None:
    """A page left out of mkdocs.yml's nav would be built but unreachable (``make test`` fails on it
    too, through ``mkdocs build --strict``; this check needs no MkDocs)."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    nav = set(_nav_pages(config["nav"]))
    pages = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    pages |= {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.ipynb")}
    assert not pages - nav, f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"
