"""The pipeline's advisory locks cannot be held against it: an analyst cannot take them at all, and a
lock held by anyone else fails the waiting command with one line naming the holder, after
``SENSORIUM_LOCK_TIMEOUT_S``, with nothing stored.

Real logins on the test session's PostgreSQL (trusted Unix socket: privileges are what is tested), real
``sensorium`` processes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors as pg

from pipeline.data.synth import SynthConfig, write_synthetic
from pipeline.settings import SettingsError, load_settings
from tests.factories import cli_argv

REPO = Path(__file__).parents[2]
ANALYST, WORKER = "lock_analyst", "lock_worker"
SEED = 617  # a recording of its own: data key 90000-618-1
DATA_KEY = f"90000-{1 + SEED % 1000}-1"


def _sql(db, user: str = "postgres"):
    conn = psycopg2.connect(host=str(db.db_dir), port=5432, user=user, dbname="postgres", password="x")
    conn.autocommit = True
    return conn


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_argv(*args),
        capture_output=True,
        text=True,
        env=dict(os.environ, **env),
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def logins(db):
    """Roles applied (by the superuser, as the deployment's init step), an analyst and a worker login."""
    import schemas
    from usecases.roles import add_user, apply_roles

    conn = schemas.connect(db)
    apply_roles(conn, db.db_prefix, schemas.modules())
    apply_roles(conn, db.db_prefix, schemas.modules())  # idempotent
    add_user(conn, ANALYST, "analyst", "analyst-password-1")
    add_user(conn, WORKER, "worker", "worker-password-1")
    yield db
    with contextlib.closing(_sql(db)) as su, su.cursor() as cur:
        for role in (ANALYST, WORKER):
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
    conn.close()


@contextlib.contextmanager
def _held(db, user: str, key: str) -> Iterator[int]:
    """A session of ``user`` holding the advisory lock of ``hashtext(key)``; yields its pid."""
    conn = _sql(db, user)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext(%s)), pg_backend_pid()", (key,))
            yield cur.fetchone()[1]
    finally:
        conn.close()


def test_an_analyst_cannot_take_any_advisory_lock(logins):
    from usecases.roles import ADVISORY_LOCK_FUNCTIONS

    analyst = _sql(logins, ANALYST)
    for function in ADVISORY_LOCK_FUNCTIONS:
        for arguments in ("hashtext('sensorium-ingest:x')", "1, 2"):
            with analyst.cursor() as cur, pytest.raises(pg.InsufficientPrivilege):
                cur.execute(f"SELECT {function}({arguments})")
    # workers and admins may (a worker login here), and so may the pipeline's own processes
    worker = _sql(logins, WORKER)
    with worker.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtext('probe')), pg_advisory_unlock(hashtext('probe'))")
        assert cur.fetchone() == (True, True)
    analyst.close()
    worker.close()


def test_roles_sql_prints_the_revoke_which_changes_nothing_where_not_permitted(logins):
    from usecases.roles import ADMIN, _advisory_lock_sql

    shown = _cli("db", "roles")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f.sig)" in shown.stdout
    # a login that is not the functions' owner (an admin, not a superuser) runs it without an error
    with contextlib.closing(_sql(logins)) as su, su.cursor() as cur:
        cur.execute(f'CREATE ROLE "lock_admin" LOGIN IN ROLE "{ADMIN}"')
        cur.execute("SELECT proacl::text FROM pg_proc WHERE proname = 'pg_advisory_lock' ORDER BY oid")
        acl = cur.fetchall()
    try:
        with contextlib.closing(_sql(logins, "lock_admin")) as admin, admin.cursor() as cur:
            cur.execute(_advisory_lock_sql())
        with contextlib.closing(_sql(logins)) as su, su.cursor() as cur:
            cur.execute("SELECT proacl::text FROM pg_proc WHERE proname = 'pg_advisory_lock' ORDER BY oid")
            assert cur.fetchall() == acl
        for (text,) in acl:  # e.g. {postgres=X/postgres,sensorium_admin=X/postgres,...}: no PUBLIC ("=X/")
            grantees = {item.split("=")[0] for item in text.strip("{}").split(",")}
            assert grantees == {"postgres", "sensorium_admin", "sensorium_worker"}, text
    finally:
        with contextlib.closing(_sql(logins)) as su, su.cursor() as cur:
            cur.execute('DROP ROLE "lock_admin"')


def test_a_held_ingest_lock_fails_the_ingest_in_time_with_one_line_and_stores_nothing(logins, tmp_path):
    from schemas.data import Scan

    (folder,) = write_synthetic(tmp_path, 1, SynthConfig(n_neurons=8, n_trials=60, seed=SEED))
    with _held(logins, WORKER, f"sensorium-ingest:{DATA_KEY}") as pid:
        start = time.monotonic()
        blocked = _cli("ingest", str(folder), SENSORIUM_LOCK_TIMEOUT_S="1.5")
        elapsed = time.monotonic() - start
    assert blocked.returncode == 2, blocked.stdout + blocked.stderr
    assert blocked.stdout.startswith(f"error: waited 1.5 s for the ingest lock of {DATA_KEY}: held by ")
    assert f"pid {pid}, login {WORKER}" in blocked.stdout and "SENSORIUM_LOCK_TIMEOUT_S" in blocked.stdout
    assert blocked.stdout.count("\n") == 1 and "Traceback" not in blocked.stderr, blocked.stderr
    assert elapsed < 60, f"the wait is bounded ({elapsed:.0f} s with the imports and the validation)"
    assert not Scan & {"data_key": DATA_KEY} and not Scan.Trial & {"data_key": DATA_KEY}
    # once the holder is gone the same command stores it
    done = _cli("ingest", str(folder), SENSORIUM_LOCK_TIMEOUT_S="1.5")
    assert done.returncode == 0 and f"{DATA_KEY}: ingested" in done.stdout, done.stdout + done.stderr
    assert len(Scan.Trial & {"data_key": DATA_KEY}) == 60


def test_a_held_sweep_lock_fails_the_step_in_time_with_one_line(logins):
    from schemas.sweeps import Sweep

    with _held(logins, "postgres", f"sensorium-sweep:{Sweep.database}:no_such_sweep") as pid:
        blocked = _cli("sweep", "step", "no_such_sweep", SENSORIUM_LOCK_TIMEOUT_S="0.5")
    assert blocked.returncode == 2, blocked.stdout + blocked.stderr
    assert blocked.stdout.startswith("error: waited 0.5 s for the lock of sweep 'no_such_sweep': held by ")
    assert f"pid {pid}, login postgres" in blocked.stdout and blocked.stdout.count("\n") == 1
    assert "Traceback" not in blocked.stderr


def test_a_wait_ends_when_the_holder_lets_go_and_lock_timeout_is_put_back(logins):
    from schemas.data import Scan
    from schemas.locks import LockTimeoutError, advisory_lock, advisory_unlock

    conn = Scan.connection
    before = conn.query("SHOW lock_timeout").fetchone()[0]
    holder = _sql(logins, WORKER)
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(hashtext('probe-wait'))")
    release = threading.Timer(0.5, lambda: holder.cursor().execute("SELECT pg_advisory_unlock_all()"))
    release.start()
    start = time.monotonic()
    advisory_lock(conn, "probe-wait", "the probe lock", transaction=False, timeout_s=30)
    assert time.monotonic() - start < 10
    assert conn.query("SHOW lock_timeout").fetchone()[0] == before
    advisory_unlock(conn, "probe-wait")
    release.join()
    # a timeout inside a transaction aborts it: nothing of it stays, and the connection goes on
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(hashtext('probe-xact'))")
    with pytest.raises(LockTimeoutError, match="the probe lock: held by another session"), conn.transaction:
        advisory_lock(conn, "probe-xact", "the probe lock", transaction=True, timeout_s=0.3)
    assert conn.query("SHOW lock_timeout").fetchone()[0] == before
    with pytest.raises(LockTimeoutError):  # session-level: lock_timeout put back after a timeout too
        advisory_lock(conn, "probe-xact", "the probe lock", transaction=False, timeout_s=0.3)
    assert conn.query("SHOW lock_timeout").fetchone()[0] == before
    holder.close()


@pytest.mark.parametrize(("value", "fragment"), [("0", "positive"), ("x", "positive"), ("1e6", "at most")])
def test_lock_timeout_setting_is_checked(value, fragment):
    assert load_settings({}).lock_timeout_s == 60
    assert load_settings({"SENSORIUM_LOCK_TIMEOUT_S": "2.5"}).lock_timeout_s == 2.5
    with pytest.raises(SettingsError, match=f"SENSORIUM_LOCK_TIMEOUT_S={value!r}: .*{fragment}"):
        load_settings({"SENSORIUM_LOCK_TIMEOUT_S": value})
