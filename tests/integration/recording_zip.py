"""Test support: a recording folder turned into the competition's zip layout."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path


def zip_in_place(folder: Path) -> Path:
    """Zip ``folder`` as ``<folder>.zip`` with the folder as its one top entry, then delete the folder.

    Returns:
        The zip's path.
    """
    archive = folder.with_name(folder.name + ".zip")
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    shutil.rmtree(folder)
    return archive
