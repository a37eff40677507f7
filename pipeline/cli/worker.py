"""``sensorium worker``: a long-running loop over a queue's job tables."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Filled in by the worker module (next commit)."""
