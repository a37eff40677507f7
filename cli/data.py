"""``sensorium synth`` and ``sensorium ingest``: recordings in."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import UsageError, activate, check_path, out
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.data.synth import StimulusModel

# SynthConfig / write_synthetic / TeacherWorld argument -> the synth flag that sets it, for error messages
SYNTH_FLAGS = {
    "n_neurons": "--neurons",
    "n_trials": "--trials",
    "seed": "--seed",
    "n_mice": "--mice",
    "teacher": "--teacher",
    "teacher_scans": "--teacher-scan",
    "rf_jitter": "--rf-jitter",
}
# the flags of the teacher world, which --stimulus teacher needs or allows
TEACHER_FLAGS = (("--teacher", "teacher"), ("--rf-jitter", "rf_jitter"), ("--teacher-scan", "teacher_scan"))


def _blocking_file(folder: Path) -> Path | None:
    """The existing non-folder at ``folder`` or above it, which would stop the folder being created."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def cmd_synth(args: argparse.Namespace) -> int:
    """Write synthetic recordings; a bad argument is one ``error:`` line and exit code 2, nothing written."""
    from pipeline.data.synth import (
        SynthConfig,
        SynthConfigError,
        mouse_configs,
        scale_configs,
        truth_path,
        write_configs,
    )

    blocking = _blocking_file(args.out)
    if blocking is not None:
        out(f"error: --out: expected a folder, found a file at {blocking}")
        return 2
    if args.jobs < 1:
        out(f"error: --jobs: expected a positive integer, found {args.jobs}")
        return 2
    if args.stimulus != "teacher":
        stray = [flag for flag, name in TEACHER_FLAGS if getattr(args, name) is not None]
        if stray:
            out(f"error: {stray[0]}: only with --stimulus teacher (the default stimulus is gabor)")
            return 2
    elif args.teacher is None:
        out("error: --stimulus teacher: needs --teacher FILE.pth (the starter kit's SOTA model)")
        return 2
    sizes = (("--mice", args.mice), ("--neurons", args.neurons), ("--trials", args.trials))
    sized = [flag for flag, value in sizes if value is not None]
    if args.scale is not None and (sized or args.competition):
        given = ", ".join(sized + (["--competition"] if args.competition else []))
        out(f"error: --scale {args.scale} sets the sizes itself; drop {given}")
        return 2

    def written(folder: Path) -> None:
        zip_note = "" if args.no_zip else f" (+ {folder.name}.zip)"
        sidecar = truth_path(folder).name
        out(f"wrote {folder}{zip_note}; ground truth {sidecar} [{time.perf_counter() - start:.1f} s]")

    start = time.perf_counter()
    try:
        # SynthConfig and write_synthetic check every argument before anything is written
        if args.scale is not None:
            configs = scale_configs(args.scale, seed=args.seed)
        else:
            cfg = SynthConfig(
                n_neurons=150 if args.neurons is None else args.neurons,
                n_trials=1000 if args.trials is None else args.trials,
                seed=args.seed,
                competition=args.competition,
            )
            n_mice = 2 if args.mice is None else args.mice
            configs = mouse_configs(n_mice, cfg)
        stimulus = None
        if args.stimulus == "teacher":
            stimulus, error = _teacher_world(args)  # the file is read and checked here, before writing
            if error is not None:
                out(error)
                return 2
        write_configs(
            args.out, configs, make_zip=not args.no_zip, on_written=written, jobs=args.jobs, stimulus=stimulus
        )
    except SynthConfigError as err:
        flag = SYNTH_FLAGS.get(err.field, err.field)
        out(f"error: {flag}: expected {err.expected}, found {err.found!r}")
        return 2
    except OSError as err:  # e.g. --out in a folder without write permission
        out(f"error: --out: cannot write {err.filename or args.out}: {err.strerror or err}")
        return 2
    out(f"{len(configs)} recording(s) in {time.perf_counter() - start:.1f} s")
    return 0


def _teacher_world(args: argparse.Namespace) -> tuple[StimulusModel | None, str | None]:
    """(the teacher world of the flags, None), its file read and checked; or (None, the error line) for
    a file that is not the starter kit's model or an unknown --teacher-scan.

    Raises:
        SynthConfigError: a bad --rf-jitter.
    """
    from pipeline.data.teacher import DEFAULT_RF_JITTER, TeacherError, TeacherWorld

    world = TeacherWorld(
        args.teacher,
        rf_jitter=DEFAULT_RF_JITTER if args.rf_jitter is None else args.rf_jitter,
        scans=tuple(args.teacher_scan or ()),
    )
    try:
        world.load()
    except TeacherError as err:
        return None, f"error: {SYNTH_FLAGS.get(err.field, err.field)}: {err}"
    return world, None


def check_recording_path(path: Path) -> None:
    """Refuse, before the database is started, a path that cannot be a recording: nothing there, an
    unreadable one, or a file that is not a .zip archive (the full format check comes with the ingest).

    Raises:
        UsageError: naming the path.
    """
    import zipfile  # standard library; reads only the archive's directory record at its end

    if not path.exists():
        raise UsageError(f"{path}: expected a recording folder or .zip file, found nothing at this path")
    check_path(path, "recording", kind="any")  # readable (a folder: also listable)
    if path.is_dir():
        return
    if path.suffix != ".zip":
        raise UsageError(
            f"{path}: expected a recording folder or .zip file, found a file with suffix {path.suffix!r}"
        )
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as err:
        raise UsageError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if not is_zip:
        raise UsageError(f"{path}: expected a .zip archive, found a file that is not one")


def cmd_ingest(args: argparse.Namespace) -> int:
    """Ingest the recordings; every path is checked first, so a typo stops the command before it
    starts the database (a recording whose content is wrong is reported and skipped)."""
    for path in args.paths:
        check_recording_path(path)
    settings = activate()
    return 1 if ingest_each(settings, args.paths, progress=not args.quiet) else 0


def ingest_each(settings: Settings, paths: list[Path], progress: bool) -> int:
    """Ingest each recording, one result line each; a bad one is reported and skipped. Returns failures."""
    from usecases.deployment import ingest_one

    failures = 0
    for path in paths:
        step = ingest_one(settings, path, progress)
        out(step.text)
        failures += not step.ok
    return failures


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write synthetic recordings with ground truth")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--scale",
        choices=["demo", "full"],
        help="named sizes instead of --mice/--neurons/--trials: demo (the 2 recordings of make demo) or "
        "full (the 6 SENSORIUM+ recordings at their real sizes, the last competition-style; ~1 min and "
        "~8 GB of memory per recording, 2.6 GB on disk per recording with its zip)",
    )
    p.add_argument("--mice", type=int, help="number of recordings (default 2)")
    p.add_argument("--neurons", type=int, help="neurons per recording (default 150)")
    p.add_argument("--trials", type=int, help="trials per recording (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--competition",
        action="store_true",
        help="make the last recording competition-style "
        "(hashed trial_idx, final_test tier, zeroed test responses)",
    )
    p.add_argument(
        "--stimulus",
        choices=["gabor", "teacher"],
        default="gabor",
        help="where the neurons' image drive comes from: gabor (Gabor / energy filters at a smooth "
        "retinotopy; default) or teacher (a pretrained starter-kit model of real mouse V1, --teacher; "
        "see docs/teacher-world.md)",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        metavar="FILE.pth",
        help="with --stimulus teacher: the starter kit's sensorium_p_sota_model.pth (a state_dict, read "
        "with weights_only)",
    )
    p.add_argument(
        "--rf-jitter",
        type=float,
        metavar="PIXELS",
        help="with --stimulus teacher: std of each neuron's receptive-field jitter around the teacher's "
        "retinotopic map, pixels per axis at its 36x64 input (default 2.5; 0: the teacher's positions)",
    )
    p.add_argument(
        "--teacher-scan",
        action="append",
        metavar="DATA_KEY",
        help="with --stimulus teacher: draw neurons from this readout of the teacher only (repeatable; "
        "default: all of its readouts)",
    )
    p.add_argument("--no-zip", action="store_true", help="write folders only")
    p.add_argument("--jobs", type=int, default=1, help="recordings generated at once (processes; default 1)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="validate recordings (folders or .zip) and store them")
    # -q (no progress bars) is the global option, which every command takes
    p.add_argument("paths", nargs="+", type=Path, help="recording folders or .zip files")
    p.set_defaults(func=cmd_ingest)
