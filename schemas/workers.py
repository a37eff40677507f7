"""Which tables a worker populates (queues), the worker heartbeat table and dead-reservation reaping.

Liveness: every process that reserves jobs through ``sensorium`` registers a :class:`Worker` row and
updates its ``last_seen`` (database server time) from a background thread with its own connection,
every ``SENSORIUM_HEARTBEAT_S``. DataJoint records ``host`` and ``pid`` in each reservation; a
reservation is taken back only when the worker with that host and pid has been silent for
``SENSORIUM_WORKER_TIMEOUT_S`` (and the server itself has been up that long: after a server restart
every heartbeat is old). The job's ``connection_id`` is not used: DataJoint 2.3.5 records it once per
process and not after a reconnect, so it would hand a live worker's job to another after any reconnect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import threading
import uuid
from typing import Any

import datajoint as dj
from datajoint.condition import make_condition

from pipeline.settings import Settings, WorkerSettings
from schemas.data import TrialOrder
from schemas.evaluation import EnsembleScore, ModelScore, OracleScore, Prediction, register_declared_ensembles
from schemas.regressors import BehaviorNormalization, History, NetworkState, SplitSet
from schemas.training import TrainedModel

log = logging.getLogger(__name__)
schema = dj.Schema()

REGRESSORS = [TrialOrder, BehaviorNormalization, History, NetworkState, SplitSet]

#: queue name -> tables, in dependency order. GPU workers train and predict; CPU workers do the rest.
QUEUES: dict[str, list] = {
    "all": [*REGRESSORS, TrainedModel, Prediction, ModelScore, OracleScore, EnsembleScore],
    # regressors are cheap and must exist before training: a GPU worker computes any that are missing
    "gpu": [*REGRESSORS, TrainedModel, Prediction],
    "cpu": [*REGRESSORS, ModelScore, OracleScore, EnsembleScore],
}


@schema
class Worker(dj.Manual):
    definition = """
    # one run of a worker process (`sensorium worker` or `populate --reserve-jobs`) and its heartbeat
    worker_id           : char(32)        # random id of this run
    ---
    host                : varchar(255)    # host name, as DataJoint records it in job reservations
    pid                 : int32           # process id, as DataJoint records it in job reservations
    queue               : varchar(16)     # gpu, cpu or all
    device              : varchar(64)     # torch device it trains on
    started_at          : datetime(3)     # database server time
    last_seen           : datetime(3)     # database server time of the latest heartbeat
    status              : varchar(16)     # running, stopped (exited cleanly) or dead (declared by another)
    current_table=""    : varchar(64)     # table of the job in hand ('' when idle)
    current_key=null    : json            # key of the job in hand
    jobs_done=0         : int32           # jobs finished by this run
    jobs_failed=0       : int32           # jobs that ended in an error
    stopped_at=null     : datetime(3)     # when it stopped or was declared dead
    """


_JOBS: dict[tuple[type, int], Any] = {}


def jobs_of(table) -> Any:
    """The job table of ``table``, made once per process and connection.

    ``Table.jobs`` builds a new ``Job`` object (and re-derives its definition from the dependency
    graph, about 10 ms) on every access from the class; a worker touches it several times per job.
    """
    key = (table, id(table.connection))
    if key not in _JOBS:
        _JOBS[key] = table().jobs
    return _JOBS[key]


def _interval(seconds: float) -> str:
    return f"make_interval(secs => {float(seconds)!r})"


class Heartbeat:
    """This process's :class:`Worker` row, kept fresh by a daemon thread on its own connection.

    Use as a context manager; ``job(table, key)`` records the job in hand. Registering first releases
    reservations left under this host and pid by an earlier process (a container restarted with the
    same host name and pid): this process holds none yet.
    """

    def __init__(self, settings: Settings, queue: str, device: str):
        self.settings, self.queue, self.device = settings, queue, device
        self.worker_id = uuid.uuid4().hex
        self.host, self.pid = platform.node(), os.getpid()
        self._lock = threading.Lock()
        self._current: tuple[str, dict | None] = ("", None)
        self.done = self.failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: dj.Connection | None = None

    # -- life cycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        import schemas

        conn = Worker.connection
        table = Worker.full_table_name
        conn.query(
            f"UPDATE {table} SET status='dead', stopped_at=CURRENT_TIMESTAMP(3) "
            "WHERE host=%s AND pid=%s AND status='running'",
            args=(self.host, self.pid),
        )
        for job_table in QUEUES["all"]:
            release_reservations(job_table, self.host, self.pid, reason="left by an earlier process")
        conn.query(
            f"INSERT INTO {table} (worker_id, host, pid, queue, device, started_at, last_seen, status) "
            "VALUES (%s, %s, %s, %s, %s, CURRENT_TIMESTAMP(3), CURRENT_TIMESTAMP(3), 'running')",
            args=(self.worker_id, self.host, self.pid, self.queue, self.device[:64]),
        )
        # a connection of its own: the main one may be inside a transaction or blocked in a query
        self._conn = schemas.connect(self.settings)
        self._conn.retry_s = self.settings.worker.heartbeat_s  # a failed beat is retried at the next one
        self._thread = threading.Thread(target=self._run, name="sensorium-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, status: str = "stopped") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.worker.heartbeat_s + 5)
        conn = Worker.connection
        retry = getattr(conn, "retry_s", None)
        if retry is not None:  # an exiting worker must not wait long for an unreachable database
            conn.retry_s = min(retry, 10.0)
        try:
            conn.query(
                f"UPDATE {Worker.full_table_name} SET status=%s, stopped_at=CURRENT_TIMESTAMP(3), "
                "current_table='', current_key=NULL, jobs_done=%s, jobs_failed=%s WHERE worker_id=%s",
                args=(status, self.done, self.failed, self.worker_id),
            )
        except Exception as err:  # the database is gone: the row goes stale and others see it as dead
            log.warning("could not record this worker as %s: %s", status, str(err).splitlines()[0])
        finally:
            if retry is not None:
                conn.retry_s = retry
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to close
                self._conn.close()

    # -- state ----------------------------------------------------------------------------------------

    def job(self, table: str, key: dict | None) -> None:
        """Record the job in hand (``table=''``: idle); written at once and with every beat."""
        with self._lock:
            self._current = (table, key)
        self._beat(Worker.connection)

    def _beat(self, conn: dj.Connection) -> None:
        with self._lock:
            table, key = self._current
            done, failed = self.done, self.failed
        conn.query(
            f"UPDATE {Worker.full_table_name} SET last_seen=CURRENT_TIMESTAMP(3), current_table=%s, "
            "current_key=%s, jobs_done=%s, jobs_failed=%s WHERE worker_id=%s",
            args=(table, None if key is None else json.dumps(key, default=str), done, failed, self.worker_id),
        )

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.settings.worker.heartbeat_s):
            try:
                self._beat(self._conn)
                if failing:
                    log.warning("heartbeat restored")
                failing = False
            except Exception as err:
                if not failing:  # one line per outage, not one per beat
                    log.warning("heartbeat failed (%s); retrying", str(err).strip().splitlines()[0])
                failing = True


# -- reservations ---------------------------------------------------------------------------------------


def _job_condition(table, key: dict) -> str:
    jobs = jobs_of(table)
    return make_condition(jobs, {k: key[k] for k in jobs.primary_key}, set())


def release_reservations(table, host: str, pid: int, reason: str, key: dict | None = None) -> int:
    """Put jobs of ``table`` reserved by ``host``/``pid`` (only ``key``, if given) back to pending.

    One UPDATE guarded by ``status='reserved'`` and the owner, so two workers releasing at once, or a
    worker finishing at that moment, cannot double a job. Returns how many were released.
    """
    jobs = jobs_of(table)
    where = "status='reserved' AND host=%s AND pid=%s"
    if key is not None:
        # the condition has its values inlined; '%' must not read as a query parameter
        where += " AND " + _job_condition(table, key).replace("%", "%%")
    cursor = table.connection.query(
        f"UPDATE {jobs.full_table_name} SET status='pending', reserved_time=NULL, host='', pid=0, "
        f"connection_id=0 WHERE {where}",
        args=(host, pid),
    )
    if cursor.rowcount:
        n, name = cursor.rowcount, table.__name__
        log.warning("re-queued %d %s job(s) of %s pid %s (%s)", n, name, host, pid, reason)
    return cursor.rowcount


def release_dead_reservations(table, timing: WorkerSettings) -> int:
    """Re-queue jobs whose worker stopped sending heartbeats (killed, crashed, lost its host).

    A reservation whose host/pid has a fresh heartbeat is never touched. One whose worker row is stale
    is released after ``timing.timeout_s`` (the row is marked dead). One made outside ``sensorium``
    (no worker row: a plain DataJoint ``populate(reserve_jobs=True)``) is released only when older than
    ``timing.orphan_timeout_s``.

    Returns:
        How many jobs were re-queued.
    """
    conn = table.connection
    reserved = conn.query(
        f"SELECT host, pid, EXTRACT(EPOCH FROM CURRENT_TIMESTAMP(3) - MIN(reserved_time)) "
        f"FROM {jobs_of(table).full_table_name} WHERE status='reserved' GROUP BY host, pid"
    ).fetchall()
    if not reserved:
        return 0
    rows = conn.query(
        f"SELECT host, pid, bool_or(status='running' AND last_seen > CURRENT_TIMESTAMP(3) - "
        f"{_interval(timing.timeout_s)}) FROM {Worker.full_table_name} GROUP BY host, pid"
    ).fetchall()
    fresh = {(h, int(p)): bool(alive) for h, p, alive in rows}
    uptime = float(
        conn.query("SELECT EXTRACT(EPOCH FROM CURRENT_TIMESTAMP - pg_postmaster_start_time())").fetchone()[0]
    )
    released = 0
    for host, pid, oldest in reserved:
        owner = (host, int(pid))
        if fresh.get(owner):
            continue
        if owner in fresh:  # a sensorium worker that went silent
            if uptime < timing.timeout_s:
                continue  # the server restarted recently: live workers may not have beaten since
            conn.query(
                f"UPDATE {Worker.full_table_name} SET status='dead', stopped_at=CURRENT_TIMESTAMP(3) "
                "WHERE host=%s AND pid=%s AND status='running'",
                args=owner,
            )
            released += release_reservations(table, host, int(pid), "its worker stopped sending heartbeats")
        elif float(oldest or 0) > timing.orphan_timeout_s:
            released += release_reservations(table, host, int(pid), "reserved outside sensorium, too old")
    return released


def requeue(table, key: dict) -> None:
    """Give this process's reservation of ``key`` back (an interrupted job is pending, not an error)."""
    release_reservations(table, platform.node(), os.getpid(), "interrupted, to be resumed", key=key)


# -- one pass over a queue ------------------------------------------------------------------------------


def populate(
    queue: str = "all",
    restriction: Any = None,
    *,
    reserve_jobs: bool = False,
    suppress_errors: bool = False,
    max_calls: int | None = None,
) -> dict[str, dict]:
    """Populate the tables of ``queue`` in order; returns ``{table: {'success_count', 'error_list'}}``.

    With ``reserve_jobs`` several processes can run at once: each job is reserved in the table's job
    queue under this process's heartbeat, failures are recorded there with their message and stack, and
    an interrupted training is returned to pending with its checkpoint (see :mod:`schemas.runner`).
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; expected one of {sorted(QUEUES)}")
    if reserve_jobs:
        from schemas.runner import drain

        return drain(queue, restriction, suppress_errors=suppress_errors, max_calls=max_calls)
    results = {}
    for table in QUEUES[queue]:
        args = [] if restriction is None else [restriction]
        if table is EnsembleScore:
            register_declared_ensembles()  # experiments' ensembles whose members are all trained
        results[table.__name__] = table.populate(
            *args, suppress_errors=suppress_errors, max_calls=max_calls, display_progress=False
        )
        if table is TrainedModel:
            TrainedModel.sweep_checkpoints()
    return results
