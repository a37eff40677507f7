"""Time and memory of the receptive-field map (``init_mu: rf_map``) for one scan of a given size.

The map costs one Gabor filtering of the training images and, per chunk of two pairs, one
(N x T) x (T x 6HW) product, so its time grows with trials x neurons. Random data (the cost does not
depend on the values); median of ``--repeats`` runs; the process's peak resident memory (getrusage) and,
on CUDA, the peak allocated device memory.

Run:  .venv/bin/python -m benchmarks.rf_map_cost [--trials 800] [--neurons 150] [--max-neurons M]
      [--device cpu]
      (demo size by default; SENSORIUM+ scans have about 4500 training trials and 7000-8000 neurons)
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import numpy as np
import torch

from pipeline.models.rf_map import map_receptive_fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=800)
    parser.add_argument("--neurons", type=int, default=150)
    parser.add_argument(
        "--max-neurons", type=int, help="map at most this many neurons (model.config.rf_map_neurons)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.trials, 1, 36, 64, generator=gen).to(device)
    responses = torch.rand(args.trials, args.neurons, generator=gen).to(device)
    cortex = np.random.default_rng(0).uniform(0, 800, (args.neurons, 2))
    seconds = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        map_receptive_fields(images, responses, cortex, max_neurons=args.max_neurons)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB
    device_peak = (
        f", device peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
        if device.type == "cuda"
        else ""
    )
    print(
        f"rf_map: {args.trials} trials x {args.neurons} neurons"
        f"{'' if args.max_neurons is None else f' (at most {args.max_neurons} mapped)'} on {device} "
        f"({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads): "
        f"median {statistics.median(seconds):.2f} s of {args.repeats}, "
        f"peak resident memory {peak:.2f} GiB{device_peak}"
    )


if __name__ == "__main__":
    main()
