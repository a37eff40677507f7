"""Job reservations: reserve, complete, fail, give back, and take back those of dead workers.

Every write is one statement guarded by ``status`` and the owner (DataJoint's host and pid), so two
workers acting at once, or a worker finishing at that moment, cannot double a job. Dead workers are
judged by their heartbeat (:mod:`jobs.heartbeat`), never by DataJoint's ``connection_id``, which
DataJoint 2.3.5 records once per process and not after a reconnect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform

from datajoint.condition import make_condition

from jobs.isolation import api_name
from jobs.queues import QUEUES, jobs_of
from pipeline.settings import WorkerSettings
from schemas.workers import Worker

log = logging.getLogger(__name__)


def log_released(rows: list, host: str, pid: int, reason: str) -> int:
    """Log the (schema, job table, count) rows a worker function released; returns their total."""
    names = {(jobs_of(t).database, jobs_of(t).table_name): t.__name__ for t in QUEUES["all"]}
    for schema, table, n in rows:
        name = names.get((schema, table), table)
        log.warning("re-queued %d %s job(s) of %s pid %s (%s)", n, name, host, pid, reason)
    return sum(int(n) for _, _, n in rows)


# -- reservations ---------------------------------------------------------------------------------------


def _job_condition(table, key: dict) -> str:
    """SQL condition on a job's key (values inlined, ``%`` already escaped by DataJoint for parameters)."""
    jobs = jobs_of(table)
    return make_condition(jobs, {k: key[k] for k in jobs.primary_key}, set())


#: a reservation held by a given host and pid (the two query parameters)
OWNED = "status='reserved' AND host=%s AND pid=%s"


def release_reservations(table, host: str, pid: int, reason: str, key: dict | None = None) -> int:
    """Put jobs of ``table`` reserved by ``host``/``pid`` (only ``key``, if given) back to pending.

    One UPDATE guarded by ``status='reserved'`` and the owner, so two workers releasing at once, or a
    worker finishing at that moment, cannot double a job. Returns how many were released.
    """
    where = OWNED
    if key is not None:
        where += " AND " + _job_condition(table, key)
    cursor = table.connection.query(
        f"UPDATE {jobs_of(table).full_table_name} SET status='pending', reserved_time=NULL, host='', pid=0, "
        f"connection_id=0 WHERE {where}",
        args=(host, pid),
    )
    if cursor.rowcount:
        n, name = cursor.rowcount, table.__name__
        log.warning("re-queued %d %s job(s) of %s pid %s (%s)", n, name, host, pid, reason)
    return cursor.rowcount


def complete_job(table, key: dict) -> bool:
    """Remove this process's finished reservation of ``key`` (DataJoint's ``complete`` deletes whoever
    holds it). Returns whether it was still this process's."""
    where = f"{OWNED} AND {_job_condition(table, key)}"
    cursor = table.connection.query(
        f"DELETE FROM {jobs_of(table).full_table_name} WHERE {where}",
        args=(platform.node(), os.getpid()),
    )
    return cursor.rowcount == 1


def fail_job(table, key: dict, message: str, stack: str) -> bool:
    """Record this process's job of ``key`` as an error (message and stack); False if it is no longer
    this process's (then nothing is written: the job belongs to the worker that took it over)."""
    from datajoint.jobs import ERROR_MESSAGE_LENGTH, TRUNCATION_APPENDIX

    if len(message) > ERROR_MESSAGE_LENGTH:
        message = message[: ERROR_MESSAGE_LENGTH - len(TRUNCATION_APPENDIX)] + TRUNCATION_APPENDIX
    jobs = jobs_of(table)
    cursor = table.connection.query(
        f"UPDATE {jobs.full_table_name} SET status='error', completed_time=CURRENT_TIMESTAMP(3), "
        f"error_message=%s WHERE {OWNED} AND {_job_condition(table, key)}",
        args=(message, platform.node(), os.getpid()),
    )
    if cursor.rowcount != 1:
        return False
    with contextlib.suppress(Exception):  # the stack is for reading; the error itself is recorded
        jobs.update1({**{k: key[k] for k in jobs.primary_key}, "error_stack": stack})
    return True


def release_dead_reservations(table, timing: WorkerSettings, healthy_for_s: float = float("inf")) -> int:
    """Re-queue jobs whose worker stopped sending heartbeats (killed, crashed, lost its host).

    A reservation whose host/pid has a fresh heartbeat is never touched. For one whose worker row is
    stale, ``worker_reap`` (:func:`api_sql`) marks the row dead, only once it is stale by that worker's
    own timeout on the server's clock, and puts every reservation under that host and pid (in all job
    tables) back to pending in the same transaction. One made outside ``sensorium`` (no worker row: a
    plain DataJoint ``populate(reserve_jobs=True)``) is released only when older than
    ``timing.orphan_timeout_s``. Nothing is declared dead while the server has been up for less than the
    timeout, or while the caller's own heartbeats have been succeeding for less (``healthy_for_s``):
    after an outage every heartbeat is old. Marking dead is one guarded UPDATE, so a heartbeat arriving
    at that moment keeps its worker alive.

    Returns:
        How many jobs were re-queued (of any table).
    """
    conn = table.connection
    jobs = jobs_of(table)
    reserved = conn.query(
        f"SELECT host, pid, EXTRACT(EPOCH FROM CURRENT_TIMESTAMP(3) - MIN(reserved_time)) "
        f"FROM {jobs.full_table_name} WHERE status='reserved' GROUP BY host, pid"
    ).fetchall()
    if not reserved:
        return 0
    W = Worker.full_table_name
    known = {(h, int(p)) for h, p in conn.query(f"SELECT DISTINCT host, pid FROM {W}").fetchall()}
    uptime = float(
        conn.query("SELECT EXTRACT(EPOCH FROM CURRENT_TIMESTAMP - pg_postmaster_start_time())").fetchone()[0]
    )
    may_declare = uptime >= timing.timeout_s and healthy_for_s >= timing.timeout_s
    released = 0
    for host, pid, oldest in reserved:
        owner = (host, int(pid))
        if owner in known:  # a sensorium worker: live unless silent for the timeout
            if not may_declare:
                continue
            rows = conn.query(
                f"SELECT job_schema, job_table, released FROM {api_name('worker_reap')}(%s, %s, %s)",
                args=(*owner, timing.timeout_s),
            ).fetchall()
            released += log_released(rows, host, int(pid), "its worker stopped sending heartbeats")
        elif float(oldest or 0) > timing.orphan_timeout_s:
            released += release_reservations(table, host, int(pid), "reserved outside sensorium, too old")
    return released


def requeue(table, key: dict) -> None:
    """Give this process's reservation of ``key`` back (an interrupted job is pending, not an error)."""
    release_reservations(table, platform.node(), os.getpid(), "interrupted, to be resumed", key=key)
