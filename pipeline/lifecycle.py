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
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

_stop = threading.Event()
_where = {"interruptible": False}


class JobInterruptedError(Exception):
    """Raised by the signal handler inside an interruptible job: the job is to be given back."""


def stop_requested() -> bool:
    """Whether a stop was asked for (polled by the trainer after every batch)."""
    return _stop.is_set()


def request_stop() -> None:
    _stop.set()


def reset() -> None:
    """Forget an earlier stop request (a new run in the same process)."""
    _stop.clear()


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
    _stop.set()
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
