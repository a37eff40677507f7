"""The pipeline's advisory locks, each wait bounded by ``SENSORIUM_LOCK_TIMEOUT_S``.

An advisory lock held by another session (a stuck process, or a login that took the same key) must not
block ingest or a sweep forever: PostgreSQL's ``lock_timeout`` applies to advisory-lock waits too, so the
wait is set to the timeout for that one statement, and a lock not granted in time becomes a
:class:`LockTimeoutError` naming the lock and the session holding it (pid, login, application), as
``pg_locks`` and ``pg_stat_activity`` show it to any login. A transaction-level lock's failure aborts the
transaction, so nothing of it is stored.

``schemas.roles`` also keeps analysts from taking these locks at all (where the applying role may).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from schemas.binding import bound_settings

if TYPE_CHECKING:
    import datajoint as dj

LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout

# the granted advisory lock of hashtext(%s) in this database (a bigint key: classid holds its high 32
# bits, objid its low 32, objsubid 1), with the session holding it
_HOLDER = """
WITH h AS (SELECT hashtext(%s)::bigint AS k)
SELECT l.pid, a.usename, a.application_name, a.client_addr::text
FROM pg_locks l CROSS JOIN h LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = ((h.k >> 32) & 4294967295)::oid AND l.objid = (h.k & 4294967295)::oid
  AND l.pid <> pg_backend_pid()
LIMIT 1
"""


class LockTimeoutError(RuntimeError):
    """A pipeline lock was not granted within ``SENSORIUM_LOCK_TIMEOUT_S`` (one line naming the holder)."""


def _holder(conn: dj.Connection, key: str) -> str:
    """Who holds the advisory lock of ``key``, in words (``another session`` when none is visible)."""
    row = conn.query(_HOLDER, args=(key,)).fetchone()
    if not row:
        return "another session"
    pid, user, application, address = row
    words = [f"pid {pid}"]
    if user:
        words.append(f"login {user}")
    if application:
        words.append(f"application {application}")
    if address:
        words.append(f"from {address}")
    return f"another session ({', '.join(words)})"


def advisory_lock(
    conn: dj.Connection, key: str, what: str, *, transaction: bool, timeout_s: float | None = None
) -> None:
    """Take the advisory lock on ``hashtext(key)``, waiting at most ``timeout_s``.

    Args:
        conn: the DataJoint connection (PostgreSQL; on another backend nothing is locked).
        key: the lock's name, e.g. ``sensorium-ingest:<data key>``.
        what: the lock in words for the error, e.g. ``the ingest lock of <data key>``.
        transaction: True: ``pg_advisory_xact_lock``, inside an open transaction, released at its end;
            False: ``pg_advisory_lock``, held by the session until :func:`advisory_unlock`.
        timeout_s: longest wait (default: the active settings' ``lock_timeout_s``).

    Raises:
        LockTimeoutError: not granted in time (inside a transaction, the transaction is aborted).
    """
    if conn.adapter.backend != "postgresql":
        return
    if timeout_s is None:
        timeout_s = bound_settings().lock_timeout_s
    kind = "xact_lock" if transaction else "lock"
    if conn.query(f"SELECT pg_try_advisory_{kind}(hashtext(%s))", args=(key,)).fetchone()[0]:
        return
    holder = _holder(conn, key)
    previous = conn.query("SELECT current_setting('lock_timeout')").fetchone()[0]
    # is_local: inside a transaction the setting ends with it; outside, it is restored below
    conn.query(
        "SELECT set_config('lock_timeout', %s, %s)",
        args=(f"{max(1, round(timeout_s * 1000))}ms", transaction),
    )
    try:
        conn.query(f"SELECT pg_advisory_{kind}(hashtext(%s))", args=(key,))
    except Exception as err:
        if getattr(err, "pgcode", None) != LOCK_NOT_AVAILABLE:
            raise
        if not transaction:
            conn.query("SELECT set_config('lock_timeout', %s, false)", args=(previous,))
        raise LockTimeoutError(
            f"waited {timeout_s:g} s for {what}: held by {holder}; nothing was changed. Try again once it "
            "ends, or ask an admin to end that session (SELECT pg_terminate_backend(<pid>)); the wait is "
            "SENSORIUM_LOCK_TIMEOUT_S"
        ) from None
    conn.query("SELECT set_config('lock_timeout', %s, %s)", args=(previous, transaction))


def advisory_unlock(conn: dj.Connection, key: str) -> None:
    """Release the session-level advisory lock on ``hashtext(key)`` taken by :func:`advisory_lock`."""
    if conn.adapter.backend == "postgresql":
        conn.query("SELECT pg_advisory_unlock(hashtext(%s))", args=(key,))


@contextlib.contextmanager
def session_lock(conn: dj.Connection, key: str, what: str, timeout_s: float | None = None) -> Iterator[None]:
    """A session-level advisory lock for the ``with`` block (not a transaction), with a bounded wait."""
    advisory_lock(conn, key, what, transaction=False, timeout_s=timeout_s)
    try:
        yield
    finally:
        advisory_unlock(conn, key)
