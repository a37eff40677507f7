"""The one reader of environment variables.

Everything that depends on where the project keeps its state is derived from a :class:`Settings`
object built here, so that a new ``SENSORIUM_HOME`` is a fresh world (database, object store, caches).

Variables
---------
SENSORIUM_HOME       root of local state, the "world": ``db/`` (embedded PostgreSQL), ``store/``
                     (DataJoint object store), ``cache/`` (merged recordings), ``data/``. Unset: the
                     first ``.sensorium`` folder in the current directory or above it (as git finds
                     its repository), else a new ``./.sensorium`` (see :func:`find_home`).
SENSORIUM_DB_PREFIX  schema-name prefix (default ``sensorium_``).
SENSORIUM_DATA       root that recordings are referenced from (default ``$SENSORIUM_HOME/data``).
SENSORIUM_DEVICE     torch device for training and prediction: auto (default: CUDA when available), cpu,
                     cuda, cuda:N (e.g. cuda:1) or mps.
SENSORIUM_STORE      JSON object: a DataJoint store spec replacing the local file store, e.g.
                     ``{"protocol": "s3", "endpoint": "...", "bucket": "...", "location": "...",
                     "access_key": "...", "secret_key": "..."}``.
DJ_HOST, DJ_PORT, DJ_USER, DJ_PASS
                     an existing PostgreSQL server. When ``DJ_HOST`` is unset an embedded server
                     (``pgserver``) is started or attached under ``$SENSORIUM_HOME/db``.
DJ_PASS_FILE, SENSORIUM_STORE_FILE
                     read the password / the store spec from this file instead (Docker secrets under
                     ``/run/secrets``): secrets stay out of ``docker inspect``, ``ps e`` and shell history.
DJ_TLS               ``true`` (require TLS), ``false`` (plain), unset: TLS when the server offers it.
SENSORIUM_CHECKPOINTS
                     folder of training checkpoints (default ``$SENSORIUM_HOME/checkpoints``); a shared
                     folder lets a worker on another host resume a run.
SENSORIUM_HEARTBEAT_S        seconds between a worker's heartbeats (default 10).
SENSORIUM_WORKER_TIMEOUT_S   a worker silent this long is dead and its reservations are re-queued
                             (default 60; at least 3 heartbeats).
SENSORIUM_ORPHAN_TIMEOUT_S   a reservation made outside ``sensorium`` (no heartbeat) is re-queued when
                             older than this (default 86400).
SENSORIUM_CREATE_TABLES      false: never declare schemas or tables (deployment workers; the init step
                             declares them as admin). Default true.
SENSORIUM_DB_RETRY_S         how long a lost database connection is retried, with backoff, before the
                             job fails (default 600).
SENSORIUM_LOCK_TIMEOUT_S     longest wait for one of the pipeline's locks (the ingest lock of a data
                             key, the lock of a sweep) held by another session; then the command fails
                             naming the holder (default 60, at most 86400).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

STORE_NAME = "sensorium"  # name of the DataJoint store every `<npy@...>` attribute uses
WORLD_DIR = ".sensorium"  # the folder name of a world, looked for in the current folder and above

# the device names the pipeline accepts; whether the device exists is checked where torch is loaded
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


class SettingsError(ValueError):
    """An environment variable has a value that cannot be used."""


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the PostgreSQL server is. ``embedded`` means: start/attach pgserver at ``host``."""

    host: str
    port: int
    user: str
    password: str
    embedded: bool


@dataclass(frozen=True)
class WorkerSettings:
    """Liveness and retry timings of workers (seconds)."""

    heartbeat_s: float = 10.0
    timeout_s: float = 60.0
    orphan_timeout_s: float = 86400.0
    db_retry_s: float = 600.0


@dataclass(frozen=True)
class Settings:
    """Resolved settings; build with :func:`load_settings`."""

    home: Path
    db_prefix: str
    data_root: Path
    database: DatabaseSettings
    store_spec: dict = field(default_factory=dict)
    device: str = "auto"  # torch device for training / prediction ("auto": CUDA when available)
    checkpoint_dir: Path | None = None  # None: $SENSORIUM_HOME/checkpoints
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    tls: bool | None = None  # DJ_TLS: None = TLS if the server offers it
    create_tables: bool = True  # SENSORIUM_CREATE_TABLES: false for workers of a deployment (no DDL)
    lock_timeout_s: float = 60.0  # SENSORIUM_LOCK_TIMEOUT_S: longest wait for a pipeline lock
    # how `home` was found: "SENSORIUM_HOME", "found in <folder>" (a world in the current folder or
    # above) or "new in <folder>" (none found: a world is created in the current folder)
    home_source: str = "SENSORIUM_HOME"

    @property
    def home_is_new(self) -> bool:
        """True when no world was found and none was named: using the settings creates one here."""
        return self.home_source.startswith("new in ")

    @property
    def names_an_empty_home(self) -> bool:
        """True when ``SENSORIUM_HOME`` names a folder without an embedded database yet: using the settings
        creates a new world there (which a mistyped path would otherwise do without a word)."""
        return self.home_source == "SENSORIUM_HOME" and self.database.embedded and not self.db_dir.exists()

    @property
    def db_dir(self) -> Path:
        """Data folder of the embedded PostgreSQL server."""
        return self.home / "db"

    @property
    def store_dir(self) -> Path:
        """Default location of the object store (when ``SENSORIUM_STORE`` is not set)."""
        return self.home / "store"

    @property
    def checkpoints(self) -> Path:
        """Folder of training checkpoints (``SENSORIUM_CHECKPOINTS``, default under the home)."""
        return self.checkpoint_dir or self.home / "checkpoints"

    @property
    def cache_dir(self) -> Path:
        """Merged-array caches of recordings, keyed by content checksum."""
        return self.home / "cache"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (default: ``os.environ``).

    Raises:
        SettingsError: a variable is malformed (the message names it).
    """
    env = os.environ if env is None else env
    home, home_source = find_home(env)
    _check_home(home, named=home_source == "SENSORIUM_HOME")
    prefix = env.get("SENSORIUM_DB_PREFIX", "sensorium_")
    if not prefix.replace("_", "").isalnum() or not prefix[0].isalpha() or prefix != prefix.lower():
        raise SettingsError(
            f"SENSORIUM_DB_PREFIX={prefix!r}: expected lower-case letters, digits and '_', "
            "starting with a letter (it becomes part of PostgreSQL schema names)"
        )
    data_root = Path(env.get("SENSORIUM_DATA") or home / "data").expanduser().resolve()

    host = env.get("DJ_HOST", "")
    port = _port(env)  # checked even without DJ_HOST: a malformed variable is a mistake either way
    if host:
        database = DatabaseSettings(
            host=host,
            port=port,
            user=env.get("DJ_USER", "postgres"),
            password=_secret(env, "DJ_PASS") or "",
            embedded=False,
        )
    else:
        # pgserver listens on a Unix socket inside its data folder; trust auth, any password.
        database = DatabaseSettings(
            host=str(home / "db"), port=5432, user="postgres", password="embedded", embedded=True
        )

    store_spec: dict = {"protocol": "file", "location": str(home / "store")}
    store_text = _secret(env, "SENSORIUM_STORE")
    if store_text:
        store_spec = _store_spec(store_text, env.get("SENSORIUM_STORE_FILE") or None)
    tls_text = env.get("DJ_TLS", "").strip().lower()
    if tls_text not in ("", "true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"DJ_TLS={env['DJ_TLS']!r}: expected true or false (or unset)")
    tls = None if not tls_text else tls_text in ("true", "1", "yes")
    checkpoints = env.get("SENSORIUM_CHECKPOINTS")
    create_text = env.get("SENSORIUM_CREATE_TABLES", "true").strip().lower()
    if create_text not in ("true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"SENSORIUM_CREATE_TABLES={create_text!r}: expected true or false")
    return Settings(
        home=home,
        db_prefix=prefix,
        data_root=data_root,
        database=database,
        store_spec=store_spec,
        device=check_device_name(env.get("SENSORIUM_DEVICE") or "auto", "SENSORIUM_DEVICE"),
        checkpoint_dir=Path(checkpoints).expanduser().resolve() if checkpoints else None,
        worker=_worker_settings(env),
        tls=tls,
        create_tables=create_text in ("true", "1", "yes"),
        lock_timeout_s=_lock_timeout(env),
        home_source=home_source,
    )


def find_home(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> tuple[Path, str]:
    """The world's folder and how it was found, as git finds its repository.

    ``SENSORIUM_HOME`` wins when set. Otherwise the current folder (``cwd``) and then each folder above
    it is searched for a ``.sensorium`` folder; the first one found is the world, so a command run
    from a subfolder of a project uses the project's world instead of starting an empty one. When
    there is none, the world will be created as ``.sensorium`` in the current folder.

    Returns:
        (resolved folder, source): source is ``"SENSORIUM_HOME"``, ``"found in <folder>"`` or
        ``"new in <folder>"`` (see :attr:`Settings.home_source`).
    """
    env = os.environ if env is None else env
    named = env.get("SENSORIUM_HOME")
    if named:
        return Path(named).expanduser().resolve(), "SENSORIUM_HOME"
    try:
        here = (cwd or Path.cwd()).resolve()
    except FileNotFoundError:  # the shell's folder was deleted under it
        raise SettingsError(
            "the current folder no longer exists; cd elsewhere or set SENSORIUM_HOME"
        ) from None
    for folder in (here, *here.parents):
        candidate = folder / WORLD_DIR
        if candidate.is_dir():  # a file of that name is not a world: keep looking above it
            return candidate, f"found in {folder}"
    return here / WORLD_DIR, f"new in {here}"


def check_device_name(text: str, where: str = "device") -> str:
    """``text`` when it names a device the pipeline knows: auto, cpu, cuda, cuda:N or mps.

    Only the spelling is checked (no torch import); whether the device exists is checked where it is
    used.

    Raises:
        SettingsError: another name (the message names ``where``, e.g. the variable).
    """
    name = text.strip()
    if not _DEVICE.fullmatch(name):
        raise SettingsError(f"{where}={text!r}: expected auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps")
    return name


def _check_home(home: Path, named: bool) -> None:
    """Refuse a home that is a file, or lies under one (it must be, or become, a folder); ``named``:
    it came from ``SENSORIUM_HOME`` (else from :func:`find_home`'s default)."""
    for path in (home, *home.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == home else f"lies under the file {path}"
                what, hint = (
                    (f"SENSORIUM_HOME={home}", "") if named else (f"the world {home}", "; set SENSORIUM_HOME")
                )
                raise SettingsError(f"{what}: {where}; expected a folder (or nothing there yet){hint}")
            return


def _port(env: Mapping[str, str]) -> int:
    """``DJ_PORT`` (default 5432), checked to be a TCP port number."""
    text = env.get("DJ_PORT", "5432")
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise SettingsError(f"DJ_PORT={text!r}: expected a port number (1 to 65535)")
    return port


# the fields DataJoint requires of a store, per protocol (datajoint.settings, get_store_spec)
_STORE_REQUIRED = {
    "file": ("location",),
    "s3": ("endpoint", "bucket", "location"),
    "gcs": ("bucket", "location"),
    "azure": ("container", "location"),
}


def _store_spec(text: str, path: str | None) -> dict:
    """The store spec in ``text`` (from ``SENSORIUM_STORE``, or the file ``path``), checked.

    Errors name the variable, the file and the field, never a value: the spec holds the store's keys.

    Raises:
        SettingsError: not a JSON object, or a protocol or its required fields missing.
    """
    where = f"SENSORIUM_STORE (SENSORIUM_STORE_FILE={path})" if path else "SENSORIUM_STORE"
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        # the position only: the text holds the store's secret key
        raise SettingsError(
            f"SENSORIUM_STORE is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}"
            f"{f' of {path}' if path else ''})"
        ) from None
    if not isinstance(spec, dict) or "protocol" not in spec:
        raise SettingsError(f"{where}: expected a JSON object with at least a 'protocol' field")
    protocol = spec["protocol"]
    if not isinstance(protocol, str) or protocol.lower() not in _STORE_REQUIRED:
        raise SettingsError(f"{where}: field 'protocol': expected one of {', '.join(_STORE_REQUIRED)}")
    missing = [k for k in _STORE_REQUIRED[protocol.lower()] if not spec.get(k)]
    if missing:
        raise SettingsError(f"{where}: missing field(s) {', '.join(missing)} (protocol {protocol.lower()})")
    return spec


_SECRET_FIELD = re.compile(r"secret|key|token|password|connection_string", re.IGNORECASE)


def public_store_spec(spec: dict) -> dict:
    """``spec`` without its credentials, for output: key / secret / token fields dropped, and any
    ``user:password@`` removed from a URL."""
    return {
        k: re.sub(r"//[^/@]*@", "//", v) if isinstance(v, str) else v
        for k, v in spec.items()
        if not _SECRET_FIELD.search(k)
    }


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """``env[name]``, or the content of the file ``env[name + "_FILE"]`` (trailing newlines dropped).

    Raises:
        SettingsError: both are set, or the file cannot be read (the message names the variable and the
            path, never the content).
    """
    file_var = f"{name}_FILE"
    path = env.get(file_var)
    if not path:
        return env.get(name)
    if env.get(name):
        raise SettingsError(f"{name} and {file_var} are both set: keep one")
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SettingsError(f"{file_var}={path}: cannot read the file ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{file_var}={path}: not a text file") from None
    return text.rstrip("\r\n")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise SettingsError(f"{name}={text!r}: expected a positive, finite number of seconds")
    return value


def _lock_timeout(env: Mapping[str, str]) -> float:
    """``SENSORIUM_LOCK_TIMEOUT_S``: positive, at most a day (PostgreSQL's ``lock_timeout`` is in ms)."""
    value = _seconds(env, "SENSORIUM_LOCK_TIMEOUT_S", 60.0)
    if value > 86400:
        raise SettingsError(
            f"SENSORIUM_LOCK_TIMEOUT_S={env['SENSORIUM_LOCK_TIMEOUT_S']!r}: at most 86400 seconds (a day)"
        )
    return value


def _worker_settings(env: Mapping[str, str]) -> WorkerSettings:
    w = WorkerSettings(
        heartbeat_s=_seconds(env, "SENSORIUM_HEARTBEAT_S", 10.0),
        timeout_s=_seconds(env, "SENSORIUM_WORKER_TIMEOUT_S", 60.0),
        orphan_timeout_s=_seconds(env, "SENSORIUM_ORPHAN_TIMEOUT_S", 86400.0),
        db_retry_s=_seconds(env, "SENSORIUM_DB_RETRY_S", 600.0),
    )
    if w.timeout_s < 3 * w.heartbeat_s:
        # one late heartbeat (a busy machine, a slow query) must not make a live worker look dead
        raise SettingsError(
            f"SENSORIUM_WORKER_TIMEOUT_S={w.timeout_s:g} must be at least 3 heartbeats "
            f"(SENSORIUM_HEARTBEAT_S={w.heartbeat_s:g})"
        )
    return w
