"""The services of ``docker-compose.yml`` as processes on this machine, for tests (no Docker here).

What Docker would give a container is rebuilt from the same files: the image's ``ENV`` and
``ENTRYPOINT`` (read from the ``Dockerfile``), the service's ``environment`` and ``command`` with the
``.env`` variables interpolated as Compose does, its secrets at ``/run/secrets/<name>`` and its volumes.
Container paths are mapped onto folders of the test (a named volume is one folder shared by every
service that mounts it; a bind mount is its host folder; the rest of a container's file system is a
folder of its own), the service name ``db`` onto ``127.0.0.1`` and the server's port. Nothing else is
changed, except what the caller overrides and says why.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.factories import cli_argv

# ${VAR}, ${VAR:-default} (unset or empty), ${VAR-default} (unset), $VAR, and $$ (a literal $)
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?)-([^}]*))?\}|\$(\w+)")


def interpolate(value, variables: dict[str, str]):
    """``value`` (str, list or dict, recursively) with Compose's variable interpolation applied."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        if m.group(3) is not None:  # a default
            missing = name not in variables or (m.group(2) == ":" and not variables[name])
            return m.group(3) if missing else variables[name]
        return variables.get(name, "")

    return _VARIABLE.sub(one, value)


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a ``.env`` file (comments and blank lines skipped)."""
    variables = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            variables[name.strip()] = value.strip()
    return variables


def dockerfile_image(path: Path) -> tuple[dict[str, str], list[str]]:
    """(ENV of the final image, ENTRYPOINT) from a one-stage Dockerfile (exec-form ENTRYPOINT)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
        elif word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
    return env, entrypoint


@dataclass
class Service:
    """One compose service, resolved for this machine."""

    name: str
    env: dict[str, str]
    command: list[str]
    entrypoint: list[str]
    mounts: dict[str, Path] = field(default_factory=dict)  # container path -> host path
    config: dict = field(default_factory=dict)  # the service's compose entry, interpolated


class Compose:
    """A compose project (a folder holding docker-compose.yml, .env, Dockerfile, secrets/) on this host."""

    def __init__(self, project: Path, root: Path, db_port: int):
        self.project = project
        self.root = root  # folders standing for volumes and container file systems
        self.db_port = db_port
        self.variables = read_env_file(project / ".env")
        self.spec = interpolate(yaml.safe_load((project / "docker-compose.yml").read_text()), self.variables)
        self.image_env, self.image_entrypoint = dockerfile_image(project / "Dockerfile")

    def service(self, name: str) -> Service:
        config = self.spec["services"][name]
        mounts = self._mounts(name, config)
        built = {c.get("image") for c in self.spec["services"].values() if "build" in c}
        env = dict(self.image_env) if "build" in config or config.get("image") in built else {}
        raw = config.get("environment", {})
        if isinstance(raw, list):
            raw = dict(item.partition("=")[::2] for item in raw)
        env |= {k: "" if v is None else str(v) for k, v in raw.items()}
        command = [str(c) for c in config.get("command", [])]
        entrypoint = [str(c) for c in config.get("entrypoint", self.image_entrypoint)]
        service = Service(name, env, command, entrypoint, mounts, config)
        service.env = {k: self._network(k, self._env_path(service, v)) for k, v in env.items()}
        service.command = [self._host_paths(c, mounts) for c in command]
        return service

    def _env_path(self, service: Service, value: str) -> str:
        """A variable's value with container paths mapped: a mount, else the container's own folder."""
        mapped = self._host_paths(value, service.mounts)
        if mapped == value and value.startswith("/"):
            return str(self.container_fs(service, value))
        return mapped

    def _mounts(self, name: str, config: dict) -> dict[str, Path]:
        mounts: dict[str, Path] = {}
        for secret in config.get("secrets", []):
            secret_name = secret if isinstance(secret, str) else secret["source"]
            target = secret if isinstance(secret, str) else secret.get("target", secret_name)
            mounts[f"/run/secrets/{target}"] = self.project / self.spec["secrets"][secret_name]["file"]
        for volume in config.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                host = (self.project / source).resolve()
            else:
                host = self.root / "volumes" / source
            host.mkdir(parents=True, exist_ok=True)
            mounts[target] = host
        return mounts

    def _host_paths(self, value: str, mounts: dict[str, Path]) -> str:
        """Container paths in ``value`` (whole, or after ``:`` / ``=``) replaced by their host paths."""
        for target in sorted(mounts, key=len, reverse=True):
            value = re.sub(
                rf"(^|[:=]){re.escape(target)}(?=/|$|:)",
                lambda m, t=target: m.group(1) + str(mounts[t]),
                value,
            )
        return value

    def _network(self, name: str, value: str) -> str:
        if name == "DJ_HOST" and value == "db":
            return "127.0.0.1"
        if name == "DJ_PORT":
            return str(self.db_port)
        return value

    def container_fs(self, service: Service, path: str) -> Path:
        """Where ``path`` of the service's container lies here: a mount, or the container's own folder."""
        for target in sorted(service.mounts, key=len, reverse=True):
            if path == target or path.startswith(target + "/"):
                return service.mounts[target] / path[len(target) :].lstrip("/")
        return self.container_fs_root(service) / path.lstrip("/")

    def container_fs_root(self, service: Service) -> Path:
        """The folder standing for the service's container file system."""
        return self.root / "containers" / service.name

    def process_env(self, service: Service, **overrides: str) -> dict[str, str]:
        """The environment a process of ``service`` runs with: PATH and friends of this machine, then the
        container's variables, then ``overrides``."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "SENSORIUM_"))}
        for target, host in service.mounts.items():
            # the mounts inside the container's own folder, so that a path derived from a variable
            # (SENSORIUM_HOME/store) reaches the volume mounted there
            link = self.container_fs_root(service) / target.lstrip("/")
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(host)
        return base | service.env | {"PYTHONUNBUFFERED": "1"} | overrides

    def argv(self, service: Service) -> list[str]:
        """The service's process: the image's ``sensorium`` entrypoint is this checkout's CLI."""
        if service.entrypoint != ["sensorium"]:
            raise ValueError(f"{service.name}: entrypoint {service.entrypoint} is not `sensorium`")
        return cli_argv(*service.command)


# -- the db service: PostgreSQL 16 with password authentication over TCP ----------------------------------


def tls_capable_postgres() -> Path | None:
    """The bin folder of a PostgreSQL built with TLS (Debian's ``postgresql`` package), or None."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "postgres").exists() and (folder / "initdb").exists():
            return folder
    return None


def self_signed_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """(certificate, key) of a fresh self-signed certificate for ``localhost`` / 127.0.0.1 (openssl)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class PostgresServer:
    """The ``db`` service: a PostgreSQL server (pgserver's binaries, release 16) initialised as the
    official image does from ``POSTGRES_USER`` / ``POSTGRES_PASSWORD_FILE`` / ``POSTGRES_INITDB_ARGS``,
    listening on 127.0.0.1 only, with scram-sha-256 passwords for TCP logins."""

    def __init__(
        self,
        compose: Compose,
        service: Service,
        tls: tuple[Path, Path] | None = None,
        bin_dir: Path | None = None,
    ):
        """``tls``: (certificate, key) to serve TLS with (as a lab's override file would add);
        ``bin_dir``: the server's binaries (default pgserver's PostgreSQL 16, built without TLS)."""
        from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = bin_dir or POSTGRES_BIN_PATH
        self.compose, self.service = compose, service
        self.data = compose.container_fs(service, "/var/lib/postgresql/data")
        self.socket_dir = compose.root / "pg-socket"
        self.log = compose.root / "postgres.log"
        self.proc: subprocess.Popen | None = None
        self.tls = tls
        self.user = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root; the official image runs it as postgres
            from pgserver.utils import ensure_user_exists

            self.user = "pgserver"
            ensure_user_exists(self.user)

    def _own(self, *paths: Path) -> None:
        if self.user is None:
            return
        import pwd

        from pgserver.utils import ensure_prefix_permissions

        entry = pwd.getpwnam(self.user)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)
            ensure_prefix_permissions(path)  # the folders above must be traversable by that user

    def start(self) -> None:
        env = self.service.env
        self.data.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)
        # initdb reads the password file as the server's user: give it a private copy
        pwfile = self.compose.root / "pg-pwfile"
        pwfile.write_text(Path(env["POSTGRES_PASSWORD_FILE"]).read_text())
        self.log.touch()
        self._own(self.data, self.socket_dir, pwfile, self.log)
        initdb = [
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "--username",
            env.get("POSTGRES_USER", "postgres"),
            f"--pwfile={pwfile}",
            "--auth-local=scram-sha-256",
            *shlex.split(env.get("POSTGRES_INITDB_ARGS", "")),
        ]
        subprocess.run(initdb, check=True, capture_output=True, user=self.user)
        pwfile.unlink()
        options = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(self.compose.db_port),
            "-c",
            f"unix_socket_directories={self.socket_dir}",
        ]
        if self.tls is not None:
            cert, key = (self.compose.root / f"server.{ext}" for ext in ("crt", "key"))
            shutil.copy(self.tls[0], cert)
            shutil.copy(self.tls[1], key)
            key.chmod(0o600)  # PostgreSQL refuses a key others can read
            self._own(cert, key)
            options += ["-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}"]
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), *options],
            stdout=open(self.log, "w"),  # noqa: SIM115 (the server's log for the test's life)
            stderr=subprocess.STDOUT,
            user=self.user,
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        """Run the service's healthcheck (``pg_isready``) until it passes, as ``service_healthy`` does."""
        test = self.service.config["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL" and test[1].startswith("pg_isready"), test
        options = [a for a in shlex.split(test[1])[1:] if not a.startswith(("--host", "-h"))]
        argv = [str(self.bin / "pg_isready"), *options, "-h", "127.0.0.1"]
        argv += ["-p", str(self.compose.db_port)]
        deadline = time.monotonic() + timeout
        while subprocess.run(argv, capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"db did not become healthy:\n{self.log.read_text()}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown: clients are disconnected
            self.proc.wait(timeout=60)
