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
import time
import uuid
from typing import Any

import datajoint as dj
from datajoint.condition import make_condition

from pipeline import lifecycle
from pipeline.settings import Settings, WorkerSettings
from schemas.data import ExactTrialOrder, TrialOrder
from schemas.evaluation import EnsembleScore, ModelScore, OracleScore, Prediction, register_declared_ensembles
from schemas.regressors import BehaviorNormalization, History, NetworkState, SplitSet
from schemas.resilience import short_retries
from schemas.training import TrainedModel

log = logging.getLogger(__name__)
schema = dj.Schema()

REGRESSORS = [TrialOrder, ExactTrialOrder, BehaviorNormalization, History, NetworkState, SplitSet]

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


class WorkerIdentityError(RuntimeError):
    """Another live worker is registered under this process's host name and pid."""


class Heartbeat:
    """This process's :class:`Worker` row, kept fresh by a daemon thread on its own connection.

    Use as a context manager; ``job(table, key)`` records the job in hand. Registering first releases
    reservations left under this host and pid by an earlier process (a container restarted with the
    same host name and pid): this process holds none yet. If another worker declares this one dead (it
    was cut off from the database for longer than the timeout and its job was handed on), the next beat
    finds its row no longer ``running``: the job in hand is abandoned (``lifecycle.abandon_job``) and
    :meth:`reregister` gives the process a new row.
    """

    def __init__(self, settings: Settings, queue: str, device: str):
        self.settings, self.queue, self.device = settings, queue, device
        self.worker_id = uuid.uuid4().hex
        self.host, self.pid = platform.node(), os.getpid()
        self._lock = threading.Lock()
        self._current: tuple[str, dict | None] = ("", None)
        self.done = self.failed = 0
        self._stop = threading.Event()
        self.declared_dead = threading.Event()
        self._healthy_since: float | None = float("-inf")  # -inf: no failed heartbeat seen yet
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

        self._check_identity()
        conn = Worker.connection
        conn.query(
            f"UPDATE {Worker.full_table_name} SET status='dead', stopped_at=CURRENT_TIMESTAMP(3) "
            "WHERE host=%s AND pid=%s AND status='running'",
            args=(self.host, self.pid),
        )
        for job_table in QUEUES["all"]:
            release_reservations(job_table, self.host, self.pid, reason="left by an earlier process")
        self._register()
        # a connection of its own: the main one may be inside a transaction or blocked in a query
        self._conn = schemas.connect(self.settings)
        self._conn.retry_s = self.settings.worker.heartbeat_s  # a failed beat is retried at the next one
        self._thread = threading.Thread(target=self._run, name="sensorium-heartbeat", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        # ON CONFLICT: a retried INSERT whose first reply was lost must not fail on its own row
        Worker.connection.query(
            f"INSERT INTO {Worker.full_table_name} (worker_id, host, pid, queue, device, started_at, "
            "last_seen, status) VALUES (%s, %s, %s, %s, %s, CURRENT_TIMESTAMP(3), CURRENT_TIMESTAMP(3), "
            "'running') ON CONFLICT (worker_id) DO NOTHING",
            args=(self.worker_id, self.host, self.pid, self.queue, self.device[:64]),
        )

    def _check_identity(self) -> None:
        """Refuse to start beside a live worker with the same host name and pid.

        A fresh row under this host and pid is either a previous life of this container (restarted
        within the timeout: its heartbeat has stopped) or a twin (containers sharing the host's network
        and PID numbering): one heartbeat period tells them apart.
        """
        timeout = self.settings.worker.timeout_s

        def fresh() -> dict[str, Any]:
            rows = Worker.connection.query(
                f"SELECT worker_id, last_seen FROM {Worker.full_table_name} WHERE host=%s AND pid=%s "
                f"AND status='running' AND last_seen > CURRENT_TIMESTAMP(3) - {_interval(timeout)}",
                args=(self.host, self.pid),
            ).fetchall()
            return dict(rows)

        before = fresh()
        if not before:
            return
        time.sleep(1.5 * self.settings.worker.heartbeat_s)
        after = fresh()
        if any(after.get(w, t) != t for w, t in before.items()):
            raise WorkerIdentityError(
                f"another live worker is registered as host {self.host!r} pid {self.pid}: workers on one "
                "machine need distinct host names or pids (give each container its own hostname)"
            )

    def reregister(self) -> None:
        """After being declared dead: a new row under a new id (the process itself is alive)."""
        self.worker_id = uuid.uuid4().hex
        self._register()
        self.declared_dead.clear()
        log.warning("registered again as worker %s", self.worker_id[:8])

    def healthy_for(self) -> float:
        """Seconds since this worker's heartbeats recovered from their last failure (0: failing now;
        infinite: none failed). A worker that lived through an outage judges others only one timeout
        after it, when every live worker has had the time to beat again."""
        since = self._healthy_since
        return 0.0 if since is None else time.monotonic() - since

    def stop(self, status: str = "stopped") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.worker.heartbeat_s + 5)
        try:  # an exiting worker must not wait long for an unreachable database
            with short_retries(Worker.connection, lifecycle.STOP_BUDGET_S):
                Worker.connection.query(
                    f"UPDATE {Worker.full_table_name} SET status=%s, stopped_at=CURRENT_TIMESTAMP(3), "
                    "current_table='', current_key=NULL, jobs_done=%s, jobs_failed=%s "
                    "WHERE worker_id=%s AND status='running'",
                    args=(status, self.done, self.failed, self.worker_id),
                )
        except Exception as err:  # the database is gone: the row goes stale and others see it as dead
            log.warning("could not record this worker as %s: %s", status, str(err).splitlines()[0])
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to close
                self._conn.close()

    # -- state ----------------------------------------------------------------------------------------

    def job(self, table: str, key: dict | None) -> None:
        """Record the job in hand (``table=''``: idle); written at once and with every beat.

        Informational: a failure to write it now (the database is away) is logged, not raised.
        """
        with self._lock:
            self._current = (table, key)
        try:
            self._beat(Worker.connection)
        except Exception as err:
            log.warning("could not record the current job: %s", str(err).strip().splitlines()[0])

    def _beat(self, conn: dj.Connection) -> None:
        with self._lock:
            table, key = self._current
            done, failed = self.done, self.failed
        cursor = conn.query(
            f"UPDATE {Worker.full_table_name} SET last_seen=CURRENT_TIMESTAMP(3), current_table=%s, "
            "current_key=%s, jobs_done=%s, jobs_failed=%s WHERE worker_id=%s AND status='running'",
            args=(table, None if key is None else json.dumps(key, default=str), done, failed, self.worker_id),
        )
        if cursor.rowcount == 0 and not self.declared_dead.is_set():
            # another worker found this one silent for longer than the timeout and gave its job away
            log.warning("this worker was declared dead by another one; abandoning the job in hand")
            self.declared_dead.set()
            if table:
                lifecycle.abandon_job()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.settings.worker.heartbeat_s):
            try:
                self._beat(self._conn)
                if failing:
                    log.warning("heartbeat restored")
                    self._healthy_since = time.monotonic()
                failing = False
            except Exception as err:
                if not failing:  # one line per outage, not one per beat
                    log.warning("heartbeat failed (%s); retrying", str(err).strip().splitlines()[0])
                failing = True
                self._healthy_since = None


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

    A reservation whose host/pid has a fresh heartbeat is never touched. One whose worker row is stale
    is released after ``timing.timeout_s`` (the row is marked dead). One made outside ``sensorium``
    (no worker row: a plain DataJoint ``populate(reserve_jobs=True)``) is released only when older than
    ``timing.orphan_timeout_s``. Nothing is declared dead while the server has been up for less than the
    timeout, or while the caller's own heartbeats have been succeeding for less (``healthy_for_s``):
    after an outage every heartbeat is old. Marking dead and releasing are each one guarded UPDATE, so
    a heartbeat arriving at that moment keeps its worker alive.

    Returns:
        How many jobs were re-queued.
    """
    conn = table.connection
    jobs = jobs_of(table)
    reserved = conn.query(
        f"SELECT host, pid, EXTRACT(EPOCH FROM CURRENT_TIMESTAMP(3) - MIN(reserved_time)) "
        f"FROM {jobs.full_table_name} WHERE status='reserved' GROUP BY host, pid"
    ).fetchall()
    if not reserved:
        return 0
    W, stale = Worker.full_table_name, _interval(timing.timeout_s)
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
            conn.query(
                f"UPDATE {W} SET status='dead', stopped_at=CURRENT_TIMESTAMP(3) WHERE host=%s AND pid=%s "
                f"AND status='running' AND last_seen <= CURRENT_TIMESTAMP(3) - {stale}",
                args=owner,
            )
            cursor = conn.query(
                f"UPDATE {jobs.full_table_name} SET status='pending', reserved_time=NULL, host='', pid=0, "
                f"connection_id=0 WHERE status='reserved' AND host=%s AND pid=%s AND NOT EXISTS "
                f"(SELECT 1 FROM {W} WHERE host=%s AND pid=%s AND status='running')",
                args=(*owner, *owner),
            )
            if cursor.rowcount:
                released += cursor.rowcount
                log.warning(
                    "re-queued %d %s job(s) of %s pid %s (its worker stopped sending heartbeats)",
                    cursor.rowcount,
                    table.__name__,
                    host,
                    pid,
                )
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
