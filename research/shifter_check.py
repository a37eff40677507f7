"""Did a trained model's shifter learn the planted eye shift? (synthetic recordings, issue 12)

``research.headroom`` shows the eye shift is worth about 0.12 of the oracle's correlation, so a
model's shifter must get it right. For one trained model (experiment + seed) of a ``SENSORIUM_HOME``
whose recordings came from ``sensorium synth``, this evaluates the shifter on every trial's pupil
centre and compares it with the planted shift (``eye_shift`` in the ``.truth.npz`` sidecar) per axis:
the correlation (the sign depends on the readout's grid convention, so it is the size that counts) and
the correlation with the *other* axis (a scrambled shifter follows the wrong one).

Run:  .venv/bin/python -m research.shifter_check --home DIR --experiment NAME --seed S
"""

from __future__ import annotations

import numpy as np
import torch

from research.trained import load_model, model_arguments


def compare(shift: np.ndarray, planted: np.ndarray) -> dict[str, dict[str, float]]:
    """Per axis (x, y): the correlation of the model's shift with the planted one, and with the planted
    shift along the other axis. shift: (T, 2) grid units; planted: (T, 2) pixels (x, y)."""
    out = {}
    for j, axis in enumerate("xy"):
        out[axis] = {
            "corr": float(np.corrcoef(shift[:, j], planted[:, j])[0, 1]),
            "other_axis_corr": float(np.corrcoef(shift[:, j], planted[:, 1 - j])[0, 1]),
        }
    return out


def main() -> None:
    args = model_arguments(__doc__.splitlines()[0])
    model, scans = load_model(args.home, args.experiment, args.seed)
    from pipeline.data.format import read_recording
    from pipeline.data.synth import truth_path

    if model.shifter is None:
        raise SystemExit(f"{args.experiment}: the model has no shifter")
    truths = {}
    for path in sorted((args.home / "data").glob("*.zip")):
        if truth_path(path).exists():
            truths[read_recording(path, progress=False).data_key] = truth_path(path)
    print(f"{args.experiment}, seed {args.seed}: learned shift against the planted eye shift")
    for key, scan in scans.items():
        if key not in truths:
            raise SystemExit(f"scan {key}: no ground truth under {args.home / 'data'}; not synthetic")
        planted = np.load(truths[key])["eye_shift"]
        with torch.no_grad():
            shift = model.shifter(scan.pupil_center, key).numpy()
        for axis, r in compare(shift, planted).items():
            print(f"  {key} {axis}: corr {r['corr']:+.3f}, with the other axis {r['other_axis_corr']:+.3f}")


if __name__ == "__main__":
    main()
