"""Soak: three workers over nine tiny models while a random schedule SIGKILLs and SIGTERMs them.

Every signalled worker is replaced by a new one (as a restart policy would). At the end every model
exists exactly once with an unbroken learning curve, was completed by exactly one worker, and no job is
left reserved or in error and no checkpoint is left behind.
"""

from __future__ import annotations

import random
import re
import signal
import time

import pytest

from tests.factories import add, assert_one_clean_run, checkpoint_epoch, job_status, long_experiment

N_KEYS = 9
N_WORKERS = 3
INJECTIONS = 8
DEADLINE_S = 200

pytestmark = [pytest.mark.soak, pytest.mark.slow]


def test_three_workers_under_random_kills_train_every_key_once(db, session_scans, spawn_worker, wait_until):
    from schemas.fabrik import experiment_models
    from schemas.training import TrainedModel

    keys = add(long_experiment("w_soak", session_scans, seeds=range(40, 40 + N_KEYS), max_iter=12))
    assert len(keys) == N_KEYS
    mine = experiment_models("w_soak")
    rng = random.Random(7)
    args = ("--experiment", "w_soak")
    workers = [spawn_worker(*args) for _ in range(N_WORKERS)]
    everyone = list(workers)
    start = time.monotonic()
    injected = {"SIGKILL": 0, "SIGTERM": 0}
    for _ in range(INJECTIONS):
        time.sleep(rng.uniform(1.5, 4.0))
        if len(TrainedModel & mine) == N_KEYS:
            break
        # a worker that has its loop running (a signal while importing is harmless but exits -15)
        up = wait_until(lambda: [w for w in workers if "INFO worker" in w.text()], 60, "a running worker")
        victim = rng.choice(up)
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        victim.send(sig)
        code = victim.wait(timeout=60)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), victim.text()
        injected[sig.name] += 1
        workers[workers.index(victim)] = fresh = spawn_worker(*args)
        everyone.append(fresh)
    wait_until(lambda: len(TrainedModel & mine) == N_KEYS, DEADLINE_S, "all soak models")
    for w in workers:
        w.send(signal.SIGTERM)
    for w in workers:
        assert w.wait(timeout=60) == 0, w.text()
    assert time.monotonic() - start < 240
    assert injected["SIGKILL"] + injected["SIGTERM"] >= 3, injected

    logs = "\n".join(w.text() for w in everyone)
    for key in keys:
        assert_one_clean_run(key)
        assert job_status(key) is None and checkpoint_epoch(key) == 0
        # completed by exactly one worker: nobody trained a key that was already done
        seed = key["seed"]
        done = re.findall(rf"done   TrainedModel \{{[^}}]*seed={seed}\}}", logs)
        assert len(done) == 1, (seed, done)
    assert "Traceback" not in logs
    resumed = sum(1 for k in keys if (TrainedModel & k).fetch1("resumed_from_epoch") > 0)
    print(f"soak: {injected}, {len(everyone)} worker processes, {resumed} of {N_KEYS} runs resumed")
