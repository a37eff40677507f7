"""What :func:`schemas.activate` bound: the prefix, the connection and the settings of this process.

DataJoint calls a table's ``make(key)`` with the key alone, so the code of a ``make`` (the device to
train on, the checkpoint folder, the lock timeout) reads the settings the schemas were activated with
from here. Everything above the table layer (jobs, use cases, the command line) is handed its settings
as an argument instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.settings import Settings


@dataclass
class Binding:
    """The active binding of this process (one prefix per process: DataJoint schemas bind once)."""

    prefix: str | None = None
    connection: Any = None
    settings: Settings | None = None


BINDING = Binding()


def bound_settings() -> Settings:
    """Settings the schemas were activated with.

    Raises:
        RuntimeError: :func:`schemas.activate` was not called in this process.
    """
    if BINDING.settings is None:
        raise RuntimeError("call schemas.activate() first")
    return BINDING.settings
