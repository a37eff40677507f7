"""Graceful stop of a long-running process: SIGTERM / SIGINT set a flag that the work loop polls.

The first signal asks for a stop: training polls :func:`stop_requested` between batches and raises
``TrainingInterruptedError``; a worker finishes a short job and takes no new one. A second signal stops
at once (``KeyboardInterrupt``), for a user who does not want to wait.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

_stop = threading.Event()


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


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _stop.is_set():
        log.warning("%s again: stopping now", name)
        raise KeyboardInterrupt(name)
    log.warning("%s received: finishing the current step, then stopping", name)
    _stop.set()


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
