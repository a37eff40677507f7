"""No password in a server log, an output or a row: logins get a SCRAM-SHA-256 verifier made here.

The test session's PostgreSQL logs every statement of new sessions while this module runs
(``ALTER DATABASE ... SET log_statement = 'all'``, reset after: a setting per database needs no reload of
the configuration files, which the server, running as another user, cannot read again once the folders
above its data are private), while real ``sensorium db user add`` processes create logins, successfully
and not. The server log (pgserver writes it to ``<db_dir>/log``) must show the statements, with the
verifier, and never a password. The stored verifiers really sign in: they are copied into a second,
throwaway embedded server whose ``pg_hba.conf`` asks these logins for a scram-sha-256 password.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.factories import cli_argv

REPO = Path(__file__).parents[2]
# every password the test gives; none may appear anywhere
PASSWORDS = {
    "env": "Env-pass-3f9c1d",
    "file": "File-pass-8a2e77",
    "stdin": "Stdin-pass-51bd0e",
    "denied": "Denied-pass-c40f2a",
    "rolled_back": "Rolledback-pass-9e13",
    "differ": "Differ-pass-77aa01",
}
LOGINS = ("pwlog_env", "pwlog_file", "pwlog_stdin")
OTHER_ROLES = ("pwlog_denied", "pwlog_creator", "pwlog_victim")
VERIFIER = re.compile(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)")


@contextlib.contextmanager
def _superuser(db) -> Iterator:
    """An autocommit connection as the server's superuser, closed after the block."""
    conn = psycopg2.connect(host=str(db.db_dir), port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def _cli(db, *args: str, user: str = "postgres", stdin: str | None = None, **env: str):
    """A real ``sensorium`` process (its standard input: ``stdin``, else an empty pipe)."""
    environ = dict(os.environ, **env)
    if user != "postgres":
        environ |= {"DJ_HOST": str(db.db_dir), "DJ_PORT": "5432", "DJ_USER": user, "DJ_PASS": "unused-here"}
    return subprocess.run(
        cli_argv(*args),
        input=stdin or "",
        capture_output=True,
        text=True,
        env=environ,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def logged(db):
    """Roles applied; every statement of new sessions logged while the module runs; the test's roles
    dropped after."""
    import schemas
    from usecases.roles import apply_roles

    apply_roles(schemas.connect(db), db.db_prefix, schemas.modules())
    log = Path(db.db_dir) / "log"
    start = log.stat().st_size
    with _superuser(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        database = cur.fetchone()[0]
        cur.execute(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
    try:
        yield log, start
    finally:
        with _superuser(db) as conn, conn.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{database}" RESET log_statement')
            for role in (*LOGINS, *OTHER_ROLES):
                cur.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_verifier_is_rfc5802_scram_sha_256(db):
    """The verifier's keys, recomputed from its salt with hashlib (RFC 5802 / 7677)."""
    from usecases.roles import password_verifier

    with _superuser(db) as conn:
        first, second = (password_verifier("correct horse battery", conn) for _ in range(2))
        with pytest.raises(ValueError, match="NUL"):
            password_verifier("nul\x00inside", conn)
    assert first != second, "a fresh random salt each time"
    m = VERIFIER.fullmatch(first)
    assert m, first
    iterations, salt = int(m.group(1)), base64.b64decode(m.group(2))
    assert iterations == 4096 and len(salt) == 16
    salted = hashlib.pbkdf2_hmac("sha256", b"correct horse battery", salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert base64.b64decode(m.group(3)) == stored_key
    assert base64.b64decode(m.group(4)) == server_key


@pytest.mark.slow
def test_no_password_in_logs_outputs_or_rows_and_the_logins_work(db, logged, tmp_path):
    log, start = logged
    outputs = []

    def run(*args: str, **kw) -> subprocess.CompletedProcess:
        done = _cli(db, *args, **kw)
        outputs.append(done.stdout + done.stderr)
        return done

    # successes: the environment, a file, one line on standard input, the same line twice
    made = run("db", "user", "add", "pwlog_env", "--role", "analyst", SENSORIUM_NEW_PASSWORD=PASSWORDS["env"])
    assert made.returncode == 0 and "created" in made.stdout, outputs[-1]
    secret = tmp_path / "password"
    secret.write_text(PASSWORDS["file"] + "\n")
    made = run("db", "user", "add", "pwlog_file", "--role", "worker", "--password-file", str(secret))
    assert made.returncode == 0 and "created" in made.stdout, outputs[-1]
    made = run("db", "user", "add", "pwlog_stdin", "--role", "analyst", stdin=PASSWORDS["stdin"] + "\n")
    assert made.returncode == 0 and "created" in made.stdout, outputs[-1]
    twice = f"{PASSWORDS['stdin']}\n{PASSWORDS['stdin']}\n"
    made = run("db", "user", "add", "pwlog_stdin", "--role", "analyst", stdin=twice)
    assert made.returncode == 0 and "updated" in made.stdout, outputs[-1]

    # failures on standard input: one line each, exit 2, no traceback
    for stdin, fragment in (
        ("", "error: no password: standard input is empty"),
        (
            f"{PASSWORDS['differ']}\n{PASSWORDS['differ']}x\n",
            "error: the two passwords on standard input differ",
        ),
        ("a\nb\nc\n", "error: standard input has 3 lines"),
        ("short\n", "error: the password must have at least 8 characters"),
    ):
        refused = run("db", "user", "add", "pwlog_never", "--role", "analyst", stdin=stdin)
        assert refused.returncode == 2 and refused.stdout.startswith(fragment), outputs[-1]
        assert refused.stdout.count("\n") == 1 and "Traceback" not in refused.stderr, outputs[-1]
    group = run("db", "user", "add", "sensorium_worker", "--role", "admin", stdin=PASSWORDS["env"])
    assert group.returncode == 2 and "group role" in group.stdout, outputs[-1]

    # a failing statement that carries the password: an analyst may not create roles
    denied = run(
        "db",
        "user",
        "add",
        "pwlog_denied",
        "--role",
        "analyst",
        user="pwlog_env",
        SENSORIUM_NEW_PASSWORD=PASSWORDS["denied"],
    )
    assert denied.returncode == 2 and denied.stdout.startswith("error: permission denied to create role")
    assert denied.stdout.count("\n") == 1 and "Traceback" not in denied.stderr, outputs[-1]
    # ... and one that fails after the password went: a login that may create roles but not grant ours
    with _superuser(db) as conn, conn.cursor() as cur:
        cur.execute('CREATE ROLE "pwlog_creator" LOGIN CREATEROLE IN ROLE sensorium_analyst')
    rolled_back = run(
        "db",
        "user",
        "add",
        "pwlog_victim",
        "--role",
        "analyst",
        user="pwlog_creator",
        SENSORIUM_NEW_PASSWORD=PASSWORDS["rolled_back"],
    )
    assert rolled_back.returncode == 2 and "permission denied" in rolled_back.stdout, outputs[-1]
    assert "Traceback" not in rolled_back.stderr

    with _superuser(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'pwlog%'")
        stored = dict(cur.fetchall())
        cur.execute("SELECT string_agg(a::text, E'\\n') FROM pg_authid a")
        catalog = cur.fetchone()[0]
        cur.execute("SELECT string_agg(r::text, E'\\n') FROM pg_roles r")
        catalog += cur.fetchone()[0]
        rows = _pipeline_rows(cur, db.db_prefix)
    assert "pwlog_victim" not in stored, "the failed creation was rolled back"
    for name in LOGINS:
        assert VERIFIER.fullmatch(stored[name]), (name, stored[name][:20])

    time.sleep(0.5)  # the server writes its log asynchronously to the statements' replies
    text = log.read_bytes()[start:].decode(errors="replace")
    assert 'CREATE ROLE "pwlog_env" LOGIN PASSWORD \'SCRAM-SHA-256$' in text, "the statements are logged"
    assert "permission denied to create role" in text and 'CREATE ROLE "pwlog_victim"' in text
    everything = {"server log": text, "outputs": "\n".join(outputs), "catalog": catalog, "rows": rows}
    for where, content in everything.items():
        leaked = [k for k, p in PASSWORDS.items() if p in content]
        assert not leaked, f"password(s) {leaked} in the {where}"

    # the stored verifiers really sign in, with the passwords given, and only with them
    with _password_server(tmp_path / "scram" / "db", {n: stored[n] for n in LOGINS}) as host:
        for name, password in (
            ("pwlog_env", PASSWORDS["env"]),
            ("pwlog_file", PASSWORDS["file"]),
            ("pwlog_stdin", PASSWORDS["stdin"]),
        ):
            conn = psycopg2.connect(host=host, port=5432, user=name, password=password, dbname="postgres")
            with conn.cursor() as cur:
                cur.execute("SELECT current_user")
                assert cur.fetchone()[0] == name
            conn.close()
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(
                host=host, port=5432, user="pwlog_env", password="wrong-password", dbname="postgres"
            )


def _pipeline_rows(cur, prefix: str) -> str:
    """Every row of every table of the prefix's schemas (job tables and the Optuna storage included)."""
    cur.execute(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname LIKE %s",
        (prefix.replace("_", r"\_") + "%",),
    )
    parts = []
    for schema, table in cur.fetchall():
        cur.execute(f'SELECT string_agg(t::text, E\'\\n\') FROM "{schema}"."{table}" t')
        parts.append(cur.fetchone()[0] or "")
    assert parts, "the search looks somewhere"
    return "\n".join(parts)


@contextlib.contextmanager
def _password_server(db_dir: Path, verifiers: dict[str, str]) -> Iterator[str]:
    """A throwaway embedded server holding ``verifiers`` (login -> stored verifier, copied as they are),
    restarted with ``scram-sha-256`` for these logins in front of its trust rules; yields its host."""
    from pipeline.database import ensure_embedded_server, remove_embedded_server, stop_embedded_server

    host = ensure_embedded_server(db_dir)
    try:
        conn = psycopg2.connect(host=host, port=5432, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for name, verifier in verifiers.items():
                cur.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', (verifier,))
        conn.close()
        stop_embedded_server(db_dir)  # pg_hba.conf is read at start (a reload could not read it here)
        hba = db_dir / "pg_hba.conf"
        text = hba.read_text()
        with open(hba, "w") as f:  # in place: the file keeps its owner (the server's user)
            f.write(f"local all {','.join(verifiers)} scram-sha-256\n" + text)
        host = ensure_embedded_server(db_dir)
        yield host
    finally:
        remove_embedded_server(db_dir)
