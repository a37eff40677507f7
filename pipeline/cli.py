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
        from schemas.fabrik import Experiment

        restriction = (Experiment & {"experiment_name": args.experiment}) * Experiment.Member
    return _populate(args.queue, restriction, args.reserve_jobs, args.max_calls)


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.experiments import load_experiment

    code = cmd_experiment_add(args)
    if code:
        return code
    spec = load_experiment(args.file, args.set)
    args.experiment, args.queue, args.max_calls = spec.name, "all", None
    return cmd_populate(args)


_CONFIG_KEYS = ("model_fn", "model_hash", "trainer_fn", "trainer_hash")


def _score_rows(experiment: str | None) -> list[dict]:
    from schemas.evaluation import ModelScore, OracleScore
    from schemas.fabrik import Experiment

    exp = Experiment * Experiment.Member
    if experiment:
        exp = exp & {"experiment_name": experiment}
    # a trained model belongs to an experiment through all of its configs (model, trainer, dataset, seed)
    rows = (ModelScore * exp.proj(*_CONFIG_KEYS)).to_dicts(
        order_by=("experiment_name", "seed", "data_key")
    )
    oracle = {(r["data_key"], r["tier"]): r for r in OracleScore.to_dicts()}
    out = []
    for r in rows:
        o = oracle.get((r["data_key"], r["tier"]))
        out.append(
            {
                "experiment": r["experiment_name"],
                "seed": r["seed"],
                "data_key": r["data_key"],
                "tier": r["tier"],
                "n_trials": r["n_trials"],
                "single_trial_correlation": r["single_trial_correlation"],
                "correlation_to_average": r["correlation_to_average"],
                "feve": r["feve"],
                "oracle_single_trial_correlation": o["single_trial_correlation"] if o else None,
                "oracle_feve": o["feve"] if o else None,
            }
        )
    return out


_TIER_ORDER = {"train": 0, "validation": 1, "test": 2, "final_test": 3}


def format_scores(rows: list[dict]) -> str:
    """The score table: model vs oracle per scan and tier."""

    def f(x):
        return "     -" if x is None else f"{x:6.3f}"

    lines = [
        f"{'experiment':<16} {'seed':>5} {'scan':<12} {'tier':<11} {'trials':>6}  "
        f"{'corr':>6} {'oracle':>6} {'ratio':>6}  {'c-avg':>6} {'FEVE':>6} {'oFEVE':>6}"
    ]
    for r in sorted(rows, key=lambda r: (r["experiment"], r["seed"], r["data_key"], _TIER_ORDER[r["tier"]])):
        o = r["oracle_single_trial_correlation"]
        ratio = r["single_trial_correlation"] / o if o else None
        lines.append(
            f"{r['experiment']:<16} {r['seed']:>5} {r['data_key']:<12} {r['tier']:<11} {r['n_trials']:>6}  "
            f"{f(r['single_trial_correlation'])} {f(o)} {f(ratio)}  "
            f"{f(r['correlation_to_average'])} {f(r['feve'])} {f(r['oracle_feve'])}"
        )
    return "\n".join(lines)


def cmd_scores(args: argparse.Namespace) -> int:
    _activate()
    rows = _score_rows(args.experiment)
    if args.json:
        _out(json.dumps(rows, indent=2))
    elif not rows:
        _out("no scores yet: run `sensorium populate` (or `sensorium train FILE.yaml`)")
    else:
        _out(format_scores(rows))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    _activate()
    from schemas.data import Scan
    from schemas.evaluation import Prediction
    from schemas.fabrik import Experiment

    exp = (Experiment & {"experiment_name": args.experiment}) * Experiment.Member
    if args.seed is not None:
        exp = exp & {"seed": args.seed}
    per_scan = Prediction.PerScan & exp.proj(*_CONFIG_KEYS)
    seeds = sorted({r["seed"] for r in per_scan.proj().to_dicts()})
    if not seeds:
        _out(f"error: no predictions for experiment {args.experiment!r}; run `sensorium populate` first")
        return 1
    if len(seeds) > 1:
        _out(f"error: experiment {args.experiment!r} has models for seeds {seeds}; choose one with --seed")
        return 2
    arrays = {}
    for row in per_scan.to_dicts(order_by="data_key"):
        key = {"data_key": row["data_key"]}
        from schemas.evaluation import _targets

        targets, tiers, image_ids = _targets(row["data_key"])
        idx = np.flatnonzero(tiers == args.tier)
        if len(idx) == 0:
            continue
        trials = (Scan.Trial & key).to_dicts(order_by="trial_id")
        unit_ids = [n["unit_id"] for n in (Scan.Neuron & key).to_dicts(order_by="neuron_idx")]
        k = row["data_key"]
        arrays[f"{k}/predictions"] = np.asarray(row["predictions"])[idx]
        arrays[f"{k}/targets"] = targets[idx]
        arrays[f"{k}/trial_id"] = idx
        arrays[f"{k}/trial_idx"] = np.array([trials[i]["trial_idx"] for i in idx])
        arrays[f"{k}/image_ids"] = image_ids[idx]
        arrays[f"{k}/neuron_ids"] = np.array(unit_ids)
    if not arrays:
        _out(f"error: no trials in tier {args.tier!r} for experiment {args.experiment!r}")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    _out(f"wrote {args.out} ({', '.join(sorted({k.split('/')[0] for k in arrays}))}, tier {args.tier})")
    return 0


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

    p = sub.add_parser("scores", help="model scores next to the oracle, per scan and tier")
    p.add_argument("--experiment", help="only this experiment")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scores)

    p = sub.add_parser("predict", help="export predictions, targets, trial ids and neuron ids of one tier")
    p.add_argument("--experiment", required=True)
    p.add_argument("--tier", required=True, choices=["train", "validation", "test", "final_test"])
    p.add_argument("--seed", type=int, help="which member when the experiment has several seeds")
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.set_defaults(func=cmd_predict)

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
