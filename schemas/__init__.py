"""DataJoint tables of the pipeline.

Importing has no side effects: the schemas are unbound until :func:`activate` binds them (in dependency
order) to ``<prefix><name>`` on a connection from :func:`connect`. It does check the environment first
(a malformed variable raises :class:`pipeline.settings.SettingsError`, before DataJoint reads it).

Example::

    import schemas
    schemas.activate()                 # embedded PostgreSQL under $SENSORIUM_HOME, prefix from settings
    from schemas.data import Scan
    Scan.Trial & {"tier": "test"}
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pipeline.settings import STORE_NAME, Settings, SettingsError, load_settings
from schemas.binding import BINDING, bound_settings

if TYPE_CHECKING:
    import datajoint as dj

#: schema modules in dependency order; each defines ``schema = dj.Schema()``
SCHEMA_MODULES = ("data", "regressors", "fabrik", "sweeps", "training", "evaluation", "workers")
#: schemas of a prefix that DataJoint does not manage: the Optuna studies of sweeps (``schemas.sweeps``)
OTHER_SCHEMAS = ("optuna",)
#: the training, prediction and state-fitting code that the tables' makes import where they use it (so
#: that commands which only read the database never load torch or scikit-learn)
COMPUTE_MODULES = ("pipeline.run", "pipeline.scoring.predict", "pipeline.regressors.state")


def _quiet_imports() -> None:
    """Import DataJoint and pgserver without their start-up noise.

    DataJoint warns at import that no ``datajoint.json`` exists (settings come from here instead) and
    logs every connection at INFO; platformdirs (via pgserver) warns about the runtime folder.

    DataJoint also reads the ``DJ_*`` variables when imported and fails with a pydantic validation error
    on one it cannot parse (``DJ_PORT=abc``): the environment is checked here first, so that the error is
    :class:`SettingsError`, one line naming the variable.

    Raises:
        SettingsError: an environment variable is malformed.
    """
    if "datajoint" not in sys.modules:
        load_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import datajoint  # noqa: F401
        except ValueError as err:  # pydantic's ValidationError: a DJ_* variable our checks let through
            raise SettingsError(_datajoint_env_error(err)) from None
        import pgserver  # noqa: F401
    logging.getLogger("datajoint").setLevel(logging.WARNING)


def _datajoint_env_error(err: ValueError) -> str:
    """One line from DataJoint's settings validation error: the variable and what was wrong (never the
    value, which may be a password)."""
    problems: list[dict] = getattr(err, "errors", lambda: [])()
    if not problems:
        return f"DataJoint could not read its settings from the environment: {str(err).splitlines()[0]}"
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "a DJ_* variable"
    return f"{where}: {first.get('msg', 'invalid value')} (read by DataJoint from the environment)"


# The schema modules import DataJoint at their top; importing it here first keeps that silent.
_quiet_imports()


def _no_tls_fallback_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("SSL connection failed")


def connect(settings: Settings | None = None) -> dj.Connection:
    """A connection to the configured PostgreSQL (starting the embedded one when no host is set).

    The connection carries its own DataJoint config (``dj.Instance``), with the object store named
    ``sensorium`` pointing at ``$SENSORIUM_HOME/store`` or at ``SENSORIUM_STORE``.
    """
    _quiet_imports()
    import datajoint as dj

    from pipeline.database import ensure_embedded_server
    from schemas.dj_compat import make_resilient, use_catalog_introspection

    settings = settings or load_settings()
    db = settings.database
    host = ensure_embedded_server(settings.db_dir) if db.embedded else db.host
    spec = dict(settings.store_spec)
    if spec.get("protocol") == "file":
        Path(spec["location"]).mkdir(parents=True, exist_ok=True)
    dj_log = logging.getLogger("datajoint")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No datajoint.json found")
        # with DJ_TLS unset DataJoint tries TLS, then plain; its warning about that fallback (printed
        # even when the server is simply unreachable) is noise here: DJ_TLS=true requires TLS
        dj_log.addFilter(_no_tls_fallback_warning)
        try:
            instance = dj.Instance(
                host=host,
                user=db.user,
                password=db.password,
                port=db.port,
                backend="postgresql",
                use_tls=False if db.embedded else settings.tls,
                stores={"default": STORE_NAME, STORE_NAME: spec},
                safemode=False,
                loglevel="WARNING",
            )
        finally:
            dj_log.removeFilter(_no_tls_fallback_warning)
    use_catalog_introspection(instance.connection)
    return make_resilient(instance.connection, settings.worker.db_retry_s)


def modules() -> list[ModuleType]:
    """The schema modules, in dependency order."""
    return [importlib.import_module(f"schemas.{name}") for name in SCHEMA_MODULES]


def import_compute_code() -> None:
    """Import :data:`COMPUTE_MODULES` now (a few seconds): a worker does it before its first job, so that
    no job's time, interruption handling or transaction includes the import."""
    for name in COMPUTE_MODULES:
        importlib.import_module(name)


def activate(
    prefix: str | None = None, connection: dj.Connection | None = None, settings: Settings | None = None
) -> dj.Connection:
    """Bind every schema to ``<prefix><name>``, creating schemas and tables when missing.

    Calling it again with the same prefix does nothing; a process can serve one prefix only (DataJoint
    schema objects are bound once).

    Returns:
        The connection the schemas are bound to.
    """
    settings = settings or load_settings()
    prefix = settings.db_prefix if prefix is None else prefix
    if BINDING.prefix is not None:
        if BINDING.prefix != prefix:
            raise RuntimeError(
                f"schemas are already active with prefix {BINDING.prefix!r}; "
                f"a process can serve one prefix (asked for {prefix!r})"
            )
        return BINDING.connection
    connection = connection or connect(settings)
    _quiet_imports()
    import datajoint as dj

    create = settings.create_tables
    with _declaration_lock(connection, prefix, settings):
        for module in modules():
            name = f"{prefix}{module.__name__.split('.')[-1]}"
            try:
                module.schema.activate(
                    name, connection=connection, create_schema=create, create_tables=create
                )
            except dj.DataJointError as err:
                if create:
                    raise
                raise SchemaNotDeclaredError(
                    f"{name}: {str(err).splitlines()[0]} (SENSORIUM_CREATE_TABLES=false: the schemas are "
                    "declared by the deployment's init step, as admin)"
                ) from err
        _declare_job_tables(create)
    BINDING.prefix, BINDING.connection, BINDING.settings = prefix, connection, settings
    return connection


@contextmanager
def _declaration_lock(connection: dj.Connection, prefix: str, settings: Settings) -> Iterator[None]:
    """Serialise declaring the schemas of ``prefix`` among processes (a session-level advisory lock).

    Two commands started at once on a fresh database would both find a schema or a table missing and
    both create it; the second fails (``duplicate key value violates unique constraint``). Holding the
    lock for the whole declaration makes the second wait (at most ``SENSORIUM_LOCK_TIMEOUT_S``), then
    find everything declared (DataJoint looks at what exists when a schema is activated). Taken only when
    this process may create tables: a process that may not (``SENSORIUM_CREATE_TABLES=false``) declares
    nothing.
    """
    if not settings.create_tables or connection.adapter.backend != "postgresql":
        yield
        return
    import datajoint as dj

    from schemas.locks import advisory_lock, advisory_unlock

    lock_key = f"sensorium-declare:{prefix}"
    try:
        advisory_lock(
            connection,
            lock_key,
            f"the declaration lock of prefix {prefix!r}",
            transaction=False,
            timeout_s=settings.lock_timeout_s,
        )
    except dj.errors.AccessError:
        # a login refused the lock functions (analysts: `sensorium db roles`) may not declare anything
        # either; DataJoint only finds what exists
        yield
        return
    try:
        yield
    except BaseException:
        # the declaration's own error is the one to report; the lock goes with the session anyway
        with suppress(Exception):
            advisory_unlock(connection, lock_key)
        raise
    advisory_unlock(connection, lock_key)


class SchemaNotDeclaredError(RuntimeError):
    """A schema, table or job table is missing and this process may not create it."""


def _declare_job_tables(create: bool = True) -> None:
    """Create every computed table's job queue now, in one process.

    DataJoint declares a job table on first use; two workers that first use it at the same moment
    contend for the DDL lock and one of them can wait for the other's whole run.
    """
    import datajoint as dj

    # a job table copies its key's SQL types, so DataJoint warns that `seed` (int32 in Seed) is the
    # native type 'integer': nothing to act on
    dj_log = logging.getLogger("datajoint")
    dj_log.addFilter(_no_native_type_warning)
    try:
        _declare_each_job_table(dj, create)
    finally:
        dj_log.removeFilter(_no_native_type_warning)


def _no_native_type_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Native type")


def _declare_each_job_table(dj, create: bool) -> None:
    from datajoint.jobs import Job

    for module in modules():
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, dj.Computed | dj.Imported)
                and obj.__module__ == module.__name__
            ):
                if not create and not Job(obj()).is_declared:
                    raise SchemaNotDeclaredError(
                        f"the job table of {obj.__name__} is missing (SENSORIUM_CREATE_TABLES=false: job "
                        "tables are declared by the deployment's init step, as admin)"
                    )
                len(obj().jobs)


def active_settings() -> Settings:
    """Settings of the active binding (after :func:`activate`); see :mod:`schemas.binding`."""
    return bound_settings()


def drop(prefix: str, connection: dj.Connection | None = None) -> None:
    """Drop every schema ``<prefix><name>`` with all its tables (reverse dependency order)."""
    connection = connection or connect()
    # the plain-SQL views (schemas/views.py) read the tables: first, or the CASCADE below would leave an
    # empty views schema behind
    connection.query(f'DROP SCHEMA IF EXISTS "{prefix}views" CASCADE')
    for name in reversed(SCHEMA_MODULES + OTHER_SCHEMAS):
        connection.query(f'DROP SCHEMA IF EXISTS "{prefix}{name}" CASCADE')


def table_counts(connection: dj.Connection, prefix: str) -> dict[str, dict[str, int]]:
    """Row count of every table, ``{schema: {table: rows}}`` (schemas that do not exist are skipped)."""
    out: dict[str, dict[str, int]] = {}
    for name in SCHEMA_MODULES:
        schema = f"{prefix}{name}"
        rows = connection.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name",
            args=(schema,),
        ).fetchall()
        if not rows:
            continue
        out[schema] = {
            t: int(connection.query(f'SELECT count(*) FROM "{schema}"."{t}"').fetchone()[0])
            for (t,) in rows
            if not t.startswith("~")
        }
    return out
