"""``sensorium convert``: a lab's own arrays (an ``.npz``) into a recording ``sensorium ingest`` reads."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cli.common import out


def cmd_convert(args: argparse.Namespace) -> int:
    """Check the arrays, write the recording; a bad input is one ``error:`` line, exit 2, nothing written."""
    from pipeline.data.convert import ConvertError, convert, load_npz
    from pipeline.data.recording import data_key_from_name

    start = time.perf_counter()
    try:
        folder, zip_path = convert(load_npz(args.source), args.out, make_zip=args.zip)
    except ConvertError as err:
        if err.field == "--from":
            out(f"error: --from: expected {err.expected}, found {err.found}")
        elif err.field == "out":
            out(f"error: --out: expected {err.expected}, found {err.found}")
        else:
            out(f"error: {args.source}: {err}")
        return 2
    except OSError as err:  # e.g. --out in a folder without write permission, a full disk
        out(f"error: --out: cannot write {err.filename or args.out}: {err.strerror or err}")
        return 2
    zip_note = "" if zip_path is None else f" (+ {zip_path.name})"
    key = data_key_from_name(folder.name)
    seconds = time.perf_counter() - start
    out(f"wrote {folder}{zip_note}: data key {key} [{seconds:.1f} s]; next: sensorium ingest {folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="write a recording in the SENSORIUM format from named arrays in an .npz (docs/real-data.md)",
        description="Arrays (np.savez names): images (T,H,W), responses (T,N), behavior (T,3), "
        "pupil_center (T,2), tiers (T,), frame_trial_ts (T,), cell_motor_coordinates (N,3); optional "
        "unit_ids, animal_id, session, scan_idx, frame_image_id, trial_idx, area, layer. "
        "See docs/real-data.md.",
    )
    p.add_argument("--from", dest="source", type=Path, required=True, metavar="FILE.npz", help="the arrays")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FOLDER",
        help="folder to write static<animal>-<session>-<scan>-GrayImageNet-<hash>/ into (never replaced)",
    )
    p.add_argument("--zip", action="store_true", help="also write the recording's .zip beside the folder")
    p.set_defaults(func=cmd_convert)
