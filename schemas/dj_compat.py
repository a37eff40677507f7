"""Every patch this project applies to DataJoint, in one place, for the one DataJoint version it was
written against (importing this module with another version fails: each patch must then be checked).

1. **Primary keys from** ``pg_catalog`` (:class:`CatalogPostgreSQLAdapter`). DataJoint 2.3.5's PostgreSQL
   adapter reads primary keys from ``information_schema.table_constraints`` and ``key_column_usage``,
   which show a table's constraints only to roles holding a privilege other than SELECT on it
   (SQL-standard visibility). A read-only analyst then sees tables without primary keys and DataJoint
   fails on its first query (``SELECT count(DISTINCT )``), and a worker sees none on the configuration
   tables it may only read. ``pg_constraint`` is readable by every role; the two queries return the
   same rows from it.
2. **Reconnecting connection** (:class:`ResilientConnection`). DataJoint 2.3.5 reconnects only on its own
   ``LostConnectionError``, but on PostgreSQL a killed backend surfaces as ``psycopg2.OperationalError``
   (not translated) and every later query as ``psycopg2.InterfaceError: connection already closed``
   (raised before DataJoint's retry), so one ``pg_terminate_backend`` or server restart kills a worker
   at its next query: after hours of training, at the insert. Such queries are retried with exponential
   backoff for a bounded time (``SENSORIUM_DB_RETRY_S``; once the process is asked to stop,
   ``lifecycle.STOP_BUDGET_S`` at most). Inside a transaction nothing is retried: the caller gets
   ``LostConnectionError`` and redoes the whole transaction. (A lost COMMIT may have committed: the job
   runner reruns DataJoint's populate, which finds the row and does nothing. A statement retried after
   its reply was lost may have run twice; the worker's own statements are idempotent or checked.)
   A statement outside a transaction that the server aborted as a deadlock victim or for a
   serialization failure (:func:`is_transient_conflict`) is run again too, a few times: it changed
   nothing. Inside a transaction the caller gets the error and redoes the transaction.
3. **Session settings as startup options** (:func:`carry_session_setting`): a custom setting (the
   worker token) passed to every (re)connection of a connection through libpq's ``PGOPTIONS``, by
   swapping the connection's adapter class and reconnecting it once.
4. **Object-store writes recorded** (:func:`store_writes_removed_on_error`), by wrapping
   ``StorageBackend.put_buffer``, DataJoint's one write of a file, so that the files of a refused or
   rolled-back insert can be removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Any

import datajoint as dj
from datajoint.adapters.postgres import PostgreSQLAdapter
from datajoint.errors import LostConnectionError

from pipeline import lifecycle

#: the DataJoint release these patches were written against and checked with
PATCHED_VERSION = "2.3.5"
if dj.__version__ != PATCHED_VERSION:
    raise ImportError(
        f"schemas.dj_compat patches DataJoint {PATCHED_VERSION} internals but DataJoint {dj.__version__} "
        "is installed: check each patch against it (and the version pinned in pyproject.toml)"
    )

log = logging.getLogger(__name__)


# -- 1. primary keys from pg_catalog ----------------------------------------------------------------------


class CatalogPostgreSQLAdapter(PostgreSQLAdapter):
    """DataJoint's PostgreSQL adapter with primary-key introspection from ``pg_catalog``."""

    def get_primary_key_sql(self, schema_name: str, table_name: str) -> str:
        return (
            "SELECT a.attname AS column_name FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            f"WHERE c.contype = 'p' AND n.nspname = {self.quote_string(schema_name)} "
            f"AND t.relname = {self.quote_string(table_name)} ORDER BY k.ord"
        )

    def load_primary_keys_sql(self, schemas_list: str, like_pattern: str) -> str:
        return (
            "SELECT '\"' || n.nspname || '\".\"' || t.relname || '\"' AS tab, a.attname AS column_name "
            "FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "CROSS JOIN LATERAL unnest(c.conkey) AS k(attnum) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            f"WHERE c.contype = 'p' AND t.relname NOT LIKE {like_pattern} AND n.nspname IN ({schemas_list})"
        )


def use_catalog_introspection(connection) -> None:
    """Give ``connection`` the catalog-based adapter (in place; same backend, same behaviour otherwise)."""
    if isinstance(connection.adapter, PostgreSQLAdapter):
        connection.adapter.__class__ = CatalogPostgreSQLAdapter


# -- 2. the reconnecting connection ----------------------------------------------------------------------

_FIRST_DELAY_S = 0.5
_MAX_DELAY_S = 15.0
#: how often a statement outside a transaction is run again after the server aborted it as a conflict
CONFLICT_RETRIES = 5
#: SQLSTATEs of a statement that the server aborted because of other sessions, not because of itself
TRANSIENT_CONFLICTS = {"40P01": "deadlock detected", "40001": "serialization failure"}


#: jitter of the pauses between such retries: its own generator, so that no seeded global state moves
_JITTER = random.Random()


def is_transient_conflict(err: BaseException) -> bool:
    """Whether ``err`` is a deadlock or serialization failure: the server rolled the statement (or the
    transaction) back because of concurrent sessions, and running it again is expected to succeed."""
    return getattr(err, "pgcode", None) in TRANSIENT_CONFLICTS


def connection_is_lost(conn: dj.Connection, err: BaseException) -> bool:
    """Whether ``err`` means the connection itself is gone (as opposed to a bad query)."""
    if isinstance(err, LostConnectionError):
        return True
    raw = getattr(conn, "_conn", None)
    module = type(err).__module__ or ""
    # psycopg2 marks a connection closed (1) or broken (2) once the server side is gone; a failed
    # statement on a healthy connection (syntax, constraint, cancel) leaves it at 0
    return module.startswith("psycopg2") and (raw is None or getattr(raw, "closed", 0) != 0)


class ResilientConnection(dj.Connection):
    """``dj.Connection`` whose queries reconnect and retry when the connection is lost, and run again
    when the server aborted them as a deadlock victim or a serialization failure.

    Not inside a transaction: there the caller gets ``LostConnectionError`` (or the conflict's error)
    and redoes the transaction.
    """

    retry_s: float = 600.0

    def query(self, query, args=(), *, as_dict=False, suppress_warnings=True, reconnect=None):
        delay, deadline, conflicts = _FIRST_DELAY_S, None, 0
        while True:
            try:
                return super().query(
                    query, args, as_dict=as_dict, suppress_warnings=suppress_warnings, reconnect=False
                )
            except Exception as err:
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                if is_transient_conflict(err) and not self._in_transaction and conflicts < CONFLICT_RETRIES:
                    # the server rolled the statement back whole: nothing of it happened
                    conflicts += 1
                    log.warning(
                        "%s; running the statement again (%d of %d)", reason, conflicts, CONFLICT_RETRIES
                    )
                    # a random pause, growing: the other session of the conflict gets ahead
                    time.sleep(_JITTER.uniform(0.05, 0.25) * conflicts)
                    continue
                if not connection_is_lost(self, err):
                    raise
                if self._in_transaction:
                    self._in_transaction = False
                    raise LostConnectionError(
                        "database connection lost during a transaction, which the server rolled back: "
                        f"{reason}"
                    ) from err
                now = time.monotonic()
                deadline = deadline or now + self.retry_s
                stop_by = lifecycle.stop_deadline()
                if stop_by is not None:
                    deadline = min(deadline, stop_by)  # a stopping worker must exit soon
                if now >= deadline:
                    raise LostConnectionError(f"database unreachable, gave up retrying: {reason}") from err
                log.warning("database connection lost (%s); reconnecting in %.1f s", reason, delay)
                pause = min(delay, max(deadline - now, 0.0))
                if lifecycle.stop_requested():
                    time.sleep(pause)
                else:
                    lifecycle.wait(pause)  # a stop request recomputes the deadline at once
                delay = min(delay * 2, _MAX_DELAY_S)
                self._reconnect()

    def cancel_transaction(self) -> None:
        """Roll back, unless no transaction is open (DataJoint's error path always calls this; after a
        lost connection the server has rolled back already and there is nothing to wait for)."""
        if not self._in_transaction:
            return
        super().cancel_transaction()

    def _reconnect(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:  # already broken: nothing to close
            pass
        try:
            self.connect()
            # job reservations record this id; keep it true after a reconnect (liveness does not use it)
            self.connection_id = self.adapter.get_connection_id(self._conn)
        except Exception as err:
            if not (type(err).__module__ or "").startswith("psycopg2"):
                raise
            self._is_closed = True  # server still down: the next query attempt raises and backs off again


@contextmanager
def short_retries(conn: dj.Connection, seconds: float) -> Iterator[None]:
    """Within the block, retry a lost connection for at most ``seconds`` (an exiting worker must exit)."""
    previous = getattr(conn, "retry_s", None)
    if previous is not None:
        conn.retry_s = min(previous, seconds)
    try:
        yield
    finally:
        if previous is not None:
            conn.retry_s = previous


def make_resilient(conn: dj.Connection, retry_s: float) -> dj.Connection:
    """Turn ``conn`` (made by ``dj.Instance``) into a :class:`ResilientConnection` in place."""
    conn.__class__ = ResilientConnection
    conn.retry_s = retry_s
    return conn


# -- 3. session settings passed at connect time -------------------------------------------------------------

#: setting name -> the function giving its value, for every connection whose adapter was swapped
_STARTUP_SETTINGS: dict[str, Callable[[], str]] = {}
_ENV_LOCK = threading.Lock()


class StartupSettingsAdapter(CatalogPostgreSQLAdapter):
    """The catalog adapter whose connections are opened with the registered session settings as libpq
    startup options (``PGOPTIONS``, set in the environment only while connecting, under a lock)."""

    def connect(self, host: str, port: int, user: str, password: str, **kwargs: Any) -> Any:
        option = " ".join(f"-c {name}={value()}" for name, value in sorted(_STARTUP_SETTINGS.items()))
        with _ENV_LOCK:
            previous = os.environ.get("PGOPTIONS")
            os.environ["PGOPTIONS"] = f"{previous} {option}" if previous else option
            try:
                return super().connect(host, port, user, password, **kwargs)
            finally:
                if previous is None:
                    os.environ.pop("PGOPTIONS", None)
                else:
                    os.environ["PGOPTIONS"] = previous


def carry_session_setting(conn: dj.Connection, name: str, value: Callable[[], str]) -> None:
    """Open ``conn`` again (once, when needed) so that its session has ``name = value()``, and keep it so
    after every reconnect.

    Raises:
        RuntimeError: not a PostgreSQL connection, or one inside a transaction.
    """
    _STARTUP_SETTINGS[name] = value
    if not isinstance(conn.adapter, StartupSettingsAdapter):
        if not isinstance(conn.adapter, PostgreSQLAdapter):
            raise RuntimeError("session settings need a PostgreSQL connection")
        conn.adapter.__class__ = StartupSettingsAdapter
    current = conn.query("SELECT current_setting(%s, true)", args=(name,)).fetchone()[0]
    if current == value():
        return
    if conn._in_transaction:
        raise RuntimeError(f"cannot set {name}: the connection is inside a transaction")
    reconnect = getattr(conn, "_reconnect", None)  # ResilientConnection: close, connect, new connection_id
    if reconnect is not None:
        reconnect()
        return
    with contextlib.suppress(Exception):  # already broken: nothing to close
        conn._conn.close()
    conn.connect()
    conn.connection_id = conn.adapter.get_connection_id(conn._conn)


# -- 4. object-store writes of a failed insert ---------------------------------------------------------------

# object-store files written by this thread while a `store_writes_removed_on_error` block is open
_written = threading.local()


def _record_store_writes() -> None:
    """Wrap DataJoint's one write of a file (``StorageBackend.put_buffer``), once per process, so that
    writes made inside a :func:`store_writes_removed_on_error` block are recorded (in that thread)."""
    from datajoint.storage import StorageBackend

    put_buffer = StorageBackend.put_buffer
    if getattr(put_buffer, "_sensorium_recorded", False):
        return

    def recorded_put_buffer(backend: StorageBackend, buffer: bytes, remote_path: str | PurePosixPath) -> None:
        paths = getattr(_written, "paths", None)
        if paths is not None:
            paths.append((backend, str(remote_path)))  # before writing: a partial file goes too
        put_buffer(backend, buffer, remote_path)

    recorded_put_buffer._sensorium_recorded = True  # type: ignore[attr-defined]
    StorageBackend.put_buffer = recorded_put_buffer


@contextmanager
def store_writes_removed_on_error() -> Iterator[None]:
    """Remove the object-store files written in the block when it raises.

    DataJoint writes an ``<npy@...>`` attribute's file while it encodes the row, before the INSERT runs:
    an insert that then fails (a login without INSERT rights, a constraint, a lost connection) or a
    transaction rolled back later would leave files that no row references. Every file written through
    DataJoint's storage backend in this thread is recorded and removed again on error (place the block
    outside the transaction, so that the rollback has happened when the files go). Files written by other
    threads and processes are never touched.
    """
    _record_store_writes()
    outer = getattr(_written, "paths", None)
    paths: list[tuple[Any, str]] = []
    _written.paths = paths
    try:
        yield
    except BaseException:
        for backend, remote_path in paths:
            try:
                backend.remove(remote_path)
            except Exception as err:  # the ingest's own error is the one to report
                log.warning("could not remove %s from the object store: %s", remote_path, err)
        raise
    finally:
        _written.paths = outer
        if outer is not None:  # an enclosing block answers for these files too
            outer.extend(paths)
