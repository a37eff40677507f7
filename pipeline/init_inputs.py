"""What ``sensorium db init`` is given, read and checked before the database is touched: service logins
with their password files, folders of recordings, experiment files (no DataJoint: the command line
checks them before it connects)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIN_PASSWORD = 8


class InitError(ValueError):
    """An argument of ``db init`` that cannot be used (the message names it)."""


@dataclass(frozen=True)
class Login:
    """One ``--login ROLE:NAME:PASSWORD_FILE``."""

    role: str
    name: str
    password_file: Path


def read_password_file(path: Path, what: str) -> str:
    """The password in ``path`` (trailing newlines dropped, as ``DJ_PASS_FILE`` and the PostgreSQL image
    read theirs, so that the same file gives the same password everywhere); ``what`` names it in errors."""
    try:
        text = Path(path).read_text().rstrip("\r\n")
    except OSError as err:
        raise InitError(f"{what} {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise InitError(f"{what} {path}: not a text file") from None
    if len(text) < MIN_PASSWORD:
        raise InitError(f"{what} {path}: the password must have at least {MIN_PASSWORD} characters")
    if "\x00" in text:
        raise InitError(f"{what} {path}: the password contains a NUL character")
    return text


def recording_paths(folders: list[Path]) -> list[Path]:
    """Recordings in ``folders``: every ``*.zip``, and every sub-folder with no zip of the same name."""
    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise InitError(f"--recordings {folder}: not a folder")
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        zips = {p.with_suffix("") for p in entries if p.suffix == ".zip"}
        found += [p for p in entries if p.suffix == ".zip" or (p.is_dir() and p not in zips)]
    return found


def experiment_files(paths: list[Path]) -> list[Path]:
    """Experiment files: each file as given, and the ``*.yaml`` / ``*.yml`` of each folder (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        elif path.is_file():
            found.append(path)
        else:
            raise InitError(f"--experiments {path}: no such file or folder")
    return found
