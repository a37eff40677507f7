"""The job queues seen from outside: counts, errors, retry and priority (``sensorium jobs``)."""

from __future__ import annotations

from typing import Any

from jobs.labels import model_of
from jobs.queues import QUEUES, jobs_of
from schemas.fabrik import experiment_models
from schemas.training import TrainedModel
from schemas.workers import Worker

STATUSES = ("pending", "reserved", "error", "ignore")


def job_tables(name: str | None = None) -> list:
    """Every table with a job queue, in dependency order (only ``name`` when given).

    Raises:
        LookupError: no job table of that name.
    """
    tables = QUEUES["all"]
    if name is None:
        return tables
    match = [t for t in tables if t.__name__.lower() == name.lower()]
    if not match:
        raise LookupError(f"no job table {name!r}; expected one of {[t.__name__ for t in tables]}")
    return match


def summary() -> list[dict[str, Any]]:
    """Per table: pending / reserved / error / ignore job counts and ``success``: rows computed."""
    out = []
    for table in job_tables():
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in table.connection.query(
            f"SELECT status, count(*) FROM {jobs_of(table).full_table_name} GROUP BY status"
        ).fetchall():
            counts[status] = int(n)
        counts["success"] = len(table())  # DataJoint deletes a job once done; the row is the record
        out.append({"table": table.__name__, **counts})
    return out


def errors(table: str | None = None) -> list[dict[str, Any]]:
    """Jobs in error: table, key, ``model`` (the key's model by experiment and seed, ``tiny (seed 1)``;
    None for a key that is not a model's), host, pid, time and the first line of the message."""
    out = []
    for t in job_tables(table):
        for job in jobs_of(t).errors.to_dicts(order_by="completed_time"):
            message = job["error_message"] or ""
            key = {k: job[k] for k in jobs_of(t).primary_key}
            out.append(
                {
                    "table": t.__name__,
                    "key": key,
                    "model": model_of(key),
                    "host": job["host"],
                    "pid": job["pid"],
                    "time": str(job["completed_time"]),
                    "message": (message.strip().splitlines() or [""])[0],
                }
            )
    return out


def retry(table: str | None = None) -> dict[str, int]:
    """Put jobs in error back to pending (all tables, or one). Returns ``{table: jobs re-queued}``."""
    out = {}
    for t in job_tables(table):
        cursor = t.connection.query(
            f"UPDATE {jobs_of(t).full_table_name} SET status='pending', error_message='', error_stack=NULL, "
            "completed_time=NULL, reserved_time=NULL, host='', pid=0, connection_id=0, "
            "scheduled_time=CURRENT_TIMESTAMP(3) WHERE status='error'"
        )
        out[t.__name__] = cursor.rowcount
    return out


def set_priority(experiment: str, priority: int) -> int:
    """Give experiment's pending training jobs ``priority`` (lower runs first). Returns how many.

    Keys of the experiment without a job yet are queued first, so the priority also covers them.
    """
    if not 0 <= priority <= 127:  # DataJoint's range (>= 0) within the job table's int8 column
        raise ValueError(f"priority {priority}: expected 0 ... 127 (lower runs first; the default is 5)")
    keys = experiment_models(experiment)
    jobs_of(TrainedModel).refresh(keys, delay=-1)
    pending = jobs_of(TrainedModel).pending.restrict(
        (TrainedModel.key_source & keys).proj(), semantic_check=False
    )
    n = 0
    for key in pending.keys():
        jobs_of(TrainedModel).update1({**key, "priority": priority})
        n += 1
    return n


def workers(include_stopped: bool = False) -> list[dict[str, Any]]:
    """Worker runs, newest first, with the seconds since their last heartbeat (server clock).

    The worker functions write the times in UTC (``jobs.isolation.api_sql``), whatever the session's
    time zone.
    """
    where = "" if include_stopped else "WHERE status='running'"
    rows = Worker.connection.query(
        "SELECT worker_id, host, pid, queue, device, status, started_at, "
        "EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC') - last_seen), current_table, "
        "current_key, jobs_done, "
        f"jobs_failed FROM {Worker.full_table_name} {where} ORDER BY started_at DESC"
    ).fetchall()
    names = [
        "worker_id",
        "host",
        "pid",
        "queue",
        "device",
        "status",
        "started_at",
        "seen_s_ago",
        "current_table",
        "current_key",
        "jobs_done",
        "jobs_failed",
    ]
    return [dict(zip(names, r, strict=True)) for r in rows]
