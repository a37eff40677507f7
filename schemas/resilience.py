"""A DataJoint connection that survives a dropped connection or a restarted server.

DataJoint 2.3.5 reconnects only on its own ``LostConnectionError``, but on PostgreSQL a killed backend
surfaces as ``psycopg2.OperationalError`` (not translated) and every later query as
``psycopg2.InterfaceError: connection already closed`` (raised before DataJoint's retry), so one
``pg_terminate_backend`` or server restart kills a worker at its next query: after hours of training,
at the insert. :class:`ResilientConnection` retries such queries with exponential backoff for a bounded
time (``SENSORIUM_DB_RETRY_S``; once the process is asked to stop, ``lifecycle.STOP_BUDGET_S`` at
most). Inside a transaction nothing is retried: the caller gets ``LostConnectionError`` and redoes the
whole transaction. (A lost COMMIT may have committed: the job runner reruns DataJoint's populate, which
finds the row and does nothing. A statement retried after its reply was lost may have run twice; the
worker's own statements are written to be idempotent or checked, e.g. the reservation.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import datajoint as dj
from datajoint.errors import LostConnectionError

from pipeline import lifecycle

log = logging.getLogger(__name__)

_FIRST_DELAY_S = 0.5
_MAX_DELAY_S = 15.0


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
    """``dj.Connection`` whose queries reconnect and retry when the connection is lost.

    Not inside a transaction: there the caller gets ``LostConnectionError`` and redoes the transaction.
    """

    retry_s: float = 600.0

    def query(self, query, args=(), *, as_dict=False, suppress_warnings=True, reconnect=None):
        delay, deadline = _FIRST_DELAY_S, None
        while True:
            try:
                return super().query(
                    query, args, as_dict=as_dict, suppress_warnings=suppress_warnings, reconnect=False
                )
            except Exception as err:
                if not connection_is_lost(self, err):
                    raise
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
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
