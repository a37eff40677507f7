"""How much each planted effect is worth to a perfect model: ceilings below the oracle (issue 12).

The oracle (``truth["expected"]``) knows everything the generator used for a trial, including the current
network-state latents, which no model can see. This script regenerates a synthetic recording with the
generator itself, which returns its internals (``pipeline.data.synth.synthesize_world``: the
pre-nonlinearity drive of every trial, the Gabor filters and each neuron's simple / complex mix), and
rebuilds the expected rate with one thing changed:

* ``latents from the past``: the current latents replaced by a ridge estimate from the previous trial's
  responses (what the winner's state features can know at best, lag 1) - the causal ceiling;
* ``eye shift ignored``: the receptive fields do not follow the eye (a model without a shifter);
* ``eye shift off by d px``: the shift known up to a constant error of ``d`` pixels in x and y (at the
  model's 36x64 scale).

Each prints the test-tier single-trial correlation with the planted responses, as the oracle row. With
nothing changed the rebuilt rate equals ``truth["expected"]`` (checked, and tested).

Run:  .venv/bin/python -m research.headroom [--synth-seed 1] [--mouse 0]   (the recordings of
      ``sensorium synth --mice 2 --seed 1``, those of the preset comparison, ``benchmarks.beyond``)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.linear_model import RidgeCV

import pipeline.data.synth as synth
from pipeline.data.images import rescale_bilinear
from pipeline.scoring.metrics import single_trial_correlation


@dataclass
class Internals:
    """A recording's generator internals, in presentation (time) order.

    Attributes:
        pre: (T, N) argument of the softplus (drive + behaviour + latents + history).
        rate_scale: (T, N) rate / softplus(pre): base rate x gain drift / normaliser.
        even, odd: (N, h*w) the Gabor pairs; simple: (N,) linear share of each neuron's drive.
        view: (T, h, w) the image as the model sees it, before the eye shift; eye_shift: (T, 2) (x, y) px.
        latents: (T, K), loadings (N, K); responses, expected: (T, N); tiers: (T,).
    """

    pre: np.ndarray
    rate_scale: np.ndarray
    even: np.ndarray
    odd: np.ndarray
    simple: np.ndarray
    image_weight: np.ndarray
    view: np.ndarray
    eye_shift: np.ndarray
    latents: np.ndarray
    loadings: np.ndarray
    responses: np.ndarray
    expected: np.ndarray
    tiers: np.ndarray


def regenerate(cfg: synth.SynthConfig, mouse: int) -> Internals:
    """Run the generator once more (:func:`pipeline.data.synth.synthesize_world`), keeping what it
    planted on the way (in presentation order): every trial's softplus argument and rate scale, the
    Gabor filters and each neuron's simple / complex mix."""
    world = synth.synthesize_world(cfg, mouse)
    rec, truth = world.recording, world.truth
    order = world.order  # file indices in presentation order
    expected = truth["expected"][order].astype(np.float64)
    images = rec.images[order][:, 0].astype(np.float32)
    return Internals(
        pre=world.pre,
        rate_scale=world.rate_scale,
        even=world.even,
        odd=world.odd,
        simple=world.simple,
        image_weight=truth["image_weight"].astype(np.float64),
        view=(rescale_bilinear(images, synth.MODEL_SCALE) - 128.0) / 45.0,
        eye_shift=truth["eye_shift"][order].astype(np.float64),
        latents=truth["latents"][order].astype(np.float64),
        loadings=truth["latent_loadings"].astype(np.float64),
        responses=truth["responses"][order].astype(np.float64),
        expected=expected,
        tiers=np.asarray(rec.trials["tiers"])[order],
    )


def drive(it: Internals, error_px: float | None) -> np.ndarray:
    """(T, N) image drive, unnormalised, with the eye shift applied up to ``error_px`` (None: no shift)."""
    views = it.view
    if error_px is not None:
        views = np.stack(
            [
                ndimage.shift(v, (-(s[1] + error_px), -(s[0] + error_px)), order=1, mode="nearest")
                for v, s in zip(it.view, it.eye_shift, strict=True)
            ]
        )
    flat = views.reshape(len(views), -1)
    lin, quad = flat @ it.even.T, flat @ it.odd.T
    return it.simple * lin + (1 - it.simple) * np.sqrt(lin**2 + quad**2)


def rate_with_drive(it: Internals, changed: np.ndarray, true: np.ndarray) -> np.ndarray:
    """The expected rate with the image drive ``true`` replaced by ``changed`` (both unnormalised; the
    generator standardises each neuron's drive with the true drive's mean and std)."""
    sd = true.std(0) + 1e-9  # the mean cancels in the difference
    delta = it.image_weight * ((changed - true) / sd)
    return it.rate_scale * synth.softplus(it.pre + delta)


def latents_from_past(it: Internals) -> np.ndarray:
    """(T, K) ridge estimate of each trial's latents from sqrt of the previous trial's responses, fitted
    on the training tier."""
    prev = np.vstack([np.zeros((1, it.responses.shape[1])), np.sqrt(it.responses[:-1])])
    train = it.tiers == "train"
    model = RidgeCV(alphas=np.logspace(-3, 4, 30)).fit(prev[train], it.latents[train])
    return model.predict(prev)


def ceilings(it: Internals, errors: tuple[float, ...] = (0.5, 1.0)) -> dict[str, float]:
    """Test-tier single-trial correlation of each rebuilt rate with the planted responses."""
    test = it.tiers == "test"

    def score(rate: np.ndarray) -> float:
        return float(single_trial_correlation(it.responses[test], rate[test]).mean())

    true = drive(it, 0.0)
    out = {"oracle": score(it.expected), "rebuilt (nothing changed)": score(rate_with_drive(it, true, true))}
    past = latents_from_past(it)
    pre_past = it.pre + (past - it.latents) @ it.loadings.T
    out["latents from the past (lag 1)"] = score(it.rate_scale * synth.softplus(pre_past))
    out["eye shift ignored"] = score(rate_with_drive(it, drive(it, None), true))
    for e in errors:
        out[f"eye shift off by {e} px"] = score(rate_with_drive(it, drive(it, e), true))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth-seed", type=int, default=1, help="as `sensorium synth --seed`")
    parser.add_argument("--mouse", type=int, default=0, help="mouse index, as in `sensorium synth --mice`")
    args = parser.parse_args()
    # `sensorium synth --mice M --seed S` (pre-training style, as benchmarks.beyond writes them)
    cfg = synth.SynthConfig(seed=args.synth_seed)
    it = regenerate(cfg, args.mouse)
    print(
        f"synth seed {args.synth_seed}, mouse {args.mouse}: test single-trial correlation with the responses"
    )
    for name, value in ceilings(it).items():
        print(f"  {name:<32} {value:.3f}")


if __name__ == "__main__":
    main()
