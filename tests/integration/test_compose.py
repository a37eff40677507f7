"""The lab deployment's wiring, run as real processes on one machine (these machines run no containers).

A copy of the deployment files (``docker-compose.yml``, ``.env.example`` as ``.env``, the
``Dockerfile``'s ENV / ENTRYPOINT, ``deploy/make-secrets.sh``) is brought up service by service with
``compose_emulation``: ``db`` as a PostgreSQL 16 server with scram-sha-256 password logins over TCP on
127.0.0.1, ``init`` as the database owner, ``worker-gpu-0`` and ``worker-cpu`` logged in as the worker
role, and the ``notebook`` service's login querying the results. Each process gets the environment,
command and secret files the compose file gives its service. Overrides, each for a reason of this
machine: ``SENSORIUM_DEVICE=cpu`` (no GPU here), ``--poll 0.5`` and short heartbeats (a test must not wait
30 s between polls), one torch thread per process (2 cores).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest
import yaml
from compose_emulation import Compose, PostgresServer, self_signed_certificate, tls_capable_postgres

from tests.factories import CLI_MODULE, cli_argv, long_experiment

REPO = Path(__file__).parents[2]
FILES = ("docker-compose.yml", "Dockerfile", "deploy/make-secrets.sh")
FAST = {"SENSORIUM_HEARTBEAT_S": "0.5", "SENSORIUM_WORKER_TIMEOUT_S": "3"}
HERE = {"SENSORIUM_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _project(tmp_path_factory, synth_dir) -> Path:
    """The project folder as a lab sets it up: secrets, .env, recordings, experiments."""
    project = tmp_path_factory.mktemp("project")
    for name in FILES:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, project / name)
    made = subprocess.run(["sh", "deploy/make-secrets.sh"], cwd=project, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    env_text = (REPO / ".env.example").read_text()
    for name, value in FAST.items():  # the only edits of .env: short worker timings
        env_text = env_text.replace(f"\n{name}=", f"\n{name}={value}\n# was: ")
    (project / ".env").write_text(env_text)
    recordings, experiments = project / "lab" / "recordings", project / "lab" / "experiments"
    recordings.mkdir(parents=True)
    experiments.mkdir(parents=True)
    shutil.copy2(sorted(synth_dir.glob("*.zip"))[0], recordings)
    tiny = long_experiment("lab_tiny", "all", seeds=(7,), max_iter=2)
    diverging = long_experiment("lab_diverging", "all", seeds=(8,), max_iter=2, lr_init=1e12)
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    (experiments / "diverging.yaml").write_text(yaml.safe_dump(diverging))
    return project


@contextlib.contextmanager
def _db(compose: Compose, tls: tuple[Path, Path] | None = None, bin_dir: Path | None = None):
    server = PostgresServer(compose, compose.service("db"), tls, bin_dir)
    server.start()
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, synth_dir):
    """The deployment folder and its running ``db``."""
    compose = Compose(_project(tmp_path_factory, synth_dir), tmp_path_factory.mktemp("root"), _free_port())
    with _db(compose):
        yield compose


def _run(compose: Compose, name: str, *extra: str, **overrides: str) -> subprocess.CompletedProcess:
    service = compose.service(name)
    return subprocess.run(
        compose.argv(service) + list(extra),
        env=compose.process_env(service, **overrides),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _login(compose: Compose, name: str) -> psycopg2.extensions.connection:
    """A psql-like session with a service's login and password file, over TCP."""
    env = compose.service(name).env
    conn = psycopg2.connect(
        host="127.0.0.1",
        port=compose.db_port,
        user=env["DJ_USER"],
        password=Path(env["DJ_PASS_FILE"]).read_text().strip(),
        dbname="postgres",
    )
    conn.autocommit = True
    return conn


def _secrets(compose: Compose) -> list[str]:
    """Every secret the deployment holds (passwords, the store's keys)."""
    values = [p.read_text().strip() for p in (compose.project / "secrets").iterdir() if p.suffix != ".json"]
    assert len(values) >= 5 and all(len(v) >= 8 for v in values if v != "sensorium")
    return [v for v in values if v != "sensorium"]  # the MinIO user name is no secret


def _rows_as_text(conn, prefix: str) -> str:
    """Every row of every table of the deployment's schemas, as text."""
    with conn.cursor() as cur:
        cur.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname LIKE %s", (prefix + "%",))
        tables = cur.fetchall()
        assert len(tables) > 20
        text = []
        for schema, table in tables:
            cur.execute(f'SELECT t::text FROM "{schema}"."{table}" AS t')
            text += [r[0] for r in cur.fetchall()]
    return "\n".join(text)


class Worker:
    """A compose worker service's process, its output in a file (SIGTERM stops it, as ``compose stop``)."""

    def __init__(self, compose: Compose, name: str, log: Path):
        service = compose.service(name)
        self.grace_s = float(service.config["stop_grace_period"].rstrip("s"))
        self.log = log
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(
                compose.argv(service) + ["--poll", "0.5"],
                env=compose.process_env(service, **HERE),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=self.grace_s)


def _wait_for_score(conn, prefix: str, experiment: str, workers: list[Worker], timeout: float = 300) -> None:
    query = (
        f'SELECT count(*) FROM "{prefix}evaluation"."__model_score" s JOIN "{prefix}fabrik"."experiment" e '
        "USING (model_hash, trainer_hash) WHERE e.experiment_name = %s"
    )
    deadline = time.monotonic() + timeout
    with conn.cursor() as cur:
        while True:
            cur.execute(query, (experiment,))
            if cur.fetchone()[0] > 0:
                return
            dead = [w.log.read_text() for w in workers if w.proc.poll() is not None]
            assert not dead and time.monotonic() < deadline, "no score yet:\n" + "\n".join(
                w.log.read_text() for w in workers
            )
            time.sleep(1)


@pytest.mark.slow
def test_compose_roles_train_a_tiny_experiment_that_the_analyst_sees_and_no_secret_leaks(
    deployment, tmp_path
):
    compose = deployment
    prefix = compose.variables["SENSORIUM_DB_PREFIX"]
    outputs: list[str] = []

    first = _run(compose, "init")
    outputs.append(first.stdout + first.stderr)
    assert first.returncode == 0, outputs[-1]
    for line in (
        "login     lab_worker (sensorium_worker): created",
        ": ingested from",
        "experiment lab_tiny: added",
    ):
        assert line in first.stdout, first.stdout
    again = _run(compose, "init")  # every deploy runs it: nothing changes the second time
    outputs.append(again.stdout + again.stderr)
    assert again.returncode == 0 and "lab_worker (sensorium_worker): updated" in again.stdout, outputs[-1]
    assert (
        "experiment lab_tiny: already stored" in again.stdout
        and ": already stored (no change) from" in again.stdout
    )

    workers = [Worker(compose, name, tmp_path / f"{name}.log") for name in ("worker-gpu-0", "worker-cpu")]
    try:
        for w in workers:  # neither the command line nor the environment of a worker holds a password
            seen = (
                Path(f"/proc/{w.proc.pid}/cmdline").read_bytes()
                + Path(f"/proc/{w.proc.pid}/environ").read_bytes()
            )
            assert not [s for s in _secrets(compose) if s.encode() in seen]
        analyst = _login(compose, "notebook")
        _wait_for_score(analyst, prefix, "lab_tiny", workers)
        for w in workers:
            assert w.stop() == 0, w.log.read_text()  # SIGTERM: exit 0 within the stop_grace_period
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
    logs = [w.log.read_text() for w in workers]
    outputs += logs
    assert "FAILED TrainedModel" in logs[0] and "TrainingDivergedError" in logs[0], logs[0]

    # the analyst, as the notebook service logs in: reads scores and job errors, changes nothing
    notebook = compose.service("notebook")
    as_analyst = compose.process_env(notebook, **HERE)
    cli = [compose.argv(compose.service("init"))[0], "-m", CLI_MODULE]
    shown = subprocess.run(
        [*cli, "scores", "--experiment", "lab_tiny", "--json"], env=as_analyst, capture_output=True, text=True
    )
    outputs.append(shown.stdout + shown.stderr)
    assert shown.returncode == 0, outputs[-1]
    rows = json.loads(shown.stdout)
    assert rows and {r["model"] for r in rows} == {"lab_tiny"}, rows
    errors = subprocess.run(
        [*cli, "jobs", "--errors", "--json"], env=as_analyst, capture_output=True, text=True
    )
    outputs.append(errors.stdout + errors.stderr)
    assert errors.returncode == 0 and "TrainingDivergedError" in errors.stdout, outputs[-1]
    refused = subprocess.run(
        [
            *cli,
            "experiment",
            "add",
            str(compose.project / "lab/experiments/tiny.yaml"),
            "--set",
            "name=other",
        ],
        env=as_analyst,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and refused.stdout.startswith("error: permission denied"), refused.stdout
    assert "Traceback" not in refused.stderr
    for name in ("notebook", "worker-cpu", "init"):
        status = subprocess.run(
            [*cli, "db", "status"],
            env=compose.process_env(compose.service(name), **HERE),
            capture_output=True,
            text=True,
        )
        outputs.append(status.stdout + status.stderr)
        assert status.returncode == 0 and "127.0.0.1" in status.stdout, outputs[-1]

    # a wrong password: one line naming the failure, and not the password tried
    wrong = as_analyst | {"DJ_PASS_FILE": "", "DJ_PASS": "not-the-password-4711"}
    denied = subprocess.run([*cli, "db", "status"], env=wrong, capture_output=True, text=True)
    assert denied.returncode == 2 and "password authentication failed" in denied.stdout, denied.stdout
    assert "not-the-password-4711" not in denied.stdout + denied.stderr and "Traceback" not in denied.stderr

    stored = _rows_as_text(analyst, prefix)
    assert "TrainingDivergedError" in stored and "lab_tiny" in stored  # the search below looks somewhere
    everything = "\n".join(outputs) + stored
    assert not [s for s in _secrets(compose) if s in everything], "a secret is in a log, a row or an output"


def test_embedded_server_listens_on_its_unix_socket_only(db):
    import schemas

    conn = schemas.connect(db)
    try:
        assert conn.query("SHOW listen_addresses").fetchone()[0] == ""
    finally:
        conn.close()


_TLS_PROBE = (
    "import schemas; c = schemas.connect(); "
    "print('tls', c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()').fetchone()[0])"
)


@pytest.mark.slow
def test_workers_on_other_hosts_connect_over_tls_and_check_the_server_certificate(
    tmp_path_factory, synth_dir
):
    """Recipe (a) of the README: DJ_TLS=true encrypts; PGSSLROOTCERT makes libpq check the server's CA.

    pgserver's PostgreSQL is built without TLS, so this server is Debian's (``.ci/run`` installs it).
    """
    bin_dir = tls_capable_postgres()
    if bin_dir is None:
        pytest.skip("no TLS-capable PostgreSQL here: apt-get install postgresql (.ci/run does)")
    certs = tmp_path_factory.mktemp("certs")
    server_cert = self_signed_certificate(certs, "localhost")
    other_ca, _ = self_signed_certificate(certs, "other")
    compose = Compose(_project(tmp_path_factory, synth_dir), tmp_path_factory.mktemp("root"), _free_port())
    worker = compose.service("worker-cpu")
    probe = [compose.argv(worker)[0], "-c", _TLS_PROBE]
    with _db(compose, tls=server_cert, bin_dir=bin_dir):
        made = _run(compose, "init")  # the worker login
        assert made.returncode == 0, made.stdout + made.stderr
        for env in (
            {"DJ_TLS": "true"},
            {"DJ_TLS": "true", "PGSSLROOTCERT": str(server_cert[0])},  # verified against its CA
        ):
            run = subprocess.run(
                probe, env=compose.process_env(worker, **HERE, **env), capture_output=True, text=True
            )
            assert run.returncode == 0 and run.stdout.strip() == "tls True", run.stdout + run.stderr
        wrong_ca = compose.process_env(worker, **HERE, DJ_TLS="true", PGSSLROOTCERT=str(other_ca))
        refused = _cli(wrong_ca, "db", "status")
        assert refused.returncode == 2 and refused.stdout.startswith("error: cannot reach the database"), (
            refused
        )
        assert "certificate verify failed" in refused.stdout and "Traceback" not in refused.stderr

    compose_plain = Compose(compose.project, tmp_path_factory.mktemp("root"), _free_port())
    with _db(compose_plain):  # the same login, the server without TLS: DJ_TLS=true refuses to go on
        plain = _cli(
            compose_plain.process_env(compose_plain.service("worker-cpu"), **HERE, DJ_TLS="true"),
            "db",
            "status",
        )
        assert plain.returncode == 2 and "SSL" in plain.stdout and plain.stdout.count("\n") == 1, plain.stdout


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), env=env, capture_output=True, text=True)
