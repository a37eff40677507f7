"""Execute the notebooks of ``notebooks/`` in a throwaway world and keep executed copies for the docs site.

Run from the repository root::

    .venv/bin/python docs/render_notebooks.py

What it does: makes a temporary world (embedded PostgreSQL, object store, caches) holding two synthetic
recordings as ``make demo`` writes them, executes the four notebooks in order with nbclient (notebook 1
ingests, 2 trains the notebooks' own experiment, 3 explores and loads a model, 4 submits and cleans
up), and writes each executed notebook to ``docs/notebooks/`` with its outputs. The copies are cleaned
so that re-rendering changes only what really changed: no timing metadata, no standard-error streams,
and the temporary folder's path replaced by a fixed placeholder. The world is stopped and deleted at the
end, also when a cell fails; a failing cell stops the script with one line naming the notebook (exit 1).

The docs site renders ``docs/notebooks/`` as it is, without executing anything. Re-run this script after
changing a notebook: ``tests/unit/test_notebooks_clean.py`` checks that every copy has the same cells as
its notebook.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "notebooks"
TARGET = REPO / "docs" / "notebooks"
#: what the temporary world's path becomes in the copies (it differs on every run)
PLACEHOLDER = "/tmp/sensorium-docs"
#: notebook-level metadata kept in the copies; everything else (widgets, timings, ...) is dropped
KEPT_METADATA = ("kernelspec", "language_info")
#: the largest executed copy accepted (the docs site serves them as they are)
MAX_BYTES = 2_000_000


class RenderError(RuntimeError):
    """A notebook could not be executed (the message names it and the error of the failing cell)."""


def clean(book, world: str):
    """``book`` with run-specific noise removed: timings, stderr streams, the temporary world's path."""
    book.metadata = {k: v for k, v in book.metadata.items() if k in KEPT_METADATA}
    for cell in book.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                continue  # warnings and progress bars of libraries: not what the notebook shows
            if output.output_type == "stream":
                output.text = output.text.replace(world, PLACEHOLDER)
            for mime in ("text/plain", "text/html"):
                if mime in output.get("data", {}):
                    output.data[mime] = output.data[mime].replace(world, PLACEHOLDER)
            kept.append(output)
        cell.outputs = kept
    return book


def render(paths: list[Path], target: Path, timeout_s: int) -> list[tuple[Path, float, int]]:
    """Execute ``paths`` in order in one temporary world; write the cleaned copies to ``target``.

    Returns (copy, seconds, bytes) per notebook.

    Raises:
        RenderError: a cell failed (nothing of that notebook or the ones after it is written).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from pipeline.data.synth import SynthConfig, write_synthetic
    from pipeline.database import remove_embedded_server

    done = []
    with tempfile.TemporaryDirectory(prefix="sensorium-docs-") as tmp:
        world = Path(tmp)
        home, data = world / "home", world / "data"
        # the recordings of `make demo`: two mice, seed 0, the second one competition-style
        write_synthetic(data / "demo", 2, SynthConfig(seed=0, competition=True))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "SENSORIUM_"))}
        env.update(
            SENSORIUM_HOME=str(home),
            SENSORIUM_DATA=str(data),
            SENSORIUM_DEVICE="cpu",  # the same numbers on any machine that renders them
            PYTHONWARNINGS="ignore",
        )
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)  # the kernels inherit this environment
        try:
            target.mkdir(parents=True, exist_ok=True)
            for path in paths:
                started = time.monotonic()
                book = nbformat.read(path, as_version=4)
                client = NotebookClient(
                    book,
                    timeout=timeout_s,
                    kernel_name="python3",
                    resources={"metadata": {"path": str(path.parent)}},
                )
                try:
                    client.execute()
                except CellExecutionError as e:
                    last = [line for line in str(e).splitlines() if line.strip()][-1]
                    raise RenderError(f"{path.name}: a cell failed: {last}") from None
                out = target / path.name
                nbformat.write(clean(book, str(world)), out)
                done.append((out, time.monotonic() - started, out.stat().st_size))
        finally:
            os.environ.clear()
            os.environ.update(saved)
            remove_embedded_server(home / "db")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=TARGET, help=f"where the copies go (default {TARGET})")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds one cell may run (default 1200)")
    args = parser.parse_args(argv)
    paths = sorted(SOURCE.glob("*.ipynb"))
    if not paths:
        print(f"error: no notebooks in {SOURCE}", file=sys.stderr)
        return 1
    try:
        done = render(paths, args.out, args.timeout)
    except RenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for out, seconds, size in done:
        shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
        print(f"{shown}: {seconds:.0f} s, {size // 1024} KiB")
        if size > MAX_BYTES:
            print(
                f"error: {out.name} is {size} bytes (over {MAX_BYTES}): draw smaller figures", file=sys.stderr
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
