"""Is a core trained on other mice worth more than one trained on the target mice alone?

The strongest models of mouse V1 share one core across many mice and neurons; a new mouse then only
needs its readout (Lurz et al. 2021). This trains one member of an experiment file outside the database
in two steps:

* ``pretrain``: on the recordings of an *archive* home (other mice of the same world), then saves the
  member's core weights (``torch.save`` of the core's ``state_dict``: tensors only, read back with
  ``weights_only=True``);
* ``target``: on the recordings of a *target* home, its core started from a saved file (``--core``) or
  from scratch (no ``--core``, the reference); ``--freeze`` keeps the loaded core fixed (its BatchNorm
  statistics included), so only readout, shifter and modulator learn.

Prints one JSON line with the best validation correlation (the target's validation tier). Same
experiment, ``--set``s, seed and epochs as ``research.upper_bounds`` would use; ``--member`` picks an
ensemble member (its re-split and seed). For comparisons on other recordings, ``target --test
--predictions FILE`` also reports and saves the test tier, and ``score --predictions A B C`` scores the
members' mean as one ensemble. Run:

    .venv/bin/python -m research.transfer pretrain --home ARCHIVE --out core.pt --seed 42 [--set ...]
    .venv/bin/python -m research.transfer target --home TARGET [--core core.pt [--freeze]] --seed 42
    .venv/bin/python -m research.transfer score --predictions m0.npz m1.npz m2.npz
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from pipeline.data.format import read_recording
from pipeline.data.loaders import ScanTensors
from pipeline.data.recording import data_key_from_name
from pipeline.experiments import load_experiment
from pipeline.models.build import ScanGeometry
from pipeline.run import RunSpec, start_as_configured, train_model
from pipeline.scoring.metrics import single_trial_correlation
from pipeline.scoring.predict import predict_tier
from pipeline.training.trainer import validation_correlation
from research.member import build_member, home_zips, read_recordings

REPO = Path(__file__).resolve().parents[1]
#: the options that only a training step reads
TRAINING_OPTIONS = ("home", "out", "core", "freeze", "report_home", "test", "seed", "member", "sets")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("pretrain", "target", "score"))
    parser.add_argument("--home", type=Path, help="pretrain / target: a home whose data/ holds recordings")
    parser.add_argument("--out", type=Path, help="pretrain: where to save the core's weights")
    parser.add_argument("--core", type=Path, help="target: start the core from these weights")
    parser.add_argument("--freeze", action="store_true", help="target: keep the loaded core fixed")
    parser.add_argument(
        "--report-home",
        type=Path,
        help="also report the validation correlation of only the scans whose recordings are in this home "
        "(e.g. the target mice of a model trained jointly on an archive and them)",
    )
    parser.add_argument(
        "--test",
        action="store_true",
        help="also report the test tier (of the --report-home scans, else of all): for comparisons on other "
        "recordings than the selection's, never for choosing",
    )
    parser.add_argument(
        "--predictions",
        type=Path,
        nargs="+",
        help="target: save the test tier's predictions and targets here (one .npz); score: the members' "
        ".npz files, averaged as one ensemble",
    )
    parser.add_argument("--seed", type=int, help="the model's seed (default: the member's own)")
    parser.add_argument("--member", type=int, default=0, help="which member of the experiment (default 0)")
    parser.add_argument("--experiment", type=Path, default=REPO / "experiments" / "winner_demo.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="PATH=VALUE")
    args = parser.parse_args(argv)
    if args.step == "score":
        training = [
            f"--{n.replace('_', '-')}"
            for n in TRAINING_OPTIONS
            if getattr(args, n) not in (None, False, [], 0)
        ]
        if training:
            parser.error(f"score trains nothing: {', '.join(training)} not allowed")
        if not args.predictions:
            parser.error("score needs --predictions")
        missing = [str(p) for p in args.predictions if not p.is_file()]
        if missing:
            parser.error(f"--predictions: no such file: {', '.join(missing)}")
        if len(set(args.predictions)) != len(args.predictions):
            parser.error("--predictions: a member named twice")
        return args
    if args.home is None:
        parser.error(f"{args.step} needs --home")
    if args.predictions is not None:
        if args.step != "target" or len(args.predictions) != 1:
            parser.error("--predictions: one file, with target")
        if args.predictions[0].suffix != ".npz" or not args.predictions[0].parent.is_dir():
            parser.error(f"--predictions: {args.predictions[0]} must end in .npz, in an existing folder")
    if args.step == "pretrain" and args.out is None:
        parser.error("pretrain needs --out")
    if args.freeze and args.core is None:
        parser.error("--freeze needs --core")
    if args.step == "target" and args.out is not None:
        parser.error("--out is for pretrain (target saves nothing)")
    return args


def prepare(
    args: argparse.Namespace,
) -> tuple[RunSpec, torch.nn.Module, dict[str, ScanTensors], dict[str, ScanGeometry]]:
    """(run spec, built model, scans' tensors and geometry) for the member on ``args.home``'s recordings."""
    exp = load_experiment(args.experiment, args.sets)
    try:
        spec = RunSpec.of_member(exp, seed=args.seed, index=args.member)
    except ValueError as err:  # a member index out of range: of_member names the valid ones
        raise SystemExit(f"--member: {args.experiment.name}: {err}") from None
    model, scans, geometry = build_member(spec, read_recordings(home_zips(args.home)))
    return spec, model, scans, geometry


class FrozenCore(torch.nn.Module):
    """Wraps a core so that it always runs in eval mode without gradients (BatchNorm statistics fixed)."""

    def __init__(self, core: torch.nn.Module) -> None:
        super().__init__()
        self.inner = core.eval()
        for p in self.inner.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenCore:
        super().train(mode)
        self.inner.eval()  # the trainer's model.train() must not reach the BatchNorm statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] images -> the core's [B, C', H', W'] features."""
        with torch.no_grad():
            return self.inner(x)

    def map_geometry(self) -> tuple[float, float]:
        """The wrapped core's (origin, stride) of its map cells, in input pixels."""
        return self.inner.map_geometry()

    def regularizer(self) -> torch.Tensor:
        """The wrapped core's penalty, detached: a constant of the fixed weights (scalar)."""
        return self.inner.regularizer().detach()


def scans_of(home: Path) -> set[str]:
    """Data keys of the recordings in ``home``/data (from the file names where they carry one)."""
    return {data_key_from_name(p.name) or read_recording(p, progress=False).data_key for p in home_zips(home)}


def test_predictions(model: torch.nn.Module, scans: dict[str, ScanTensors]) -> dict[str, np.ndarray]:
    """``{key}/pred`` and ``{key}/target`` ([n_test, N] each, file order) of every scan's test tier."""
    arrays = {}
    for key, scan in scans.items():
        arrays[f"{key}/pred"], arrays[f"{key}/target"], _ = predict_tier(model, scan, "test")
    return arrays


def scan_keys(names: Iterable[str]) -> list[str]:
    """The data keys of a predictions mapping's ``{key}/pred`` entries, sorted."""
    return sorted(k.removesuffix("/pred") for k in names if k.endswith("/pred"))


def mean_over_scans(arrays: dict[str, np.ndarray]) -> float:
    """Mean over scans of the mean single-trial correlation of ``{key}/pred`` with ``{key}/target`` (the
    database's scores average scans the same way)."""
    keys = scan_keys(arrays)
    return float(
        np.mean([single_trial_correlation(arrays[f"{k}/target"], arrays[f"{k}/pred"]).mean() for k in keys])
    )


def ensemble_test_score(paths: list[Path]) -> float:
    """``mean_over_scans`` of the members' averaged test predictions (files of ``test_predictions``)."""
    members = [np.load(p) for p in paths]
    keys = scan_keys(members[0].files)
    if not keys:
        raise SystemExit(f"{paths[0]}: no test predictions (not written by research.transfer --predictions)")
    for path, m in zip(paths[1:], members[1:], strict=True):
        if scan_keys(m.files) != keys:
            raise SystemExit(f"{path}: other scans than {paths[0]}")
    mean = {}
    for key in keys:
        target = members[0][f"{key}/target"]
        if any(not np.array_equal(m[f"{key}/target"], target) for m in members[1:]):
            raise SystemExit(f"{key}: the members' test targets differ (other recordings?)")
        mean[f"{key}/target"] = target
        mean[f"{key}/pred"] = np.mean([m[f"{key}/pred"] for m in members], axis=0)
    return mean_over_scans(mean)


def main(argv: list[str] | None = None) -> None:
    """Train the member as ``argv`` says and print its JSON line (see the module's docstring)."""
    args = parse_args(argv)
    if args.step == "score":
        score = ensemble_test_score(args.predictions)
        print(json.dumps({"step": "score", "members": len(args.predictions), "test_corr": round(score, 4)}))
        return
    spec, model, scans, geometry = prepare(args)
    reported = sorted(scans_of(args.report_home) & scans.keys()) if args.report_home is not None else []
    if args.report_home is not None and not reported:
        raise SystemExit(
            f"--report-home: none of the recordings in {args.report_home / 'data'} is trained here"
        )
    if args.core is not None:
        state = torch.load(args.core, map_location="cpu", weights_only=True)  # tensors only, never code
        model.core.load_state_dict(state, strict=True)
        if args.freeze:
            model.core = FrozenCore(model.core)
    start_as_configured(spec, model, scans, geometry)
    start = time.perf_counter()
    result = train_model(spec, model, scans, progress=False)
    report = test = None
    model.eval()
    if args.report_home is not None:
        report = round(validation_correlation(model, {k: scans[k] for k in reported}), 4)
    scored = {k: scans[k] for k in reported} if reported else scans
    if args.test or args.predictions is not None:
        arrays = test_predictions(model, scored)  # one pass over the test tier for both
        test = round(mean_over_scans(arrays), 4) if args.test else None
        if args.predictions is not None:
            np.savez(args.predictions[0], **arrays)
    if args.step == "pretrain":
        core = model.core.inner if isinstance(model.core, FrozenCore) else model.core
        torch.save(core.state_dict(), args.out)
    print(
        json.dumps(
            {
                "step": args.step,
                "home": str(args.home),
                "core": str(args.core) if args.core else None,
                "freeze": args.freeze,
                "sets": args.sets,
                "seed": spec.seed,
                "member": args.member,
                "epochs": result.epochs,
                "best_validation_corr": round(result.best_val_corr, 4),
                "report_home_validation_corr": report,
                "test_corr": test,
                "train_s": round(time.perf_counter() - start, 1),
            }
        )
    )


if __name__ == "__main__":
    torch.set_num_threads(1)  # one member per core: run several side by side
    main()
