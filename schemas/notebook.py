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


def may_write(table) -> bool:
    """Whether this login may insert into ``table`` (the deployment's analyst may not)."""
    query = "SELECT has_table_privilege(%s, 'INSERT')"
    return bool(table.connection.query(query, args=(table.full_table_name,)).fetchone()[0])


def train_or_find(spec) -> str:
    """The experiment a notebook shows: ``spec``'s, added and trained first when this login may write.

    A read-only login (the deployment's analyst) only looks: ``spec``'s experiment if it is stored, else
    the first stored experiment with trained models.

    Raises:
        LookupError: a read-only login and nothing trained to show.
    """
    from schemas.fabrik import Experiment, add_experiment, experiment_models
    from schemas.training import TrainedModel
    from schemas.workers import populate

    stored = bool(Experiment & {"experiment_name": spec.name})
    if may_write(Experiment):
        if not stored:
            add_experiment(spec)
        if (TrainedModel.key_source & experiment_models(spec.name)) - TrainedModel.proj():
            results = populate("all", (Experiment & {"experiment_name": spec.name}) * Experiment.Member)
            print({table: result.get("success_count", 0) for table, result in results.items()})
        else:
            print(f"every model of {spec.name!r} is trained already")
        return spec.name
    if stored:
        print(f"read-only login: showing {spec.name!r} as stored")
        return spec.name
    trained = sorted({r["experiment_name"] for r in (TrainedModel.proj() * experiment_models()).to_dicts()})
    if not trained:
        raise LookupError(f"read-only login: {spec.name!r} is not stored and nothing is trained yet")
    print(f"read-only login: {spec.name!r} is not stored; showing {trained[0]!r}")
    return trained[0]
