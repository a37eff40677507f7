"""Isolation between workers that share a login: a token per process, and the worker functions.

Each process draws a random token and opens every connection with it as the session setting
``sensorium.worker_token`` (a libpq startup option, so it never appears in a statement, which
``pg_stat_activity`` shows to the other sessions of the login). The heartbeat rows are written only
through ``SECURITY DEFINER`` functions that compare the token's SHA-256 with the one stored at
registration (:func:`api_sql`); the roles step (:mod:`usecases.roles`) takes direct writes to the
heartbeat table away from the worker role and guards reserved jobs with row-level security
(:func:`reservation_guard`). A worker is declared dead only once its heartbeat is stale by its own
timeout on the server's clock, and its reservations are released in the same transaction.
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import Any

import datajoint as dj
from datajoint.errors import AccessError

from schemas import SCHEMA_MODULES, SchemaNotDeclaredError
from schemas.dj_compat import carry_session_setting
from schemas.sql_quoting import quote_ident as _q
from schemas.workers import Worker

# -- the worker token: which worker a database session belongs to ----------------------------------------

#: session setting (a custom GUC) through which every connection of a worker process says whose it is
TOKEN_SETTING = "sensorium.worker_token"
#: comment on ``worker_register``: the version of :func:`api_sql` installed in the database
API_VERSION = "sensorium worker isolation 1"
#: SQLSTATE of ``worker_register`` when a live worker holds the same host name and pid
LIVE_TWIN = "SW001"
_TOKEN: dict[str, Any] = {"pid": None, "value": ""}
_TOKEN_LOCK = threading.Lock()


def _process_token() -> str:
    """This process's random worker token (a forked child draws its own)."""
    with _TOKEN_LOCK:
        if _TOKEN["pid"] != os.getpid():
            _TOKEN.update(pid=os.getpid(), value=secrets.token_hex(32))
        return _TOKEN["value"]


def carry_token(conn: dj.Connection) -> None:
    """Make ``conn`` carry this process's worker token, now (reconnecting once) and after reconnects.

    The token travels as a libpq startup option (set only while connecting), never in a statement: the
    text of a session's statements is visible to every other session of the same login.
    """
    carry_session_setting(conn, TOKEN_SETTING, _process_token)


# -- the worker functions -------------------------------------------------------------------------------


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
    prefix = Worker.database[: -len("workers")]
    job_schemas = ", ".join(f"'{prefix}{m}'" for m in SCHEMA_MODULES)
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
        SchemaNotDeclaredError: they are missing or outdated and this login may not create
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
        raise SchemaNotDeclaredError(
            f"the worker functions of {Worker.database} are missing or outdated and this login may not "
            "create them: run `sensorium db roles --apply` (or `sensorium db init`) as the database owner"
        ) from err
