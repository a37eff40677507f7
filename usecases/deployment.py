"""Deployment set-up (``sensorium db init``, the compose file's ``init`` service), one idempotent step
after another: declare the schemas, tables and job tables; create or update the roles and their grants;
create or update the service logins; ingest the recordings of the given folders; add the experiment
files. Every input is checked (:func:`check_inputs`) before the database is touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.configs import ConfigError
from pipeline.data.format import RecordingFormatError
from pipeline.experiments import load_experiment
from pipeline.init_inputs import InitError, Login, experiment_files, read_password_file, recording_paths
from pipeline.settings import Settings
from schemas import activate, modules
from schemas.fabrik import Experiment
from usecases.experiments import add_experiment
from usecases.ingest import IngestConflictError, ingest
from usecases.roles import add_user, apply_roles


@dataclass(frozen=True)
class InitInputs:
    """Everything ``db init`` was given, checked: logins with their passwords, recordings, experiments."""

    logins: list[tuple[Login, str]]
    recordings: list[Path]
    experiments: list[Path]


def check_inputs(logins: list[Login], recordings: list[Path], experiments: list[Path]) -> InitInputs:
    """Read the password files and list the recordings and experiment files.

    Raises:
        InitError: a password file, a folder or a file that cannot be used (the message names it).
    """
    passwords = [
        read_password_file(lg.password_file, f"--login {lg.role}:{lg.name} password file") for lg in logins
    ]
    return InitInputs(
        list(zip(logins, passwords, strict=True)), recording_paths(recordings), experiment_files(experiments)
    )


@dataclass(frozen=True)
class Step:
    """One reported step of the set-up: ``ok`` False for a failure that the exit status must show."""

    text: str
    ok: bool = True


def init_deployment(settings: Settings, inputs: InitInputs) -> Iterator[Step]:
    """Run the set-up steps, yielding one :class:`Step` per thing done (the caller shows them as they
    come). A recording or experiment file that fails is reported and skipped; the others go on.

    Raises:
        InitError: this process may not declare tables (``SENSORIUM_CREATE_TABLES=false``).
    """
    if not settings.create_tables:
        raise InitError("db init declares the schemas: unset SENSORIUM_CREATE_TABLES (it is false here)")
    conn = activate(settings=settings)
    names = [f"{settings.db_prefix}{m.__name__.split('.')[-1]}" for m in modules()]
    yield Step(f"schemas   {', '.join(names)}: declared, with their job tables")
    statements = apply_roles(conn, settings.db_prefix, modules())
    yield Step(
        f"roles     sensorium_admin, sensorium_worker, sensorium_analyst: {len(statements)} statements"
    )
    for login, password in inputs.logins:  # only the password's SCRAM verifier reaches the server
        existed = add_user(conn, login.name, login.role, password)
        yield Step(f"login     {login.name} (sensorium_{login.role}): {'updated' if existed else 'created'}")
    for path in inputs.recordings:
        yield ingest_one(settings, path, progress=False)
    for path in inputs.experiments:
        yield _add_experiment_file(path)


def ingest_one(settings: Settings, path: Path, progress: bool) -> Step:
    """Ingest one recording; a bad one is a failed step (nothing stored), not an exception."""
    start = time.perf_counter()
    try:
        result = ingest(path, cache_dir=settings.cache_dir, data_root=settings.data_root, progress=progress)
    except (RecordingFormatError, IngestConflictError) as err:
        return Step(f"error: {err}", ok=False)
    verb = "ingested" if result.status == "inserted" else "already stored (no change)"
    return Step(f"{result.data_key}: {verb} from {path} [{time.perf_counter() - start:.1f} s]")


def _add_experiment_file(path: Path) -> Step:
    try:
        spec = load_experiment(path, [])
    except ConfigError as err:
        return Step(f"error: {path}: {err}", ok=False)
    existed = bool(Experiment & {"experiment_name": spec.name})
    try:
        add_experiment(spec, "init")
    except (ConfigError, ValueError) as err:
        # a redeploy must not fail on these: the stored experiment stays as it was trained (e.g. its
        # `scans: all` would now cover a new recording), or one with `scans: all` waits for recordings
        what = "the stored experiment is kept" if existed else "not added"
        return Step(f"warning: {path.name}: {str(err).splitlines()[0]}; {what}")
    return Step(f"experiment {spec.name}: {'already stored' if existed else 'added'} ({path.name})")
