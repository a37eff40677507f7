"""Deployment set-up (``sensorium db init``, the compose file's ``init`` service), one idempotent step
after another: declare the schemas, tables and job tables; create or update the roles and their grants;
(re)create the plain-SQL views (``<prefix>views``, readable by the roles); create or update the service
logins; ingest the recordings of the given folders; add the experiment files. Every input is checked
(:func:`check_inputs`) before the database is touched.
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
from schemas.views import VIEWS_VERSION, ViewsError, create_views, views_schema, views_sql
from usecases.experiments import add_experiment
from usecases.ingest import IngestConflictError, ingest
from usecases.roles import add_user, apply_roles, views_grants_sql


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
    # after the roles: the views' grants need the roles, and the workers' heartbeat timing (a table the
    # roles step creates) is shown only if it exists when the views are made
    try:
        views = install_views(conn, settings)
    except ViewsError as err:
        yield Step(f"error: {err}", ok=False)
    else:
        yield Step(
            f"views     {views_schema(settings.db_prefix)}: {len(views)} views, version {VIEWS_VERSION}"
        )
    for login, password in inputs.logins:  # only the password's SCRAM verifier reaches the server
        existed = add_user(conn, login.name, login.role, password)
        yield Step(f"login     {login.name} (sensorium_{login.role}): {'updated' if existed else 'created'}")
    for path in inputs.recordings:
        yield ingest_one(settings, path, progress=False)
    for path in inputs.experiments:
        yield _add_experiment_file(path)


def install_views(connection, settings: Settings) -> list[str]:
    """(Re)create the plain-SQL views of the prefix (``schemas.views``) with their owner and grants, in one
    transaction (the schemas must be active). Returns the names of the views.

    Raises:
        ViewsError: they cannot be recreated (e.g. a view elsewhere depends on them); nothing changed.
    """
    from jobs.isolation import token_table
    from pipeline.provenance import code_version

    return create_views(
        connection,
        settings.db_prefix,
        heartbeat_table=token_table(),
        after=[views_grants_sql(settings.db_prefix)],
        code_version=code_version(),
        timeout_s=settings.lock_timeout_s,
    )


def views_statements(connection, settings: Settings) -> list[str]:
    """The statements ``install_views`` runs after dropping the old views (schema, views, comments,
    grants), for a DBA to read or run by hand (``sensorium db views --sql``)."""
    from jobs.isolation import token_table
    from pipeline.provenance import code_version

    heartbeat: str | None = token_table()
    if not connection.query("SELECT to_regclass(%s)", args=(heartbeat,)).fetchone()[0]:
        heartbeat = None  # no worker has run yet: the workers view shows no heartbeat timing
    return [
        *views_sql(settings.db_prefix, heartbeat, code_version()),
        views_grants_sql(settings.db_prefix),
    ]


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
        return Step(f"error: {err.located(path)}", ok=False)
    existed = bool(Experiment & {"experiment_name": spec.name})
    try:
        add_experiment(spec, "init")
    except (ConfigError, ValueError) as err:
        # a redeploy must not fail on these: the stored experiment stays as it was trained (e.g. its
        # `scans: all` would now cover a new recording), or one with `scans: all` waits for recordings
        what = "the stored experiment is kept" if existed else "not added"
        return Step(f"warning: {path.name}: {str(err).splitlines()[0]}; {what}")
    return Step(f"experiment {spec.name}: {'already stored' if existed else 'added'} ({path.name})")
