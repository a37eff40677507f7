"""Time of a Gaussian readout's training step, forward and backward: the readout as it is
(``pipeline.models.readout.FullGaussian2d``) against the same computation as it was before 2026-12-06,
side by side in one run.

A training step of the readout samples every neuron's features at one position per image
(``grid_sample``), takes each neuron's weighted sum over channels and backpropagates into the feature
map, the positions, sigma and the feature weights. Before, the position samples came straight out of an
einsum with the batch axis innermost in memory, on which ``grid_sample``'s CPU kernels run about ten
times slower, and the channel sum was the einsum ``bcn,cn->bn``, which runs as N tiny matrix products;
now the grid is contiguous and the sum a broadcast product and sum (the same arithmetic). Random
feature map in channels-last layout as the presets train it; the two forms alternate on the same
random draws; median of ``--repeats`` runs per size; the outputs and gradients of both are compared.

Run:  OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.readout_cost [--batch 32] [--repeats 21]
      (default sizes: 16, 48 and 64 channels on the demo CNN's 28 x 56 map, 150 and 600 neurons)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.common import command_line, machine_info, machine_line, table
from pipeline.models.readout import FullGaussian2d


def _old_forward(readout: FullGaussian2d, x: torch.Tensor) -> torch.Tensor:
    """FullGaussian2d.forward (training mode, no shift) as it was before 2026-12-06: [B, N]. The position
    samples straight from the einsum (batch axis innermost in memory), the channel sum an einsum."""
    c = x.shape[1]
    z = torch.randn((x.shape[0], readout.outdims, 1, 2), dtype=x.dtype)
    pos = torch.einsum("ancd,bnid->bnic", readout.sigma, z) + readout.mu
    grid = torch.clamp(pos, min=-1.0, max=1.0)
    sampled = F.grid_sample(x, grid, align_corners=readout.align_corners)
    y = torch.einsum("bcn,cn->bn", sampled.squeeze(-1), readout.features.view(c, readout.outdims))
    return y + readout.bias


def _step(readout: FullGaussian2d, x0: torch.Tensor, old: bool, seed: int):
    """One forward + backward from the same random draws; returns (seconds, output, gradients)."""
    readout.zero_grad(set_to_none=True)
    x = x0.clone().requires_grad_(True)
    torch.manual_seed(seed)  # the same position samples for both forms
    start = time.perf_counter()
    y = _old_forward(readout, x) if old else readout(x)
    y.sum().backward()
    seconds = time.perf_counter() - start
    grads = [x.grad] + [p.grad for p in readout.parameters()]
    return seconds, [y.detach(), *grads]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--height", type=int, default=28)
    parser.add_argument("--width", type=int, default=56)
    parser.add_argument("--channels", default="16,48,64", help="comma-separated channel counts")
    parser.add_argument("--neurons", default="150,600", help="comma-separated neuron counts")
    args = parser.parse_args()
    rows = []
    for channels in (int(c) for c in args.channels.split(",")):
        for neurons in (int(n) for n in args.neurons.split(",")):
            torch.manual_seed(0)
            readout = FullGaussian2d((channels, args.height, args.width), neurons, init_mu_range=0.9)
            readout.train()
            x0 = torch.randn(args.batch, channels, args.height, args.width)
            x0 = x0.contiguous(memory_format=torch.channels_last)
            times: dict[bool, list[float]] = {True: [], False: []}
            results = {}
            for repeat in range(args.repeats):
                for old in (True, False):
                    seconds, results[old] = _step(readout, x0, old, seed=repeat)
                    times[old].append(seconds)
            worst = max(
                float(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item())
                for a, b in zip(results[False], results[True], strict=True)
            )
            before, now = statistics.median(times[True]), statistics.median(times[False])
            rows.append(
                [
                    str(channels),
                    str(neurons),
                    f"{before * 1e3:.1f}",
                    f"{now * 1e3:.1f}",
                    f"{before / now:.2f}",
                    f"{worst:.1e}",
                ]
            )
    print(f"command  : {command_line()}")
    print(f"machine  : {machine_line(machine_info())}; {torch.get_num_threads()} torch threads")
    print(
        f"readout training step (forward + backward), batch {args.batch}, map {args.height} x "
        f"{args.width}, median of {args.repeats}"
    )
    headers = ["channels", "neurons", "before ms", "now ms", "speed-up", "max rel. diff"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
