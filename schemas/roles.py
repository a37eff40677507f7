"""Least-privilege database roles: the SQL of ``sensorium db roles`` and ``sensorium db user add``.

Three group roles (NOLOGIN), granted to people and services by ``db user add``:

- ``sensorium_admin`` owns the schemas and tables of a prefix: DDL, and every data change;
- ``sensorium_worker`` reads everything; inserts into computed / imported tables and their parts (and
  into ``Ensemble`` / ``Ensemble.Member``, which CPU workers register once members are trained);
  inserts, updates and deletes job-queue rows; inserts and updates its heartbeat (``workers.Worker``);
  writes the Optuna tables of sweeps (``<prefix>optuna``: a pruning sweep's trials report their
  per-epoch scores from inside the training job). No DDL, no update or delete of data or configuration
  rows;
- ``sensorium_analyst`` reads everything.

Every statement is idempotent (roles are created when missing, grants repeat harmlessly), so the
deployment's init step runs it on every deploy; running it again after a schema change also covers new
tables. Default privileges make tables that ``sensorium_admin`` creates later readable by workers and
analysts at once; a new computed table needs the next run for the worker's INSERT.
"""

from __future__ import annotations

import datajoint as dj

ADMIN, WORKER, ANALYST = "sensorium_admin", "sensorium_worker", "sensorium_analyst"
ROLES = {"admin": ADMIN, "worker": WORKER, "analyst": ANALYST}


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _tables(schema_modules) -> tuple[list[str], list[str], list[str]]:
    """Full names of (tables workers insert into, job tables, heartbeat tables), from the classes."""
    from schemas.evaluation import Ensemble
    from schemas.workers import Worker, jobs_of

    inserts, jobs = [], []
    for module in schema_modules:
        for obj in vars(module).values():
            if not (isinstance(obj, type) and issubclass(obj, dj.Computed | dj.Imported)):
                continue
            if obj.__module__ != module.__name__:
                continue
            inserts.append(obj.full_table_name)
            inserts += [p.full_table_name for p in _parts(obj)]
            jobs.append(jobs_of(obj).full_table_name)
    inserts += [Ensemble.full_table_name, Ensemble.Member.full_table_name]
    return inserts, jobs, [Worker.full_table_name]


def _parts(cls) -> list:
    return [v for v in vars(cls).values() if isinstance(v, type) and issubclass(v, dj.Part)]


def schema_names(prefix: str, schema_modules) -> tuple[list[str], list[str]]:
    """(DataJoint schemas, other schemas: the Optuna storage) of ``prefix``."""
    from schemas import OTHER_SCHEMAS

    return (
        [f"{prefix}{m.__name__.split('.')[-1]}" for m in schema_modules],
        [f"{prefix}{name}" for name in OTHER_SCHEMAS],
    )


def roles_sql(
    prefix: str, database: str, schema_names: list[str], schema_modules, worker_schemas: list[str] = ()
) -> list[str]:
    """The statements that create or update the three roles and their grants on ``prefix``'s schemas.

    Args:
        prefix: schema-name prefix (``SENSORIUM_DB_PREFIX``).
        database: the PostgreSQL database (for ``GRANT CONNECT``).
        schema_names: the schemas of the prefix (``<prefix><module>``), which must exist.
        schema_modules: the bound schema modules (to classify their tables).
        worker_schemas: schemas, not DataJoint's, whose every table workers write (the Optuna storage);
            they must exist too.
    """
    sql = [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
        f"CREATE ROLE {_q(role)} NOLOGIN; END IF; END $$"
        for role in (ADMIN, WORKER, ANALYST)
    ]
    readers = f"{_q(WORKER)}, {_q(ANALYST)}"
    sql += [f"GRANT CONNECT ON DATABASE {_q(database)} TO {_q(ADMIN)}, {readers}"]
    for schema in [*schema_names, *worker_schemas]:
        s = _q(schema)
        sql += [
            f"ALTER SCHEMA {s} OWNER TO {_q(ADMIN)}",
            # tables declared by whoever ran the first activation (often a superuser) move to the admin
            f"DO $$ DECLARE t record; BEGIN FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = "
            f"'{schema}' LOOP EXECUTE format('ALTER TABLE %I.%I OWNER TO {ADMIN}', '{schema}', t.tablename); "
            "END LOOP; END $$",
            f"GRANT USAGE ON SCHEMA {s} TO {readers}",
            f"REVOKE CREATE ON SCHEMA {s} FROM PUBLIC",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {readers}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {_q(ADMIN)} IN SCHEMA {s} "
            f"GRANT SELECT ON TABLES TO {readers}",
        ]
    inserts, jobs, heartbeat = _tables(schema_modules)
    sql += [f"GRANT INSERT ON {t} TO {_q(WORKER)}" for t in inserts]
    sql += [f"GRANT INSERT, UPDATE, DELETE ON {t} TO {_q(WORKER)}" for t in jobs]
    sql += [f"GRANT INSERT, UPDATE ON {t} TO {_q(WORKER)}" for t in heartbeat]
    for schema in worker_schemas:
        sql += [
            f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {_q(schema)} TO {_q(WORKER)}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {_q(schema)} TO {_q(WORKER)}",
        ]
    # schemas created later by the admin are readable without a new run
    sql += [f"ALTER DEFAULT PRIVILEGES FOR ROLE {_q(ADMIN)} GRANT USAGE ON SCHEMAS TO {readers}"]
    return sql


def user_sql(name: str, role: str, exists: bool) -> tuple[str, list[str]]:
    """(statement with one ``%s`` for the password, statements after it) that add or update a login.

    The password travels as a query parameter, never in the statement text that logs could show.

    Raises:
        ValueError: an unknown role or an unusable user name.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {sorted(ROLES)}")
    if not name or not name.replace("_", "").replace("-", "").isalnum() or name.startswith("pg_"):
        raise ValueError(f"user name {name!r}: expected letters, digits, '_' or '-', not starting with pg_")
    verb = "ALTER" if exists else "CREATE"
    first = f"{verb} ROLE {_q(name)} LOGIN PASSWORD %s"
    after = [f"REVOKE {_q(r)} FROM {_q(name)}" for r in ROLES.values() if r != ROLES[role]]
    after.append(f"GRANT {_q(ROLES[role])} TO {_q(name)}")
    if role == "admin":
        # tables an admin creates are owned by that login: let readers see them without a new run
        after.append(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {_q(name)} "
            f"GRANT SELECT ON TABLES TO {_q(WORKER)}, {_q(ANALYST)}"
        )
    return first, after


def apply_roles(connection, prefix: str, schema_modules) -> list[str]:
    """Run :func:`roles_sql` for ``prefix`` on ``connection`` in one transaction; returns the statements.

    The Optuna storage of sweeps is created first when missing, so that its tables exist to be granted.
    """
    from schemas.sweeps import storage

    storage()
    database = connection.query("SELECT current_database()").fetchone()[0]
    names, others = schema_names(prefix, schema_modules)
    statements = roles_sql(prefix, database, names, schema_modules, others)
    with connection.transaction:
        for statement in statements:
            connection.query(statement.replace("%", "%%"))  # a literal '%' (format()) is no parameter
    return statements


def add_user(connection, name: str, role: str, password: str) -> bool:
    """Create (or update: password and role) the login ``name`` in ``role``. Returns whether it existed."""
    exists = bool(connection.query("SELECT 1 FROM pg_roles WHERE rolname = %s", args=(name,)).fetchone())
    first, after = user_sql(name, role, exists)
    with connection.transaction:
        connection.query(first, args=(password,))
        for statement in after:
            connection.query(statement)
    return exists
