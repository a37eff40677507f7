"""What the benchmarks share: the machine they ran on, synthetic data by named scale, throwaway
``SENSORIUM_HOME`` folders with their own embedded PostgreSQL, and child processes measured for wall
time and peak resident memory.

Not a benchmark itself; the scripts beside it (and ``research/``) import it as ``benchmarks.common``,
run from the repository root as modules (``python -m benchmarks.<name>``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
#: the ``sensorium`` command line as a child process of this interpreter (the console script's module)
CLI = [sys.executable, "-m", "cli"]
GIB = 1024**3
MIB = 1024**2


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores (all and usable by this process), memory, Python, torch and GPU (None when absent)."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
        "date": time.strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def command_line() -> str:
    """The command that started this process, as it could be typed again."""
    return shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))


def machine_line(m: dict[str, Any]) -> str:
    cores = f"{m['cores']} cores" + (
        f" ({m['usable_cores']} usable)" if m["usable_cores"] != m["cores"] else ""
    )
    gpu = f"{m['gpu']} (CUDA {m.get('cuda')})" if m["gpu"] else "none"
    return f"{m['cpu']}, {cores}, {m['memory_gib']} GiB; GPU: {gpu}; torch {m['torch']}; {m['date']}"


def sensorium(env: dict[str, str], *args: str, capture: bool = True) -> str:
    """Run the CLI (:data:`CLI` ARGS) in ``env`` and return its stdout; exits with its output when it
    fails. With ``capture=False`` its output goes to this terminal (long populate runs)."""
    proc = subprocess.run([*CLI, *args], cwd=REPO, env=env, capture_output=capture, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"sensorium {' '.join(args)} failed:\n{proc.stdout}\n{(proc.stderr or '')[-3000:]}")
    return proc.stdout or ""


def synth_and_ingest(env: dict[str, str], data: Path, *extra: str, **sizes: int) -> None:
    """``sensorium synth --out DATA`` with ``sizes`` as flags (``mice=2`` -> ``--mice 2``) and ``extra``
    as given (``--stimulus teacher --teacher FILE``), then ingest every zip it wrote into ``env``'s home."""
    flags = [w for k, v in sizes.items() for w in (f"--{k}", str(v))]
    sensorium(env, "synth", "--out", str(data), *flags, *extra)
    sensorium(env, "ingest", "-q", *sorted(str(p) for p in data.glob("*.zip")))


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------


def default_data_dir(scale: str, seed: int) -> Path:
    """Where synthetic recordings of ``scale`` are kept between benchmark runs (full scale: ~16 GB)."""
    root = Path(os.environ.get("SENSORIUM_BENCH_DATA", Path(tempfile.gettempdir()) / "sensorium-bench"))
    return root / f"{scale}-seed{seed}"


def recordings(data: Path) -> list[Path]:
    """The recording folders in ``data`` in mouse order (the synthetic animal ids are 90000 + mouse)."""
    return sorted(p for p in data.glob("static*-GrayImageNet-*") if p.is_dir())


def ensure_synthetic(scale: str, seed: int, data: Path | None = None) -> tuple[Path, float | None]:
    """``data`` (default :func:`default_data_dir`) holding the recordings of ``scale``; synthesised with
    ``sensorium synth --scale`` when it holds none. Returns (folder, synthesis seconds or None: reused)."""
    from pipeline.data.synth import scale_configs

    data = data or default_data_dir(scale, seed)
    wanted = len(scale_configs(scale, seed))
    if len(recordings(data)) == wanted and all(
        p.with_name(p.name + ".zip").exists() for p in recordings(data)
    ):
        return data, None
    print(f"synthesising {wanted} {scale}-scale recordings into {data} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    # mice in parallel where cores and memory allow (a full-size mouse needs ~8 GB while generated)
    jobs = max(1, min(wanted, os.cpu_count() or 1, int(psutil.virtual_memory().available // (9 * GIB))))
    cmd = [*CLI, "synth", "--scale", scale, "--seed", str(seed)]
    cmd += ["--jobs", str(jobs)]
    subprocess.run([*cmd, "--out", str(data)], cwd=REPO, check=True, stdout=sys.stderr)
    return data, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------
# a throwaway pipeline home with its own embedded database
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_home(keep: Path | None = None) -> Iterator[dict[str, str]]:
    """An environment whose ``SENSORIUM_HOME`` is a new folder with a started embedded server.

    The server is started before the caller measures anything (its first start runs initdb), and
    stopped and the folder removed afterwards unless ``keep`` names a folder to use and keep.
    """
    from pipeline.database import stop_embedded_server

    # short path: the server's Unix socket lives in the folder (107-byte limit)
    home = keep or Path(tempfile.mkdtemp(prefix="sb-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "SENSORIUM_"))}
    env.update(SENSORIUM_HOME=str(home), PYTHONPATH=str(REPO))
    subprocess.run(
        [*CLI, "db", "status"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    try:
        yield env
    finally:
        if keep is None:
            stop_embedded_server(home / "db")
            shutil.rmtree(home, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# measured child processes
# ----------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """One child process: exit code, wall seconds, peak RSS (bytes) and its output."""

    returncode: int
    wall_s: float
    peak_rss: int
    stdout: str

    def check(self, what: str) -> Measured:
        if self.returncode != 0:
            raise SystemExit(f"{what} failed (exit {self.returncode}):\n{self.stdout[-3000:]}")
        return self


def run_measured(cmd: list[str], env: dict[str, str], show_stderr: bool = False) -> Measured:
    """Run ``cmd`` and measure it: peak RSS is the kernel's high-water mark of the child (``wait4``).
    Its output is captured; with ``show_stderr`` its stderr (progress lines) goes to ours instead."""
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        stderr = None if show_stderr else subprocess.STDOUT
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        return Measured(proc.returncode, wall, usage.ru_maxrss * 1024, log.read())


class RssSampler:
    """Peak RSS of a process tree (the process and its children), sampled every ``interval`` seconds.

    For stages inside one process (``ru_maxrss`` only knows the whole life): ``mark(name)`` records the
    peak since the previous mark under ``name``.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.stages: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def mark(self, name: str) -> int:
        self.peak = max(self.peak, self._rss())
        self.stages[name], self.peak = self.peak, 0
        return self.stages[name]

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Aligned plain text: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        out = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
