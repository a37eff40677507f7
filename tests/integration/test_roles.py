"""Least-privilege roles with real logins on the test's PostgreSQL server.

The embedded server trusts its Unix socket, so these logins are not asked for their password (password
authentication over TCP is the compose-wiring test's part); what is tested here is what each role may
do: PostgreSQL enforces privileges by role whatever the authentication.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg2
import pytest
from psycopg2 import errors as pg

from tests.factories import add, assert_one_clean_run, cli_argv, long_experiment

USERS = {"t_analyst": "analyst", "t_worker": "worker", "t_admin": "admin"}


def _env(db, user: str) -> dict:
    """The environment of a process logged in as ``user`` (the server of the test session)."""
    return dict(os.environ, DJ_HOST=str(db.db_dir), DJ_PORT="5432", DJ_USER=user, DJ_PASS="unused-here")


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def logins(db, session_scans, tmp_path_factory):
    """Roles applied to the test prefix, and one login per role (made through the CLI)."""
    applied = _cli(dict(os.environ), "db", "roles", "--apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    secret = tmp_path_factory.mktemp("secret") / "password"
    secret.write_text("from-a-file-123\n")
    for user, role in USERS.items():
        made = _cli(
            dict(os.environ, SENSORIUM_NEW_PASSWORD="from-env-12345"),
            "db",
            "user",
            "add",
            user,
            "--role",
            role,
        )
        assert made.returncode == 0 and f"role sensorium_{role}" in made.stdout, made.stdout + made.stderr
    again = _cli(
        dict(os.environ), "db", "user", "add", "t_worker", "--role", "worker", "--password-file", str(secret)
    )
    assert again.returncode == 0 and "updated" in again.stdout, again.stdout + again.stderr
    assert _cli(dict(os.environ), "db", "roles", "--apply").returncode == 0, "applying twice is harmless"
    return db


def _sql(db, user: str):
    conn = psycopg2.connect(host=str(db.db_dir), port=5432, user=user, dbname="postgres", password="x")
    conn.autocommit = True
    return conn


def _refused(conn, statement: str) -> bool:
    with conn.cursor() as cur:
        try:
            cur.execute(statement)
        except pg.InsufficientPrivilege:
            return True
    return False


def test_roles_sql_is_printed_without_applying(logins):
    shown = _cli(dict(os.environ), "db", "roles")
    assert shown.returncode == 0
    assert 'CREATE ROLE "sensorium_analyst" NOLOGIN' in shown.stdout
    assert "GRANT INSERT, UPDATE, DELETE ON" in shown.stdout and "~~trained_model" in shown.stdout


def test_analyst_reads_but_changes_nothing(logins):
    from jobs.queues import jobs_of
    from schemas.data import Scan
    from schemas.training import TrainedModel

    env = _env(logins, "t_analyst")
    scores = _cli(env, "scores", "--json")
    assert scores.returncode == 0, scores.stdout + scores.stderr
    denied = _cli(env, "experiment", "add", "experiments/demo.yaml", "--set", "name=analyst_try")
    assert denied.returncode == 2 and denied.stdout.startswith("error: permission denied for table")
    assert "Traceback" not in denied.stdout + denied.stderr and denied.stdout.count("\n") == 1
    conn = _sql(logins, "t_analyst")
    scan, trained, jobs = (
        Scan.full_table_name,
        TrainedModel.full_table_name,
        jobs_of(TrainedModel).full_table_name,
    )
    for statement in (
        f"DELETE FROM {scan}",
        f"UPDATE {scan} SET n_trials = 0",
        f"INSERT INTO {trained} SELECT * FROM {trained} LIMIT 0",
        f"DELETE FROM {jobs}",
        f"DROP TABLE {trained}",
        f"CREATE TABLE {scan.split('.')[0]}.probe (x int)",
    ):
        assert _refused(conn, statement), statement
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {scan}")
        assert cur.fetchone()[0] >= 2


@pytest.mark.slow
def test_worker_trains_and_scores_as_itself_but_cannot_change_data_or_configs(logins, session_scans):
    from schemas.data import Scan
    from schemas.evaluation import ModelScore
    from schemas.fabrik import Model
    from schemas.training import TrainedModel

    (key,) = add(long_experiment("w_role", session_scans, seeds=(51,), max_iter=2))
    worker = _cli(
        _env(logins, "t_worker"), "worker", "--queue", "all", "--experiment", "w_role", "--idle-exit", "1.5"
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert "FAILED" not in worker.stderr
    assert_one_clean_run(key)
    assert ModelScore & key
    denied = _cli(
        _env(logins, "t_worker"), "experiment", "add", "experiments/demo.yaml", "--set", "name=worker_try"
    )
    assert (
        denied.returncode == 2 and "permission denied" in denied.stdout and "Traceback" not in denied.stderr
    )
    conn = _sql(logins, "t_worker")
    for statement in (
        f"DELETE FROM {Scan.full_table_name}",
        f"UPDATE {Model.full_table_name} SET model_comment = 'changed'",
        f"DELETE FROM {TrainedModel.full_table_name}",
        f"UPDATE {TrainedModel.full_table_name} SET epochs = 0",
        f"DROP TABLE {TrainedModel.full_table_name}",
        f"ALTER TABLE {Scan.full_table_name} ADD COLUMN probe int",
    ):
        assert _refused(conn, statement), statement
    # a pruning sweep's trial reports its epochs to the Optuna storage from inside the worker's job
    from schemas.sweeps import optuna_schema

    optuna = optuna_schema()
    with conn.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{optuna}".trial_intermediate_values')
        cur.execute(f'UPDATE "{optuna}".trials SET state = state WHERE false')
    assert _refused(conn, f'DROP TABLE "{optuna}".trials')
    opened = subprocess.run(
        [
            sys.executable,
            "-c",
            "import schemas; schemas.activate(); from schemas.sweeps import storage; storage()",
        ],
        capture_output=True,
        text=True,
        env=_env(logins, "t_worker"),
    )
    assert opened.returncode == 0, f"a worker cannot open the sweeps' storage: {opened.stderr}"
    assert _refused(_sql(logins, "t_analyst"), f'UPDATE "{optuna}".trials SET state = state WHERE false')


def test_admin_may_change_and_declare(logins):
    from schemas.fabrik import Fabrikant

    conn = _sql(logins, "t_admin")
    schema = Fabrikant.full_table_name.split(".")[0]
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {schema}.admin_probe (x int)")
        cur.execute(f"INSERT INTO {schema}.admin_probe VALUES (1)")
        cur.execute(f"DELETE FROM {schema}.admin_probe")
        cur.execute(f"DROP TABLE {schema}.admin_probe")
        cur.execute(f"UPDATE {Fabrikant.full_table_name} SET email = email WHERE false")


def test_without_table_creation_a_missing_schema_is_one_line(logins):
    env = dict(
        _env(logins, "t_worker"), SENSORIUM_CREATE_TABLES="false", SENSORIUM_DB_PREFIX="never_declared_"
    )
    proc = _cli(env, "jobs")
    assert proc.returncode == 2 and proc.stdout.startswith("error: never_declared_data: "), proc.stdout
    assert "SENSORIUM_CREATE_TABLES=false" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    conn = psycopg2.connect(host=str(logins.db_dir), port=5432, user="postgres", dbname="postgres")
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'never_declared_%%'")
        assert cur.fetchone()[0] == 0, "nothing was created"
    conn.close()
    worker = _cli(dict(_env(logins, "t_worker"), SENSORIUM_CREATE_TABLES="false"), "jobs")
    assert worker.returncode == 0, worker.stdout + worker.stderr
