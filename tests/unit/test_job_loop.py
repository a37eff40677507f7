"""The one job loop (``jobs.runner.run_jobs``) and its two policies, with stand-ins for the database:
what the loop does after each kind of outcome does not depend on PostgreSQL (the integration tests run
it against a real one)."""

from __future__ import annotations

import threading

import pytest

from jobs.runner import Abandoned, DrainPolicy, Outcome, Stopped, WorkerOptions, WorkerPolicy, run_jobs
from pipeline import lifecycle


class FakeHeartbeat:
    def __init__(self) -> None:
        self.declared_dead = threading.Event()
        self.registrations = 0

    def reregister(self) -> None:
        self.registrations += 1
        self.declared_dead.clear()


class FakeRunner:
    """Plays a script: an Outcome is a job run, an exception is raised, None means nothing to do."""

    def __init__(self, script: list) -> None:
        self.script, self.heartbeat = list(script), FakeHeartbeat()
        self.busy_s = self.populate_s = 0.0
        self.calls = 0

    def take_and_run(self, source, tables):
        self.calls += 1
        step = self.script.pop(0) if self.script else None
        if isinstance(step, type) and issubclass(step, BaseException):
            if step is Abandoned:
                self.heartbeat.declared_dead.set()
            raise step("T")
        return step


class FakeSource:
    tables: list = []
    taken: dict = {}


def done(status: str = "success") -> Outcome:
    return Outcome("T", {"k": 1}, status, 0.1, "boom" if status == "error" else "")


@pytest.fixture(autouse=True)
def no_stop_request():
    lifecycle.reset()
    yield
    lifecycle.reset()


def test_drain_goes_on_after_an_abandoned_job():
    runner = FakeRunner([Abandoned, done(), done(), None])
    tally = run_jobs(DrainPolicy(None, suppress_errors=True), FakeSource(), runner)
    assert tally.jobs == 2
    assert runner.heartbeat.registrations == 1, "declared dead: registered again before going on"


def test_drain_ends_when_nothing_is_left_and_raises_the_first_error_unless_suppressed():
    assert run_jobs(DrainPolicy(None, True), FakeSource(), FakeRunner([done(), None])).jobs == 1
    with pytest.raises(RuntimeError, match="boom"):
        run_jobs(DrainPolicy(None, False), FakeSource(), FakeRunner([done("error"), done()]))
    tally = run_jobs(DrainPolicy(None, True), FakeSource(), FakeRunner([done("error"), done(), None]))
    assert tally.jobs == 2 and tally.results["T"]["error_list"] == [({"k": 1}, "boom")]


def test_a_stopped_job_ends_either_loop():
    assert run_jobs(DrainPolicy(None, True), FakeSource(), FakeRunner([done(), Stopped, done()])).jobs == 1
    worker = WorkerPolicy(WorkerOptions(idle_exit_s=0))
    assert run_jobs(worker, FakeSource(), FakeRunner([Stopped, done()])).jobs == 0


def test_worker_exits_after_max_jobs_or_when_idle():
    runner = FakeRunner([done(), done(), done()])
    assert run_jobs(WorkerPolicy(WorkerOptions(max_jobs=2)), FakeSource(), runner).jobs == 2
    assert runner.calls == 2
    runner = FakeRunner([Abandoned, done(), None])
    assert run_jobs(WorkerPolicy(WorkerOptions(idle_exit_s=0)), FakeSource(), runner).jobs == 1
    assert runner.heartbeat.registrations == 1
