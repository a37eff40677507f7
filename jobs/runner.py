"""The job loop behind ``sensorium worker`` and ``populate(reserve_jobs=True)``: one job at a time.

Each job is taken from a table's DataJoint job queue (highest priority first: lowest number, then the
oldest), reserved under this process's heartbeat, run by DataJoint's own ``populate`` restricted to that
key (direct mode, so DataJoint's SIGTERM handler, which would record the job as an *error*, is not
installed), and then completed, recorded as an error, or, when the worker was told to stop, given back
to pending with its training checkpoint. A lost database connection inside the insert transaction is
retried, and so is one the server rolled back as a deadlock victim: the training resumes from its last
checkpoint, so nothing is trained twice.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import platform
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from datajoint.errors import DuplicateError, LostConnectionError

from jobs.heartbeat import Heartbeat
from jobs.labels import key_label, short_key
from jobs.queues import hooks, jobs_of, queue_tables
from jobs.reservations import complete_job, fail_job, release_dead_reservations, requeue
from pipeline import lifecycle
from pipeline.settings import Settings
from pipeline.training.trainer import TrainingInterruptedError
from schemas import import_compute_code
from schemas.dj_compat import is_transient_conflict, short_retries

log = logging.getLogger("sensorium.worker")

#: how often a job whose insert lost its connection is run again (each retry resumes from the checkpoint)
TRANSACTION_RETRIES = 3


class Stopped(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """The current job was given back because the process was asked to stop."""


class Abandoned(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """The current job was dropped: another worker took it over after declaring this one dead."""


@dataclass
class Outcome:
    """What happened to one job."""

    table: str
    key: dict
    status: str  # success, error or interrupted
    seconds: float
    message: str = ""


@dataclass
class Tally:
    """Results of a run, per table, in ``populate()``'s shape."""

    results: dict[str, dict] = field(default_factory=dict)
    jobs: int = 0

    def add(self, outcome: Outcome) -> None:
        self.jobs += 1
        r = self.results.setdefault(outcome.table, {"success_count": 0, "error_list": []})
        if outcome.status == "success":
            r["success_count"] += 1
        elif outcome.status == "error":
            r["error_list"].append((outcome.key, outcome.message))


def release_gpu_memory() -> None:
    """Give cached CUDA memory back between jobs (another process on the GPU may need it).

    Only where CUDA is in use: the full garbage collection that frees tensors held in reference cycles
    costs about 0.2 s with torch and DataJoint loaded, more than a small scoring job.
    """
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def reserve(table, key: dict) -> bool:
    """Reserve ``key`` for this process; True when it is ours.

    When the connection drops after the server ran the reserving UPDATE but before the reply arrived,
    the retried UPDATE finds the job reserved already and reports failure, although the reservation is
    this process's: a job reserved under this host and pid is ours (one job at a time per process).
    """
    jobs = jobs_of(table)
    if jobs.reserve(key):
        return True
    rows = (jobs & {k: key[k] for k in jobs.primary_key} & "status='reserved'").to_dicts()
    return bool(rows) and rows[0]["host"] == platform.node() and int(rows[0]["pid"]) == os.getpid()


class JobSource:
    """Pending keys of one queue's tables, with refresh and dead-reservation reaping kept cheap.

    A table's queue is refreshed (new keys added from its key source) only when it has no pending job
    and either a job of a table before it in the queue finished since (its rows may be new upstream
    keys) or ``poll_s`` passed (other workers' rows). Reaping runs at most once per heartbeat period per
    table. Refreshing is the costly part of the bookkeeping: a key-source query per table.
    """

    def __init__(
        self,
        queue: str,
        restriction: Any,
        settings: Settings,
        priority: int | None,
        poll_s: float,
        heartbeat: Heartbeat | None = None,
    ):
        self.tables = queue_tables(queue)
        self.heartbeat = heartbeat
        self.restriction, self.settings, self.priority, self.poll_s = restriction, settings, priority, poll_s
        self._refreshed: dict[str, float] = {}
        self._reaped: dict[str, float] = {}
        self._stale = {t.__name__ for t in self.tables}
        self._sources: dict[str, Any] = {}
        self.taken: dict[str, int] = {}  # jobs reserved per table by this process

    def finished(self, table) -> None:
        """A job of ``table`` finished: the tables after it may have new keys."""
        names = [t.__name__ for t in self.tables]
        if table.__name__ in names:
            self._stale.update(names[names.index(table.__name__) + 1 :])

    def _source(self, table):
        """The restricted key source of ``table``, built once (``key_source`` costs ~15 ms to derive)."""
        name = table.__name__
        if name not in self._sources:
            self._sources[name] = (table.key_source & self.restriction).proj()
        return self._sources[name]

    def _pending(self, table) -> list[dict]:
        pending = jobs_of(table).pending & "scheduled_time <= CURRENT_TIMESTAMP(3)"
        if self.restriction is not None:
            # the job table has its own lineage: restrict by the (restricted) key source without the check
            pending = pending.restrict(self._source(table), semantic_check=False)
        if self.priority is not None:
            pending = pending & f"priority <= {int(self.priority)}"
        return pending.keys(order_by="priority ASC, scheduled_time ASC", limit=8)

    def _refresh(self, table) -> None:
        before = hooks(table).before_refresh
        if before is not None:
            before()
        args = [] if self.restriction is None else [self.restriction]
        jobs_of(table).refresh(*args, delay=-1)
        self._refreshed[table.__name__] = time.monotonic()
        self._stale.discard(table.__name__)

    def candidates(self, table) -> list[dict]:
        """Pending keys of ``table`` (refreshing its queue when that may find new ones)."""
        now, name = time.monotonic(), table.__name__
        if now - self._reaped.get(name, -1e9) >= self.settings.worker.heartbeat_s:
            healthy = self.heartbeat.healthy_for() if self.heartbeat is not None else float("inf")
            release_dead_reservations(table, self.settings.worker, healthy)
            self._reaped[name] = now
        keys = self._pending(table)
        if not keys and (name in self._stale or now - self._refreshed.get(name, -1e9) >= self.poll_s):
            self._refresh(table)
            keys = self._pending(table)
        return keys


class Runner:
    """Runs reserved jobs one at a time under a heartbeat; see the module docstring.

    ``error_level``: the level of the log line of a failed job (a worker's log is where its errors are
    read; ``populate`` returns them to its caller, which shows each one, so there it is INFO).
    """

    def __init__(self, heartbeat: Heartbeat, device: str, error_level: int = logging.ERROR):
        self.heartbeat, self.device, self.error_level = heartbeat, device, error_level
        self._cycle_start: float | None = None
        self.busy_s = 0.0  # from the queue scan that found a job to the end of its bookkeeping
        self.populate_s = 0.0  # inside DataJoint's populate (fetch, make, insert) of those jobs

    def take_and_run(self, source: JobSource, tables: list) -> Outcome | None:
        """Reserve the first available job over ``tables`` (in order) and run it (None: nothing to do)."""
        self._cycle_start = time.perf_counter()
        for table in tables:
            for key in source.candidates(table):
                if lifecycle.stop_requested():
                    return None
                if reserve(table, key):
                    source.taken[table.__name__] = source.taken.get(table.__name__, 0) + 1
                    try:
                        return self.run(table, key)
                    finally:
                        source.finished(table)
        return None

    def run(self, table, key: dict) -> Outcome:
        """Run one reserved job to success, error or interruption (then re-raise :class:`Stopped`)."""
        name = table.__name__
        host = platform.node()
        self.heartbeat.job(name, key)
        log.info("start  %s %s host=%s device=%s", name, short_key(key), host, self.device)
        start = time.perf_counter()
        try:
            with lifecycle.interruptible():
                self._populate_with_retries(table, key)
        except (TrainingInterruptedError, lifecycle.JobInterruptedError, KeyboardInterrupt) as err:
            conn = table.connection
            if conn._in_transaction:  # interrupted right after COMMIT returned: DataJoint's flag is stale
                with contextlib.suppress(Exception):
                    conn.cancel_transaction()
            seconds = time.perf_counter() - start
            if lifecycle.abandon_requested() and not isinstance(err, KeyboardInterrupt):
                log.warning(
                    "drop   %s %s after %.1f s: taken over by another worker", name, short_key(key), seconds
                )
                raise Abandoned(name) from err
            # while stopping, an unreachable database is waited for briefly; the reservation is then
            # re-queued by others once this worker's heartbeat is stale
            try:
                with short_retries(conn, lifecycle.STOP_BUDGET_S):
                    requeue(table, key)
            except Exception as give_back_err:
                log.warning("could not give the job back (%s); others re-queue it later", give_back_err)
            log.info("stop   %s %s after %.1f s: pending again", name, short_key(key), seconds)
            if isinstance(err, KeyboardInterrupt):
                raise
            raise Stopped(name) from err
        except DuplicateError as err:
            if not table & key:  # a genuine duplicate inside the job's own inserts
                return self._failed(table, key, err, start)
            # another worker stored this key meanwhile (it took the job over while this one was cut off
            # from the database for longer than the heartbeat timeout): the work exists, nothing failed
            log.warning("%s %s was stored by another worker meanwhile", name, short_key(key))
        except Exception as err:
            return self._failed(table, key, err, start)
        finally:
            self.heartbeat.job("", None)
            release_gpu_memory()
        seconds = time.perf_counter() - start
        if not complete_job(table, key):
            log.warning("%s %s: the reservation was no longer this worker's", name, short_key(key))
        after = hooks(table).after_job
        if after is not None:
            after(key)
        self.heartbeat.done += 1
        # cycle: from the queue scan that found the job (or the reservation) to here, bookkeeping included
        cycle = time.perf_counter() - (self._cycle_start or start)
        self._cycle_start = None
        self.busy_s += cycle
        self.populate_s += seconds
        log.info("done   %s %s in %.3f s (cycle %.3f s)", name, short_key(key), seconds, cycle)
        return Outcome(name, key, "success", seconds)

    def _failed(self, table, key: dict, err: Exception, start: float) -> Outcome:
        """Record the error in the job table (message and stack) and log one line, which names a model
        by its experiment and seed (:func:`jobs.labels.key_label`)."""
        seconds = time.perf_counter() - start
        message = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        if not fail_job(table, key, message, traceback.format_exc()):
            log.warning(
                "%s %s: not recorded as an error, the job is another worker's now", table.__name__, key
            )
        self.heartbeat.failed += 1
        name = table.__name__
        log.log(
            self.error_level,
            "FAILED %s %s after %.1f s: %s",
            name,
            key_label(key),
            seconds,
            message.splitlines()[0],
        )
        return Outcome(name, key, "error", seconds, message)

    @staticmethod
    def _populate_with_retries(table, key: dict) -> None:
        for attempt in range(1, TRANSACTION_RETRIES + 1):
            try:
                # direct mode for exactly this key: the reservation is ours already
                table.populate(key, suppress_errors=False, display_progress=False)
                return
            except Exception as err:
                # the insert transaction was lost with the connection, or rolled back by the server as
                # a deadlock victim (another session's DDL): nothing of it is stored
                retry = isinstance(err, LostConnectionError) or is_transient_conflict(err)
                if not retry or attempt == TRANSACTION_RETRIES:
                    raise
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                log.warning("%s: %s; running the job again (attempt %d)", table.__name__, reason, attempt + 1)
                if table.connection._in_transaction:  # a failed COMMIT leaves DataJoint's flag set
                    with contextlib.suppress(Exception):  # the server has rolled back already
                        table.connection.cancel_transaction()


@dataclass(frozen=True)
class WorkerOptions:
    """``sensorium worker`` options (see the CLI for their meaning)."""

    queue: str = "gpu"
    max_jobs: int | None = None
    idle_exit_s: float | None = None
    poll_s: float = 10.0
    priority: int | None = None


class WorkerPolicy:
    """``sensorium worker``: run jobs as they come, wait ``poll_s`` when there is none, and exit after
    ``max_jobs`` jobs or ``idle_exit_s`` without one (never, when unset)."""

    def __init__(self, options: WorkerOptions):
        self.options = options
        self.idle_since = time.monotonic()

    def tables(self, source: JobSource) -> list:
        return source.tables

    def after_job(self, outcome: Outcome, tally: Tally) -> bool:
        self.idle_since = time.monotonic()
        if self.options.max_jobs is not None and tally.jobs >= self.options.max_jobs:
            log.info("ran %d job(s) (--max-jobs): exiting", tally.jobs)
            return True
        return False

    def abandoned(self) -> None:
        self.idle_since = time.monotonic()

    def when_idle(self) -> bool:
        idle_exit = self.options.idle_exit_s
        idle = time.monotonic() - self.idle_since
        if idle_exit is not None and idle >= idle_exit:
            log.info("queue empty for %.0f s (--idle-exit): exiting", idle)
            return True
        wait = self.options.poll_s
        if idle_exit is not None:
            wait = min(wait, max(idle_exit - idle, 0.0))
        lifecycle.wait(wait)
        return False


class DrainPolicy:
    """``populate(reserve_jobs=True)``: every pending job of the queue's tables, then return; at most
    ``max_calls`` jobs per table; the first error is raised unless ``suppress_errors``."""

    #: a drained table is looked at again only when a table before it finished a job (no polling)
    poll_s = float("inf")

    def __init__(self, max_calls: int | None, suppress_errors: bool):
        self.max_calls, self.suppress_errors = max_calls, suppress_errors

    def tables(self, source: JobSource) -> list:
        if self.max_calls is None:
            return source.tables
        return [t for t in source.tables if source.taken.get(t.__name__, 0) < self.max_calls]

    def after_job(self, outcome: Outcome, tally: Tally) -> bool:
        if outcome.status == "error" and not self.suppress_errors:
            raise RuntimeError(f"{outcome.table} {key_label(outcome.key)}: {outcome.message}")
        return False

    def abandoned(self) -> None:
        pass

    def when_idle(self) -> bool:
        return True


def run_jobs(policy: WorkerPolicy | DrainPolicy, source: JobSource, runner: Runner) -> Tally:
    """The one job loop of workers and ``populate --reserve-jobs``: take a job, run it, ask the policy
    whether to go on; stop on a stop request (SIGTERM / SIGINT) between or during jobs."""
    tally = Tally()
    heartbeat = runner.heartbeat
    while not lifecycle.stop_requested():
        try:
            outcome = runner.take_and_run(source, policy.tables(source))
        except Stopped:
            break
        except Abandoned:  # another worker took the job over: register again and go on
            outcome = None
            policy.abandoned()
            if heartbeat.declared_dead.is_set():
                lifecycle.clear_abandon()
                heartbeat.reregister()
            continue
        except LostConnectionError as err:
            if lifecycle.stop_requested():
                log.warning("stopping without the database: %s", err)
                break
            raise
        if heartbeat.declared_dead.is_set():
            lifecycle.clear_abandon()
            heartbeat.reregister()
        if outcome is not None:
            tally.add(outcome)
            if policy.after_job(outcome, tally):
                break
            continue
        if policy.when_idle():
            break
    if lifecycle.stop_requested():
        log.info("stopped on request after %d job(s)", tally.jobs)
    if runner.busy_s > 0:
        overhead = runner.busy_s - runner.populate_s
        log.info(
            "busy %.1f s on finished jobs: %.1f s in populate, %.2f s (%.1f%%) queue scans, reserve, "
            "complete and heartbeat",
            runner.busy_s,
            runner.populate_s,
            overhead,
            100 * overhead / runner.busy_s,
        )
    return tally


def run_worker(options: WorkerOptions, settings: Settings, device: str, restriction: Any = None) -> int:
    """The long-running loop; returns the number of jobs run. Stops on SIGTERM / SIGINT (exit 0).

    A stop requested before the call (a signal while the process was starting) is honoured: no job is
    taken.
    """
    if lifecycle.stop_requested():
        return 0
    import_compute_code()  # before the heartbeat: a signal meanwhile still means "do not start"
    if lifecycle.stop_requested():
        return 0
    with lifecycle.graceful_signals(), Heartbeat(settings, options.queue, device) as heartbeat:
        source = JobSource(options.queue, restriction, settings, options.priority, options.poll_s, heartbeat)
        log.info(
            "worker %s on %s pid %s: queue %s, device %s, poll %g s%s",
            heartbeat.worker_id[:8],
            heartbeat.host,
            heartbeat.pid,
            options.queue,
            device,
            options.poll_s,
            f", idle exit {options.idle_exit_s:g} s" if options.idle_exit_s is not None else "",
        )
        tally = run_jobs(WorkerPolicy(options), source, Runner(heartbeat, device))
    return tally.jobs


def drain(
    queue: str, restriction: Any, settings: Settings, *, suppress_errors: bool, max_calls: int | None
) -> dict[str, dict]:
    """``populate(reserve_jobs=True)``: every pending job of the queue's tables, in order, then return.

    Raises:
        Exception: the first job error when ``suppress_errors`` is False (it is recorded in the job
            table either way).
    """
    from pipeline.training.seeding import resolve_device

    lifecycle.reset()
    policy = DrainPolicy(max_calls, suppress_errors)
    with lifecycle.graceful_signals(), Heartbeat(settings, queue, settings.device) as heartbeat:
        source = JobSource(queue, restriction, settings, None, poll_s=policy.poll_s, heartbeat=heartbeat)
        # the errors are returned (or the first raised): the caller shows them, the log need not
        runner = Runner(heartbeat, str(resolve_device(settings.device)), error_level=logging.INFO)
        tally = run_jobs(policy, source, runner)
    empty = {"success_count": 0, "error_list": []}
    return {t.__name__: tally.results.get(t.__name__, dict(empty, error_list=[])) for t in source.tables}


def populate(
    queue: str = "all",
    restriction: Any = None,
    *,
    settings: Settings,
    reserve_jobs: bool = False,
    suppress_errors: bool = False,
    max_calls: int | None = None,
) -> dict[str, dict]:
    """Populate the tables of ``queue`` in order; returns ``{table: {'success_count', 'error_list'}}``.

    With ``reserve_jobs`` several processes can run at once: each job is reserved in the table's job
    queue under this process's heartbeat (:func:`drain`), failures are recorded there with their message
    and stack, and an interrupted training is returned to pending with its checkpoint. Without it,
    DataJoint's own ``populate`` runs each table in this process (no reservations, no heartbeat).
    """
    tables = queue_tables(queue)
    if reserve_jobs:
        return drain(queue, restriction, settings, suppress_errors=suppress_errors, max_calls=max_calls)
    results = {}
    # with suppress_errors DataJoint logs each error itself, and its logger prints twice (its own
    # handler and the root's); the errors are returned here, and the caller shows each one once
    quiet = _ReturnedErrors() if suppress_errors else None
    dj_log = logging.getLogger("datajoint")
    if quiet is not None:
        dj_log.addFilter(quiet)
    try:
        for table in tables:
            args = [] if restriction is None else [restriction]
            table_hooks = hooks(table)
            if table_hooks.before_refresh is not None:
                table_hooks.before_refresh()
            results[table.__name__] = result = table.populate(
                *args, suppress_errors=suppress_errors, max_calls=max_calls, display_progress=False
            )
            # DataJoint's populate(suppress_errors=True) records Ctrl-C as one key's error and goes on:
            # the user asked to stop, so stop (the run's checkpoint is kept and resumes next time)
            if any(str(m).startswith("KeyboardInterrupt") for _, m in result.get("error_list", [])):
                raise KeyboardInterrupt
            if table_hooks.after_pass is not None:
                table_hooks.after_pass()
    finally:
        if quiet is not None:
            dj_log.removeFilter(quiet)
    return results


class _ReturnedErrors(logging.Filter):
    """Drops DataJoint's log record of a make error that ``populate(suppress_errors=True)`` returns in
    its ``error_list`` (logged with the exception itself as the message); everything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and isinstance(record.msg, BaseException))
