"""What the notebooks in ``notebooks/`` share: binding the schemas from a notebook's folder.

A notebook runs with ``notebooks/`` as its working folder, while ``make demo`` keeps its state in the
repository's ``.sensorium``; :func:`open_database` looks there when ``SENSORIUM_HOME`` is unset, so the
notebooks open the demo's database as the command line run from the repository root would. With
``SENSORIUM_HOME`` or ``DJ_HOST`` set (the compose file's notebook service) those win.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jobs.runner import populate
from pipeline.experiments import ExperimentSpec
from pipeline.settings import Settings, load_settings
from schemas.fabrik import Experiment, experiment_models
from schemas.training import TrainedModel
from usecases.experiments import add_experiment


def open_database() -> Settings:
    """Activate the schemas on the configured database (``SENSORIUM_HOME`` defaults to the checkout's
    ``.sensorium`` when the notebook runs inside it). Returns the settings (see :func:`describe`)."""
    import schemas

    if not os.environ.get("SENSORIUM_HOME"):
        here = Path.cwd()
        root = next((p for p in (here, *here.parents) if (p / "pyproject.toml").exists()), None)
        if root is not None:
            os.environ["SENSORIUM_HOME"] = str(root / ".sensorium")
    settings = load_settings()
    schemas.activate(settings=settings)
    return settings


def describe(settings: Settings) -> str:
    """Where the database is, in one line: server, schema prefix and login."""
    db = settings.database
    where = f"embedded server in {settings.db_dir}" if db.embedded else f"{db.host}:{db.port}"
    return f"database: {where}, schemas {settings.db_prefix}*, login {db.user}"


def may_write(table) -> bool:
    """Whether this login may insert into ``table`` (the deployment's analyst may not)."""
    query = "SELECT has_table_privilege(%s, 'INSERT')"
    return bool(table.connection.query(query, args=(table.full_table_name,)).fetchone()[0])


@dataclass(frozen=True)
class Shown:
    """The experiment a notebook shows (``name``) and what was done to get it, in one line."""

    name: str
    message: str


def train_or_find(spec: ExperimentSpec, settings: Settings) -> Shown:
    """The experiment a notebook shows: ``spec``'s, added and trained first when this login may write.

    A read-only login (the deployment's analyst) only looks: ``spec``'s experiment if it is stored, else
    the first stored experiment with trained models.

    Raises:
        LookupError: a read-only login and nothing trained to show.
    """
    stored = bool(Experiment & {"experiment_name": spec.name})
    if may_write(Experiment):
        if not stored:
            add_experiment(spec)
        if (TrainedModel.key_source & experiment_models(spec.name)) - TrainedModel.proj():
            restriction = (Experiment & {"experiment_name": spec.name}) * Experiment.Member
            results = populate("all", restriction, settings=settings)
            made = {table: result.get("success_count", 0) for table, result in results.items()}
            return Shown(spec.name, f"rows made: {made}")
        return Shown(spec.name, f"every model of {spec.name!r} is trained already")
    if stored:
        return Shown(spec.name, f"read-only login: showing {spec.name!r} as stored")
    trained = sorted({r["experiment_name"] for r in (TrainedModel.proj() * experiment_models()).to_dicts()})
    if not trained:
        raise LookupError(f"read-only login: {spec.name!r} is not stored and nothing is trained yet")
    return Shown(trained[0], f"read-only login: {spec.name!r} is not stored; showing {trained[0]!r}")
