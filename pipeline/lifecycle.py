"""Graceful stop of a long-running process: SIGTERM / SIGINT ask the work in hand to stop soon.

The first signal sets a flag. Inside a training loop (:func:`polled`) the trainer checks it between
batches and raises ``TrainingInterruptedError`` after the last complete epoch's checkpoint. Anywhere
else inside a job (:func:`interruptible`: reading data, regressors, predictions, scores, inserts) the
signal handler raises :class:`JobInterruptedError` at once; DataJoint rolls the transaction back and the
worker gives the job back. Outside a job the worker sees the flag and takes no new one. A second signal
stops at once (``KeyboardInterrupt``), for a user who does not want to wait.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

_stop = threading.Event()
_abandon = threading.Event()
_where: dict = {"interruptible": False, "stop_time": None}

#: once a stop is requested, how long database work may still wait for an unreachable server
STOP_BUDGET_S = 10.0


class JobInterruptedError(Exception):
    """Raised by the signal handler inside an interruptible job: the job is to be given back."""


def stop_requested() -> bool:
    """Whether a stop was asked for."""
    return _stop.is_set()


def request_stop() -> None:
    if not _stop.is_set():
        _where["stop_time"] = time.monotonic()
    _stop.set()


def stop_deadline() -> float | None:
    """``time.monotonic()`` after which a stopping process stops waiting for the database (None: no stop)."""
    t = _where["stop_time"]
    return None if t is None else t + STOP_BUDGET_S


def abandon_job() -> None:
    """The job in hand is no longer this process's (another worker took it over): drop it, keep running."""
    _abandon.set()


def abandon_requested() -> bool:
    return _abandon.is_set()


def clear_abandon() -> None:
    _abandon.clear()


def training_should_stop() -> bool:
    """Polled by the trainer after every batch: a stop was asked for, or the job was taken over."""
    return _stop.is_set() or _abandon.is_set()


def reset() -> None:
    """Forget earlier stop and abandon requests (a new run in the same process)."""
    _stop.clear()
    _abandon.clear()
    _where["stop_time"] = None


def wait(seconds: float) -> bool:
    """Sleep up to ``seconds``, waking early on a stop request. Returns whether a stop was asked."""
    return _stop.wait(seconds)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block a stop signal raises :class:`JobInterruptedError` immediately."""
    previous = _where["interruptible"]
    _where["interruptible"] = True
    try:
        if _stop.is_set():
            raise JobInterruptedError("stop requested before the job started")
        yield
    finally:
        _where["interruptible"] = previous


@contextmanager
def polled() -> Iterator[None]:
    """Within the block the code polls :func:`stop_requested` itself (no exception from the handler)."""
    previous = _where["interruptible"]
    _where["interruptible"] = False
    try:
        yield
    finally:
        _where["interruptible"] = previous


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _stop.is_set():
        log.warning("%s again: stopping now", name)
        raise KeyboardInterrupt(name)
    request_stop()
    if _where["interruptible"]:
        log.warning("%s received: giving the job in hand back, then stopping", name)
        raise JobInterruptedError(name)
    log.warning("%s received: finishing the current step, then stopping", name)


@contextmanager
def graceful_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT request a stop instead of killing the process.

    Only the main thread can install signal handlers; elsewhere (a notebook's worker thread) the block
    runs with the signals as they were. Previous handlers are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
