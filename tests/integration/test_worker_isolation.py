"""Workers that share a login cannot stop one another or take one another's jobs (issue 26).

Real worker processes log in as a worker-role login; the "other worker" is a second session of the same
login, and a second login of the same role, each issuing the SQL a misbehaving worker could. A killed
worker is declared dead by another session only once its heartbeat is stale, and its job is pending
again in that same call. An admin login still populates with and without the queue; a restarted process
under the same host name and pid waits for its earlier life's heartbeat to go stale.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import uuid

import psycopg2
import pytest
from psycopg2 import errors as pg

from tests.factories import add, assert_one_clean_run, checkpoint_epoch, cli_argv, job_status, long_experiment

WORKER_LOGIN, OTHER_LOGIN, ADMIN_LOGIN = "iso_worker", "iso_other", "iso_admin"


@pytest.fixture(scope="module")
def logins(db, session_scans):
    """Roles applied to the test prefix; two worker-role logins and an admin login."""
    import schemas
    from schemas.workers import Worker
    from usecases.roles import add_user, apply_roles

    conn = Worker.connection
    apply_roles(conn, db.db_prefix, schemas.modules())
    for name, role in ((WORKER_LOGIN, "worker"), (OTHER_LOGIN, "worker"), (ADMIN_LOGIN, "admin")):
        add_user(conn, name, role, "unused-on-the-socket")
    return db


@pytest.fixture()
def as_login(logins, monkeypatch):
    """``as_login(user)``: worker processes started afterwards (``spawn_worker``) log in as ``user``."""

    def use(user: str) -> dict:
        env = {"DJ_HOST": str(logins.db_dir), "DJ_PORT": "5432", "DJ_USER": user, "DJ_PASS": "unused"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return dict(os.environ)

    return use


def _sql(db, user: str):
    conn = psycopg2.connect(host=str(db.db_dir), port=5432, user=user, dbname="postgres", password="x")
    conn.autocommit = True
    return conn


def _run(conn, statement: str, args: tuple = ()) -> tuple[int, list]:
    """(rows affected, rows returned) of ``statement`` on a psycopg2 connection."""
    with conn.cursor() as cur:
        cur.execute(statement, args)
        return cur.rowcount, cur.fetchall() if cur.description else []


def _refused(conn, statement: str, args: tuple = ()) -> bool:
    try:
        _run(conn, statement, args)
    except pg.InsufficientPrivilege:
        return True
    return False


def _worker_row(pid: int) -> dict:
    from schemas.workers import Worker

    rows = (Worker & {"pid": pid}).to_dicts(order_by="started_at DESC")
    assert rows, f"no worker row for pid {pid}"
    return rows[0]


@pytest.mark.slow
def test_another_worker_of_the_same_login_cannot_stop_a_live_worker_or_touch_its_job(
    logins, as_login, session_scans, spawn_worker, wait_until
):
    from jobs.isolation import api_name, token_table
    from jobs.queues import jobs_of
    from jobs.reservations import _job_condition
    from schemas.training import TrainedModel
    from schemas.workers import Worker

    (key,) = add(long_experiment("iso_live", session_scans, seeds=(61,), max_iter=14))
    (waiting,) = add(long_experiment("iso_waiting", session_scans, seeds=(62,), max_iter=2))
    jobs, W = jobs_of(TrainedModel), Worker.full_table_name
    jobs.refresh(waiting, delay=-1)  # a pending job no worker here takes (not its experiment)
    J = jobs.full_table_name
    as_login(WORKER_LOGIN)
    victim = spawn_worker("--experiment", "iso_live", "--idle-exit", "1.5")
    wait_until(lambda: checkpoint_epoch(key) >= 1, 120, "epoch 1 of the victim")
    row = _worker_row(victim.pid)
    vid, host, pid = row["worker_id"], row["host"], victim.pid
    assert row["status"] == "running" and job_status(key) == "reserved"
    mine = f"SELECT count(*) FROM {J} WHERE status = 'reserved' AND pid = %s"
    assert Worker.connection.query(mine, args=(pid,)).fetchone()[0] == 1, "what the statements below aim at"

    for login in (WORKER_LOGIN, OTHER_LOGIN):  # the same login as the victim, and another worker login
        other = _sql(logins, login)
        # what made a live worker abandon its job before: now no direct write to the heartbeat table
        assert _refused(other, f"UPDATE {W} SET status = 'dead' WHERE pid = %s", (pid,))
        assert _refused(other, f"UPDATE {W} SET last_seen = last_seen WHERE pid = %s", (pid,))
        assert _refused(other, f"DELETE FROM {W} WHERE pid = %s", (pid,))
        assert _refused(other, f"INSERT INTO {W} SELECT * FROM {W} LIMIT 0")
        # the worker functions act only for the session that registered the row
        assert _refused(other, f"SELECT {api_name('worker_stop')}(%s, 'dead', 0, 0)", (vid,))
        assert _refused(other, f"SELECT {api_name('worker_beat')}(%s, '', NULL, 0, 0)", (vid,))
        _run(other, "SET sensorium.worker_token = %s", ("f" * 64,))  # a token, but not the victim's
        assert _refused(other, f"SELECT {api_name('worker_stop')}(%s, 'dead', 0, 0)", (vid,))
        with pytest.raises(psycopg2.Error) as twin:  # registering under its host and pid: it is alive
            _run(
                other,
                f"SELECT * FROM {api_name('worker_register')}(%s, %s, %s, 'gpu', 'cpu', 0.5, 0.001)",
                (uuid.uuid4().hex, host, pid),
            )
        assert twin.value.pgcode == "SW001"
        # declaring it dead needs its heartbeat stale by its own timeout, whatever timeout or time zone
        # the caller gives
        _run(other, "SET TimeZone = 'Pacific/Kiritimati'")
        assert _run(other, f"SELECT * FROM {api_name('worker_reap')}(%s, %s, 0)", (host, pid)) == (0, [])
        # the stored hash is readable, and useless as a token
        (stored,) = _run(other, f"SELECT token_hash FROM {token_table()} WHERE worker_id = %s", (vid,))[1][0]
        _run(other, "SET sensorium.worker_token = %s", (bytes(stored).hex(),))
        assert _refused(other, f"SELECT {api_name('worker_stop')}(%s, 'dead', 0, 0)", (vid,))
        assert _refused(other, f"SELECT * FROM {api_name('release_host_pid')}(%s, %s)", (host, pid))
        # its reservation: neither released, completed, failed nor re-reserved by anyone else
        for statement in (
            f"UPDATE {J} SET status = 'pending', host = '', pid = 0 WHERE status = 'reserved' AND pid = %s",
            f"UPDATE {J} SET status = 'error' WHERE status = 'reserved' AND pid = %s",
            f"UPDATE {J} SET host = 'elsewhere' WHERE status = 'reserved' AND pid = %s",
            f"DELETE FROM {J} WHERE status = 'reserved' AND pid = %s",
        ):
            assert _run(other, statement, (pid,))[0] == 0, statement
        # nor can a job be reserved in its name
        set_waiting = (
            f"UPDATE {J} SET status = %s, host = %s, pid = %s WHERE {_job_condition(TrainedModel, waiting)}"
        )
        assert _refused(other, set_waiting, ("reserved", host, pid))
        # a reservation nobody's heartbeat holds (a plain DataJoint populate) stays as free as before
        assert _run(other, set_waiting, ("reserved", "nb", 1))[0] == 1
        assert _run(other, set_waiting, ("pending", "", 0))[0] == 1
        # the victim's token is in no statement text that the login's sessions can see
        texts = [q for (q,) in _run(other, "SELECT query FROM pg_stat_activity WHERE query <> ''")[1]]
        assert texts
        seen = {hashlib.sha256(h.encode()).digest() for t in texts for h in re.findall(r"[0-9a-f]{64}", t)}
        assert bytes(stored) not in seen
        other.close()

    row = _worker_row(pid)
    assert row["status"] == "running" and row["worker_id"] == vid
    assert (jobs & key).fetch1("status", "pid") == ("reserved", pid)
    assert victim.wait(timeout=180) == 0, victim.text()
    assert "declared dead" not in victim.text() and "drop" not in victim.text()
    assert "heartbeat failed" not in victim.text() and "re-queued" not in victim.text()
    assert assert_one_clean_run(key)["resumed_from_epoch"] == 0, "trained in one go, never disturbed"
    (jobs & waiting).delete_quick()


@pytest.mark.slow
def test_a_killed_worker_is_declared_dead_and_its_job_is_pending_in_the_same_call(
    logins, as_login, session_scans, spawn_worker, wait_until
):
    from jobs.isolation import api_name

    (key,) = add(long_experiment("iso_killed", session_scans, seeds=(63,), max_iter=16))
    as_login(WORKER_LOGIN)
    victim = spawn_worker("--experiment", "iso_killed")
    wait_until(lambda: checkpoint_epoch(key) >= 2, 120, "epoch 2 of the victim")
    host = _worker_row(victim.pid)["host"]
    victim.send(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = checkpoint_epoch(key)
    other = _sql(logins, OTHER_LOGIN)
    reap = f"SELECT job_schema, job_table, released FROM {api_name('worker_reap')}(%s, %s, 0)"
    assert _run(other, reap, (host, victim.pid)) == (0, []), "silent for less than its timeout: alive"
    assert job_status(key) == "reserved" and _worker_row(victim.pid)["status"] == "running"

    def reaped():
        return _run(other, reap, (host, victim.pid))[1]

    rows = wait_until(reaped, 30, "the killed worker's heartbeat to go stale", interval=0.2)
    assert [(t, n) for _, t, n in rows] == [("~~trained_model", 1)]
    assert job_status(key) == "pending", "released in the call that declared it dead"
    assert _worker_row(victim.pid)["status"] == "dead"
    other.close()

    resumer = spawn_worker("--experiment", "iso_killed", "--idle-exit", "1.5")
    assert resumer.wait(timeout=180) == 0, resumer.text()
    assert assert_one_clean_run(key)["resumed_from_epoch"] == killed_at >= 2


@pytest.mark.slow
def test_an_admin_login_populates_with_and_without_the_job_queue(logins, as_login, session_scans):
    from jobs.admin import workers
    from schemas.evaluation import ModelScore

    (key,) = add(long_experiment("iso_admin", session_scans, seeds=(64,), max_iter=2))
    env = as_login(ADMIN_LOGIN)
    before = {w["worker_id"] for w in workers(include_stopped=True)}
    cli = cli_argv("populate", "--experiment", "iso_admin")
    queued = subprocess.run(
        [*cli, "--queue", "gpu", "--reserve-jobs"], env=env, capture_output=True, text=True
    )
    assert queued.returncode == 0, queued.stdout + queued.stderr
    assert_one_clean_run(key)
    runs = [w for w in workers(include_stopped=True) if w["worker_id"] not in before]
    assert [w["status"] for w in runs] == ["stopped"], "its heartbeat row, through the worker functions"
    plain = subprocess.run([*cli, "--queue", "cpu"], env=env, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert ModelScore & key


def test_a_worker_login_may_not_install_missing_worker_functions_and_says_what_to_run(logins, as_login):
    from jobs.isolation import API_VERSION, _register_signature
    from schemas.workers import Worker

    conn, signature = Worker.connection, _register_signature()
    conn.query(f"COMMENT ON FUNCTION {signature} IS NULL")  # what an older roles step leaves
    try:
        env = as_login(OTHER_LOGIN)
        proc = subprocess.run(
            cli_argv("worker", "--idle-exit", "1"),
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        conn.query(f"COMMENT ON FUNCTION {signature} IS '{API_VERSION}'")
    assert proc.returncode == 2 and "`sensorium db roles --apply`" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_restarted_worker_under_the_same_host_and_pid_waits_for_the_stale_heartbeat_and_a_twin_is_refused(
    logins, session_scans
):
    """Both lives of a container restarted with the same host name and pid, played by this process."""
    import time

    import schemas
    from jobs.heartbeat import Heartbeat, WorkerIdentityError
    from jobs.queues import jobs_of
    from schemas.training import TrainedModel
    from schemas.workers import Worker

    settings = schemas.active_settings()
    (key,) = add(long_experiment("iso_restart", session_scans, seeds=(65,), max_iter=1))
    jobs = jobs_of(TrainedModel)
    jobs.refresh(key, delay=-1)
    earlier = Heartbeat(settings, "gpu", "cpu")
    earlier.start()
    assert jobs.reserve(key) and job_status(key) == "reserved"  # held under this host and pid
    with pytest.raises(WorkerIdentityError):  # a twin: same host and pid, and the earlier one beats
        Heartbeat(settings, "gpu", "cpu").start()
    earlier._stop.set()  # the earlier life goes silent without a word, as when killed
    earlier._thread.join()
    earlier._conn.close()
    started = time.monotonic()
    later = Heartbeat(settings, "gpu", "cpu")
    later.start()
    try:
        assert time.monotonic() - started > 1.5, "taken over only once stale by its timeout (3 s)"
        assert job_status(key) == "pending", "what the earlier life held is given back"
        assert _worker_row(os.getpid())["worker_id"] == later.worker_id
        assert (Worker & {"worker_id": earlier.worker_id}).fetch1("status") == "dead"
    finally:
        later.stop()
        (jobs & key).delete_quick()
