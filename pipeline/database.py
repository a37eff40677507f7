"""The embedded PostgreSQL server (``pgserver``), started or attached under ``$SENSORIUM_HOME/db``.

No DataJoint here: this only makes sure a server is listening. ``schemas.connect`` connects to it.
"""

from __future__ import annotations

import atexit
import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

# Unix domain socket paths are limited to 107 bytes on Linux; pgserver puts the socket in the folder.
_MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.5432")


class EmbeddedServerError(RuntimeError):
    """The embedded PostgreSQL server could not be started."""


def ensure_embedded_server(db_dir: Path) -> str:
    """Start (or attach to) the embedded server in ``db_dir`` and return its socket folder.

    Idempotent and safe when several processes call it at once: pgserver serialises start-up with an
    inter-process lock, and the folder is created here with ``exist_ok``. The server keeps running after
    this process exits (``cleanup_mode=None``); stop it with :func:`stop_embedded_server`.

    Args:
        db_dir: folder of the server's data (created when missing).

    Returns:
        The host string for PostgreSQL clients (the socket folder).
    """
    import pgserver  # imported here: only embedded use needs it

    db_dir = Path(db_dir).resolve()
    if len(str(db_dir)) > _MAX_SOCKET_DIR:
        raise EmbeddedServerError(
            f"SENSORIUM_HOME is too deep for the embedded server's Unix socket: {db_dir} has "
            f"{len(str(db_dir))} characters, at most {_MAX_SOCKET_DIR} fit. Use a shorter SENSORIUM_HOME."
        )
    db_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(db_dir, cleanup_mode=None)
    except Exception as err:  # pgserver raises assorted errors (CalledProcessError, AssertionError)
        log_file = db_dir / "log"
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else "(no log)"
        raise EmbeddedServerError(
            f"could not start the embedded PostgreSQL in {db_dir}: {err}\n{tail}"
        ) from err
    log.debug("embedded PostgreSQL at %s", server.get_uri())
    return str(db_dir)


def stop_embedded_server(db_dir: Path) -> bool:
    """Stop the embedded server in ``db_dir`` if one runs there. Returns whether one was stopped."""
    import pgserver
    from pgserver._commands import pg_ctl

    db_dir = Path(db_dir).resolve()
    if not (db_dir / "postmaster.pid").exists():
        return False
    user = "pgserver" if _is_root() else None
    try:
        pg_ctl(["-w", "stop"], pgdata=db_dir, user=user)
    except subprocess.CalledProcessError:
        return False
    # forget this process's handle so a later call starts the server again (and its atexit hook,
    # which would look the handle up, does not run)
    handle = pgserver.PostgresServer._instances.pop(db_dir, None)
    if handle is not None:
        atexit.unregister(handle._cleanup)
    return True


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0
