"""``deploy/slurm-worker.sbatch`` run by bash as SLURM would run it (no SLURM here): the SIGTERM that
``--signal=B:TERM@120`` sends to the batch shell reaches the worker (``exec``), which checkpoints and gives
its job back; the next array task resumes the run from that checkpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import add, checkpoint_epoch, job_status, long_experiment

REPO = Path(__file__).parents[2]
SCRIPT = REPO / "deploy" / "slurm-worker.sbatch"


def test_sbatch_header_asks_for_the_preemption_signal_and_requeue():
    header = [line for line in SCRIPT.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --signal=B:TERM@120" in header and "#SBATCH --requeue" in header
    assert any(re.fullmatch(r"#SBATCH --gres=gpu:1", line) for line in header)
    assert "--idle-exit" in SCRIPT.read_text()


def _task(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """One array task: the script under bash, with the test database's environment from the env file."""
    env_file = tmp_path / "worker.env"
    env_file.write_text(
        f'SENSORIUM_WORKER_ARGS="--experiment {name} --poll 0.3"\nSENSORIUM_IDLE_EXIT_S=1.5\n'
    )
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        SENSORIUM_ENV_FILE=str(env_file),
        SENSORIUM_DEVICE="cpu",  # no GPU here
        SLURM_CPUS_PER_TASK="1",
        SLURM_ARRAY_TASK_ID="0",
    )
    log = tmp_path / f"task-{len(list(tmp_path.glob('task-*')))}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    return proc, log


@pytest.mark.slow
def test_sigterm_to_the_batch_shell_checkpoints_and_the_next_task_resumes(
    db, session_scans, tmp_path, wait_until
):
    from schemas.training import TrainedModel

    (key,) = add(long_experiment("slurm_recipe", session_scans, seeds=(61,), max_iter=40))
    first, log = _task(tmp_path, "slurm_recipe")
    try:
        wait_until(lambda: checkpoint_epoch(key) >= 2, 180, "a checkpoint of epoch 2")
        first.send_signal(signal.SIGTERM)  # what SLURM does 120 s before the end, to the batch shell
        assert first.wait(timeout=60) == 0, log.read_text()
    finally:
        if first.poll() is None:
            first.kill()
    text = log.read_text()
    assert "SIGTERM received" in text and "stopped on request" in text, text
    stopped_at = checkpoint_epoch(key)
    assert stopped_at >= 2 and job_status(key) == "pending" and not TrainedModel & key  # back in the queue

    second, log2 = _task(tmp_path, "slurm_recipe")
    assert second.wait(timeout=300) == 0, log2.read_text()
    row = (TrainedModel & key).fetch1()
    assert row["resumed_from_epoch"] == stopped_at and row["epochs"] == 40
