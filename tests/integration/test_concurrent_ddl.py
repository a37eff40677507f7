"""The roles step runs while workers run, and a statement that loses a deadlock runs again.

The deployment's init step applies the roles on every ``docker compose up``, with workers training. A
rerun that changes nothing must take no lock that a worker's reads or writes wait for: one that re-took
every table's ACCESS EXCLUSIVE lock deadlocked with a worker's multi-table query, and the worker died
(found by the deployment check). A statement outside a transaction that the server aborts as a
deadlock victim changed nothing, and the connection runs it again.

Real sessions on the test session's PostgreSQL: a superuser session holds ROW EXCLUSIVE locks (what
a worker's INSERT, UPDATE or DELETE holds, and stronger than its reads' ACCESS SHARE) on every table
while the roles are applied again under a short ``lock_timeout``; the deadlock is a real one between two
sessions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import psycopg2
import pytest
from psycopg2 import errors as pg


def _sql(db, autocommit: bool = True):
    conn = psycopg2.connect(host=str(db.db_dir), port=5432, user="postgres", dbname="postgres", password="x")
    conn.autocommit = autocommit
    return conn


@pytest.fixture(scope="module")
def applied(db):
    """The roles applied once (as the deployment's first init does); yields the DataJoint connection."""
    import schemas
    from usecases.roles import apply_roles

    conn = schemas.connect(db)
    apply_roles(conn, db.db_prefix, schemas.modules())
    yield conn
    conn.close()


def _prefix_tables(db) -> list[str]:
    """Every table of the test prefix (DataJoint's, the job tables, the token table, Optuna's)."""
    with contextlib.closing(_sql(db)) as su, su.cursor() as cur:
        cur.execute(
            "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables WHERE schemaname LIKE %s",
            (db.db_prefix.replace("_", r"\_") + "%",),
        )
        return [row[0] for row in cur.fetchall()]


def test_applying_the_roles_again_waits_for_no_lock_that_workers_hold(db, applied):
    import schemas
    from usecases.roles import apply_roles

    tables = _prefix_tables(db)
    assert any("~~trained_model" in t for t in tables) and any("worker_token" in t for t in tables)
    holder = _sql(db, autocommit=False)
    try:
        with holder.cursor() as cur:
            cur.execute(f"LOCK TABLE {', '.join(tables)} IN ROW EXCLUSIVE MODE")
        applied.query("SET lock_timeout = '2s'")  # a lock it waits for fails it with LockNotAvailable
        try:
            apply_roles(applied, db.db_prefix, schemas.modules())
        finally:
            applied.query("RESET lock_timeout")
    finally:
        holder.rollback()
        holder.close()


def test_what_differs_is_changed_again(db, applied):
    """The conditions of the rerun only skip what is already so: a table given to another owner, row
    security switched off and a policy changed by hand are each put back."""
    import schemas
    from jobs.queues import jobs_of
    from schemas.training import TrainedModel
    from usecases.roles import ADMIN, apply_roles

    jobs = jobs_of(TrainedModel).full_table_name
    model = TrainedModel.full_table_name
    with contextlib.closing(_sql(db)) as su, su.cursor() as cur:
        cur.execute(f"ALTER TABLE {model} OWNER TO postgres")
        cur.execute(f"ALTER TABLE {jobs} DISABLE ROW LEVEL SECURITY")
        cur.execute(f"DROP POLICY sensorium_own_reservations ON {jobs}")
        cur.execute(f"CREATE POLICY sensorium_own_reservations ON {jobs} USING (true) WITH CHECK (true)")
        apply_roles(applied, db.db_prefix, schemas.modules())
        cur.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass", (model,))
        assert cur.fetchone()[0] == ADMIN
        cur.execute("SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (jobs,))
        assert cur.fetchone()[0] is True
        cur.execute(
            "SELECT pg_get_expr(polqual, polrelid), obj_description(oid, 'pg_policy') FROM pg_policy "
            "WHERE polrelid = %s::regclass AND polname = 'sensorium_own_reservations'",
            (jobs,),
        )
        qual, comment = cur.fetchone()
        assert "may_change_reservation" in qual and comment.startswith("sensorium policy ")


@pytest.fixture()
def rows(db):
    """A two-row table of its own in ``public``, dropped afterwards."""
    name = f"public.deadlock_probe_{db.db_prefix.rstrip('_')}"
    with contextlib.closing(_sql(db)) as su, su.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        cur.execute(f"CREATE TABLE {name} (id integer PRIMARY KEY, v integer NOT NULL)")
        cur.execute(f"INSERT INTO {name} VALUES (1, 0), (2, 0)")
    yield name
    with contextlib.closing(_sql(db)) as su, su.cursor() as cur:
        cur.execute(f"DROP TABLE {name}")


def _deadlock(db, rows: str, conn, statement) -> BaseException | None:
    """Run ``statement()`` on ``conn`` (it updates row 1, sleeps, then updates row 2, as one statement)
    in a thread while another session, holding row 2, updates row 1: a deadlock, in which ``conn``'s
    session is the victim (its ``deadlock_timeout`` is 0.1 s, the other's 10 s). Returns what the thread
    raised (None: nothing)."""
    conn.query("SET deadlock_timeout = '100ms'")
    pid = conn.query("SELECT pg_backend_pid()").fetchone()[0]
    raised: list[BaseException] = []

    def run() -> None:
        try:
            statement()
        except BaseException as err:  # the test reads it
            raised.append(err)

    other = _sql(db, autocommit=False)
    try:
        with other.cursor() as cur:
            cur.execute("SET deadlock_timeout = '10s'")  # never the victim
            cur.execute(f"UPDATE {rows} SET v = v + 100 WHERE id = 2")
            thread = threading.Thread(target=run)
            thread.start()
            _until_sleeping(db, pid)  # the thread's statement holds row 1 now, and asks for row 2 next
            cur.execute(f"UPDATE {rows} SET v = v + 1000 WHERE id = 1")  # waits until the victim yields
        other.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        other.close()
    return raised[0] if raised else None


def _until_sleeping(db, pid: int, timeout_s: float = 30.0) -> None:
    """Wait until the session ``pid`` is in ``pg_sleep`` (the first time only: a retried statement
    sleeps again, after this returned)."""
    deadline = time.monotonic() + timeout_s
    with contextlib.closing(_sql(db)) as su, su.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,))
            row = cur.fetchone()
            if row and row[0] == "PgSleep":
                return
            time.sleep(0.02)
    raise AssertionError(f"session {pid} never reached pg_sleep")


def _both_rows(rows: str) -> str:
    return (
        f"DO $$ BEGIN UPDATE {rows} SET v = v + 1 WHERE id = 1; PERFORM pg_sleep(0.6); "
        f"UPDATE {rows} SET v = v + 10 WHERE id = 2; END $$"
    )


def _values(db, rows: str) -> dict[int, int]:
    with contextlib.closing(_sql(db)) as su, su.cursor() as cur:
        cur.execute(f"SELECT id, v FROM {rows}")
        return dict(cur.fetchall())


def test_a_statement_that_loses_a_deadlock_runs_again(db, rows, caplog):
    import schemas

    conn = schemas.connect(db)
    try:
        with caplog.at_level(logging.WARNING, logger="schemas.dj_compat"):
            raised = _deadlock(db, rows, conn, lambda: conn.query(_both_rows(rows)))
        assert raised is None, raised
        assert "deadlock detected; running the statement again (1 of 5)" in caplog.text
        assert _values(db, rows) == {1: 1001, 2: 110}, "each update exactly once"
    finally:
        conn.close()


def test_inside_a_transaction_the_deadlock_reaches_the_caller(db, rows):
    """The server rolled the whole transaction back: only its caller can redo it (the job runner reruns
    the job, which resumes from its checkpoint)."""
    import schemas
    from schemas.dj_compat import is_transient_conflict

    conn = schemas.connect(db)
    try:

        def in_transaction() -> None:
            with conn.transaction:
                conn.query(_both_rows(rows))

        raised = _deadlock(db, rows, conn, in_transaction)
        assert isinstance(raised, pg.DeadlockDetected) and is_transient_conflict(raised)
        assert not conn._in_transaction
        assert _values(db, rows) == {1: 1000, 2: 100}, "the victim's transaction left nothing"
    finally:
        conn.close()
