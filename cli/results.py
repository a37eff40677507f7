"""``sensorium scores``, ``predict`` and ``submit``: results out."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cli.common import UsageError, activate, out

if TYPE_CHECKING:
    from usecases.submissions import SubmissionFile

_TIER_ORDER = {"train": 0, "validation": 1, "test": 2, "final_test": 3}


def format_scores(rows: list[dict]) -> str:
    """The score table: models and ensembles next to the two oracles per scan and tier (* = contaminated).

    ``oracle``: the planted expected response (synthetic scans; '-' elsewhere), ``ratio`` the model's
    share of it; ``LOO``: the leave-one-out oracle from repeated images (any scan, tiers with repeats).
    """

    def f(x, mark=" "):
        return "     - " if x is None else f"{x:6.3f}{mark}"

    lines = [
        f"{'model':<24} {'member':<11} {'scan':<12} {'tier':<11} {'trials':>6}  "
        f"{'corr':>7} {'oracle':>7} {'ratio':>7} {'LOO':>7}  {'c-avg':>7} {'FEVE':>7} {'oFEVE':>7}"
    ]
    for r in sorted(rows, key=lambda r: (r["model"], r["member"], r["data_key"], _TIER_ORDER[r["tier"]])):
        o = r["oracle_single_trial_correlation"]
        ratio = r["single_trial_correlation"] / o if o is not None and o > 0 else None  # as report and views
        mark = "*" if r["contaminated"] else " "
        lines.append(
            f"{r['model']:<24} {r['member']:<11} {r['data_key']:<12} {r['tier']:<11} {r['n_trials']:>6}  "
            f"{f(r['single_trial_correlation'], mark)} {f(o)} {f(ratio)} "
            f"{f(r.get('loo_oracle_single_trial_correlation'))}  "
            f"{f(r['correlation_to_average'], mark)} {f(r['feve'], mark)} {f(r['oracle_feve'])}"
        )
    if any(r["contaminated"] for r in rows):
        lines.append(
            "* contaminated: the model (or an ensemble member) trained on trials of this tier; "
            "test tiers are the clean numbers"
        )
    if any(r.get("loo_oracle_single_trial_correlation") is not None for r in rows):
        lines.append(
            "LOO: leave-one-out oracle (each repeat against the mean of the other repeats of its image), "
            "the ceiling of a stimulus-only model; models using behaviour, history and state can exceed it"
        )
    return "\n".join(lines)


def cmd_scores(args: argparse.Namespace) -> int:
    activate()
    from usecases.queries import UnknownNameError, require_names, score_rows

    try:
        require_names("experiment", args.experiment)
        require_names("ensemble", args.ensemble)
    except UnknownNameError as err:
        out(f"error: {err}")
        return 2
    rows = score_rows(args.experiment, args.ensemble)
    if args.json:
        out(json.dumps(rows, indent=2))
    elif not rows:
        out("no scores yet: run `sensorium populate` (or `sensorium train FILE.yaml`)")
    else:
        out(format_scores(rows))
    return 0


def out_file_problem(path: Path, flag: str = "--out") -> str | None:
    """Why the output file ``path`` cannot be written, checked before any work (None: nothing seen).

    Its folder may be missing (it is created), but the nearest existing folder above it must be a folder
    this process may write in, and ``path`` itself must not be a folder.
    """
    if path.is_dir():
        return f"{flag} {path}: is a folder; expected a file name"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{flag} {path}: {parent} is a file, not a folder"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{flag} {path}: cannot write in {parent} (permission denied)"
            return None
    return None


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    problem = out_file_problem(args.out)
    if problem:  # before the database: nothing is computed for an output that cannot be written
        out(f"error: {problem}")
        return 2
    if (args.experiment is None) == (args.ensemble is None):
        both = args.experiment is not None
        out(f"error: give --experiment or --ensemble{', not both' if both else ''}")
        return 2
    activate()
    from usecases.queries import prediction_arrays

    try:
        arrays = prediction_arrays(args.experiment, args.ensemble, args.seed, args.tier)
    except LookupError as err:
        out(f"error: {err}")
        return 2
    if not arrays:
        out(f"error: no trials in tier {args.tier!r}")
        return 2
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "wb") as handle:  # a handle: numpy would add .npz to a name without it
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy types savez(file, *args, **kwds) too narrowly
    except OSError as err:
        out(f"error: --out {args.out}: cannot write the file ({err.strerror or err})")
        return 2
    out(f"wrote {args.out} ({', '.join(sorted({k.split('/')[0] for k in arrays}))}, tier {args.tier})")
    return 0


def _writable_folder(path: Path, what: str) -> None:
    """Refuse, before the database starts, an output folder that is a file or lies under one."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UsageError(f"{what}: cannot write {path}: {p} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise UsageError(f"{what}: cannot write {path}: no permission in {p}")
            return


def cmd_submit(args: argparse.Namespace) -> int:
    if args.out is not None:
        _writable_folder(Path(args.out), "--out")
    if args.check is not None:  # one line before the database, not a problem line naming the file twice
        try:
            args.check.open("rb").close()
        except OSError as err:
            out(f"error: --check {args.check}: cannot read the file ({err.strerror or type(err).__name__})")
            return 2
    activate()
    from usecases.queries import UnknownNameError
    from usecases.submissions import SubmissionError, check_submission, submit_ensemble

    if args.check is not None:
        if not args.scan:
            out("error: --check needs --scan DATA_KEY")
            return 2
        try:
            tier, problems = check_submission(args.check, args.scan, args.tier)
        except UnknownNameError as err:  # one line, not one problem per line of the file
            out(f"error: {err}")
            return 2
        for p in problems:
            out(f"problem: {p}")
        verdict = "valid" if not problems else f"{len(problems)} problem(s)"
        out(f"{args.check}: {verdict} for {args.scan} {tier}")
        return 1 if problems else 0
    if not args.ensemble or not args.out:
        out("error: give --ensemble NAME --out DIR (or --check FILE --scan KEY)")
        return 2
    invalid = 0
    try:
        for f in submit_ensemble(args.ensemble, args.out, record=not args.no_record):
            invalid += bool(f.problems)
            _show_submission_file(f)
    except UnknownNameError as err:
        out(f"error: {err}")
        return 2
    except (LookupError, SubmissionError) as err:
        out(f"error: {err}")
        return 1
    return 1 if invalid else 0


def _show_submission_file(f: SubmissionFile) -> None:
    """One written file: its problems, or its trials, checksum and whether it was recorded."""
    for p in f.problems:
        out(f"problem: {p}")
    if f.problems:
        out(f"{f.path}: INVALID, not recorded")
    elif not f.recorded:
        note = "(not recorded: --no-record)"
        out(f"{f.path}: {f.n_trials} trials, valid, sha256 {f.checksum[:12]}... {note}")
    else:
        out(f"{f.path}: {f.n_trials} trials, valid, recorded, sha256 {f.checksum[:12]}...")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scores", help="model and ensemble scores next to the oracles, per scan and tier")
    p.add_argument("--experiment", help="only this experiment")
    p.add_argument("--ensemble", help="only this ensemble")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scores)

    p = sub.add_parser("predict", help="export predictions, targets, trial ids and neuron ids of one tier")
    p.add_argument("--experiment", help="an experiment's model")
    p.add_argument("--ensemble", help="an ensemble (mean of its members' stored predictions)")
    p.add_argument("--tier", required=True, choices=["train", "validation", "test", "final_test"])
    p.add_argument("--seed", type=int, help="which member when the experiment has several seeds")
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("submit", help="write and validate competition submission files, or check one")
    p.add_argument("--ensemble", help="ensemble whose mean predictions are submitted")
    p.add_argument("--out", type=Path, help="output folder")
    p.add_argument("--check", type=Path, help="validate this file instead of writing")
    p.add_argument(
        "--no-record",
        action="store_true",
        help="write and validate, but add no Submission row (read-only logins)",
    )
    p.add_argument("--scan", help="data key the checked file is for")
    p.add_argument(
        "--tier", choices=["test", "final_test"], help="tier of the checked file (default: from its name)"
    )
    p.set_defaults(func=cmd_submit)
