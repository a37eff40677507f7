"""Which tables a worker populates (queues), the worker heartbeat table and dead-reservation reaping.

Liveness: every process that reserves jobs through ``sensorium`` registers a :class:`Worker` row and
updates its ``last_seen`` (database server time) from a background thread with its own connection,
every ``SENSORIUM_HEARTBEAT_S``. DataJoint records ``host`` and ``pid`` in each reservation; a
reservation is taken back only when the worker with that host and pid has been silent for
``SENSORIUM_WORKER_TIMEOUT_S`` (and the server itself has been up that long: after a server restart
every heartbeat is old). The job's ``connection_id`` is not used: DataJoint 2.3.5 records it once per
process and not after a reconnect, so it would hand a live worker's job to another after any reconnect.

Isolation between workers that share a login: each process draws a random token and opens every
connection with it as the session setting ``sensorium.worker_token`` (a libpq startup option, so it
never appears in a statement, which ``pg_stat_activity`` shows to the other sessions of the login). Its
heartbeat row is written only through ``SECURITY DEFINER`` functions that compare the token's SHA-256
with the one stored at registration (:func:`api_sql`), and the roles step (``schemas.roles``) takes
direct writes to the heartbeat table away from the worker role and guards reserved jobs with row-level
security: a reservation under a registered, running worker's host and pid can be changed only by a
session carrying that worker's token. A worker is declared dead only once its heartbeat is stale by its
own timeout on the server's clock, and its reservations are released in the same transaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import secrets
import threading
import time
import uuid
from typing import Any

import datajoint as dj
from datajoint.adapters.postgres import PostgreSQLAdapter
from datajoint.condition import make_condition
from datajoint.errors import AccessError

from pipeline import lifecycle
from pipeline.settings import Settings, WorkerSettings
from schemas.data import ExactTrialOrder, TrialOrder
from schemas.evaluation import EnsembleScore, ModelScore, OracleScore, Prediction, register_declared_ensembles
from schemas.introspection import CatalogPostgreSQLAdapter
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


class WorkerIdentityError(RuntimeError):
    """Another live worker is registered under this process's host name and pid."""


# -- the worker token: which worker a database session belongs to ----------------------------------------

#: session setting (a custom GUC) through which every connection of a worker process says whose it is
TOKEN_SETTING = "sensorium.worker_token"
#: comment on ``worker_register``: the version of :func:`api_sql` installed in the database
API_VERSION = "sensorium worker isolation 1"
#: SQLSTATE of ``worker_register`` when a live worker holds the same host name and pid
LIVE_TWIN = "SW001"
_TOKEN: dict[str, Any] = {"pid": None, "value": ""}
_TOKEN_LOCK = threading.Lock()
_ENV_LOCK = threading.Lock()


def _process_token() -> str:
    """This process's random worker token (a forked child draws its own)."""
    with _TOKEN_LOCK:
        if _TOKEN["pid"] != os.getpid():
            _TOKEN.update(pid=os.getpid(), value=secrets.token_hex(32))
        return _TOKEN["value"]


class TokenAdapter(CatalogPostgreSQLAdapter):
    """DataJoint's PostgreSQL adapter (catalog introspection) whose connections carry the worker token.

    The token travels as a libpq startup option (``PGOPTIONS``, set only while connecting), never in a
    statement: the text of a session's statements is visible to every other session of the same login.
    """

    def connect(self, host: str, port: int, user: str, password: str, **kwargs: Any) -> Any:
        option = f"-c {TOKEN_SETTING}={_process_token()}"
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


def carry_token(conn: dj.Connection) -> None:
    """Make ``conn`` carry this process's worker token, now (reconnecting once) and after reconnects."""
    if not isinstance(conn.adapter, TokenAdapter):
        if not isinstance(conn.adapter, PostgreSQLAdapter):
            raise RuntimeError("sensorium workers need a PostgreSQL connection")
        conn.adapter.__class__ = TokenAdapter
    current = conn.query("SELECT current_setting(%s, true)", args=(TOKEN_SETTING,)).fetchone()[0]
    if current == _process_token():
        return
    if conn._in_transaction:
        raise RuntimeError("carry_token: the connection is inside a transaction")
    reconnect = getattr(conn, "_reconnect", None)  # ResilientConnection: close, connect, new connection_id
    if reconnect is not None:
        reconnect()
    else:
        with contextlib.suppress(Exception):  # already broken: nothing to close
            conn._conn.close()
        conn.connect()
        conn.connection_id = conn.adapter.get_connection_id(conn._conn)


# -- the worker functions -------------------------------------------------------------------------------


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def api_name(function: str) -> str:
    """Full name of one of the worker functions (they live in the schema of :class:`Worker`)."""
    return f"{_q(Worker.database)}.{_q(function)}"


def token_table() -> str:
    """Full name of the table of token hashes (not a DataJoint table; written only by the functions)."""
    return f"{_q(Worker.database)}.{_q('~worker_token')}"


#: function -> (argument types, whether the worker role may call it)
_API: dict[str, tuple[str, bool]] = {
    "release_host_pid": ("text, integer", False),
    "may_change_reservation": ("text, integer", True),
    "worker_register": ("text, text, integer, text, text, double precision, double precision", True),
    "worker_beat": ("text, text, jsonb, integer, integer", True),
    "worker_stop": ("text, text, integer, integer", True),
    "worker_reap": ("text, integer, double precision", True),
}


def api_functions() -> list[tuple[str, bool]]:
    """(signature, whether the worker role may call it) of every worker function, for grants."""
    return [(f"{api_name(name)}({args})", granted) for name, (args, granted) in _API.items()]


def reservation_guard() -> str:
    """Row-level-security condition on a job table: the row is not reserved, or it is a reservation
    this session may change (``may_change_reservation`` of :func:`api_sql`)."""
    return f"status <> 'reserved' OR {api_name('may_change_reservation')}(host, pid)"


def api_sql() -> list[str]:
    """Statements that create (or replace) the token table and the worker functions of this prefix.

    Every function but ``release_host_pid`` (called only by the others) is ``SECURITY DEFINER`` with a
    pinned ``search_path``, and reads the clock in UTC whatever the caller's ``TimeZone`` (a session could
    otherwise shift the time a staleness test compares with). ``worker_register``, ``worker_beat`` and
    ``worker_stop`` act only for the worker whose stored token hash is that of the calling session's
    token. ``worker_reap`` marks a worker dead only when its heartbeat is older than the worker's own
    timeout and the server has been up that long, and releases every reservation under its host and pid
    in the same transaction; so do ``worker_stop`` and ``worker_register`` (which takes over an earlier
    process's row under the same host and pid once it is stale). ``may_change_reservation`` is the
    row-level-security test of the job tables: true when no running worker holds that host and pid (a
    reservation made outside ``sensorium``) or when the session carries that running worker's token.
    Changes under one host and pid are serialized by an advisory lock.
    """
    import schemas

    prefix = Worker.database[: -len("workers")]
    job_schemas = ", ".join(f"'{prefix}{m}'" for m in schemas.SCHEMA_MODULES)
    worker, tokens, fn = Worker.full_table_name, token_table(), api_name
    token = f"current_setting('{TOKEN_SETTING}', true)"
    token_hash = f"sha256(convert_to({token}, 'UTF8'))"
    now = "(CURRENT_TIMESTAMP(3) AT TIME ZONE 'UTC')"
    definer = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$"
    released = "RETURNS TABLE (job_schema text, job_table text, released integer)"

    def lock(host: str, pid: str) -> str:
        return f" PERFORM pg_advisory_xact_lock(hashtext('sensorium worker ' || {host}), {pid}); "

    def stale(timeout: str) -> str:
        return (
            f"(w.last_seen <= {now} - make_interval(secs => {timeout}) AND "
            f"pg_postmaster_start_time() <= CURRENT_TIMESTAMP - make_interval(secs => {timeout}))"
        )

    def only_own(worker_id: str) -> str:
        return (
            f" IF NOT EXISTS (SELECT 1 FROM {tokens} k WHERE k.worker_id = {worker_id} "
            f"AND k.token_hash = {token_hash}) THEN RAISE EXCEPTION 'this session is not worker %', "
            f"{worker_id} USING ERRCODE = '42501'; END IF; "
        )

    def release(host: str, pid: str) -> str:
        return f" RETURN QUERY SELECT * FROM {fn('release_host_pid')}({host}, {pid}); "

    def running(host: str, pid: str) -> str:
        where = f"w.host = {host} AND w.pid = {pid} AND w.status = 'running'"
        return f"EXISTS (SELECT 1 FROM {worker} w WHERE {where})"

    sql = [
        f"CREATE TABLE IF NOT EXISTS {tokens} (worker_id char(32) PRIMARY KEY, token_hash bytea NOT NULL, "
        "heartbeat_s double precision NOT NULL, timeout_s double precision NOT NULL)",
        f"COMMENT ON TABLE {tokens} IS 'SHA-256 of each worker''s session token, and its heartbeat timing'",
        f"CREATE OR REPLACE FUNCTION {fn('release_host_pid')}(p_host text, p_pid integer) {released} "
        "LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$ "
        "DECLARE r record; v_n integer; BEGIN "
        "FOR r IN SELECT ns.nspname AS s, c.relname AS t FROM pg_class c "
        "JOIN pg_namespace ns ON ns.oid = c.relnamespace "
        f"WHERE c.relkind = 'r' AND ns.nspname IN ({job_schemas}) AND c.relname LIKE '~~%' "
        "AND has_table_privilege(c.oid, 'UPDATE') ORDER BY 1, 2 LOOP "
        "EXECUTE format('UPDATE %I.%I SET status = ''pending'', reserved_time = NULL, host = '''', "
        "pid = 0, connection_id = 0 WHERE status = ''reserved'' AND host = $1 AND pid = $2', r.s, r.t) "
        "USING p_host, p_pid; GET DIAGNOSTICS v_n = ROW_COUNT; "
        "IF v_n > 0 THEN job_schema := r.s; job_table := r.t; released := v_n; RETURN NEXT; END IF; "
        "END LOOP; END $fn$",
        f"CREATE OR REPLACE FUNCTION {fn('may_change_reservation')}(p_host text, p_pid integer) "
        f"RETURNS boolean LANGUAGE sql STABLE {definer} "
        f"SELECT NOT {running('p_host', 'p_pid')} "
        f"OR EXISTS (SELECT 1 FROM {worker} w JOIN {tokens} k ON k.worker_id = w.worker_id "
        "WHERE w.host = p_host AND w.pid = p_pid AND w.status = 'running' "
        f"AND k.token_hash = {token_hash}) $fn$",
        f"CREATE OR REPLACE FUNCTION {fn('worker_register')}(p_worker_id text, p_host text, p_pid integer, "
        "p_queue text, p_device text, p_heartbeat_s double precision, p_timeout_s double precision) "
        f"{released} LANGUAGE plpgsql {definer} BEGIN "
        f"IF length(coalesce({token}, '')) < 32 THEN RAISE EXCEPTION "
        f"'this session carries no worker token ({TOKEN_SETTING})' USING ERRCODE = '42501'; END IF; "
        "IF p_worker_id IS NULL OR p_worker_id !~ '^[0-9a-f]{32}$' OR p_host IS NULL OR p_pid IS NULL "
        "OR NOT p_heartbeat_s > 0 OR NOT p_timeout_s > 0 THEN "
        "RAISE EXCEPTION 'worker_register: invalid arguments' USING ERRCODE = '22023'; END IF;"
        + lock("p_host", "p_pid")
        # a retried call whose first reply was lost finds its own row
        + f"IF EXISTS (SELECT 1 FROM {tokens} k WHERE k.worker_id = p_worker_id AND k.token_hash = "
        f"{token_hash}) THEN RETURN; END IF; "
        f"IF EXISTS (SELECT 1 FROM {worker} w WHERE w.worker_id = p_worker_id) OR EXISTS "
        f"(SELECT 1 FROM {tokens} k WHERE k.worker_id = p_worker_id) THEN "
        "RAISE EXCEPTION 'worker % is registered already', p_worker_id USING ERRCODE = '42501'; END IF; "
        # an earlier process under this host and pid (a restarted container) is taken over only once its
        # heartbeat is stale by its own timeout; a live one (a twin) is refused
        f"IF EXISTS (SELECT 1 FROM {worker} w LEFT JOIN {tokens} k ON k.worker_id = w.worker_id "
        "WHERE w.host = p_host AND w.pid = p_pid AND w.status = 'running' "
        f"AND NOT {stale('coalesce(k.timeout_s, p_timeout_s)')}) THEN "
        "RAISE EXCEPTION 'a live worker is registered as host % pid %', p_host, p_pid "
        f"USING ERRCODE = '{LIVE_TWIN}'; END IF; "
        f"UPDATE {worker} w SET status = 'dead', stopped_at = {now} "
        "WHERE w.host = p_host AND w.pid = p_pid AND w.status = 'running';"
        + release("p_host", "p_pid")
        + f"INSERT INTO {worker} (worker_id, host, pid, queue, device, started_at, last_seen, status) "
        f"VALUES (p_worker_id, p_host, p_pid, p_queue, left(p_device, 64), {now}, {now}, 'running'); "
        f"INSERT INTO {tokens} (worker_id, token_hash, heartbeat_s, timeout_s) "
        f"VALUES (p_worker_id, {token_hash}, p_heartbeat_s, p_timeout_s); END $fn$",
        f"CREATE OR REPLACE FUNCTION {fn('worker_beat')}(p_worker_id text, p_table text, p_key jsonb, "
        f"p_done integer, p_failed integer) RETURNS boolean LANGUAGE plpgsql {definer} BEGIN"
        + only_own("p_worker_id")
        + f"UPDATE {worker} w SET last_seen = {now}, current_table = p_table, current_key = p_key, "
        "jobs_done = p_done, jobs_failed = p_failed "
        "WHERE w.worker_id = p_worker_id AND w.status = 'running'; RETURN FOUND; END $fn$",
        f"CREATE OR REPLACE FUNCTION {fn('worker_stop')}(p_worker_id text, p_status text, p_done integer, "
        f"p_failed integer) {released} LANGUAGE plpgsql {definer} "
        "DECLARE v_host text; v_pid integer; BEGIN"
        + only_own("p_worker_id")
        + "IF p_status IS NULL OR p_status NOT IN ('stopped', 'dead') THEN RAISE EXCEPTION "
        "'worker_stop: status % (expected stopped or dead)', p_status USING ERRCODE = '22023'; END IF; "
        f"SELECT w.host, w.pid INTO v_host, v_pid FROM {worker} w WHERE w.worker_id = p_worker_id; "
        "IF NOT FOUND THEN RETURN; END IF;"
        + lock("v_host", "v_pid")
        + f"UPDATE {worker} w SET status = p_status, stopped_at = {now}, current_table = '', "
        "current_key = NULL, jobs_done = p_done, jobs_failed = p_failed "
        "WHERE w.worker_id = p_worker_id AND w.status = 'running'; "
        f"IF NOT {running('v_host', 'v_pid')} THEN" + release("v_host", "v_pid") + "END IF; END $fn$",
        # p_timeout_s only for rows registered before tokens existed (no timeout of their own; such a
        # worker can no longer beat once the roles step has revoked its UPDATE on the heartbeat table)
        f"CREATE OR REPLACE FUNCTION {fn('worker_reap')}(p_host text, p_pid integer, "
        f"p_timeout_s double precision) {released} LANGUAGE plpgsql {definer} BEGIN"
        + lock("p_host", "p_pid")
        # reserved outside sensorium (no worker row): the orphan timeout applies, not this
        + f"IF NOT EXISTS (SELECT 1 FROM {worker} w WHERE w.host = p_host AND w.pid = p_pid) THEN "
        "RETURN; END IF; "
        f"UPDATE {worker} w SET status = 'dead', stopped_at = {now} "
        "WHERE w.host = p_host AND w.pid = p_pid AND w.status = 'running' AND "
        + stale(
            f"coalesce((SELECT k.timeout_s FROM {tokens} k WHERE k.worker_id = w.worker_id), "
            "greatest(p_timeout_s, 0))"
        )
        + f"; IF {running('p_host', 'p_pid')} THEN RETURN; END IF;"
        + release("p_host", "p_pid")
        + "END $fn$",
    ]
    sql += [f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC" for signature, _ in api_functions()]
    sql += [f"COMMENT ON FUNCTION {_register_signature()} IS '{API_VERSION}'"]
    return sql


def _register_signature() -> str:
    return next(s for s, _ in api_functions() if s.startswith(api_name("worker_register") + "("))


def ensure_api(conn: dj.Connection) -> None:
    """Create the worker functions when missing or outdated (the embedded server; a first run as owner).

    Deployments create them in the roles step (``sensorium db init`` / ``db roles --apply``), which also
    hands them to ``sensorium_admin`` and lets the worker role call them.

    Raises:
        schemas.SchemaNotDeclaredError: they are missing or outdated and this login may not create
            them (the command line shows it as one line).
    """

    def installed() -> bool:
        row = conn.query(
            "SELECT obj_description(to_regprocedure(%s), 'pg_proc')", args=(_register_signature(),)
        ).fetchone()
        return row[0] == API_VERSION

    if installed():
        return
    try:
        with conn.transaction:
            conn.query("SELECT pg_advisory_xact_lock(hashtext(%s))", args=(f"{Worker.database} api",))
            if not installed():  # another process may have created them meanwhile
                for statement in api_sql():
                    conn.query(statement.replace("%", "%%"))  # a literal '%' (format()) is no parameter
    except AccessError as err:
        from schemas import SchemaNotDeclaredError

        raise SchemaNotDeclaredError(
            f"the worker functions of {Worker.database} are missing or outdated and this login may not "
            "create them: run `sensorium db roles --apply` (or `sensorium db init`) as the database owner"
        ) from err


def _log_released(rows: list, host: str, pid: int, reason: str) -> int:
    """Log the (schema, job table, count) rows a worker function released; returns their total."""
    names = {(jobs_of(t).database, jobs_of(t).table_name): t.__name__ for t in QUEUES["all"]}
    for schema, table, n in rows:
        name = names.get((schema, table), table)
        log.warning("re-queued %d %s job(s) of %s pid %s (%s)", n, name, host, pid, reason)
    return sum(int(n) for _, _, n in rows)


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
        import schemas

        conn = Worker.connection
        carry_token(conn)
        ensure_api(conn)
        self._register(self.worker_id)
        # a connection of its own: the main one may be inside a transaction or blocked in a query
        self._conn = schemas.connect(self.settings)
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
        _log_released(rows, self.host, self.pid, "left by an earlier process")

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
            _log_released(rows, self.host, self.pid, f"still reserved when the worker {status}")
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
            released += _log_released(rows, host, int(pid), "its worker stopped sending heartbeats")
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
