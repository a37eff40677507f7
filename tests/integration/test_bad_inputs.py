"""A corpus of bad inputs, each run through the real ``sensorium`` command line.

Every case is one YAML file in ``bad_inputs/`` (see its README). For each, the command must exit
non-zero, print exactly one line, ``error: ...``, that names what was wrong (the case's ``expect``
regex), print no traceback, and change no row count of any table nor the number of files in the object
store. A new bad input found in the field is a new file there, not new test code.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from recording_zip import zip_in_place

from tests.factories import cli_argv

CASES = Path(__file__).with_name("bad_inputs")
KEYS = {
    "about",
    "argv",
    "env",
    "stdin",
    "files",
    "recording",
    "replace",
    "arrays",
    "symlinks",
    "fifos",
    "expect",
}
KEYS |= {"marker", "timeout"}


def _cases() -> list[Path]:
    return sorted(CASES.glob("*.yaml"))


def _content(value: Any) -> bytes:
    """A ``files`` / ``replace`` value: text, ``{base64: ...}`` for bytes, or ``{text, repeat, times}``
    for a large file (the text, then ``times`` copies of ``repeat``)."""
    if isinstance(value, dict) and "base64" in value:
        return base64.b64decode(value["base64"])
    if isinstance(value, dict):
        return (value.get("text", "") + value["repeat"] * int(value["times"])).encode()
    return str(value).encode()


class _Case:
    """One corpus file, laid out in its scratch folder ``dir``."""

    def __init__(self, path: Path, scratch: Path, recording: Path) -> None:
        self.spec: dict[str, Any] = yaml.safe_load(path.read_text())
        unknown = set(self.spec) - KEYS
        assert not unknown, f"{path.name}: unknown keys {sorted(unknown)}"
        assert {"about", "argv", "expect"} <= set(self.spec), (
            f"{path.name}: about, argv and expect are required"
        )
        self.dir = scratch
        self.subs = {"dir": str(scratch), "home": os.environ["SENSORIUM_HOME"]}
        for name, value in (self.spec.get("files") or {}).items():
            target = scratch / self.fill(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_content(value))
        if self.spec.get("recording"):
            self.subs["rec"] = str(self._recording(recording, self.spec["recording"]))

    def fill(self, text: str) -> str:
        """``{dir}``, ``{home}`` and ``{rec}`` replaced."""
        for key, value in self.subs.items():
            text = text.replace("{" + key + "}", value)
        return text

    def _recording(self, source: Path, kind: str) -> Path:
        """A copy of a valid recording with the case's changes, as a folder or a zip."""
        assert kind in ("folder", "zip"), f"recording: folder or zip, found {kind!r}"
        rec = self.dir / source.name
        shutil.copytree(source, rec)
        for rel, value in (self.spec.get("replace") or {}).items():
            (rec / rel).write_bytes(_content(value))
        for rel, how in (self.spec.get("arrays") or {}).items():
            old = np.load(rec / rel, allow_pickle=False)
            np.save(rec / rel, np.full(old.shape, how["fill"], dtype=how.get("dtype", old.dtype)))
        for rel, target in (self.spec.get("symlinks") or {}).items():
            (rec / rel).unlink(missing_ok=True)
            (rec / rel).symlink_to(self.fill(target))
        for rel in self.spec.get("fifos") or []:
            (rec / rel).unlink(missing_ok=True)
            os.mkfifo(rec / rel)
        if kind == "folder":
            return rec
        return zip_in_place(rec)

    def run(self) -> subprocess.CompletedProcess:
        env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
        env.update({k: self.fill(str(v)) for k, v in (self.spec.get("env") or {}).items()})
        argv = [self.fill(str(a)) for a in self.spec["argv"]]
        return subprocess.run(
            cli_argv(*argv),
            cwd=self.dir,  # a payload that writes a relative marker file writes it here
            env=env,
            input=self.spec.get("stdin"),
            capture_output=True,
            text=True,
            timeout=self.spec.get("timeout", 120),
        )


def _store_files(store: Path) -> int:
    return sum(1 for p in store.rglob("*") if p.is_file()) if store.exists() else 0


@pytest.mark.parametrize("case_file", _cases(), ids=lambda p: p.stem)
def test_bad_input_is_one_error_line(db, synth_dir, session_scans, case_file, tmp_path):
    import schemas

    recording = sorted(p for p in synth_dir.iterdir() if p.is_dir())[0]
    case = _Case(case_file, tmp_path, recording)
    conn = schemas.activate(settings=db)
    rows_before = schemas.table_counts(conn, db.db_prefix)
    files_before = _store_files(db.store_dir)

    p = case.run()

    output = p.stdout + p.stderr
    assert "Traceback" not in output, f"{case_file.name}: {case.spec['about']}\n{output}"
    lines = [line for line in output.splitlines() if line.strip()]
    assert p.returncode != 0, f"{case_file.name}: exit 0\n{output}"
    assert len(lines) == 1 and lines[0].startswith("error: "), (
        f"{case_file.name}: not one error line\n{output}"
    )
    assert re.search(case.spec["expect"], lines[0]), (
        f"{case_file.name}: {lines[0]!r} lacks {case.spec['expect']!r}"
    )
    marker = case.spec.get("marker")
    if marker:
        assert not (tmp_path / marker).exists(), f"{case_file.name}: the payload ran ({marker} was written)"
    assert schemas.table_counts(conn, db.db_prefix) == rows_before, f"{case_file.name}: rows changed"
    assert _store_files(db.store_dir) == files_before, f"{case_file.name}: files left in the object store"


def test_corpus_is_not_empty():
    assert len(_cases()) >= 20
