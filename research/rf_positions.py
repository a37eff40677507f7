"""Did a trained model find its neurons' receptive fields? (synthetic recordings, issue 12)

For one trained model (experiment + seed) of a ``SENSORIUM_HOME`` whose recordings came from
``sensorium synth``, per scan:

* **readout positions**: the model's learned positions (mu, converted to input pixels with the core's
  map geometry) against the planted receptive-field centres (``rf_center`` in the truth sidecar): the
  mean distance after the best affine map from one to the other (the readout's frame may be shifted,
  scaled or mirrored against the generator's; the affine map forgives that, not per-neuron errors),
  and the correlation per axis;
* **the receptive-field map** (``pipeline.models.rf_map``, what ``init_mu: rf_map`` starts from), made
  from the same training trials, against the same planted centres;
* **image drive captured**: on the validation trials, the per-neuron correlation of the model's
  log prediction with the generator's planted image drive (Gabor / energy response to the shifted
  image, from ``research.headroom``'s rerun of the generator), and, for scale, of the planted
  drive with the planted pre-nonlinearity argument (what a perfect model's log rate would track).

Run:  .venv/bin/python -m research.rf_positions --home DIR --experiment NAME --seed S
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

import pipeline.data.synth as synth
from research.headroom import drive, regenerate
from research.residuals import predict
from research.trained import load_model, model_arguments


def affine_error(positions: np.ndarray, planted: np.ndarray) -> tuple[float, list[float]]:
    """Mean distance (planted units) between ``planted`` (N, 2) and the best affine map of ``positions``
    (N, 2) onto it, and the per-axis correlation of the two."""
    X = np.c_[positions, np.ones(len(positions))]
    coef, *_ = np.linalg.lstsq(X, planted, rcond=None)
    error = float(np.linalg.norm(planted - X @ coef, axis=1).mean())
    return error, [float(np.corrcoef(positions[:, j], planted[:, j])[0, 1]) for j in range(2)]


def planted_centres_px(rf_center: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, 2) planted (x, y) receptive-field centres in [-1, 1] (the truth sidecar's ``rf_center``) ->
    (N, 2) pixels of an (h, w) image."""
    rf = np.asarray(rf_center, dtype=np.float64)
    return np.stack([(rf[:, 0] + 1) / 2 * (w - 1), (rf[:, 1] + 1) / 2 * (h - 1)], axis=1)


def per_neuron_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T, N) x (T, N) -> (N,) correlation of matching columns."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a**2).sum(0) * (b**2).sum(0) + 1e-30)


def main() -> None:
    args = model_arguments(__doc__.splitlines()[0])
    model, scans = load_model(args.home, args.experiment, args.seed)
    from pipeline.data.format import read_recording
    from pipeline.data.synth import truth_path
    from pipeline.models.rf_map import map_receptive_fields

    with tempfile.TemporaryDirectory() as tmp:
        val = predict(args.home, args.experiment, args.seed, "validation", Path(tmp) / "validation.npz")
    recordings = sorted((args.home / "data").glob("*.zip"))
    print(f"{args.experiment}, seed {args.seed}: receptive fields found (pixels at the model's image scale)")
    for path in recordings:
        rec = read_recording(path, progress=False)
        key = rec.data_key
        if key not in scans:
            continue
        if not truth_path(path).exists():
            raise SystemExit(f"{path.name}: no ground truth beside it; not a synthetic recording")
        with np.load(truth_path(path)) as t:
            rf, time_rank = t["rf_center"].astype(np.float64), t["time_rank"]
            stored = json.loads(str(t["config"]))
            # the teacher world stores its planted drive (file order); the Gabor world's is regenerated
            planted_drive = t["drive"].astype(np.float64) if "drive" in t.files else None
        fields = set(synth.SynthConfig.__dataclass_fields__)
        synth_config = synth.SynthConfig(**{k: v for k, v in stored.items() if k in fields})
        mouse = int(key.split("-")[0]) - synth.ANIMAL_BASE
        scan = scans[key]
        h, w = scan.images.shape[-2:]
        planted = planted_centres_px(rf, h, w)
        readout = model.readout[key]
        map_h, map_w = readout.in_shape[1:]
        origin, stride = model.core.map_geometry()
        with torch.no_grad():
            mu = readout.mu.reshape(-1, 2).double().numpy()
        cells = (mu + 1) / 2 * np.array([map_w - 1, map_h - 1])
        learned = origin + stride * cells
        err, corr = affine_error(learned, planted)
        print(f"  {key} readout positions: mean error {err:.2f} px, corr x {corr[0]:+.3f} y {corr[1]:+.3f}")
        # the map from the same training trials (the model's own split, as init_mu rf_map uses), every
        # neuron mapped (a preset with rf_map_neurons started most of a large scan from the fit on fewer)
        idx = torch.from_numpy(scan.tier_indices("train"))
        cortex = np.asarray(rec.neurons["cell_motor_coordinates"], dtype=np.float64)[:, :2]
        rf_map = map_receptive_fields(scan.images[idx, :1], scan.responses[idx], cortex)
        map_err = np.linalg.norm(rf_map.centres - planted, axis=1)
        print(
            f"  {key} receptive-field map: mean error {map_err.mean():.2f} px, "
            f"median {np.median(map_err):.2f}"
        )
        ids = val[f"{key}/trial_id"].astype(int)
        if planted_drive is not None:
            captured = per_neuron_corr(np.log(val[f"{key}/predictions"]), planted_drive[ids])
            print(
                f"  {key} image drive captured (validation): corr(log prediction, planted drive) "
                f"{captured.mean():.3f} (teacher world: no regenerated ceiling)"
            )
            continue
        it = regenerate(synth_config, mouse)
        drive_t = drive(it, 0.0)[time_rank]  # file order
        captured = per_neuron_corr(np.log(val[f"{key}/predictions"]), drive_t[ids])
        ceiling = per_neuron_corr(it.pre[time_rank][ids], drive_t[ids])
        print(
            f"  {key} image drive captured (validation): corr(log prediction, planted drive) "
            f"{captured.mean():.3f}; a perfect model's {ceiling.mean():.3f}"
        )


if __name__ == "__main__":
    main()
