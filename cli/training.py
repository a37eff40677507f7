"""``sensorium train`` and ``populate``: one populate pass over what is declared but not yet computed.

While a model trains, the trainer reports one line per epoch on the ``pipeline.progress`` logger
(:mod:`pipeline.training.progress`). At the end this module prints a table of the rows made and failed
per table, each failure once (the model named by its experiment and seed), and one line per model
trained in the run with its test score beside the oracle.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cli.common import activate, out, positive_int, use_device
from cli.experiments import _experiment_args, cmd_experiment_add

if TYPE_CHECKING:
    from usecases.naming import FinalScore


def format_counts(results: dict[str, dict]) -> list[str]:
    """The rows made and failed per table, aligned; tables where nothing happened are left out."""
    rows = [
        (table, int(r.get("success_count", 0)), len(r.get("error_list", [])))
        for table, r in results.items()
        if r.get("success_count", 0) or r.get("error_list")
    ]
    if not rows:
        return ["nothing to compute: every declared row exists already"]
    width = max(len("table"), *(len(t) for t, _, _ in rows))
    lines = [f"{'table':<{width}}  {'made':>6}  {'failed':>6}"]
    lines += [f"{table:<{width}}  {made:>6}  {failed:>6}" for table, made, failed in rows]
    return lines


def format_error(table: str, label: str, message: Any) -> str:
    """One failed job on one line: table, the key's name (experiment and seed for a model) and the first
    line of the error."""
    first = (str(message).strip().splitlines() or ["(no message)"])[0]
    return f"failed: {table} {label}: {first}"


def format_final_scores(scores: Sequence[FinalScore]) -> list[str]:
    """One aligned line per model and scored scan: the test single-trial correlation, the oracle beside it
    and the share of it (what ``sensorium scores`` shows as ``ratio``)."""
    if not scores:
        return []
    width = max(len(s.model) for s in scores)
    lines = []
    for s in scores:
        if s.data_key is None or s.correlation is None:
            lines.append(
                f"score  {s.model:<{width}}  no test score yet (not scored, or test responses withheld)"
            )
            continue
        line = f"score  {s.model:<{width}}  {s.data_key}  test corr {s.correlation:6.3f}"
        if s.oracle is not None:
            kind = "oracle" if s.oracle_kind == "oracle" else "LOO oracle"
            fraction = s.fraction
            share = "" if fraction is None else f" ({100 * fraction:.0f}% of it)"
            line += f"  {kind} {s.oracle:6.3f}{share}"
        else:
            line += "  no oracle for this tier"
        lines.append(line)
    return lines


def _populate(queue: str, restriction, reserve_jobs: bool, max_calls: int | None, settings) -> int:
    from jobs.runner import populate
    from usecases.naming import key_label, test_scores, trained_keys

    before = {_frozen(k) for k in trained_keys(restriction)}
    start = time.perf_counter()
    results = populate(
        queue,
        restriction,
        settings=settings,
        reserve_jobs=reserve_jobs,
        suppress_errors=True,
        max_calls=max_calls,
    )
    seconds = time.perf_counter() - start
    for line in format_counts(results):
        out(line)
    failed = 0
    for table, result in results.items():
        for key, message in result.get("error_list", []):
            failed += 1
            out(format_error(table, key_label(key), message))
    if failed and reserve_jobs:
        out("the full error of each failed job: `sensorium jobs --errors`")
    out(f"populate finished in {seconds:.1f} s")
    new = [k for k in trained_keys(restriction) if _frozen(k) not in before]
    for line in format_final_scores(test_scores(new)):
        out(line)
    return 1 if failed else 0


def _frozen(key: dict) -> tuple:
    """A key as a set member."""
    return tuple(sorted(key.items()))


def cmd_populate(args: argparse.Namespace) -> int:
    # checked before the database starts (one line for a wrong or missing device), and set before the
    # first activation: the schemas keep the settings they were bound with
    use_device(args.device)
    settings = activate()
    from usecases.experiments import experiment_restriction

    try:
        restriction = experiment_restriction(args.experiment)
    except LookupError as err:
        out(f"error: {err}")
        return 2
    return _populate(args.queue, restriction, args.reserve_jobs, args.max_calls, settings)


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.experiments import load_experiment

    use_device(args.device)  # before the experiment is added: a wrong device adds nothing
    code = cmd_experiment_add(args)
    if code:
        return code
    spec = load_experiment(args.file, args.set)
    args.experiment, args.queue, args.max_calls = spec.name, "all", None
    return cmd_populate(args)


def register(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--max-calls", type=positive_int, help="at most this many keys per table")
    p.set_defaults(func=cmd_populate)
