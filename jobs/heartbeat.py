"""This process's worker row (:class:`schemas.workers.Worker`) and its heartbeat thread.

Liveness: every process that reserves jobs through ``sensorium`` registers a row and updates its
``last_seen`` (database server time) from a background thread with its own connection, every
``SENSORIUM_HEARTBEAT_S``. A reservation is taken back only when the worker with its host and pid has
been silent for ``SENSORIUM_WORKER_TIMEOUT_S`` (and the server itself has been up that long: after a
server restart every heartbeat is old); see :func:`jobs.reservations.release_dead_reservations`.
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

from jobs.isolation import LIVE_TWIN, api_name, carry_token, ensure_api
from jobs.reservations import log_released
from pipeline import lifecycle
from pipeline.settings import Settings
from schemas import connect
from schemas.dj_compat import short_retries
from schemas.workers import Worker

log = logging.getLogger(__name__)


class WorkerIdentityError(RuntimeError):
    """Another live worker is registered under this process's host name and pid."""


class Heartbeat:
    """This process's :class:`Worker` row, kept fresh by a daemon thread on its own connection.

    Use as a context manager; ``job(table, key)`` records the job in hand. Both connections carry this
    process's worker token (:func:`carry_token`) and the row is written only through the worker
    functions (:func:`api_sql`). Registering takes over an earlier process's row under the same host
    name and pid (a container restarted with the same host name and pid) once its heartbeat is stale by
    its timeout, and releases the reservations it left: this process holds none yet. If another worker
    declares this one dead (it was cut off from the database for longer than the timeout and its job was
    handed on), the next beat finds its row no longer ``running``: the job in hand is abandoned
    (``lifecycle.abandon_job``) and :meth:`reregister` gives the process a new row.
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
        conn = Worker.connection
        carry_token(conn)
        ensure_api(conn)
        self._register(self.worker_id)
        # a connection of its own: the main one may be inside a transaction or blocked in a query
        self._conn = connect(self.settings)
        carry_token(self._conn)
        self._conn.retry_s = self.settings.worker.heartbeat_s  # a failed beat is retried at the next one
        self._thread = threading.Thread(target=self._run, name="sensorium-heartbeat", daemon=True)
        self._thread.start()

    def _register(self, worker_id: str) -> None:
        """Register ``worker_id`` under this host and pid (``worker_register``).

        A running row under this host and pid is either a previous life of this container (restarted
        before its heartbeat went stale) or a twin (containers sharing the host's network and PID
        numbering). The server takes the first over only once it is stale by its own timeout, so this
        waits for that; a twin beats within one heartbeat period, which tells them apart.

        Raises:
            WorkerIdentityError: a live worker is registered under this host name and pid.
        """
        timing = self.settings.worker
        first: dict[str, Any] | None = None
        while True:
            try:
                rows = Worker.connection.query(
                    f"SELECT job_schema, job_table, released FROM {api_name('worker_register')}"
                    "(%s, %s, %s, %s, %s, %s, %s)",
                    args=(
                        worker_id,
                        self.host,
                        self.pid,
                        self.queue,
                        self.device[:64],
                        timing.heartbeat_s,
                        timing.timeout_s,
                    ),
                ).fetchall()
                break
            except Exception as err:
                if getattr(err, "pgcode", None) != LIVE_TWIN:
                    raise
            running = self._running_rows()
            if first is None:
                first = running
                log.warning(
                    "an earlier worker is registered as host %s pid %s: waiting until its heartbeat is "
                    "stale (at most %g s)",
                    self.host,
                    self.pid,
                    timing.timeout_s,
                )
                time.sleep(1.5 * timing.heartbeat_s)
            elif any(running.get(w, t) != t for w, t in first.items()):
                raise WorkerIdentityError(
                    f"another live worker is registered as host {self.host!r} pid {self.pid}: workers on "
                    "one machine need distinct host names or pids (give each container its own hostname)"
                )
            else:
                time.sleep(timing.heartbeat_s)
        log_released(rows, self.host, self.pid, "left by an earlier process")

    def _running_rows(self) -> dict[str, Any]:
        """{worker_id: last_seen} of the running rows under this host and pid."""
        rows = Worker.connection.query(
            f"SELECT worker_id, last_seen FROM {Worker.full_table_name} WHERE host=%s AND pid=%s "
            "AND status='running'",
            args=(self.host, self.pid),
        ).fetchall()
        return dict(rows)

    def reregister(self) -> None:
        """After being declared dead: a new row under a new id (the process itself is alive)."""
        worker_id = uuid.uuid4().hex
        self._register(worker_id)
        with self._lock:  # the heartbeat thread beats for the new row only once it exists
            self.worker_id = worker_id
        self.declared_dead.clear()
        log.warning("registered again as worker %s", worker_id[:8])

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
                rows = Worker.connection.query(
                    f"SELECT job_schema, job_table, released FROM {api_name('worker_stop')}(%s, %s, %s, %s)",
                    args=(self.worker_id, status, self.done, self.failed),
                ).fetchall()
            log_released(rows, self.host, self.pid, f"still reserved when the worker {status}")
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
            done, failed, worker_id = self.done, self.failed, self.worker_id
        running = conn.query(
            f"SELECT {api_name('worker_beat')}(%s, %s, %s, %s, %s)",
            args=(worker_id, table, None if key is None else json.dumps(key, default=str), done, failed),
        ).fetchone()[0]
        if not running and not self.declared_dead.is_set():
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
