"""``sensorium worker`` as real processes: SIGTERM / SIGKILL, a dropped connection, a restarted server.

Every worker is a subprocess of ``python -m cli worker`` against the test database, with one
torch thread and the short heartbeat timings of the test session (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.factories import add, assert_one_clean_run, checkpoint_epoch, cli_argv, job_status, long_experiment


@pytest.fixture(scope="module")
def scans(db, session_scans) -> list[str]:
    return session_scans


def run_record(key: dict) -> dict:
    """What a finished run stored: best weights, learning curve, scores."""
    from schemas.evaluation import ModelScore
    from schemas.training import TrainedModel

    return {
        "row": (TrainedModel & key).fetch1(),
        "weights": (TrainedModel.Checkpoint & key).fetch1("state_dict"),
        "curve": [
            (e["epoch"], e["lr"], e["train_loss"], e["val_corr"])
            for e in (TrainedModel.Epoch & key).to_dicts(order_by="epoch")
        ],
        "scores": sorted(
            (s["data_key"], s["tier"], s["single_trial_correlation"], s["feve"])
            for s in (ModelScore & key).to_dicts()
        ),
    }


@pytest.mark.slow
def test_sigterm_checkpoints_requeues_and_another_process_finishes_bit_identically(
    scans, spawn_worker, wait_until
):
    from jobs.runner import populate
    from schemas.binding import bound_settings
    from schemas.training import TrainedModel

    spec = long_experiment("w_sigterm", scans, seeds=(31,), max_iter=16)
    (key,) = add(spec)
    only = ["--experiment", "w_sigterm", "--idle-exit", "1.5"]

    # reference: the same key trained in one go by a worker process, then scored
    assert spawn_worker(*only).wait(timeout=180) == 0
    populate("cpu", key, settings=bound_settings())
    reference = run_record(key)
    assert reference["row"]["resumed_from_epoch"] == 0
    (TrainedModel & key).delete()  # cascades to predictions and scores

    first = spawn_worker("--experiment", "w_sigterm")
    wait_until(lambda: checkpoint_epoch(key) >= 3, 120, "epoch 3 of the interrupted run")
    signalled = time.monotonic()
    first.send(signal.SIGTERM)
    assert first.wait(timeout=30) == 0, first.text()
    stop_seconds = time.monotonic() - signalled
    assert stop_seconds < 10, f"SIGTERM to exit took {stop_seconds:.1f} s"
    assert "SIGTERM received" in first.text() and "pending again" in first.text()
    assert job_status(key) == "pending", "an interrupted job goes back to pending, not to error"
    stopped_at = checkpoint_epoch(key)
    assert 3 <= stopped_at < 16 and not TrainedModel & key

    assert spawn_worker(*only).wait(timeout=180) == 0
    populate("cpu", key, settings=bound_settings())
    resumed = run_record(key)
    assert resumed["row"]["resumed_from_epoch"] == stopped_at
    assert resumed["curve"] == reference["curve"]
    assert resumed["scores"] == reference["scores"]
    assert resumed["row"]["best_val_corr"] == reference["row"]["best_val_corr"]
    for name, value in reference["weights"].items():
        assert np.array_equal(value, resumed["weights"][name]), name
    assert_one_clean_run(key)


@pytest.mark.slow
def test_sigkilled_worker_is_resumed_by_another_after_the_heartbeat_timeout(scans, spawn_worker, wait_until):
    from jobs.admin import workers
    from schemas.training import TrainedModel

    (key,) = add(long_experiment("w_sigkill", scans, seeds=(32,), max_iter=16))
    first = spawn_worker("--experiment", "w_sigkill")
    wait_until(lambda: checkpoint_epoch(key) >= 2, 120, "epoch 2")
    first.send(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = checkpoint_epoch(key)
    assert job_status(key) == "reserved", "nobody has noticed yet"

    second = spawn_worker("--experiment", "w_sigkill", "--idle-exit", "2")
    assert second.wait(timeout=180) == 0, second.text()
    assert "its worker stopped sending heartbeats" in second.text()
    row = assert_one_clean_run(key)
    assert row["resumed_from_epoch"] == killed_at >= 2
    dead = [w for w in workers(include_stopped=True) if w["pid"] == first.pid]
    assert dead and dead[0]["status"] == "dead"
    assert TrainedModel & key


@pytest.mark.slow
def test_dropped_connection_is_reconnected_and_no_other_worker_takes_the_job(
    scans, spawn_worker, wait_until, db
):
    from jobs.queues import jobs_of
    from schemas.training import TrainedModel

    (key,) = add(long_experiment("w_dropped", scans, seeds=(33,), max_iter=40))
    trainer = spawn_worker("--experiment", "w_dropped", "--idle-exit", "1")
    wait_until(lambda: checkpoint_epoch(key) >= 2, 120, "epoch 2")
    other = spawn_worker("--experiment", "w_dropped", "--idle-exit", "8")
    pid = (jobs_of(TrainedModel) & key).fetch1("connection_id")
    conn = TrainedModel.connection
    assert conn.query("SELECT pg_terminate_backend(%s)", args=(pid,)).fetchone()[0]
    assert trainer.wait(timeout=180) == 0, trainer.text()
    assert other.wait(timeout=60) == 0
    assert "database connection lost" in trainer.text() and "done   TrainedModel" in trainer.text()
    assert "TrainedModel" not in other.text(), "the other worker must not touch a live worker's job"
    row = assert_one_clean_run(key)
    assert row["resumed_from_epoch"] == 0, "trained in one go by the first worker"


@pytest.mark.slow
def test_database_restart_during_training_is_survived(scans, spawn_worker, wait_until, db):
    from pipeline.database import ensure_embedded_server, stop_embedded_server

    (key,) = add(long_experiment("w_restart", scans, seeds=(34,), max_iter=14))
    trainer = spawn_worker("--experiment", "w_restart", "--idle-exit", "1")
    wait_until(lambda: checkpoint_epoch(key) >= 10, 120, "epoch 10")
    assert stop_embedded_server(db.db_dir)
    time.sleep(4.0)  # training ends meanwhile: the insert has to wait for the server
    ensure_embedded_server(db.db_dir)
    assert trainer.wait(timeout=180) == 0, trainer.text()
    text = trainer.text()
    assert "database connection lost" in text and "reconnecting in" in text
    assert "done   TrainedModel" in text
    assert_one_clean_run(key)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, env=dict(os.environ))


@pytest.mark.slow
def test_failed_job_is_recorded_and_the_worker_goes_on_then_jobs_retry_and_priority(scans, spawn_worker):
    from jobs.queues import REGRESSORS, jobs_of
    from schemas.training import TrainedModel

    for table in REGRESSORS:  # present already when earlier tests ran; --priority below skips them
        table.populate(display_progress=False)
    (bad,) = add(long_experiment("w_diverge", scans, seeds=(35,), max_iter=3, lr_init=1e12))
    (good,) = add(long_experiment("w_after", scans, seeds=(36,), max_iter=2))
    worker = spawn_worker("--experiment", "w_diverge", "--experiment", "w_after", "--idle-exit", "1.5")
    assert worker.wait(timeout=180) == 0, worker.text()
    assert "FAILED TrainedModel" in worker.text() and "TrainingDivergedError" in worker.text()
    assert job_status(bad) == "error" and not TrainedModel & bad
    assert_one_clean_run(good)

    listing = _cli("jobs", "--errors", "--json")
    assert listing.returncode == 0, listing.stderr
    errors = [e for e in json.loads(listing.stdout) if e["key"]["seed"] == 35]
    assert len(errors) == 1 and errors[0]["message"].startswith("TrainingDivergedError")
    assert "\n" not in errors[0]["message"] and errors[0]["host"]
    summary = {r["table"]: r for r in json.loads(_cli("jobs", "--json").stdout)["tables"]}
    assert summary["TrainedModel"]["error"] >= 1 and summary["TrainedModel"]["success"] >= 1
    text = _cli("jobs").stdout
    assert "TrainedModel" in text and "running worker(s)" in text

    retried = _cli("jobs", "retry", "--table", "TrainedModel")
    assert retried.returncode == 0 and "back to pending" in retried.stdout
    assert job_status(bad) == "pending"
    assert _cli("jobs", "retry", "--table", "Nope").returncode == 2

    # two more experiments waiting; the one moved to priority 1 is the only one a --priority 1 worker takes
    (late,) = add(long_experiment("w_late", scans, seeds=(37,), max_iter=2))
    (urgent,) = add(long_experiment("w_urgent", scans, seeds=(38,), max_iter=2))
    moved = _cli("jobs", "priority", "w_urgent", "1")
    assert moved.returncode == 0 and "1 pending training job(s)" in moved.stdout, moved.stdout
    assert (jobs_of(TrainedModel) & urgent).fetch1("priority") == 1
    assert _cli("jobs", "priority", "no_such_experiment", "1").returncode == 2
    experiments = [a for n in ("w_late", "w_urgent", "w_diverge") for a in ("--experiment", n)]
    picky = spawn_worker(*experiments, "--priority", "1", "--idle-exit", "1.5")
    assert picky.wait(timeout=180) == 0, picky.text()
    assert_one_clean_run(urgent)
    assert not TrainedModel & late and job_status(late) == "pending"
    assert job_status(bad) == "pending", "priority 5 (the default) is not taken by a --priority 1 worker"
    (jobs_of(TrainedModel) & bad).delete_quick()  # leave no runnable diverging job to later tests


def test_bad_worker_arguments_and_unknown_experiment_are_one_line_errors():
    for args, fragment in [
        (("worker", "--experiment", "nope", "--idle-exit", "1"), "unknown experiment 'nope'"),
        (("worker", "--poll", "0"), "expected a positive number"),
        (("worker", "--max-jobs", "-1"), "expected a positive integer"),
    ]:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert fragment in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_worker_declared_dead_drops_its_job_and_registers_again(scans, spawn_worker, wait_until):
    """What a long network partition looks like to a worker: its row is marked dead and its job freed."""
    from jobs.queues import jobs_of
    from schemas.training import TrainedModel
    from schemas.workers import Worker

    (key,) = add(long_experiment("w_partition", scans, seeds=(39,), max_iter=30))
    worker = spawn_worker("--experiment", "w_partition", "--idle-exit", "2")
    wait_until(lambda: checkpoint_epoch(key) >= 2, 120, "epoch 2")
    conn = TrainedModel.connection
    # what another worker's reaper does when this one has been silent for the timeout
    conn.query(f"UPDATE {Worker.full_table_name} SET status='dead' WHERE pid=%s", args=(worker.pid,))
    conn.query(
        f"UPDATE {jobs_of(TrainedModel).full_table_name} SET status='pending', host='', pid=0 "
        "WHERE status='reserved' AND pid=%s",
        args=(worker.pid,),
    )
    assert worker.wait(timeout=180) == 0, worker.text()
    text = worker.text()
    assert "declared dead" in text and "drop   TrainedModel" in text and "registered again" in text
    row = assert_one_clean_run(key)
    assert row["resumed_from_epoch"] >= 2, "it took the freed job again and resumed from its checkpoint"


@pytest.mark.slow
def test_sigterm_while_the_database_is_down_exits_promptly(scans, spawn_worker, wait_until, db):
    from pipeline.database import ensure_embedded_server, stop_embedded_server

    (key,) = add(long_experiment("w_down_stop", scans, seeds=(40,), max_iter=40))
    worker = spawn_worker("--experiment", "w_down_stop")
    wait_until(lambda: checkpoint_epoch(key) >= 2, 120, "epoch 2")
    assert stop_embedded_server(db.db_dir)
    try:
        signalled = time.monotonic()
        worker.send(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker.text()
        assert time.monotonic() - signalled < 30, "a stopping worker waits at most ~10 s for the database"
    finally:
        ensure_embedded_server(db.db_dir)
    # it could not give the job back: the job stays reserved until its heartbeat is stale, then resumes
    # (a worker judges others only once the server and its own heartbeat have been up for the timeout)
    assert job_status(key) == "reserved"
    assert spawn_worker("--experiment", "w_down_stop", "--idle-exit", "8").wait(timeout=240) == 0
    row = assert_one_clean_run(key)
    assert row["resumed_from_epoch"] >= 2
