"""This machine's local Python package folders, served to ``docker build`` over 127.0.0.1 (test support).

Some machines (these among them) install Python packages from local folders as well as from the index:
``find-links`` folders and ``file://`` indexes in pip's configuration, e.g. the only torch 2.13.0 wheel
without CUDA. A container cannot see the host's folders, so the python stand-in image
(``standins.sh``) gets a ``pip.conf`` naming ``http://127.0.0.1:PORT/<n>/...`` instead, and while the
project image builds (``docker build --network host``) this module serves exactly those folders there,
read-only, on the loopback address. Machines without local folders get a ``pip.conf`` with the CA bundle
only, and nothing is served.

    python pip_mirror.py conf PORT      # the stand-in's pip.conf, on stdout
    python pip_mirror.py serve PORT     # serve the folders until killed
"""

from __future__ import annotations

import functools
import http.server
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _pip_settings() -> dict[str, list[str]]:
    """find-links and index URLs of this machine's pip configuration (files and PIP_* variables)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    found: dict[str, list[str]] = {"find-links": [], "extra-index-url": [], "index-url": []}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rpartition(".")[2]
        if name in found:
            for item in shlex.split(value):
                for word in item.split():
                    if word not in found[name]:
                        found[name].append(word)
    return found


def _local(value: str) -> Path | None:
    """The folder of a local find-links path / file:// URL, or None for a remote URL."""
    path = Path(urlparse(value).path) if value.startswith("file://") else Path(value)
    if "://" in value and not value.startswith("file://"):
        return None
    return path if path.is_dir() else None


def mapping(port: int) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """({served name: host folder}, {pip option: [values for the container]})."""
    served: dict[str, Path] = {}
    options: dict[str, list[str]] = {"find-links": [], "extra-index-url": []}
    for name, values in _pip_settings().items():
        for value in values:
            folder = _local(value)
            target = "find-links" if name == "find-links" else "extra-index-url"
            if folder is None:
                if name != "index-url":  # a remote index: the same URL inside
                    options[target].append(value)
                continue
            # an index's links may point above it (../../files/...): serve its parent
            root = folder if name == "find-links" else folder.parent
            slot = str(len(served))
            served[slot] = root
            tail = "" if name == "find-links" else folder.name
            options[target].append(f"http://127.0.0.1:{port}/{slot}/{tail}")
    return served, options


def conf(port: int) -> str:
    _, options = mapping(port)
    lines = ["[global]", f"cert = {CA_BUNDLE}"]
    for name, values in options.items():
        if values:
            lines.append(f"{name} = {' '.join(values)}")
    if any(v.startswith("http://127.0.0.1") for vs in options.values() for v in vs):
        lines.append("trusted-host = 127.0.0.1")
    return "\n".join(lines) + "\n"


def serve(port: int) -> None:
    served, _ = mapping(port)
    with tempfile.TemporaryDirectory() as tmp:
        for slot, folder in served.items():
            os.symlink(folder, Path(tmp) / slot)
        handler = functools.partial(_Quiet, directory=tmp)
        with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
            print(f"pip mirror on 127.0.0.1:{port}: {', '.join(map(str, served.values())) or 'nothing'}")
            sys.stdout.flush()
            server.serve_forever()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per wheel request would flood the build's log
        pass


if __name__ == "__main__":
    command, port = sys.argv[1], int(sys.argv[2])
    if command == "conf":
        sys.stdout.write(conf(port))
    elif command == "serve":
        serve(port)
    else:
        raise SystemExit(f"usage: {sys.argv[0]} conf|serve PORT")
