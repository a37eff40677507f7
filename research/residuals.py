"""Where a model falls short of the oracle on synthetic recordings: its log-rate residual against the truth.

For a trained experiment in a ``SENSORIUM_HOME`` whose recordings came from ``sensorium synth`` (each
``.zip`` has its ``.truth.npz`` beside it), the script exports the model's predictions with
``sensorium predict`` and compares them with the planted expected rates ``E``:

* ``corr(P, E)``: per-neuron correlation of prediction and truth over the tier's trials (1 = the oracle);
* the residual ``r = log E - log P`` (per neuron centred: the loaders scale each neuron's responses, so a
  constant factor is no error), and the share of its variance that a per-neuron least-squares fit on
  each planted component explains on the training trials: the network-state latents, the session gain
  drift, behaviour (pupil, running) and history (log(1 + r / m) of the last trial and the mean of the
  last 10, m the neuron's mean: the generator's own form) - what is left is the image-driven part and
  the nonlinearity;
* on the test tier (each image shown ~10 times), the share of the residual that is image-locked (the
  variance of its per-image means; these also hold 1/repeats of the rest);
* across neurons, the correlation of each neuron's ``corr(P, E)`` with its planted image weight and
  history weight (negative for the image: the most image-driven neurons are fitted worst).

Run:  .venv/bin/python -m research.residuals --home DIR --experiment NAME [--seed 42]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import CLI, REPO
from pipeline.data.format import read_recording
from pipeline.data.synth import truth_path
from pipeline.scoring.metrics import single_trial_correlation


def predict(home: Path, experiment: str, seed: int | None, tier: str, out: Path) -> dict[str, np.ndarray]:
    """``sensorium predict`` of one tier into ``out``; returns the loaded arrays."""
    cmd = [*CLI, "predict", "--experiment", experiment, "--tier", tier]
    cmd += ["--out", str(out)] + ([] if seed is None else ["--seed", str(seed)])
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, SENSORIUM_HOME=str(home)), capture_output=True)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).decode().strip().splitlines() or ["(no output)"]
        raise SystemExit(f"sensorium predict failed: {said[-1]}")
    with np.load(out, allow_pickle=True) as d:
        return {k: d[k] for k in d.files}


def explained(r: np.ndarray, columns: list[np.ndarray]) -> float:
    """Share of the variance of centred residuals ``r`` (T, N) that a per-neuron least-squares fit on
    ``columns`` (each (T,) shared or (T, N) per neuron) plus an intercept explains."""
    left = 0.0
    for n in range(r.shape[1]):
        X = np.stack([c if c.ndim == 1 else c[:, n] for c in columns] + [np.ones(len(r))], axis=1)
        beta, *_ = np.linalg.lstsq(X, r[:, n], rcond=None)
        left += float(((r[:, n] - X @ beta) ** 2).sum())
    return 1.0 - left / float((r**2).sum())


def history_proxies(truth: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(last trial, mean of the last 10) of log(1 + r / m), (T, N) each in file order; NaN without 10."""
    order = np.argsort(truth["time_rank"])
    resp = truth["responses"][order]
    compressed = np.log1p(resp / resp.mean(0))
    last = np.vstack([np.full((1, resp.shape[1]), np.nan), compressed[:-1]])
    sums = np.cumsum(np.vstack([np.zeros((1, resp.shape[1])), compressed]), axis=0)
    last10 = np.full_like(compressed, np.nan)
    last10[10:] = (sums[10:-1] - sums[:-11]) / 10
    pos = truth["time_rank"]  # presentation position of each file index
    return last[pos], last10[pos]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--seed", type=int, default=None, help="member seed when the experiment has several")
    args = parser.parse_args()
    recordings = sorted((args.home / "data").glob("*.zip"))
    if not recordings:
        raise SystemExit(f"no synthetic recordings under {args.home / 'data'}")
    with tempfile.TemporaryDirectory() as tmp:
        tiers = {
            t: predict(args.home, args.experiment, args.seed, t, Path(tmp) / f"{t}.npz")
            for t in ("train", "test")
        }
    print(f"experiment {args.experiment}" + ("" if args.seed is None else f", seed {args.seed}"))
    print(f"{'scan':<12} {'corr(P,E) train':>15} {'test':>6}  residual share explained on train by ...")
    for path in recordings:
        tp = truth_path(path)
        if not tp.exists():
            raise SystemExit(f"{path.name}: no ground truth beside it ({tp.name}); not a synthetic recording")
        with np.load(tp, allow_pickle=True) as t:
            truth = {k: t[k] for k in t.files}
        rec = read_recording(path, progress=False)
        key = rec.data_key
        train, test = tiers["train"], tiers["test"]
        ids = train[f"{key}/trial_id"].astype(int)
        pred, expected = train[f"{key}/predictions"], truth["expected"][ids]
        resid = np.log(expected) - np.log(pred)
        last, last10 = history_proxies(truth)
        ok = ~np.isnan(last10[ids]).any(axis=1)  # trials with 10 predecessors
        r = resid[ok] - resid[ok].mean(0)
        pupil = rec.behavior[:, 0]
        components = {
            "latents": [truth["latents"][ids][ok, k] for k in range(truth["latents"].shape[1])],
            "gain": [np.log(truth["gain"][ids][ok])],
            "behaviour": [((pupil - pupil.mean()) / pupil.std())[ids][ok], np.abs(rec.behavior[ids][ok, 2])],
            "history": [last[ids][ok], last10[ids][ok]],
        }
        shares = {name: explained(r, cols) for name, cols in components.items()}
        shares["all"] = explained(r, [c for cols in components.values() for c in cols])
        tid = test[f"{key}/trial_id"].astype(int)
        test_pred, test_exp, images = (
            test[f"{key}/predictions"],
            truth["expected"][tid],
            test[f"{key}/image_ids"],
        )
        tr = np.log(test_exp) - np.log(test_pred)
        tr -= tr.mean(0)
        locked = np.stack([tr[images == i].mean(0) for i in np.unique(images)])
        # which neurons are fitted worst: across neurons, how their corr(P, E) on train goes with the
        # planted weight of the image drive and of the history
        per_neuron = single_trial_correlation(expected, pred)
        follows = {
            w: float(np.corrcoef(per_neuron, truth[f"{w}_weight"])[0, 1]) for w in ("image", "history")
        }
        print(
            f"{key:<12} {per_neuron.mean():>15.3f} "
            f"{single_trial_correlation(test_exp, test_pred).mean():>6.3f}  "
            + ", ".join(f"{k} {v:.2f}" for k, v in shares.items())
            + f"; test residual image-locked {float((locked**2).mean() / (tr**2).mean()):.2f}"
            + "; across neurons corr(P,E) vs "
            + ", ".join(f"{w} weight r={v:+.2f}" for w, v in follows.items())
        )


if __name__ == "__main__":
    main()
