"""What every command module shares: result output, early argument checks and binding the schemas.

Nothing here imports torch, DataJoint or numpy at module level: ``sensorium --help`` and an argument
error must answer at once. The checks run before a command starts the database (and before it
imports torch, except :func:`check_device` for a GPU, which must ask torch whether there is one).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.settings import Settings, SettingsError, check_device_name, load_settings


class UsageError(Exception):
    """A bad argument or setting, found before any work: ``main`` prints ``error: <message>`` (one
    line, no traceback) and exits with status 2."""


def out(text: str = "") -> None:
    """Command output (results for the user), as opposed to log messages on stderr."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def announce_new_world(settings: Settings) -> None:
    """One line on stderr when the command is about to create a new world (no ``SENSORIUM_HOME`` and no
    ``.sensorium`` here or above, or a ``SENSORIUM_HOME`` without a database yet), so that a command run
    from the wrong folder, or with a mistyped path, does not silently start an empty world there. Call it
    just before the first thing that creates the world (the database)."""
    if settings.home_is_new:
        why = "no .sensorium here or above; set SENSORIUM_HOME to choose"
    elif settings.names_an_empty_home:
        why = "SENSORIUM_HOME names a folder with no database yet"
    else:
        return
    sys.stderr.write(f"creating a new world in {settings.home} ({why})\n")
    sys.stderr.flush()


def activate(settings: Settings | None = None) -> Settings:
    """Bind the schemas on the configured server (imports DataJoint: database commands only).

    Args:
        settings: loaded earlier (e.g. to check the device before anything starts); None: load them.
    """
    settings = load_settings() if settings is None else settings
    announce_new_world(settings)
    import schemas

    schemas.activate(settings=settings)
    return settings


def check_device(text: str) -> str:
    """``text`` as a device name (auto, cpu, cuda, cuda:N, mps), the device checked to exist.

    torch is imported only for cuda and mps (that is the one way to know); ``auto`` and ``cpu`` cost
    nothing. Call it before the database is started, so that a worker or a training run asked for a
    GPU that is not there stops at once instead of training on the CPU.

    Raises:
        UsageError: an unknown name, or a GPU that this machine (or container) does not have.
    """
    try:
        name = check_device_name(text, "--device")
    except SettingsError as err:
        raise UsageError(str(err)) from None
    if name.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"device {name!r} requested but torch sees no CUDA device")
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise UsageError(
                f"device {name!r} requested but torch sees {count} CUDA device(s): cuda:0 to cuda:{count - 1}"
            )
    elif name == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise UsageError("device 'mps' requested but torch sees no Apple MPS device")
    return name


def use_device(flag: str | None) -> str:
    """The device of a command: ``--device`` when given (then also ``SENSORIUM_DEVICE`` for this
    process, so that the schemas bound later use it), else ``SENSORIUM_DEVICE``; checked with
    :func:`check_device`.

    Raises:
        UsageError: see :func:`check_device`; SettingsError: a malformed ``SENSORIUM_DEVICE``.
    """
    if flag is None:
        return check_device(load_settings().device)
    name = check_device(flag)
    os.environ["SENSORIUM_DEVICE"] = name
    return name


def check_path(path: Path, what: str, kind: str = "file") -> Path:
    """``path`` when it exists, is a ``kind`` ("file", "folder" or "any") and can be read.

    Only metadata and permissions are looked at (no content is read), so it costs nothing.

    Raises:
        UsageError: naming ``what`` (a flag or an argument) and the path.
    """
    if not path.exists():
        raise UsageError(
            f"{what}: expected a {'file or folder' if kind == 'any' else kind}, found nothing at {path}"
        )
    if kind == "file" and not path.is_file():
        raise UsageError(
            f"{what}: expected a file, found {'a folder' if path.is_dir() else 'something else'} at {path}"
        )
    if kind == "folder" and not path.is_dir():
        raise UsageError(f"{what}: expected a folder, found a file at {path}")
    # a folder must also be listable (x) to read what is in it
    mode = os.R_OK | (os.X_OK if path.is_dir() else 0)
    if not os.access(path, mode):
        raise UsageError(f"{what}: {path} cannot be read (permission denied)")
    return path


def writable_parent(path: Path, what: str) -> Path:
    """``path`` when a file can be written there: its folder exists (or can be created below an
    existing, writable folder) and ``path`` is not itself a folder.

    Raises:
        UsageError: naming ``what`` and the path.
    """
    if path.is_dir():
        raise UsageError(f"{what}: expected a file path, found a folder at {path}")
    existing = next(p for p in (path.parent.resolve(), *path.parent.resolve().parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{what}: cannot write {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: cannot write {path}: {existing} is not writable")
    return path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, found {text}")
    return value
