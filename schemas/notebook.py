"""What the notebooks in ``notebooks/`` share: binding the schemas from a notebook's folder.

A notebook runs with ``notebooks/`` as its working folder, while ``make demo`` keeps its state in the
repository's ``.sensorium``; :func:`open_database` looks there when ``SENSORIUM_HOME`` is unset, so the
notebooks open the demo's database as the command line run from the repository root would. With
``SENSORIUM_HOME`` or ``DJ_HOST`` set (the compose file's notebook service) those win.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.settings import Settings, load_settings


def open_database() -> Settings:
    """Activate the schemas on the configured database; print where it is. Returns the settings."""
    import schemas

    if not os.environ.get("SENSORIUM_HOME"):
        here = Path.cwd()
        root = next((p for p in (here, *here.parents) if (p / "pyproject.toml").exists()), None)
        if root is not None:
            os.environ["SENSORIUM_HOME"] = str(root / ".sensorium")
    settings = load_settings()
    schemas.activate(settings=settings)
    db = settings.database
    where = f"embedded server in {settings.db_dir}" if db.embedded else f"{db.host}:{db.port}"
    print(f"database: {where}, schemas {settings.db_prefix}*, login {db.user}")
    return settings
