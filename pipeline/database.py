"""The embedded PostgreSQL server (``pgserver``), started or attached under ``$SENSORIUM_HOME/db``.

No DataJoint here: this only makes sure a server is listening. ``schemas.connect`` connects to it.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

# Unix domain socket paths are limited to 107 bytes on Linux; pgserver puts the socket in the folder.
_MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.5432")


class EmbeddedServerError(RuntimeError):
    """The embedded PostgreSQL server could not be started."""


# As root, pgserver runs PostgreSQL as the system user ``pgserver``, which must reach the data folder by
# its absolute path for the server's whole life (the checkpointer reopens global/pg_control), so pgserver
# makes every folder above it world-readable. Under a private SENSORIUM_HOME (/root/...) that would open
# the home folders of root to everyone, so as root the data lives here instead, a folder of this
# pipeline's own whose parents are already traversable, and $SENSORIUM_HOME/db is a symlink to it.
ROOT_DATA_PARENT = Path("/var/lib/sensorium-embedded")


def ensure_embedded_server(db_dir: Path) -> str:
    """Start (or attach to) the embedded server of ``db_dir`` and return its socket folder.

    Idempotent and safe when several processes call it at once: start-up is serialised by a file lock
    (``flock``) beside the folder, ``$SENSORIUM_HOME/.db.lock``, and pgserver looks again at what exists
    once it holds the lock. The server keeps running after this process exits (``cleanup_mode=None``);
    stop it with :func:`stop_embedded_server`.

    As root the data folder is under :data:`ROOT_DATA_PARENT` and ``db_dir`` is a symlink to it (see
    :func:`_root_data_dir`), so no folder above ``SENSORIUM_HOME`` changes mode.

    Args:
        db_dir: ``$SENSORIUM_HOME/db``: the server's data folder, or as root a symlink to it (created
            when missing).

    Returns:
        The host string for PostgreSQL clients (the socket folder).
    """
    pgserver = _import_pgserver()  # imported here: only embedded use needs it

    db_dir = Path(db_dir).absolute()
    try:
        db_dir.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(db_dir.parent / ".db.lock"):
            data_dir = _root_data_dir(db_dir) if _is_root() else db_dir.resolve()
            if len(str(data_dir)) > _MAX_SOCKET_DIR:
                raise EmbeddedServerError(
                    f"SENSORIUM_HOME is too deep for the embedded server's Unix socket: {data_dir} has "
                    f"{len(str(data_dir))} characters, at most {_MAX_SOCKET_DIR} fit. Use a shorter "
                    "SENSORIUM_HOME."
                )
            data_dir.mkdir(parents=True, exist_ok=True)
            try:
                server = pgserver.get_server(data_dir, cleanup_mode=None)
            except Exception as err:  # pgserver raises assorted errors (CalledProcessError, AssertionError)
                log_file = data_dir / "log"
                tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else "(no log)"
                raise EmbeddedServerError(
                    f"could not start the embedded PostgreSQL in {data_dir}: {err}\n{tail}"
                ) from err
    except OSError as err:
        raise EmbeddedServerError(
            f"cannot create the embedded server's folder {db_dir}: {err.strerror or err}"
        ) from None
    log.debug("embedded PostgreSQL at %s", server.get_uri())
    return str(data_dir)


def _root_data_dir(db_dir: Path) -> Path:
    """The data folder of ``db_dir`` when running as root (call with the home's file lock held).

    - ``db_dir`` a symlink: its target (created again, empty, if it went missing);
    - ``db_dir`` a folder that already holds a server's data (made before this layout): used in place, as
      before, with pgserver's widening of the folders above; a warning says how to move it;
    - otherwise a new folder ``ROOT_DATA_PARENT/<random id>`` and ``db_dir`` becomes a symlink to it, with
      ``<id>.home`` beside it naming ``db_dir`` so that :func:`_collect_orphans` can tell when its home
      is gone (``make clean``) and remove the data of a server no longer running.
    """
    if db_dir.is_symlink():
        return db_dir.resolve()  # created again below (empty) if its target went missing
    if db_dir.is_dir() and any(db_dir.iterdir()):
        if (db_dir / "PG_VERSION").exists():
            log.warning(
                "the embedded server's data is in %s: as root, pgserver makes every folder above it "
                "readable by all users; stop the server and move the folder to recreate it under %s",
                db_dir,
                ROOT_DATA_PARENT,
            )
        return db_dir.resolve()
    _collect_orphans()
    ROOT_DATA_PARENT.mkdir(parents=True, exist_ok=True)
    ROOT_DATA_PARENT.chmod(0o755)  # the pgserver user must pass; every entry below is its own
    target = ROOT_DATA_PARENT / uuid.uuid4().hex
    target.mkdir(mode=0o700)
    if db_dir.is_dir():
        db_dir.rmdir()  # an empty folder made by an earlier start that failed
    db_dir.symlink_to(target, target_is_directory=True)
    # the note last: another home's start collects the folders whose note names a home that does not
    # link to them, and between a note and its link this folder would be one (a folder without a note is
    # never collected)
    target.with_suffix(".home").write_text(str(db_dir))
    return target


def _collect_orphans() -> None:
    """Remove the data folders under :data:`ROOT_DATA_PARENT` whose home no longer links to them and
    whose server is not running (their ``SENSORIUM_HOME`` was deleted)."""
    if not ROOT_DATA_PARENT.is_dir():
        return
    for note in ROOT_DATA_PARENT.glob("*.home"):
        data = note.with_suffix("")
        try:
            link = Path(note.read_text())
            # the home's folder is gone too (an unmounted share, a removed tree): leave the data alone
            present = link.parent.parent.is_dir()
            linked = link.is_symlink() and link.resolve() == data.resolve()
        except OSError:
            present, linked = False, False
        if linked or not present or _postmaster_alive(data):
            continue
        log.info("removing the data of a deleted SENSORIUM_HOME: %s", data)
        shutil.rmtree(data, ignore_errors=True)
        note.unlink(missing_ok=True)


def remove_embedded_server(db_dir: Path) -> None:
    """Stop the embedded server of ``db_dir`` and delete its data (a throwaway home of a test).

    As root that includes the data folder under :data:`ROOT_DATA_PARENT` that ``db_dir`` links to.
    """
    db_dir = Path(db_dir).absolute()
    stop_embedded_server(db_dir)
    data = db_dir.resolve()
    if db_dir.is_symlink():
        db_dir.unlink()
        if data.parent == ROOT_DATA_PARENT:
            data.with_suffix(".home").unlink(missing_ok=True)
    shutil.rmtree(data, ignore_errors=True)


def _postmaster_alive(data: Path) -> bool:
    """Whether the server whose ``postmaster.pid`` is in ``data`` still runs."""
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def stop_embedded_server(db_dir: Path) -> bool:
    """Stop the embedded server of ``db_dir`` if one runs there. Returns whether one was stopped."""
    pgserver = _import_pgserver()
    # pgserver makes its command functions at import time (setattr on the module), so its annotations
    # do not list them
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    data_dir = Path(db_dir).resolve()
    if not (data_dir / "postmaster.pid").exists():
        return False
    user = "pgserver" if _is_root() else None
    with _file_lock(Path(db_dir).absolute().parent / ".db.lock"):
        try:
            pg_ctl(["-w", "stop"], pgdata=data_dir, user=user)
        except subprocess.CalledProcessError:
            return False
    # forget this process's handle so a later call starts the server again (and its atexit hook,
    # which would look the handle up, does not run)
    handle = pgserver.PostgresServer._instances.pop(data_dir, None)
    if handle is not None:
        atexit.unregister(handle._cleanup)
    return True


def _import_pgserver() -> ModuleType:
    """``pgserver``, imported without platformdirs' warning about a missing ``XDG_RUNTIME_DIR``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created when missing) for the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
