"""docs/sql.md describes every SQL view and every column that ``schemas.views`` creates, in order."""

from __future__ import annotations

import re
from pathlib import Path

from schemas.views import VIEW_DOCS

DOC = Path(__file__).parents[2] / "docs" / "sql.md"


def test_every_view_and_column_is_documented_in_order():
    reference = DOC.read_text().split("\n## The views\n", 1)[1]
    sections = re.split(r"^### ", reference, flags=re.MULTILINE)[1:]
    documented = {}
    for section in sections:
        heading, _, body = section.partition("\n")
        documented[heading.strip().strip("`")] = re.findall(r"^\| `(\w+)` \|", body, flags=re.MULTILINE)
    assert list(documented) == [v for v in VIEW_DOCS if v != "views_version"] + ["views_version"]
    for view, doc in VIEW_DOCS.items():
        assert documented[view] == list(doc.columns), f"docs/sql.md, view {view}: columns differ"
