"""What the notebooks in ``notebooks/`` share: opening the database, choosing what to show, loading a model.

A notebook runs with ``notebooks/`` as its working folder. Its world (database, object store, caches) is
found as the command line finds it: ``SENSORIUM_HOME`` when set, else the first ``.sensorium`` folder in
the working folder or above it (so the notebooks open the checkout's demo database). ``DJ_HOST`` (the
compose file's notebook service) points at a server instead of the embedded one. Everything a notebook
*does* (declare, populate, query, delete) is called in the notebook itself; these functions only spare
it set-up code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.experiments import ExperimentSpec
from pipeline.settings import Settings, load_settings
from schemas.fabrik import Experiment, experiment_models
from schemas.training import TrainedModel


def open_database() -> Settings:
    """Activate the schemas on this notebook's world and return its settings (see :func:`describe`).

    The world is the one :func:`pipeline.settings.load_settings` finds: ``SENSORIUM_HOME`` when set,
    else the first ``.sensorium`` folder in the working folder or above it (from ``notebooks/``: the
    checkout's). ``DJ_HOST`` names a server instead of the embedded one.

    Raises:
        LookupError: no world is named or found and the database would be a new embedded one: a notebook
            does not create an empty world (it would hide the checkout's from then on).
    """
    import schemas

    settings = load_settings()
    if settings.home_is_new and settings.database.embedded:
        raise LookupError(
            f"no .sensorium world in {Path.cwd()} or above: run `make demo` in the checkout first, "
            "or set SENSORIUM_HOME"
        )
    schemas.activate(settings=settings)
    return settings


def describe(settings: Settings) -> str:
    """Where the world and the database are, in two lines: the world's folder and how it was found; the
    server, schema prefix and login."""
    db = settings.database
    where = f"embedded server in {settings.db_dir}" if db.embedded else f"{db.host}:{db.port}"
    found = "named by SENSORIUM_HOME" if settings.home_source == "SENSORIUM_HOME" else settings.home_source
    return (
        f"world: {settings.home} ({found})\ndatabase: {where}, schemas {settings.db_prefix}*, login {db.user}"
    )


def may_write(table) -> bool:
    """Whether this login may insert into ``table`` (the deployment's analyst may not)."""
    query = "SELECT has_table_privilege(%s, 'INSERT')"
    return bool(table.connection.query(query, args=(table.full_table_name,)).fetchone()[0])


@dataclass(frozen=True)
class Shown:
    """The experiment a notebook shows (``name``) and why that one, in one line (``message``)."""

    name: str
    message: str


def experiment_to_show(spec: ExperimentSpec) -> Shown:
    """The experiment the notebooks show: ``spec``'s when it is stored (or this login may store it).

    A read-only login (the deployment's analyst) cannot declare ``spec``; it is shown the first stored
    experiment with trained models instead.

    Raises:
        LookupError: a read-only login, ``spec`` not stored, and nothing trained to show.
    """
    if Experiment & {"experiment_name": spec.name}:
        return Shown(spec.name, f"experiment {spec.name!r} is stored")
    if may_write(Experiment):
        return Shown(spec.name, f"experiment {spec.name!r} is not stored yet")
    trained = sorted({r["experiment_name"] for r in (TrainedModel.proj() * experiment_models()).to_dicts()})
    if not trained:
        raise LookupError(f"read-only login: {spec.name!r} is not stored and nothing is trained yet")
    return Shown(trained[0], f"read-only login: {spec.name!r} is not stored; showing {trained[0]!r}")


def load_model(
    experiment: str,
    seed: int | None = None,
    include_dataloader: bool = False,
    device: str | None = None,
) -> torch.nn.Module | tuple[dict[str, Any], torch.nn.Module]:
    """The trained model of ``experiment``'s member with ``seed`` (None: its only trained model), rebuilt
    with its best weights: :meth:`schemas.training.TrainedModel.load_model` looked up by name.

    Raises:
        LookupError: no trained model of the experiment (with that seed), or several and no seed given.
    """
    members = experiment_models(experiment)
    if seed is not None:
        members = members & {"seed": seed}
    found = len(TrainedModel & members)
    if found != 1:
        which = f"experiment {experiment!r}" + (f" seed {seed}" if seed is not None else "")
        hint = " (give the seed)" if found > 1 else ""
        raise LookupError(f"{which} has {found} trained models; load_model needs one{hint}")
    return TrainedModel().load_model(members, include_dataloader=include_dataloader, device=device)
