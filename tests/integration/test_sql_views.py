"""The plain-SQL views of ``<prefix>views`` (docs/sql.md), read as the analyst login over TCP.

One small deployment for the module, brought up with ``compose_emulation`` (no Docker here): ``db`` is a
PostgreSQL 16 server with scram-sha-256 password logins on 127.0.0.1; its ``init`` service (``sensorium db
init`` as the database owner) declares the tables, applies the roles and creates the views; one
``sensorium worker`` process of the ``worker-cpu`` service (its login, ``--queue all``) trains a tiny
experiment with an ensemble of one member, scores it, and fails on a diverging one. The analyst logs in as
the ``notebook`` service does and reads every view: its rows must equal what ``sensorium scores --json``
reports, and it may change nothing.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import yaml
from compose_emulation import Compose, PostgresServer
from psycopg2 import errors as pg

from pipeline.data.synth import truth_path
from schemas.views import VIEW_DOCS, VIEWS_VERSION
from tests.factories import cli_argv, long_experiment

pytestmark = pytest.mark.slow  # a server, `db init`, a worker run and a few commands: about a minute

REPO = Path(__file__).parents[2]
FILES = ("docker-compose.yml", "Dockerfile", "deploy/make-secrets.sh")
HERE = {"SENSORIUM_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}  # no GPU, two cores
TINY, DIVERGING, ENSEMBLE = "sql_tiny", "sql_diverging", "sql_ens"


@dataclass
class World:
    """The deployment, the scan it holds and what ``sensorium scores --json`` says about it."""

    compose: Compose
    prefix: str
    data_key: str
    scores: list[dict]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _project(tmp_path_factory, synth_dir) -> Path:
    """The deployment folder: its files, fresh secrets, ``.env``, one recording, two experiment files."""
    project = tmp_path_factory.mktemp("sql_project")
    for name in FILES:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, project / name)
    made = subprocess.run(["sh", "deploy/make-secrets.sh"], cwd=project, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    shutil.copy2(REPO / ".env.example", project / ".env")
    recordings, experiments = project / "lab" / "recordings", project / "lab" / "experiments"
    recordings.mkdir(parents=True)
    experiments.mkdir(parents=True)
    recording = sorted(synth_dir.glob("*.zip"))[0]
    for path in (recording, truth_path(recording)):  # with its sidecar: the planted oracle
        shutil.copy2(path, recordings)
    tiny = {**long_experiment(TINY, "all", seeds=(1,), max_iter=2), "ensemble": {"name": ENSEMBLE}}
    diverging = long_experiment(DIVERGING, "all", seeds=(8,), max_iter=2, lr_init=1e12)
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    (experiments / "diverging.yaml").write_text(yaml.safe_dump(diverging))
    return project


def _run(compose: Compose, service: str, *args: str, **overrides: str) -> subprocess.CompletedProcess:
    """``sensorium ARGS`` with the environment (login, secrets, volumes) of ``service``."""
    return subprocess.run(
        cli_argv(*args),
        env=compose.process_env(compose.service(service), **HERE, **overrides),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory, synth_dir):
    compose = Compose(
        _project(tmp_path_factory, synth_dir), tmp_path_factory.mktemp("sql_root"), _free_port()
    )
    server = PostgresServer(compose, compose.service("db"))
    server.start()
    try:
        server.wait_healthy()
        init = _run(compose, "init", *compose.service("init").command)
        assert init.returncode == 0, init.stdout + init.stderr
        assert f"views     sensorium_views: {len(VIEW_DOCS)} views, version {VIEWS_VERSION}" in init.stdout
        worker = _run(compose, "worker-cpu", "worker", "--queue", "all", "--poll", "0.5", "--idle-exit", "2")
        assert worker.returncode == 0, worker.stdout + worker.stderr
        shown = _run(compose, "notebook", "scores", "--json")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        scores = json.loads(shown.stdout)
        assert {r["model"] for r in scores} == {TINY, f"{ENSEMBLE} [ens]"}, scores
        yield World(compose, compose.variables["SENSORIUM_DB_PREFIX"], scores[0]["data_key"], scores)
    finally:
        server.stop()


def _login(compose: Compose, service: str) -> psycopg2.extensions.connection:
    """A psql-like session over TCP with the login and password file of ``service``."""
    env = compose.service(service).env
    conn = psycopg2.connect(
        host="127.0.0.1",
        port=compose.db_port,
        user=env["DJ_USER"],
        password=Path(env["DJ_PASS_FILE"]).read_text().strip(),
        dbname="postgres",
    )
    conn.autocommit = True
    return conn


def _rows(conn, view: str, where: str = "", args: tuple = ()) -> list[dict]:
    """The rows of a view of ``sensorium_views`` as dicts; its columns must be the documented ones."""
    with conn.cursor() as cur:
        cur.execute(f'SELECT * FROM sensorium_views."{view}" {where}', args)
        names = [d.name for d in cur.description]
        assert names == list(VIEW_DOCS[view].columns), f"{view}: columns differ from VIEW_DOCS"
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@pytest.fixture(scope="module")
def analyst(world):
    conn = _login(world.compose, "notebook")
    yield conn
    conn.close()


def test_version_and_oracles(world, analyst):
    (version,) = _rows(analyst, "views_version")
    assert version["version"] == VIEWS_VERSION and version["prefix"] == world.prefix
    assert version["views"] == list(VIEW_DOCS) and version["code_version"]
    oracles = {(r["data_key"], r["tier"]): r for r in _rows(analyst, "oracles")}
    for score in world.scores:
        row = oracles[(score["data_key"], score["tier"])]
        assert row["n_trials"] == score["n_trials"] and not row["responses_withheld"]
        assert row["oracle_single_trial_correlation"] == score["oracle_single_trial_correlation"]
        assert row["loo_oracle_single_trial_correlation"] == score["loo_oracle_single_trial_correlation"]
        assert row["loo_oracle_n_images"] == score["loo_oracle_n_images"]
    assert oracles[(world.data_key, "test")]["loo_oracle_n_images"] > 0, "the test tier repeats its images"


@pytest.mark.parametrize("view, label", [("model_scores", TINY), ("ensemble_scores", f"{ENSEMBLE} [ens]")])
def test_scores_by_name_equal_the_command_line(world, analyst, view, label):
    name = "experiment_name" if view == "model_scores" else "ensemble_name"
    rows = _rows(analyst, view, f"WHERE {name} = %s", (label.removesuffix(" [ens]"),))
    expected = {(s["data_key"], s["tier"]): s for s in world.scores if s["model"] == label}
    assert {(r["data_key"], r["tier"]) for r in rows} == set(expected) and len(rows) == len(expected)
    for row in rows:
        score = expected[(row["data_key"], row["tier"])]
        for column in (
            "n_trials",
            "single_trial_correlation",
            "correlation_to_average",
            "feve",
            "contaminated",
            "oracle_single_trial_correlation",
            "oracle_feve",
            "loo_oracle_single_trial_correlation",
            "loo_oracle_n_images",
        ):
            assert row[column] == score[column], (view, column, row, score)
        oracle = score["oracle_single_trial_correlation"]
        assert row["fraction_of_oracle"] == pytest.approx(row["single_trial_correlation"] / oracle)
        assert row["contaminated"] == (row["tier"] == "train")
        if view == "model_scores":
            assert score["member"] == f"seed {row['seed']}" and row["seed"] == 1
        else:
            assert score["member"] == f"{row['n_members']} members"
    (member,) = _rows(analyst, "ensemble_members")
    assert (member["ensemble_name"], member["experiment_name"], member["seed"]) == (ENSEMBLE, TINY, 1)


def test_learning_curve_and_provenance(world, analyst):
    curve = _rows(analyst, "learning_curves", "WHERE experiment_name = %s ORDER BY epoch", (TINY,))
    assert [r["epoch"] for r in curve] == list(range(1, curve[0]["epochs_run"] + 1)) == [1, 2]
    assert curve[-1]["best_val_corr_so_far"] == max(r["val_corr"] for r in curve) == curve[0]["best_val_corr"]
    assert math.isclose(curve[-1]["elapsed_s"], sum(r["seconds"] for r in curve))
    models = {r["experiment_name"]: r for r in _rows(analyst, "models")}
    assert set(models) == {TINY, DIVERGING}
    trained, failed = models[TINY], models[DIVERGING]
    assert trained["state"] == "trained" and trained["epochs"] == 2 and trained["job_status"] is None
    assert trained["model_hash"] == curve[0]["model_hash"] and trained["data_keys"] == [world.data_key]
    assert trained["trainer_config"]["max_iter"] == 2 and trained["model_config"]["hidden_channels"] == 4
    assert trained["code_version"] and trained["device"].startswith("cpu") and trained["n_parameters"] > 0
    assert trained["model_fabrikant"] == "init" and trained["prediction_device"] and trained["host"]
    assert failed["state"] == "error" and failed["seed"] == 8 and failed["code_version"] is None
    assert "TrainingDivergedError" in failed["job_error"]


def test_jobs_and_workers(world, analyst):
    jobs = {r["table_name"]: r for r in _rows(analyst, "jobs", "ORDER BY position")}
    assert list(jobs)[0] == "TrialOrder" and {"TrainedModel", "ModelScore", "EnsembleScore"} <= set(jobs)
    assert (jobs["TrainedModel"]["error"], jobs["TrainedModel"]["computed"]) == (1, 1)
    assert jobs["ModelScore"]["computed"] == sum(s["model"] == TINY for s in world.scores)
    assert sum(r["pending"] + r["reserved"] for r in jobs.values()) == 0
    (job,) = _rows(analyst, "job_queue")
    assert (job["table_name"], job["status"], job["key"]["seed"]) == ("TrainedModel", "error", 8)
    assert "TrainingDivergedError" in job["error_message"] and job["host"] and job["pid"] > 0
    (worker,) = _rows(analyst, "workers")
    assert (worker["status"], worker["queue"], worker["device"]) == ("stopped", "all", "cpu")
    assert worker["jobs_failed"] == 1 and worker["jobs_done"] >= 5 and worker["pid"] == job["pid"]
    timing = world.compose.variables
    assert worker["timeout_s"] == float(timing["SENSORIUM_WORKER_TIMEOUT_S"])
    assert worker["heartbeat_s"] == float(timing["SENSORIUM_HEARTBEAT_S"])
    assert worker["overdue"] is False and worker["seconds_since_seen"] >= 0


def test_analyst_changes_nothing_and_views_survive_recreation(world, analyst):
    with analyst.cursor() as cur:
        for view in VIEW_DOCS:
            for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                cur.execute("SELECT has_table_privilege(%s, %s)", (f'sensorium_views."{view}"', privilege))
                assert cur.fetchone()[0] is False, (view, privilege)
            with pytest.raises(psycopg2.Error):  # refused: no privilege (or not an updatable view)
                cur.execute(f'DELETE FROM sensorium_views."{view}"')
        for statement in (
            "CREATE VIEW sensorium_views.probe AS SELECT 1",
            'DROP VIEW sensorium_views."models"',
            "CREATE OR REPLACE VIEW sensorium_views.views_version AS SELECT 2 AS version",
        ):
            with pytest.raises(pg.InsufficientPrivilege):
                cur.execute(statement)

    again = _run(world.compose, "init", "db", "views")  # drop and recreate, as the owner
    assert again.returncode == 0 and f"sensorium_views: {len(VIEW_DOCS)} views" in again.stdout, again.stdout
    assert len(_rows(analyst, "model_scores")) == sum(s["model"] == TINY for s in world.scores)
    worker = _login(world.compose, "worker-cpu")
    try:
        assert _rows(worker, "workers")[0]["jobs_failed"] == 1, "workers read the views too"
    finally:
        worker.close()
    status = _run(world.compose, "notebook", "db", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"views     sensorium_views: version {VIEWS_VERSION}" in status.stdout
    assert status.stdout.startswith("home      /"), status.stdout
