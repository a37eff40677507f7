"""How many neurons does the receptive-field map need? (issue 29, larger recordings)

``init_mu: rf_map`` starts every readout position at a cubic polynomial of the neurons' cortex
coordinates fitted to the neurons' map peaks (:mod:`pipeline.models.rf_map`). The fit has 10 terms, so a
few hundred peaks pin it down, while the map's cost grows with every neuron mapped (a (N, T) x (T, 6 H W)
product per chunk). For each recording of a synthetic folder this maps the training trials with all
neurons and with strided subsets of them (``rf_map_neurons``), and prints per size: the time, the
mean distance of the subset's starting positions from the full map's, and both maps' distance from the
planted receptive-field centres of the truth sidecar (raw, and after the best affine map, which forgives
a frame that differs from the image's, as in the teacher world).

Run:  OMP_NUM_THREADS=1 .venv/bin/python -m research.rf_map_subset --data DIR [--sizes 150,300,600]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data.format import read_recording
from pipeline.data.images import rescale_bilinear
from pipeline.data.synth import truth_path
from pipeline.models.rf_map import map_receptive_fields
from research.rf_positions import affine_error, planted_centres_px


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of synthetic recordings")
    parser.add_argument("--scale", type=float, default=0.25, help="image scale the model sees")
    parser.add_argument("--sizes", default="150,300,600", help="comma-separated subset sizes")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    for path in sorted(args.data.glob("*.zip")):
        rec = read_recording(path, progress=False)
        train = np.flatnonzero(rec.tiers == "train")
        # at the model's image scale (the presets' dataset scale 0.25: 36 x 64 from 144 x 256), z-scored
        # as the loaders do (the map's zero-padded borders see the offset)
        images = rescale_bilinear(np.asarray(rec.images[train, :1]), args.scale)
        images = torch.from_numpy((images - images.mean()) / images.std())
        responses = torch.from_numpy(rec.responses[train].astype(np.float32))
        cortex = np.asarray(rec.neurons["cell_motor_coordinates"], dtype=np.float64)[:, :2]
        h, w = images.shape[-2:]
        with np.load(truth_path(path)) as t:
            planted = planted_centres_px(t["rf_center"], h, w)
        print(f"{rec.data_key}: {len(train)} training trials x {rec.n_neurons} neurons")
        full = None
        for size in [None, *sizes]:
            if size is not None and size >= rec.n_neurons:
                continue
            start = time.perf_counter()
            result = map_receptive_fields(images, responses, cortex, max_neurons=size)
            seconds = time.perf_counter() - start
            raw = float(np.linalg.norm(result.centres - planted, axis=1).mean())
            affine, _ = affine_error(result.centres, planted)
            if full is None:
                full = result.centres
            shift = float(np.linalg.norm(result.centres - full, axis=1).mean())
            print(
                f"  {'all' if size is None else size:>5} neurons mapped: {seconds:5.2f} s; from the full map "
                f"{shift:.3f} px; from the planted centres {raw:.3f} px (affine {affine:.3f} px)"
            )


if __name__ == "__main__":
    main()
