"""The ``sensorium`` console script: the composition root.

Database commands import ``schemas`` (and with it DataJoint) lazily, so that ``sensorium synth`` and
``--help`` work without a database.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from pipeline.settings import SettingsError, load_settings

log = logging.getLogger("sensorium")


def _out(text: str = "") -> None:
    """Command output (results for the user), as opposed to log messages on stderr."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace) -> int:
    from pipeline.data.synth import SynthConfig, truth_path, write_synthetic

    cfg = SynthConfig(
        n_neurons=args.neurons, n_trials=args.trials, seed=args.seed, competition=args.competition
    )
    start = time.perf_counter()
    folders = write_synthetic(args.out, args.mice, cfg, make_zip=not args.no_zip)
    for folder in folders:
        zip_note = "" if args.no_zip else f" (+ {folder.name}.zip)"
        _out(f"wrote {folder}{zip_note}; ground truth {truth_path(folder).name}")
    _out(f"{len(folders)} recording(s) in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import schemas
    from pipeline.data.format import RecordingFormatError
    from schemas.data import IngestConflictError, ingest

    settings = load_settings()
    schemas.activate(settings=settings)
    failures = 0
    for path in args.paths:
        start = time.perf_counter()
        try:
            result = ingest(
                path, cache_dir=settings.cache_dir, data_root=settings.data_root, progress=not args.quiet
            )
        except (RecordingFormatError, IngestConflictError) as err:
            failures += 1
            _out(f"error: {err}")
            continue
        verb = "ingested" if result.status == "inserted" else "already stored (no change)"
        _out(f"{result.data_key}: {verb} from {path} [{time.perf_counter() - start:.1f} s]")
    return 1 if failures else 0


def cmd_db_status(args: argparse.Namespace) -> int:
    import schemas

    settings = load_settings()
    conn = schemas.activate(settings=settings)
    counts = schemas.table_counts(conn, settings.db_prefix)
    status = {
        "backend": "postgresql",
        "embedded": settings.database.embedded,
        "host": settings.database.host,
        "port": settings.database.port,
        "prefix": settings.db_prefix,
        "home": str(settings.home),
        "store": {k: v for k, v in settings.store_spec.items() if "secret" not in k and "key" not in k},
        "tables": counts,
    }
    if args.json:
        _out(json.dumps(status, indent=2))
        return 0
    where = "embedded pgserver" if settings.database.embedded else "external server"
    _out(f"backend   postgresql ({where})")
    _out(f"host      {settings.database.host}:{settings.database.port}")
    _out(f"prefix    {settings.db_prefix}")
    _out(f"store     {status['store']}")
    for schema, tables in counts.items():
        _out(f"\n{schema}")
        for table, n in tables.items():
            _out(f"  {table:<40} {n:>10}")
    return 0


def cmd_db_stop(args: argparse.Namespace) -> int:
    from pipeline.database import stop_embedded_server

    settings = load_settings()
    if not settings.database.embedded:
        _out("DJ_HOST is set: the server is not the embedded one; nothing to stop")
        return 0
    stopped = stop_embedded_server(settings.db_dir)
    _out(f"embedded server in {settings.db_dir}: {'stopped' if stopped else 'was not running'}")
    return 0


def _activate():
    import schemas

    settings = load_settings()
    schemas.activate(settings=settings)
    return settings


def cmd_experiment_add(args: argparse.Namespace) -> int:
    from pipeline.configs import ConfigError
    from pipeline.experiments import load_experiment

    try:
        spec = load_experiment(args.file, args.set)
    except ConfigError as err:
        _out(f"error: {args.file}: {err}")
        return 2
    _activate()
    from schemas.fabrik import add_experiment

    try:
        add_experiment(spec, args.fabrikant)
    except ConfigError as err:
        _out(f"error: {err}")
        return 2
    seeds = [seed for _, seed in spec.member_list()]
    _out(f"experiment {spec.name!r}: configs and {len(seeds)} member(s) (seeds {seeds}) are in the database")
    return 0


def _populate(queue: str, restriction, reserve_jobs: bool, max_calls: int | None) -> int:
    from schemas.workers import populate

    start = time.perf_counter()
    results = populate(
        queue, restriction, reserve_jobs=reserve_jobs, suppress_errors=True, max_calls=max_calls
    )
    failed = 0
    for table, result in results.items():
        errors = result.get("error_list", [])
        failed += len(errors)
        _out(f"{table:<14} {result.get('success_count', 0):>4} made, {len(errors)} failed")
        for key, message in errors:
            _out(f"  error for {key}: {message}")
    _out(f"populate finished in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


def cmd_populate(args: argparse.Namespace) -> int:
    if args.device:
        os.environ["SENSORIUM_DEVICE"] = args.device
    _activate()
    restriction = None
    if args.experiment:
        from schemas.fabrik import Experiment, experiment_models

        if not Experiment & {"experiment_name": args.experiment}:
            _out(f"error: no experiment named {args.experiment!r}; add it with `sensorium experiment add`")
            return 2
        restriction = experiment_models(args.experiment)
    return _populate(args.queue, restriction, args.reserve_jobs, args.max_calls)


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.experiments import load_experiment

    code = cmd_experiment_add(args)
    if code:
        return code
    spec = load_experiment(args.file, args.set)
    args.experiment, args.queue, args.max_calls = spec.name, "all", None
    return cmd_populate(args)


def _score_row(label: str, member: str, r: dict, oracle: dict, contaminated: bool) -> dict:
    o = oracle.get((r["data_key"], r["tier"]))
    return {
        "model": label,
        "member": member,
        "data_key": r["data_key"],
        "tier": r["tier"],
        "n_trials": r["n_trials"],
        "single_trial_correlation": r["single_trial_correlation"],
        "correlation_to_average": r["correlation_to_average"],
        "feve": r["feve"],
        "contaminated": contaminated,
        "oracle_single_trial_correlation": o["single_trial_correlation"] if o else None,
        "oracle_feve": o["feve"] if o else None,
    }


def _score_rows(experiment: str | None = None, ensemble: str | None = None) -> list[dict]:
    """Score rows of experiments' models and of ensembles, with the oracle beside them.

    ``contaminated`` marks a tier whose trials the model (or a member) trained on: the train tier, and
    the validation tier of re-split ensemble members (SPEC 3g). Test tiers are the headline.
    """
    from schemas.evaluation import Ensemble, EnsembleScore, ModelScore, OracleScore
    from schemas.fabrik import experiment_models

    oracle = {(r["data_key"], r["tier"]): r for r in OracleScore.to_dicts()}
    out = []
    if ensemble is None:
        # a trained model belongs to an experiment through all of its configs (model, trainer, dataset, seed)
        for r in (ModelScore * experiment_models(experiment)).to_dicts(
            order_by=("experiment_name", "seed", "data_key")
        ):
            out.append(
                _score_row(r["experiment_name"], f"seed {r['seed']}", r, oracle, r["trained_fraction"] > 0)
            )
    if experiment is None or ensemble is not None:
        ens = EnsembleScore * Ensemble.proj("n_members")
        if ensemble:
            ens = ens & {"ensemble_name": ensemble}
        for r in ens.to_dicts(order_by=("ensemble_name", "data_key")):
            label = f"{r['ensemble_name']} [ens]"
            out.append(_score_row(label, f"{r['n_members']} members", r, oracle, bool(r["contaminated"])))
    return out


_TIER_ORDER = {"train": 0, "validation": 1, "test": 2, "final_test": 3}


def format_scores(rows: list[dict]) -> str:
    """The score table: models and ensembles next to the oracle per scan and tier (* = contaminated)."""

    def f(x, mark=" "):
        return "     - " if x is None else f"{x:6.3f}{mark}"

    lines = [
        f"{'model':<24} {'member':<11} {'scan':<12} {'tier':<11} {'trials':>6}  "
        f"{'corr':>7} {'oracle':>7} {'ratio':>7}  {'c-avg':>7} {'FEVE':>7} {'oFEVE':>7}"
    ]
    for r in sorted(rows, key=lambda r: (r["model"], r["member"], r["data_key"], _TIER_ORDER[r["tier"]])):
        o = r["oracle_single_trial_correlation"]
        ratio = r["single_trial_correlation"] / o if o else None
        mark = "*" if r["contaminated"] else " "
        lines.append(
            f"{r['model']:<24} {r['member']:<11} {r['data_key']:<12} {r['tier']:<11} {r['n_trials']:>6}  "
            f"{f(r['single_trial_correlation'], mark)} {f(o)} {f(ratio)}  "
            f"{f(r['correlation_to_average'], mark)} {f(r['feve'], mark)} {f(r['oracle_feve'])}"
        )
    if any(r["contaminated"] for r in rows):
        lines.append(
            "* contaminated: the model (or an ensemble member) trained on trials of this tier; "
            "test tiers are the clean numbers"
        )
    return "\n".join(lines)


def cmd_scores(args: argparse.Namespace) -> int:
    _activate()
    rows = _score_rows(args.experiment, args.ensemble)
    if args.json:
        _out(json.dumps(rows, indent=2))
    elif not rows:
        _out("no scores yet: run `sensorium populate` (or `sensorium train FILE.yaml`)")
    else:
        _out(format_scores(rows))
    return 0


def _predictions_of(experiment: str | None, ensemble: str | None, seed: int | None) -> dict:
    """{data_key: (T, N) predictions} of one experiment model or of an ensemble (stored, not recomputed)."""
    from schemas.evaluation import Ensemble, Prediction, ensemble_predictions
    from schemas.fabrik import experiment_models

    if ensemble is not None:
        if not Ensemble & {"ensemble_name": ensemble}:
            raise LookupError(f"no ensemble named {ensemble!r}")
        members = (Ensemble.Member & {"ensemble_name": ensemble}).keys()
        keys = set.intersection(
            *({r["data_key"] for r in (Prediction.PerScan & m).proj().to_dicts()} for m in members)
        )
        if not keys:
            raise LookupError(
                f"ensemble {ensemble!r} has no member predictions yet; run `sensorium populate`"
            )
        return {k: ensemble_predictions({"ensemble_name": ensemble}, k) for k in sorted(keys)}
    exp = experiment_models(experiment)
    if seed is not None:
        exp = exp & {"seed": seed}
    per_scan = Prediction.PerScan & exp
    models = {(r["dataset_hash"], r["seed"]) for r in per_scan.proj().to_dicts()}
    if not models:
        raise LookupError(f"no predictions for experiment {experiment!r}; run `sensorium populate` first")
    if len(models) > 1:
        seeds = sorted({s for _, s in models})
        raise LookupError(
            f"experiment {experiment!r} has {len(models)} models (seeds {seeds}); choose one with --seed "
            "(members sharing a seed on different splits: use an ensemble)"
        )
    return {r["data_key"]: r["predictions"] for r in per_scan.to_dicts(order_by="data_key")}


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    _activate()
    from schemas.evaluation import _targets, tier_ids

    if (args.experiment is None) == (args.ensemble is None):
        _out("error: give --experiment or --ensemble")
        return 2
    try:
        sources = _predictions_of(args.experiment, args.ensemble, args.seed)
    except LookupError as err:
        _out(f"error: {err}")
        return 1
    arrays = {}
    for k, predictions in sources.items():
        targets, _, _ = _targets(k)
        idx, ids = tier_ids(k, args.tier)
        if len(idx) == 0:
            continue
        arrays[f"{k}/predictions"] = np.asarray(predictions)[idx]
        arrays[f"{k}/targets"] = targets[idx]
        arrays[f"{k}/trial_id"] = idx
        arrays[f"{k}/trial_idx"] = ids.trial_idx
        arrays[f"{k}/image_ids"] = ids.image_ids
        arrays[f"{k}/neuron_ids"] = ids.unit_ids
    if not arrays:
        _out(f"error: no trials in tier {args.tier!r}")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    _out(f"wrote {args.out} ({', '.join(sorted({k.split('/')[0] for k in arrays}))}, tier {args.tier})")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    import numpy as np

    from pipeline.scoring.submission import FILE_NAMES, file_name, validate_submission, write_submission

    _activate()
    from schemas.evaluation import Submission, tier_ids

    if args.check is not None:
        if not args.scan:
            _out("error: --check needs --scan DATA_KEY")
            return 2
        tier = args.tier or ("final_test" if "final_test" in args.check.name else "test")
        _, ids = tier_ids(args.scan, tier)
        problems = validate_submission(args.check, ids)
        for p in problems:
            _out(f"problem: {p}")
        verdict = "valid" if not problems else f"{len(problems)} problem(s)"
        _out(f"{args.check}: {verdict} for {args.scan} {tier}")
        return 1 if problems else 0
    if not args.ensemble or not args.out:
        _out("error: give --ensemble NAME --out DIR (or --check FILE --scan KEY)")
        return 2
    try:
        sources = _predictions_of(None, args.ensemble, None)
    except LookupError as err:
        _out(f"error: {err}")
        return 1
    # everything is prepared and checked before the first file is written
    jobs = []
    for k, predictions in sources.items():
        for tier in FILE_NAMES:
            idx, ids = tier_ids(k, tier)
            if len(idx) == 0:
                continue
            values = np.asarray(predictions)[idx]
            if not np.all(np.isfinite(values)):
                _out(f"error: {args.ensemble!r} predicts non-finite values for {k} {tier}; nothing written")
                return 1
            jobs.append((k, tier, idx, ids, values))
    failed = 0
    for k, tier, idx, ids, values in jobs:
        path = args.out / file_name(k, tier)
        checksum = write_submission(path, ids, values)
        problems = validate_submission(path, ids)
        for p in problems:
            _out(f"problem: {p}")
        if problems:  # never record a file that does not pass the validator
            failed += 1
            _out(f"{path}: INVALID, not recorded")
            continue
        key = {"ensemble_name": args.ensemble, "data_key": k, "tier": tier}
        row = dict(key, path=str(path.resolve()), checksum=checksum, n_trials=len(idx), file=str(path))
        with Submission.connection.transaction:
            (Submission & key).delete_quick()
            Submission.insert1(row)
        _out(f"{path}: {len(idx)} trials, valid, recorded, sha256 {checksum[:12]}...")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensorium", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write synthetic recordings with ground truth")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--mice", type=int, default=2, help="number of recordings (default 2)")
    p.add_argument("--neurons", type=int, default=150, help="neurons per recording (default 150)")
    p.add_argument("--trials", type=int, default=1000, help="trials per recording (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--competition",
        action="store_true",
        help="make the last recording competition-style "
        "(hashed trial_idx, final_test tier, zeroed test responses)",
    )
    p.add_argument("--no-zip", action="store_true", help="write folders only")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="validate recordings (folders or .zip) and store them")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_ingest)

    exp = sub.add_parser("experiment", help="experiment files").add_subparsers(
        dest="exp_command", required=True
    )
    p = exp.add_parser("add", help="validate an experiment YAML and insert its configs and seeds")
    _experiment_args(p)
    p.set_defaults(func=cmd_experiment_add)

    p = sub.add_parser("train", help="add an experiment, then populate its models and scores")
    _experiment_args(p)
    p.add_argument("--device", help="torch device (default: SENSORIUM_DEVICE or auto)")
    p.add_argument("--reserve-jobs", action="store_true", help="use the job queue (several workers)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("populate", help="train, predict and score everything declared but not yet computed")
    p.add_argument("--queue", default="all", choices=["all", "gpu", "cpu"], help="which tables (default all)")
    p.add_argument("--experiment", help="only this experiment")
    p.add_argument("--device", help="torch device (default: SENSORIUM_DEVICE or auto)")
    p.add_argument("--reserve-jobs", action="store_true", help="use the job queue (several workers)")
    p.add_argument("--max-calls", type=int, help="at most this many keys per table")
    p.set_defaults(func=cmd_populate)

    p = sub.add_parser("scores", help="model and ensemble scores next to the oracle, per scan and tier")
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
    p.add_argument("--scan", help="data key the checked file is for")
    p.add_argument(
        "--tier", choices=["test", "final_test"], help="tier of the checked file (default: from its name)"
    )
    p.set_defaults(func=cmd_submit)

    db = sub.add_parser("db", help="database commands").add_subparsers(dest="db_command", required=True)
    p = db.add_parser("status", help="backend, host, prefix and row counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_status)
    p = db.add_parser("stop", help="stop the embedded PostgreSQL server")
    p.set_defaults(func=cmd_db_stop)
    return parser


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="experiment YAML (see experiments/)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override an entry")
    p.add_argument("--fabrikant", help="who adds it (default: the login name)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except SettingsError as err:
        _out(f"error: {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
