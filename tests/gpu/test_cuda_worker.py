"""A real worker process trains on CUDA through the pipeline (embedded database, synthetic data) and
records the GPU as the run's device; SIGTERM mid-training checkpoints and a second worker resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.factories import cli_argv

REPO = Path(__file__).parents[2]


def _cli(env, *args, **kw):
    return subprocess.run(cli_argv(*args), cwd=REPO, env=env, text=True, capture_output=True, **kw)


def test_worker_on_cuda_trains_checkpoints_and_resumes(tmp_path):
    home = Path("/tmp") / f"sg-{os.getpid()}"  # short: the embedded server's socket lives in it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "SENSORIUM_"))}
    env.update(SENSORIUM_HOME=str(home), SENSORIUM_DEVICE="cuda", PYTHONUNBUFFERED="1")
    try:
        assert (
            _cli(
                env, "synth", "--out", str(home / "data"), "--mice", "2", "--neurons", "40", "--trials", "300"
            ).returncode
            == 0
        )
        assert _cli(env, "ingest", "-q", *map(str, sorted((home / "data").glob("*.zip")))).returncode == 0
        add = _cli(
            env,
            "experiment",
            "add",
            str(REPO / "experiments" / "winner_demo.yaml"),
            "--set",
            "trainer.config.max_iter=30",
            "--set",
            "trainer.config.patience=40",
        )
        assert add.returncode == 0, add.stdout + add.stderr
        log1 = open(tmp_path / "w1.log", "w")  # noqa: SIM115
        w1 = subprocess.Popen(
            cli_argv("worker", "--poll", "0.3"),
            cwd=REPO,
            env=env,
            stdout=log1,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 300
        while "epoch 3/" not in (tmp_path / "w1.log").read_text():
            assert w1.poll() is None and time.time() < deadline, (tmp_path / "w1.log").read_text()
            time.sleep(0.5)
        w1.send_signal(signal.SIGTERM)
        assert w1.wait(timeout=120) == 0, (tmp_path / "w1.log").read_text()
        w2 = _cli(env, "worker", "--poll", "0.3", "--idle-exit", "5", timeout=900)
        assert w2.returncode == 0, w2.stdout + w2.stderr
        status = _cli(env, "scores")
        assert status.returncode == 0, status.stderr
        check = subprocess.run(
            [
                sys.executable,
                "-c",
                "import schemas; schemas.activate(); from schemas.training import TrainedModel; "
                "print([(r['device'], r['resumed_from_epoch']) for r in TrainedModel.proj('device', "
                "'resumed_from_epoch').to_dicts()])",
            ],
            cwd=REPO,
            env=env,
            text=True,
            capture_output=True,
            check=True,
        )
        rows = eval(check.stdout.strip())  # noqa: S307 (our own repr of a list of tuples)
        assert rows and all(torch.cuda.get_device_name(0) in device for device, _ in rows), rows
        assert any(resumed >= 3 for _, resumed in rows), rows
    finally:
        _cli(env, "db", "stop")
        subprocess.run(["rm", "-rf", str(home)], check=False)
