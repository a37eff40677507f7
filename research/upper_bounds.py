"""What would perfect receptive-field positions, or a perfect image path, buy at a preset's budget?

Trains one member of an experiment file on the synthetic recordings of a ``SENSORIUM_HOME`` (no
database: the recordings are read from ``HOME/data``, their regressors computed in memory) in one of
four forms, and prints its best validation correlation:

* ``as-configured``: the experiment as its file and ``--set`` say (the reference);
* ``planted-positions``: the readout's positions started at the planted receptive-field centres
  (``rf_center`` in the truth sidecar, less the untrained shifter's mean shift, as ``init_mu: rf_map``
  does with its map) and then learned as usual (so: what a perfect start is worth, not fixed exact
  positions); needs free positions (``grid_mean_predictor: null``);
* ``planted-shift``: the learned shifter replaced by the planted eye shift (``eye_shift`` in the sidecar,
  pixels of the receptive-field shift per trial), the readout's positions as configured;
* ``planted-drive``: the core, readout and shifter replaced by the planted image drive (``drive`` in the
  sidecar of a teacher-world recording: the teacher's response to the trial's shifted image) times a
  learned gain plus a learned offset per neuron; behaviour, history, state and gain still go through the
  experiment's modulator. The ceiling of any improvement to the image path at this budget.

Same data, split, seed, trainer and epochs in every form, so the differences are the positions' and the
image path's worth. Two options change the trials instead (any mode): ``--drop-train N`` sets aside N
random training trials per recording before the map and the training (what fewer training trials
cost), ``--validate-on N`` lets the trainer validate on only N random validation trials per recording
(what a smaller validation set costs its choice of epoch); the score printed as ``validation_corr`` is
always on the whole validation tier.

The planted eye shift is in pixels of the 36x64 images the generator writes, so the recordings must be
read at that size; experiments that average weights (``ema_decay``) or compile the core are refused in
the planted modes (they patch the live model, which an averaged copy would not see); ``as-configured``
takes them. Run:

    .venv/bin/python -m research.upper_bounds --home DIR --mode planted-positions --seed 42 \
        [--experiment experiments/winner_demo.yaml] [--set model.config.init_mu=rf_map ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data.synth import truth_path
from pipeline.experiments import load_experiment
from pipeline.models.rf_map import readout_positions
from pipeline.run import RunSpec, start_as_configured, train_model
from pipeline.training.trainer import validation_correlation
from research.member import build_member, home_zips, read_recordings

MODES = ("as-configured", "planted-positions", "planted-shift", "planted-drive")
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home", type=Path, required=True, help="a home whose data/ holds synthetic recordings"
    )
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--experiment", type=Path, default=REPO / "experiments" / "winner_demo.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="PATH=VALUE")
    parser.add_argument(
        "--drop-train",
        type=int,
        default=0,
        metavar="N",
        help="set aside N random training trials per recording (fixed draw: seed 7, not --seed)",
    )
    parser.add_argument(
        "--validate-on",
        type=int,
        default=0,
        metavar="N",
        help="the trainer validates on N >= 2 random validation trials per recording (seed 11)",
    )
    args = parser.parse_args(argv)
    if args.drop_train < 0:
        parser.error("--drop-train takes a count >= 0")
    if args.validate_on == 1 or args.validate_on < 0:
        parser.error("--validate-on takes a count >= 2 (the trainer scores no recording on fewer)")
    return args


#: the label of trials set aside: a held-out tier, which training and validation never read
SET_ASIDE = "final_test"


def set_aside(scans: dict, tier: str, seed: int, *, keep: int = 0, drop: int = 0) -> dict[str, np.ndarray]:
    """Relabel random trials of ``tier`` as :data:`SET_ASIDE`, in place: ``drop`` of them per scan, or
    all but ``keep`` (one Generator of ``seed``, scans in order).

    Returns {data key: file indices set aside}, to undo it with :func:`restore`.

    Raises:
        SystemExit: a scan would have no trial of ``tier`` left.
    """
    rng = np.random.default_rng(seed)
    aside = {}
    for key, scan in scans.items():
        idx = scan.tier_indices(tier)
        if keep > len(idx):
            raise SystemExit(f"{key}: {len(idx)} {tier} trials; cannot keep {keep} of them")
        n = drop if drop else len(idx) - keep
        if n >= len(idx):
            raise SystemExit(f"{key}: {len(idx)} {tier} trials; setting {n} aside would leave none")
        aside[key] = rng.choice(idx, n, replace=False)
        scan.tiers[aside[key]] = SET_ASIDE
    return aside


def restore(scans: dict, aside: dict[str, np.ndarray], tier: str) -> None:
    """Give the trials :func:`set_aside` took their ``tier`` back."""
    for key, idx in aside.items():
        scans[key].tiers[idx] = tier


def planted_positions(model: torch.nn.Module, scans: dict, truth: dict[str, dict]) -> None:
    """Move every scan's readout positions to the planted centres (less the shifter's mean shift)."""
    origin, stride = model.core.map_geometry()
    for key, scan in scans.items():
        readout = model.readout[key]
        if readout._predicted_grid:
            raise SystemExit(
                "planted-positions needs free positions: --set model.config.grid_mean_predictor=null"
            )
        h, w = scan.images.shape[-2:]
        rf = truth[key]["rf_center"]  # (N, 2) in [-1, 1] of the (h, w) input, at the mean eye shift
        pixels = np.stack([(rf[:, 0] + 1) / 2 * (w - 1), (rf[:, 1] + 1) / 2 * (h - 1)], axis=1)
        mu = readout_positions(pixels, tuple(readout.in_shape[1:]), origin, stride)
        if model.shifter is not None:
            idx = torch.from_numpy(scan.tier_indices("train"))
            with torch.no_grad():
                mu = np.clip(mu - model.shifter(scan.pupil_center[idx], key).mean(0).double().numpy(), -1, 1)
        with torch.no_grad():
            readout.mu.copy_(torch.as_tensor(mu, dtype=readout.mu.dtype).view_as(readout.mu))


class PlantedShift(torch.nn.Module):
    """Stands in for the shifter: the planted shift of the batch's trials, in readout units."""

    def __init__(self, shifts: dict[str, torch.Tensor], trial: dict) -> None:
        super().__init__()
        self.shifts, self.trial = shifts, trial

    def forward(self, pupil_center: torch.Tensor, data_key: str) -> torch.Tensor:
        """[B, 2] planted shifts of the batch's trials (``pupil_center`` [B, 2] is not used)."""
        return self.shifts[data_key][self.trial["id"]]

    def regularizer(self, data_key: str) -> torch.Tensor:
        return torch.zeros(())


def remember_trials(model: torch.nn.Module) -> dict:
    """Make ``model``'s forward note the batch's ``trial_id`` (file-order rows) in the returned dict."""
    plain_forward = type(model).forward
    trial: dict = {}

    def forward(
        images: torch.Tensor,
        data_key: str,
        pupil_center: torch.Tensor | None = None,
        detach_core: bool = False,
        **batch: torch.Tensor,
    ) -> torch.Tensor:
        trial["id"] = batch["trial_id"]
        return plain_forward(model, images, data_key, pupil_center, detach_core, **batch)

    model.forward = forward
    return trial


def planted_shift(model: torch.nn.Module, scans: dict, truth: dict[str, dict], init_mu: str) -> None:
    """Replace the learned shifter by the planted eye shift, converted to the readout's units; with
    ``init_mu`` ``rf_map`` the positions, started less the learned shifter's mean shift, get it back."""
    origin, stride = model.core.map_geometry()
    shifts = {}
    for key in scans:
        _, map_h, map_w = model.readout[key].in_shape
        per_unit = stride * np.array([(map_w - 1) / 2, (map_h - 1) / 2])  # input pixels per readout unit
        shifts[key] = torch.as_tensor(truth[key]["eye_shift"] / per_unit, dtype=torch.float32)
        if init_mu == "rf_map" and model.shifter is not None:
            # free positions were started less the learned shifter's mean shift; the planted one has mean 0
            idx = torch.from_numpy(scans[key].tier_indices("train"))
            with torch.no_grad():
                mean_shift = model.shifter(scans[key].pupil_center[idx], key).mean(0)
                mu = model.readout[key].mu
                mu.copy_((mu + mean_shift.view(1, 1, 1, 2).to(mu.dtype)).clamp(-1, 1))
    model.shifter = PlantedShift(shifts, remember_trials(model))


def planted_drive(model: torch.nn.Module, scans: dict, truth: dict[str, dict]) -> None:
    """Replace the model's image path by gain * z-scored planted drive + offset, per neuron."""
    drives, gains, offsets = {}, torch.nn.ParameterDict(), torch.nn.ParameterDict()
    for key in scans:
        if "drive" not in truth[key]:
            raise SystemExit(f"{key}: no planted drive in the sidecar (a Gabor-world recording?)")
        d = torch.as_tensor(truth[key]["drive"], dtype=torch.float32)  # (T, N), file order
        drives[key] = (d - d.mean(0)) / d.std(0).clamp_min(1e-6)
        gains[key] = torch.nn.Parameter(torch.full((d.shape[1],), 0.3))
        offsets[key] = torch.nn.Parameter(torch.zeros(d.shape[1]))
    model.drive_gain, model.drive_offset = gains, offsets  # registered, so the optimiser trains them
    trial = remember_trials(model)

    def readout_drive(
        images: torch.Tensor,
        data_key: str,
        pupil_center: torch.Tensor | None = None,
        detach_core: bool = False,
    ) -> torch.Tensor:
        """[B, N] gain x planted drive + offset of the batch's trials (the images are not used)."""
        return model.drive_gain[data_key] * drives[data_key][trial["id"]] + model.drive_offset[data_key]

    model.readout_drive = readout_drive


def prepare(args: argparse.Namespace) -> tuple[RunSpec, torch.nn.Module, dict, dict[str, dict]]:
    """(run spec, model with the mode's planted part in place, scans' tensors, truth per data key)."""
    exp = load_experiment(args.experiment, args.sets)
    trainer = exp.trainer.config
    if args.mode != "as-configured" and (trainer.get("ema_decay") is not None or trainer.get("compile_core")):
        raise SystemExit("planted modes patch the live model: remove ema_decay and compile_core")
    spec = RunSpec.of_member(exp, seed=args.seed)
    paths = home_zips(args.home)
    for path in paths:
        if not truth_path(path).exists():
            raise SystemExit(f"{path.name}: no ground truth beside it; not a synthetic recording")
    recordings, truth = read_recordings(paths), {}
    for path, key in zip(paths, recordings, strict=True):
        with np.load(truth_path(path)) as t:
            truth[key] = {k: t[k] for k in ("rf_center", "drive", "eye_shift") if k in t.files}
    model, scans, geometry = build_member(spec, recordings)
    if args.drop_train:  # before the map, which reads the training trials too
        set_aside(scans, "train", seed=7, drop=args.drop_train)
    if args.mode == "planted-shift" and any(s.images.shape[-2:] != (36, 64) for s in scans.values()):
        raise SystemExit("planted-shift needs the 36x64 images the eye shift is measured on")
    start_as_configured(spec, model, scans, geometry)
    if args.mode == "planted-positions":
        planted_positions(model, scans, truth)
    elif args.mode == "planted-shift":
        planted_shift(model, scans, truth, spec.model_config.init_mu)
    elif args.mode == "planted-drive":
        planted_drive(model, scans, truth)
    return spec, model, scans, truth


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    spec, model, scans, _ = prepare(args)
    aside = set_aside(scans, "validation", seed=11, keep=args.validate_on) if args.validate_on else {}
    start = time.perf_counter()
    result = train_model(spec, model, scans, progress=False)
    train_s = time.perf_counter() - start
    restore(scans, aside, "validation")
    print(
        json.dumps(
            {
                "mode": args.mode,
                "experiment": args.experiment.name,
                "sets": args.sets,
                "seed": args.seed,
                "epochs": result.epochs,
                "best_validation_corr": round(result.best_val_corr, 4),
                "validation_corr": round(validation_correlation(model, scans), 4),
                "drop_train": args.drop_train,
                "validate_on": args.validate_on,
                "train_s": round(train_s, 1),
            }
        )
    )


if __name__ == "__main__":
    torch.set_num_threads(1)  # one member per core: run several side by side
    main()
