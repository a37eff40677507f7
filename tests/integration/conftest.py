"""Integration fixtures: the two session recordings ingested once."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.factories import cli_argv


@pytest.fixture(scope="session")
def session_scans(db, synth_dir) -> list[str]:
    """Data keys of the two small session recordings, ingested (other tests ingest more scans)."""
    from usecases.ingest import ingest

    return [
        ingest(z, cache_dir=db.cache_dir, progress=False).data_key for z in sorted(synth_dir.glob("*.zip"))
    ]


# -- worker processes -----------------------------------------------------------------------------------

REPO = Path(__file__).parents[2]


class WorkerProcess:
    """A real ``sensorium worker`` process (one torch thread), its output in a log file."""

    def __init__(self, log_path: Path, args: list[str]):
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in wait / kill)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            cli_argv("worker", "--queue", "gpu", "--poll", "0.3", *args),
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def text(self) -> str:
        return self.log_path.read_text()

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            message = f"worker {self.pid} still running after {timeout} s:\n{self.text()}"
            raise AssertionError(message) from None
        finally:
            self._log.close()


@pytest.fixture()
def spawn_worker(tmp_path):
    """Factory of worker processes; every one still running at the end of the test is killed."""
    started: list[WorkerProcess] = []

    def spawn(*args: str) -> WorkerProcess:
        w = WorkerProcess(tmp_path / f"worker{len(started)}.log", list(args))
        started.append(w)
        return w

    yield spawn
    for w in started:
        if w.alive():
            w.proc.kill()
            w.proc.wait(timeout=30)


def _wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture()
def wait_until():
    """``wait_until(condition, timeout, what)``: poll until ``condition()`` is truthy (returns it) or fail."""
    return _wait_until
