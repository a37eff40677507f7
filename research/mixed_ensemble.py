"""Would an ensemble that mixes architectures beat one of a single architecture? (issue 12)

The pipeline's ensembles take their members from one experiment (one model config). This script scores
any set of already-trained members, possibly from different experiments, as a mean ensemble, from the
predictions ``sensorium predict`` exports: the per-scan mean single-trial correlation of the averaged
prediction on one tier, for each combination given.

Run:  .venv/bin/python -m research.mixed_ensemble --home DIR --tier test \\
          --combo abl_beyond_ensemble_s42:42,abl_beyond_ensemble_s42:43,abl_winner_ensemble_s42:44 \\
          [--combo ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from pipeline.scoring.metrics import single_trial_correlation
from research.residuals import predict

Member = tuple[str, int]


def parse_combo(text: str) -> list[Member]:
    """``"exp:seed,exp:seed"`` -> [(exp, seed), ...]; a one-line error for anything else."""
    members = []
    for item in text.split(","):
        name, sep, seed = item.strip().rpartition(":")
        if not sep or not name or not seed.lstrip("-").isdigit():
            raise SystemExit(f"--combo item {item!r}: expected EXPERIMENT:SEED")
        members.append((name, int(seed)))
    return members


def ensemble_score(predictions: list[dict[str, np.ndarray]]) -> float:
    """Mean over scans of the mean single-trial correlation of the members' averaged prediction.

    Each member's dict holds ``<data_key>/predictions`` (T, N), ``<data_key>/targets`` (T, N) and
    ``<data_key>/trial_id`` (T,) as ``sensorium predict`` writes them; members must cover the same trials.
    """
    keys = sorted(k.split("/")[0] for k in predictions[0] if k.endswith("/predictions"))
    scores = []
    for key in keys:
        ids = predictions[0][f"{key}/trial_id"]
        for p in predictions[1:]:
            if not np.array_equal(p[f"{key}/trial_id"], ids):
                raise ValueError(f"scan {key}: members predict different trials")
        mean = np.mean([p[f"{key}/predictions"] for p in predictions], axis=0)
        scores.append(float(single_trial_correlation(predictions[0][f"{key}/targets"], mean).mean()))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--tier", default="test")
    parser.add_argument("--combo", action="append", required=True, help="EXPERIMENT:SEED,... (repeatable)")
    args = parser.parse_args()
    combos = [parse_combo(c) for c in args.combo]
    cache: dict[Member, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for member in {m for combo in combos for m in combo}:
            name, seed = member
            cache[member] = predict(args.home, name, seed, args.tier, Path(tmp) / f"{name}-{seed}.npz")
    print(f"{args.tier} single-trial correlation of the mean prediction, mean over scans")
    for combo in combos:
        label = " + ".join(f"{n}:{s}" for n, s in combo)
        print(f"{ensemble_score([cache[m] for m in combo]):.4f}  {label}")


if __name__ == "__main__":
    main()
