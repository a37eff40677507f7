"""Least-privilege database roles: the SQL of ``sensorium db roles`` and ``sensorium db user add``.

Three group roles (NOLOGIN), granted to people and services by ``db user add``:

- ``sensorium_admin`` owns the schemas and tables of a prefix: DDL, and every data change;
- ``sensorium_worker`` reads everything; inserts into computed / imported tables and their parts (and
  into ``Ensemble`` / ``Ensemble.Member``, which CPU workers register once members are trained);
  inserts, updates and deletes job-queue rows, but only its own reservations (row-level security);
  writes its own heartbeat (``workers.Worker``) only through the worker functions (``schemas.workers``);
  writes the Optuna tables of sweeps (``<prefix>optuna``: a pruning sweep's trials report their
  per-epoch scores from inside the training job). No DDL, no update or delete of data or configuration
  rows;
- ``sensorium_analyst`` reads everything.

Both readers also get the plain-SQL views of ``<prefix>views`` (``schemas.views``), which the admin role
owns: :func:`views_grants_sql`, part of the roles' statements and of every recreation of the views.

Every statement is idempotent (roles are created when missing, grants repeat harmlessly), so the
deployment's init step runs it on every deploy; running it again after a schema change also covers new
tables. What takes a table's exclusive lock (owner, row-level security, policies) is done only where it
differs, so a rerun that changes nothing waits for no lock of running workers. Default privileges make
tables that ``sensorium_admin`` creates later readable by workers and analysts at once; a new computed
table needs the next run for the worker's INSERT.

Advisory locks (the ingest lock of a data key, the lock of a sweep) are taken by admins and workers only:
when the role applying this may (a superuser, as the deployment's init step is), the ``pg_advisory_*``
lock functions of the database are revoked from PUBLIC and granted to ``sensorium_admin`` and
``sensorium_worker``, so an analyst cannot hold a pipeline lock. Every lock wait is bounded anyway
(``schemas.locks``, ``SENSORIUM_LOCK_TIMEOUT_S``).

Passwords never reach the server: ``db user add`` and ``db init --login`` send the SCRAM-SHA-256
verifier computed here (:func:`password_verifier`), which PostgreSQL stores as given, so no server log
(``log_statement``, or the statement of a failed command) can show the password.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import datajoint as dj

from schemas.dj_compat import is_transient_conflict
from schemas.sql_quoting import quote_ident as _q
from schemas.sql_quoting import quote_literal as _lit

if TYPE_CHECKING:
    import psycopg2.extensions

log = logging.getLogger(__name__)

#: how often the roles' transaction is tried when the server aborts it as a deadlock victim
ROLES_ATTEMPTS = 3

ADMIN, WORKER, ANALYST = "sensorium_admin", "sensorium_worker", "sensorium_analyst"
ROLES = {"admin": ADMIN, "worker": WORKER, "analyst": ANALYST}
# the lock-taking functions (every overload); the unlock functions stay PUBLIC: they free only one's own
ADVISORY_LOCK_FUNCTIONS = tuple(
    f"pg_{try_}advisory_{xact}lock{shared}"
    for try_ in ("", "try_")
    for xact in ("", "xact_")
    for shared in ("", "_shared")
)


def _tables(schema_modules) -> tuple[list[str], list[str], list[str]]:
    """Full names of (tables workers insert into, job tables, heartbeat tables), from the classes."""
    from jobs.queues import jobs_of
    from schemas.evaluation import Ensemble
    from schemas.workers import Worker

    inserts, jobs = [], []
    for module in schema_modules:
        for obj in vars(module).values():
            if not (isinstance(obj, type) and issubclass(obj, dj.Computed | dj.Imported)):
                continue
            if obj.__module__ != module.__name__:
                continue
            table: Any = obj  # a DataJoint table class (DataJoint is untyped)
            inserts.append(table.full_table_name)
            inserts += [p.full_table_name for p in _parts(table)]
            jobs.append(jobs_of(table).full_table_name)
    inserts += [Ensemble.full_table_name, Ensemble.Member.full_table_name]
    return inserts, jobs, [Worker.full_table_name]


def _parts(cls) -> list:
    return [v for v in vars(cls).values() if isinstance(v, type) and issubclass(v, dj.Part)]


def _worker_isolation_sql(jobs: list[str], heartbeat: list[str]) -> list[str]:
    """Workers sharing a login change only their own heartbeat row and their own reservations.

    The heartbeat table loses every direct write of the worker role (rows are written by the
    ``SECURITY DEFINER`` worker functions of ``schemas.workers``, owned by ``sensorium_admin``, which
    check the session's worker token; the token table holds only SHA-256 hashes, so it is readable like
    every table); each job table gets row-level security: everyone reads every row, and a reserved row
    is changed, deleted or written only when ``may_change_reservation`` allows it (its worker's session,
    or nobody's reservation). Owners (``sensorium_admin``) and superusers are not subject to it.
    """
    from jobs.isolation import api_functions, api_sql, reservation_guard, token_table

    worker = _q(WORKER)
    sql = api_sql()
    sql += [f"REVOKE INSERT, UPDATE, DELETE ON {t} FROM {worker}" for t in heartbeat]
    tokens, readers = token_table(), f"{worker}, {_q(ANALYST)}"
    # created after this run's GRANT SELECT ON ALL TABLES, the first time: granted here
    sql += [_table_owned_by_admin_sql(tokens), f"GRANT SELECT ON {tokens} TO {readers}"]
    for signature, granted in api_functions():
        sql.append(f"ALTER FUNCTION {signature} OWNER TO {_q(ADMIN)}")
        if granted:
            sql.append(f"GRANT EXECUTE ON FUNCTION {signature} TO {worker}")
    guard = reservation_guard()
    policies = {
        "sensorium_read": "FOR SELECT USING (true)",
        "sensorium_own_reservations": f"USING ({guard}) WITH CHECK ({guard})",
    }
    sql += [_row_security_sql(t, policies) for t in jobs]
    return sql


# Statements that take a table's ACCESS EXCLUSIVE lock (ALTER TABLE ... OWNER / ENABLE ROW LEVEL SECURITY,
# CREATE / DROP POLICY) run only where they change something. The deployment's init step applies the roles
# on every `docker compose up`, while workers hold locks on these tables: a transaction that re-took
# every table's exclusive lock deadlocked with a worker's multi-table query (seen in the deployment
# check). GRANT and REVOKE take no table lock.


def _table_owned_by_admin_sql(table: str) -> str:
    """``ALTER TABLE table OWNER TO sensorium_admin``, only when another role owns it."""
    return (
        f"DO $$ BEGIN IF (SELECT relowner FROM pg_class WHERE oid = {_lit(table)}::regclass) "
        f"<> '{ADMIN}'::regrole THEN ALTER TABLE {table} OWNER TO {_q(ADMIN)}; END IF; END $$"
    )


def _row_security_sql(table: str, policies: dict[str, str]) -> str:
    """One statement that enables row-level security on ``table`` and (re)creates ``policies`` ({name:
    clauses after ``ON table``}), each only where it is not so already.

    A policy made here carries a comment with a digest of its clauses; one without that comment (made by
    an earlier version, or dropped and created by hand) is dropped and created again. (An ``ALTER POLICY``
    by hand keeps the comment and is not noticed.) The first run after an upgrade from a version without
    these comments replaces every policy, and so takes each job table's exclusive lock once more.
    """
    parts = [
        f"IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = {_lit(table)}::regclass) THEN "
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; END IF; "
    ]
    for name, clauses in policies.items():
        digest = _lit("sensorium policy " + hashlib.sha256(clauses.encode()).hexdigest()[:16])
        parts.append(
            "IF NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = "
            f"{_lit(table)}::regclass AND p.polname = '{name}' AND obj_description(p.oid, 'pg_policy') = "
            f"{digest}) THEN DROP POLICY IF EXISTS {name} ON {table}; CREATE POLICY {name} ON {table} "
            f"{clauses}; COMMENT ON POLICY {name} ON {table} IS {digest}; END IF; "
        )
    return "DO $$ BEGIN " + "".join(parts) + "END $$"


def schema_names(prefix: str, schema_modules) -> tuple[list[str], list[str]]:
    """(DataJoint schemas, other schemas: the Optuna storage) of ``prefix``."""
    from schemas import OTHER_SCHEMAS

    return (
        [f"{prefix}{m.__name__.split('.')[-1]}" for m in schema_modules],
        [f"{prefix}{name}" for name in OTHER_SCHEMAS],
    )


def roles_sql(
    prefix: str,
    database: str,
    schema_names: list[str],
    schema_modules,
    worker_schemas: tuple[str, ...] | list[str] = (),
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
            f"DO $$ BEGIN IF (SELECT nspowner FROM pg_namespace WHERE nspname = {_lit(schema)}) <> "
            f"'{ADMIN}'::regrole THEN ALTER SCHEMA {s} OWNER TO {_q(ADMIN)}; END IF; END $$",
            # tables declared by whoever ran the first activation (often a superuser) move to the admin;
            # only those: the change takes each table's exclusive lock (see _table_owned_by_admin_sql)
            f"DO $$ DECLARE t record; BEGIN FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = "
            f"{_lit(schema)} AND tableowner <> '{ADMIN}' LOOP "
            f"EXECUTE format('ALTER TABLE %I.%I OWNER TO {ADMIN}', {_lit(schema)}, t.tablename); "
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
    sql += _worker_isolation_sql(jobs, heartbeat)
    for schema in worker_schemas:
        sql += [
            f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {_q(schema)} TO {_q(WORKER)}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {_q(schema)} TO {_q(WORKER)}",
        ]
    # schemas created later by the admin are readable without a new run
    sql += [f"ALTER DEFAULT PRIVILEGES FOR ROLE {_q(ADMIN)} GRANT USAGE ON SCHEMAS TO {readers}"]
    sql.append(views_grants_sql(prefix))
    sql.append(_advisory_lock_sql())
    return sql


def views_grants_sql(prefix: str) -> str:
    """The views of ``<prefix>views`` (``schemas.views``) owned by ``sensorium_admin`` and readable by
    workers and analysts; nobody else creates there. One idempotent statement.

    It does nothing where there is nothing to do or no right to do it: before the views exist, before the
    roles exist (an embedded home that never ran the roles step), and for a login that may not act as the
    schema's owner. An object changes owner only when this login may act as its present owner.

    The views run with their owner's rights (PostgreSQL's rule), so a login granted only this schema reads
    the results through them and nothing else; the roles here may read every table anyway.
    """
    from schemas.views import views_schema

    schema = views_schema(prefix)
    readers = f"{_q(WORKER)}, {_q(ANALYST)}"
    roles = " AND ".join(
        f"EXISTS (SELECT FROM pg_roles WHERE rolname = '{r}')" for r in (ADMIN, WORKER, ANALYST)
    )
    return (
        "DO $$ DECLARE v record; s oid; BEGIN "
        f"SELECT oid INTO s FROM pg_namespace WHERE nspname = '{schema}'; "
        f"IF s IS NULL OR NOT ({roles}) THEN RETURN; END IF; "
        "IF NOT pg_has_role(current_user, (SELECT nspowner FROM pg_namespace WHERE oid = s), 'USAGE') "
        "THEN RETURN; END IF; "
        f"IF (SELECT nspowner FROM pg_namespace WHERE oid = s) <> '{ADMIN}'::regrole THEN "
        f"ALTER SCHEMA {_q(schema)} OWNER TO {_q(ADMIN)}; END IF; "
        "FOR v IN SELECT c.relname, c.relowner FROM pg_class c WHERE c.relnamespace = s AND c.relkind = 'v' "
        f"LOOP IF v.relowner <> '{ADMIN}'::regrole AND pg_has_role(current_user, v.relowner, 'USAGE') THEN "
        f"EXECUTE format('ALTER VIEW %I.%I OWNER TO {ADMIN}', '{schema}', v.relname); END IF; END LOOP; "
        f"REVOKE CREATE ON SCHEMA {_q(schema)} FROM PUBLIC; "
        f"GRANT USAGE ON SCHEMA {_q(schema)} TO {readers}; "
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {_q(schema)} TO {readers}; "
        "END $$"
    )


def _advisory_lock_sql() -> str:
    """Revoke the advisory-lock functions from PUBLIC, granting them to the admin and worker roles.

    Only where the applying role may (the functions' owner, i.e. a superuser); elsewhere it changes
    nothing and the bounded lock waits of ``schemas.locks`` are the only guard. Function privileges are
    per database: this database only. Idempotent.
    """
    names = ", ".join(f"'{n}'" for n in ADVISORY_LOCK_FUNCTIONS)
    return (
        "DO $$ DECLARE f record; BEGIN FOR f IN SELECT p.oid::regprocedure AS sig, p.proowner FROM pg_proc p "
        f"WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname IN ({names}) LOOP "
        "IF pg_has_role(current_user, f.proowner, 'USAGE') THEN "
        "EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f.sig); "
        f"EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO {ADMIN}, {WORKER}', f.sig); "
        "END IF; END LOOP; END $$"
    )


def password_verifier(
    password: str, scope: psycopg2.extensions.connection | psycopg2.extensions.cursor
) -> str:
    """The SCRAM-SHA-256 verifier of ``password`` (RFC 5802 / 7677), computed in this process.

    ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64), with a random 16-byte salt
    and the server's ``scram_iterations`` (4096 by default) of PBKDF2-HMAC-SHA256, made by libpq's
    ``PQencryptPasswordConn`` (psycopg2's ``encrypt_password``: SASLprep included). PostgreSQL stores
    such a string as given, so the password itself never travels to the server, nor into its logs.

    Args:
        password: the new password.
        scope: a psycopg2 connection or cursor (libpq needs one for SCRAM; no statement is sent).

    Raises:
        ValueError: the password holds a NUL character.
    """
    from psycopg2.extensions import encrypt_password

    if "\x00" in password:
        raise ValueError("the password contains a NUL character (libpq would cut it there)")
    # the user name only salts md5, never SCRAM: any name gives the same kind of verifier
    return encrypt_password(password, "", scope, "scram-sha-256")


def user_sql(name: str, role: str, exists: bool) -> tuple[str, list[str]]:
    """(statement with one ``%s`` for the password's verifier, statements after it) that add or update a
    login.

    The ``%s`` takes :func:`password_verifier`'s string, never the password: psycopg2 fills parameters in
    on the client, so whatever is given there is in the statement text that server logs show.

    Raises:
        ValueError: an unknown role or an unusable user name.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {sorted(ROLES)}")
    if not name or not name.replace("_", "").replace("-", "").isalnum() or name.startswith("pg_"):
        raise ValueError(f"user name {name!r}: expected letters, digits, '_' or '-', not starting with pg_")
    if name in ROLES.values():
        raise ValueError(f"user name {name!r}: that is a group role, not a login; choose another name")
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
    attempt = 1
    while True:
        try:
            with connection.transaction:
                for statement in statements:
                    connection.query(statement.replace("%", "%%"))  # a literal '%' (format()) is no parameter
            return statements
        except Exception as err:
            # a first run, or one that changes a policy, locks tables that running workers use
            if not is_transient_conflict(err) or attempt == ROLES_ATTEMPTS:
                raise
            attempt += 1
            log.warning("roles: %s; applying them again (attempt %d)", str(err).splitlines()[0], attempt)
            time.sleep(attempt)


def add_user(connection, name: str, role: str, password: str) -> bool:
    """Create (or update: password and role) the login ``name`` in ``role``. Returns whether it existed.

    Only the password's SCRAM-SHA-256 verifier is sent (:func:`password_verifier`).
    """
    cursor = connection.query("SELECT 1 FROM pg_roles WHERE rolname = %s", args=(name,))
    exists = bool(cursor.fetchone())
    first, after = user_sql(name, role, exists)
    verifier = password_verifier(password, cursor)
    with connection.transaction:
        connection.query(first, args=(verifier,))
        for statement in after:
            connection.query(statement)
    return exists
