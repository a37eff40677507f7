"""Synthetic SENSORIUM recordings with a known ground truth.

The generative model holds every effect the winning model exploits (docs/model.md#winner), each strong enough
to matter, so that every model can be measured against the best possible prediction (the *oracle*: the
expected response given everything up to the trial):

* images: natural-like 1/f noise, shown once (train/validation) or ~10 times (test, final_test);
* receptive fields: a Gabor-like linear part and a phase-invariant energy part, read from the image as
  the model sees it (rescaled to 36x64, docs/model.md#input-pipeline);
* retinotopy: receptive-field centre a smooth function of the cortex coordinates;
* eye position: the pupil centre shifts every receptive field;
* behaviour: pupil size and running speed modulate the rate;
* history: a fraction of the neurons depend on their own responses on the preceding trials;
* network state: a low-dimensional latent AR(1) process over trials with per-neuron loadings;
* slow gain drift: a smooth multiplicative drift over the session with per-neuron coupling;
* calcium-like observations: non-negative Gamma-distributed responses around the expected rate.

Rates are generated in presentation (time) order; files are then written in a random permutation, as in
the real data (file names carry no time information).

:func:`synthesize` returns the recording and its ground truth; :func:`synthesize_world` also returns the
generator's intermediates in time order (:class:`SyntheticWorld`: the planted image drive and its Gabor
filters, the softplus argument, the gains), for analyses that rebuild the rate with one thing changed.

The receptive fields above are the default *Gabor world*. A :class:`StimulusModel` passed as ``stimulus``
replaces the image drive (and the eye shift) with its own, everything else staying as it is: the
*teacher world* (:mod:`pipeline.data.teacher`, ``sensorium synth --stimulus teacher``) takes it from a
pretrained model of real mouse V1.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from pipeline.data.format import write_recording
from pipeline.data.images import rescale_bilinear
from pipeline.data.recording import STATISTICS, Recording

FOLDER_HASH = hashlib.md5(b"sensorium-pipeline synthetic").hexdigest()
MODEL_SCALE = 0.25  # the image scale every training run uses (docs/model.md#input-pipeline)
MIN_TRAIN_TRIALS = 10  # fewer leaves nothing to fit; synthesize() has always refused them
MIN_TEST_IMAGES = 2  # distinct test images per test tier, whatever the fractions
ANIMAL_BASE = 90000  # mouse m's animal_id (the first part of its data key) is ANIMAL_BASE + m
#: session numbers of a stimulus model's scans (the Gabor world's are 1 + seed % 1000)
TEACHER_SESSION_BASE = 1001


class SynthConfigError(ValueError):
    """An invalid generator argument, named by ``field`` (a :class:`SynthConfig` field, ``n_mice`` or
    ``mouse``), so that a caller such as the CLI can name its own flag for it."""

    def __init__(self, field: str, expected: str, found: object) -> None:
        # args mirror the signature, so the error pickles (worker processes) and repr()s faithfully
        super().__init__(field, expected, found)
        self.field, self.expected, self.found = field, expected, found

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, found {self.found!r}"


def _schedule(cfg: SynthConfig, n_trials: int) -> tuple[int, int, int, int]:
    """(n_train, n_val, n_test_img, n_final_img) of ``n_trials`` trials under ``cfg``'s fractions."""
    n_test_img = max(MIN_TEST_IMAGES, int(round(cfg.test_fraction * n_trials / cfg.n_repeats)))
    n_final_img = n_test_img if cfg.competition else 0
    n_val = int(round(cfg.validation_fraction * n_trials))
    n_train = n_trials - (n_test_img + n_final_img) * cfg.n_repeats - n_val
    return n_train, n_val, n_test_img, n_final_img


def _schedule_ok(cfg: SynthConfig, n_trials: int) -> bool:
    n_train, n_val, _, _ = _schedule(cfg, n_trials)
    return n_train >= MIN_TRAIN_TRIALS and n_val >= 1


def min_trials(cfg: SynthConfig, limit: int = 10**6) -> int | None:
    """The fewest trials that give ``cfg`` every tier (training, validation, repeated test images).

    None when no count up to ``limit`` does (fractions that leave no room for training trials).
    """
    # the minimum is at least the fixed test block plus the training trials: start the search there
    start = MIN_TRAIN_TRIALS + MIN_TEST_IMAGES * cfg.n_repeats * (2 if cfg.competition else 1)
    return next((t for t in range(start, limit + 1) if _schedule_ok(cfg, t)), None)


def _check_int(cfg: SynthConfig, name: str, minimum: int | None, why: str = "") -> None:
    """``cfg.name`` is an integer >= ``minimum`` (None: any); stored as a plain int (JSON-serialisable)."""
    value = getattr(cfg, name)
    is_int = isinstance(value, Integral) and not isinstance(value, bool)
    if not is_int or (minimum is not None and value < minimum):
        wanted = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise SynthConfigError(name, wanted + (f" ({why})" if why else ""), value)
    object.__setattr__(cfg, name, int(value))


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_real(
    cfg: SynthConfig, name: str, low: float | None = None, high: float | None = None, *, closed: str = ""
) -> None:
    """``cfg.name`` is a finite number in the interval; ``closed`` holds "l" and/or "h" for closed ends."""
    value = getattr(cfg, name)
    ok = _is_real(value)
    if ok and low is not None:
        ok = value >= low if "l" in closed else value > low
    if ok and high is not None:
        ok = value <= high if "h" in closed else value < high
    if not ok:
        if low is None and high is None:
            wanted = "a finite number"
        elif high is None:
            wanted = f"a number {'>=' if 'l' in closed else '>'} {low}"
        else:
            wanted = (
                f"a number in {'[' if 'l' in closed else '('}{low}, {high}{']' if 'h' in closed else ')'}"
            )
        raise SynthConfigError(name, wanted, value)
    object.__setattr__(cfg, name, float(value))


def _check_range(cfg: SynthConfig, name: str) -> None:
    """``cfg.name`` is a (low, high) pair of finite numbers with low <= high (a uniform range)."""
    value = getattr(cfg, name)
    pair = tuple(value) if isinstance(value, tuple | list) else ()
    if len(pair) != 2 or not all(_is_real(v) for v in pair) or pair[0] > pair[1]:
        raise SynthConfigError(name, "a (low, high) pair of finite numbers with low <= high", value)
    object.__setattr__(cfg, name, (float(pair[0]), float(pair[1])))


@dataclass(frozen=True)
class SynthConfig:
    """Size and effect strengths of one synthetic recording (defaults are small enough for the CPU demo).

    Every field is checked on construction: an invalid one raises :class:`SynthConfigError` naming it
    (and the minimum where a size is too small for the generator), before anything is generated.
    """

    n_neurons: int = 150
    n_trials: int = 1000
    height: int = 144
    width: int = 256
    n_repeats: int = 10  # presentations of each test image
    test_fraction: float = 0.1  # share of trials in `test` (and again in `final_test` when competition)
    validation_fraction: float = 0.1
    competition: bool = False  # hashed trial_idx, final_test tier, zeroed test/final_test responses
    seed: int = 0
    # effect strengths (log-rate units unless stated)
    image_drive: tuple[float, float] = (0.6, 1.2)  # per-neuron range of the image weight
    eye_shift_px: float = 2.0  # receptive-field shift (pixels at 36x64) per std of eye position
    behavior_pupil: float = 0.25  # mean per-neuron pupil weight
    behavior_running: float = 0.3  # mean per-neuron running weight
    history_fraction: float = 0.5  # share of neurons with self-dependence
    history_weight: tuple[float, float] = (0.5, 0.9)
    n_latents: int = 3
    latent_rho: float = 0.9  # trial-to-trial autocorrelation of the network state
    latent_weight: float = 0.35  # std of the per-neuron loadings
    gain_drift: float = 0.35  # std of the log-gain drift over the session
    noise_shape: float = 1.5  # Gamma shape of the observation noise (smaller: noisier)

    def __post_init__(self) -> None:
        # the retinotopy normalises the neurons' spread over cortex: one neuron has none (NaN positions)
        _check_int(self, "n_neurons", 2, "the retinotopy needs the spread of at least 2 neurons")
        # one output pixel at the model's image scale needs round(size * 0.25) >= 1
        for name in ("height", "width"):
            _check_int(self, name, 3, f"at least one pixel at the model's {MODEL_SCALE} image scale")
        # the oracle and FEV compare repeats of the same test image
        _check_int(self, "n_repeats", 2, "the oracle and FEV need repeated test images")
        _check_int(self, "seed", 0)
        _check_int(self, "n_latents", 0)
        if not isinstance(self.competition, bool):
            raise SynthConfigError("competition", "True or False", self.competition)
        _check_real(self, "test_fraction", 0.0, 1.0, closed="l")
        _check_real(self, "validation_fraction", 0.0, 1.0)
        _check_real(self, "history_fraction", 0.0, 1.0, closed="lh")
        _check_real(self, "latent_rho", -1.0, 1.0)  # |rho| < 1: a stationary AR(1)
        _check_real(self, "latent_weight", 0.0, closed="l")
        _check_real(self, "noise_shape", 0.0)  # a Gamma shape is positive
        for name in ("eye_shift_px", "behavior_pupil", "behavior_running", "gain_drift"):
            _check_real(self, name)
        for name in ("image_drive", "history_weight"):
            _check_range(self, name)
        # the lower bound depends on the fractions and repeats: the schedule check below says it
        _check_int(self, "n_trials", None)
        if not _schedule_ok(self, self.n_trials):
            self._refuse_trials()

    def _refuse_trials(self) -> None:
        """Raise the n_trials error, saying the minimum and what it is made of."""
        kind = "competition " if self.competition else ""
        images = f"{MIN_TEST_IMAGES} test" + (f" + {MIN_TEST_IMAGES} final_test" if self.competition else "")
        parts = (
            f"{MIN_TRAIN_TRIALS} training trials, validation_fraction={self.validation_fraction:g}, "
            f"test_fraction={self.test_fraction:g} with at least {images} images x {self.n_repeats} repeats"
        )
        minimum = min_trials(self)
        if minimum is None:
            wanted = f"a {kind}schedule with room for {parts} (lower test_fraction/validation_fraction)"
        elif self.n_trials < minimum:
            wanted = f"at least {minimum} trials for a {kind}recording ({parts})"
        else:  # rounding of the fractions makes some larger counts fall short too
            n_train, n_val, _, _ = _schedule(self, self.n_trials)
            wanted = (
                f"a count leaving >= {MIN_TRAIN_TRIALS} training and >= 1 validation trials "
                f"(this one leaves {n_train} and {n_val})"
            )
        raise SynthConfigError("n_trials", wanted, self.n_trials)


def _one_over_f_images(rng: np.random.Generator, n: int, H: int, W: int) -> np.ndarray:
    """(n, H, W) uint8 images with a 1/f amplitude spectrum (natural-image-like)."""
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.rfftfreq(W)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amplitude = 1.0 / f
    amplitude[0, 0] = 0.0
    out = np.empty((n, H, W), dtype=np.uint8)
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi, size=amplitude.shape)
        img = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(H, W))
        img = (img - img.mean()) / (img.std() + 1e-12)
        out[i] = np.clip(128 + 45 * img, 0, 255).astype(np.uint8)
    return out


def _ar1(rng: np.random.Generator, T: int, rho: float, size: int = 1) -> np.ndarray:
    """(T, size) stationary AR(1) with unit variance."""
    x = np.empty((T, size))
    x[0] = rng.standard_normal(size)
    eps = rng.standard_normal((T, size)) * np.sqrt(1 - rho**2)
    for t in range(1, T):
        x[t] = rho * x[t - 1] + eps[t]
    return x


def _gabors(params: _GaborDraws, centers_px: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Even and odd Gabor filters, (N, h*w) each, unit norm, centred at ``centers_px`` (N, 2) = (x, y)."""
    N = len(centers_px)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    sigma, freq = params.sigma[:, None, None], params.freq[:, None, None]  # freq: cycles per pixel
    theta, phase = params.theta[:, None, None], params.phase[:, None, None]
    dx = xx[None] - centers_px[:, 0, None, None]
    dy = yy[None] - centers_px[:, 1, None, None]
    u = dx * np.cos(theta) + dy * np.sin(theta)
    env = np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    even = (env * np.cos(2 * np.pi * freq * u + phase)).reshape(N, -1)
    odd = (env * np.sin(2 * np.pi * freq * u + phase)).reshape(N, -1)
    even /= np.linalg.norm(even, axis=1, keepdims=True)
    odd /= np.linalg.norm(odd, axis=1, keepdims=True)
    return even, odd


def _statistics(arr: np.ndarray, scalar: bool) -> dict[str, np.ndarray]:
    axis = None if scalar else 0
    a = arr.astype(np.float64)
    if not scalar:
        a = a.reshape(a.shape[0], -1)
    funcs: dict[str, Callable[..., ArrayLike]] = {
        "min": np.min,
        "max": np.max,
        "mean": np.mean,
        "median": np.median,
        "std": np.std,
    }
    return {s: np.asarray(funcs[s](a, axis=axis), dtype=np.float32) for s in STATISTICS}


@dataclass(frozen=True)
class SyntheticWorld:
    """One synthetic recording with what the generator planted on the way to it.

    ``recording`` and ``truth`` are what :func:`synthesize` returns (file order). The other arrays are in
    presentation (time) order, T trials x N neurons; h x w is the model's image size (``MODEL_SCALE``).
    ``expected == rate_scale * softplus(pre)`` up to float rounding (:func:`softplus`).

    Attributes:
        recording: the recording as written (file order).
        truth: the ground truth sidecar (file order; see :func:`synthesize`).
        time_of_file: (T,) presentation position of file index i (``truth["time_rank"]``).
        tiers: (T,) tier of each presentation.
        eye_shift: (T, 2) receptive-field shift, (x, y) pixels at the model's scale.
        even, odd: (N, h*w) each neuron's Gabor pair (unit norm, centred on its receptive field).
        simple: (N,) linear share of each neuron's drive (1: simple cell, 0: complex cell, energy).
        drive: (T, N) the planted image drive, standardised per neuron (``truth["image_weight"]``
            multiplies it).
        pre: (T, N) the softplus argument: 0.3 + image drive + behaviour + latents + history.
        gain: (T, N) each neuron's session gain drift, exp(gain_drift x drift x coupling).
        base_rate: (N,) each neuron's base rate.
        expected: (T, N) the oracle, float64 (``truth["expected"]`` is its float32 copy in file order).
        responses: (T, N) the realised responses before zeroing, float64.
        stimulus: where the image drive came from: ``gabor``, or the stimulus model's name (e.g.
            ``teacher``; ``even`` and ``odd`` are then (N, 0) and ``simple`` NaN: no Gabor filters).
    """

    recording: Recording
    truth: dict[str, np.ndarray]
    time_of_file: np.ndarray
    tiers: np.ndarray
    eye_shift: np.ndarray
    even: np.ndarray
    odd: np.ndarray
    simple: np.ndarray
    drive: np.ndarray
    pre: np.ndarray
    gain: np.ndarray
    base_rate: np.ndarray
    expected: np.ndarray
    responses: np.ndarray
    stimulus: str = "gabor"

    @property
    def rate_scale(self) -> np.ndarray:
        """(T, N) what multiplies the softplus: base rate x gain drift / softplus(0.3) (the normaliser)."""
        return self.base_rate * self.gain / softplus(np.array(0.3))

    @property
    def order(self) -> np.ndarray:
        """(T,) file indices in presentation order: ``truth[k][world.order]`` is in time order."""
        return np.argsort(self.time_of_file)


def softplus(x: np.ndarray) -> np.ndarray:
    """The generator's rate nonlinearity, log(1 + exp(x)), elementwise."""
    return np.logaddexp(0.0, x)


def synthesize(
    cfg: SynthConfig, mouse: int = 0, stimulus: StimulusModel | None = None
) -> tuple[Recording, dict[str, np.ndarray]]:
    """Generate one recording and its ground truth (:func:`synthesize_world` without the intermediates).

    Args:
        cfg: sizes and effect strengths.
        mouse: index of the mouse (0-based); with ``cfg.seed`` it fixes the random stream and the data key.
        stimulus: where the image drive comes from: None for the Gabor / energy neurons (the default
            world), or a :class:`StimulusModel` such as :class:`pipeline.data.teacher.TeacherWorld`.

    Returns:
        (recording, truth). Per-trial truth arrays are in file-index order, like the recording:
        ``expected`` (T, N) expected response given everything up to the trial; ``responses`` (T, N) the
        responses before zeroing; ``time_rank`` (T,) presentation position; ``latents`` (T, K);
        ``gain`` (T,) session drift factor; ``gain_coupling`` (N,); ``history_weight`` (N,);
        ``rf_center`` (N, 2) in normalised [-1, 1] image coordinates; ``eye_shift`` (T, 2) pixels at 36x64.
        With a ``stimulus`` model, ``drive`` (T, N) the planted standardised image drive and the model's
        own entries (:attr:`PlantedDrive.truth`, :attr:`PlantedDrive.trial_truth`) besides.
    """
    world = synthesize_world(cfg, mouse, stimulus)
    return world.recording, world.truth


def synthesize_world(
    cfg: SynthConfig, mouse: int = 0, stimulus: StimulusModel | None = None
) -> SyntheticWorld:
    """Generate one recording, its ground truth and the generator's intermediates (:class:`SyntheticWorld`).

    Every step draws from one random stream seeded by (``cfg.seed``, ``mouse``), in a fixed order: the
    same arguments give the same bits, and each step below must keep its place in that order (a new
    draw goes at the end, or every recording generated so far changes).

    With a ``stimulus`` model the image drive (and the eye shift) is the model's (:class:`StimulusModel`)
    instead of the Gabor / energy neurons'. The neurons' random numbers are drawn all the same, so every
    other step gets the same stream: the images, behaviour, network state, drift, noise draws, trial
    times and file order are those of the Gabor world with the same arguments; only the drive, and with
    it the rates and responses, differ.

    Raises:
        SynthConfigError: ``mouse`` is not a non-negative integer.
        ValueError: the stimulus model returned arrays of the wrong shapes.
    """
    if not isinstance(mouse, Integral) or isinstance(mouse, bool) or mouse < 0:
        raise SynthConfigError("mouse", "a non-negative integer", mouse)
    mouse = int(mouse)
    rng = np.random.default_rng([cfg.seed, mouse, 7919])
    shown = _presentations(cfg, rng)
    images_t, view = _stimulus(cfg, rng, shown)
    behavior = _behavior(cfg, rng)
    draws = _cell_draws(rng, cfg.n_neurons)
    if stimulus is None:  # the Gabor world
        _follow_the_eye(view, behavior.eye_shift)
        cells = _receptive_fields(draws, *view.shape[1:])  # (h, w): the model's image size
        drive = _image_drive(view, cells)
        own: PlantedDrive | None = None
    else:
        del view  # the stimulus model reads the images as shown
        own = stimulus.plant(
            StimulusInput(cfg, mouse, images_t, behavior.behavior, behavior.eye, draws.coords[:, 2])
        )
        own.check(cfg.n_trials, cfg.n_neurons)
        behavior = replace(behavior, eye_shift=own.eye_shift)
        N = cfg.n_neurons
        cells = _Cells(own.coords, own.rf_center, np.empty((N, 0)), np.empty((N, 0)), np.full(N, np.nan))
        drive = own.drive
    mod = _modulators(cfg, rng, behavior)
    rates = _generate(cfg, rng, drive, mod)
    stamps, flips = _trial_times(rng, cfg.n_trials)
    time_of_file = rng.permutation(cfg.n_trials)  # file i holds presentation position time_of_file[i]
    planted = _Planted(shown, images_t, behavior, cells, mod, rates, stamps, flips, time_of_file)
    # another world gets other session numbers, so its scans never share a data key (and a folder) with
    # the Gabor scans of the same seed
    rec = _recording(cfg, mouse, rng, planted, session_base=1 if stimulus is None else TEACHER_SESSION_BASE)
    truth = _truth(cfg, planted)
    if own is not None:
        # the stored generator config (GroundTruth.generator_config) says which world it is
        truth["config"] = np.array(json.dumps({**asdict(cfg), "stimulus": stimulus.name}))
        truth["drive"] = planted.in_files(drive).astype(np.float32)
        truth |= {k: planted.in_files(v) for k, v in own.trial_truth.items()} | own.truth
    return SyntheticWorld(
        recording=rec,
        truth=truth,
        time_of_file=time_of_file,
        tiers=shown.tiers,
        eye_shift=behavior.eye_shift,
        even=cells.even,
        odd=cells.odd,
        simple=cells.simple,
        drive=drive,
        pre=rates.pre,
        gain=rates.gain,
        base_rate=mod.base_rate,
        expected=rates.expected,
        responses=rates.responses,
        stimulus="gabor" if stimulus is None else stimulus.name,
    )


# -- the plug of another stimulus model (the teacher world: pipeline.data.teacher) ---------------------


@dataclass(frozen=True)
class StimulusInput:
    """What a stimulus model is given of the recording being generated, trials in presentation (time)
    order: ``cfg`` and ``mouse`` (which seed its own random stream), ``images`` (T, 1, H, W) uint8 as
    shown, ``behavior`` (T, 3) = (pupil, its derivative, running speed) and ``pupil_center`` (T, 2) raw,
    as the recording stores them, and ``depth`` (N,) the cortical depth drawn for each neuron (um)."""

    cfg: SynthConfig
    mouse: int
    images: np.ndarray
    behavior: np.ndarray
    pupil_center: np.ndarray
    depth: np.ndarray


@dataclass(frozen=True)
class PlantedDrive:
    """What a stimulus model plants in place of the Gabor neurons (T trials in time order, N neurons).

    Attributes:
        coords: (N, 3) cortex position (``meta/neurons/cell_motor_coordinates``).
        rf_center: (N, 2) receptive-field centre, normalised [-1, 1] image coordinates (x, y).
        drive: (T, N) the image drive, standardised per neuron (mean 0, std 1).
        eye_shift: (T, 2) the receptive-field shift caused by the eye position, (x, y) pixels at the
            model's image scale.
        trial_truth: further per-trial sidecar entries, (T, ...) in time order (written in file order).
        truth: further sidecar entries of any other shape (written as they are).
    """

    coords: np.ndarray
    rf_center: np.ndarray
    drive: np.ndarray
    eye_shift: np.ndarray
    trial_truth: dict[str, np.ndarray] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)

    def check(self, T: int, N: int) -> None:
        """Raise ValueError unless the shapes are those of T trials and N neurons."""
        shapes = {
            "coords": (self.coords.shape, (N, 3)),
            "rf_center": (self.rf_center.shape, (N, 2)),
            "drive": (self.drive.shape, (T, N)),
            "eye_shift": (self.eye_shift.shape, (T, 2)),
        } | {f"trial_truth[{k!r}]": (v.shape[:1], (T,)) for k, v in self.trial_truth.items()}
        bad = [f"{name} {got} (expected {want})" for name, (got, want) in shapes.items() if got != want]
        if bad:
            raise ValueError(f"the stimulus model planted arrays of the wrong shape: {', '.join(bad)}")


class StimulusModel(Protocol):
    """Where the image drive comes from, instead of the Gabor / energy neurons (:func:`synthesize_world`).

    ``name`` labels the world (:attr:`SyntheticWorld.stimulus`); ``plant`` must be deterministic for its
    input (draw from its own random stream seeded by ``inp.cfg.seed`` and ``inp.mouse``, never from the
    generator's) and picklable (:func:`write_configs` with ``jobs`` > 1 sends it to worker processes).
    """

    @property
    def name(self) -> str: ...

    def plant(self, inp: StimulusInput) -> PlantedDrive: ...


# -- the generator's steps, in the order they draw from the random stream --------------------------------


@dataclass(frozen=True)
class _Shown:
    """What each presentation (time order) shows: ``tiers`` (T,) and ``image`` (T,) ids into the pool of
    ``n_images`` images (the test images repeated ``n_repeats`` times)."""

    tiers: np.ndarray
    image: np.ndarray
    n_images: int


def _presentations(cfg: SynthConfig, rng: np.random.Generator) -> _Shown:
    """The tiers' trials in a random presentation order (SynthConfig has checked every tier gets some)."""
    n_train, n_val, n_test_img, n_final_img = _schedule(cfg, cfg.n_trials)
    n_test = n_test_img * cfg.n_repeats
    n_final = n_final_img * cfg.n_repeats
    labels = np.array(
        ["train"] * n_train + ["validation"] * n_val + ["test"] * n_test + ["final_test"] * n_final
    )
    unique_ids = np.arange(n_train + n_val + n_test_img + n_final_img)
    image_of_label = np.concatenate(
        [
            unique_ids[: n_train + n_val],
            np.repeat(unique_ids[n_train + n_val : n_train + n_val + n_test_img], cfg.n_repeats),
            np.repeat(unique_ids[n_train + n_val + n_test_img :], cfg.n_repeats),
        ]
    )
    order = rng.permutation(cfg.n_trials)  # presentation position p shows label order[p]
    return _Shown(labels[order], image_of_label[order], len(unique_ids))


def _stimulus(cfg: SynthConfig, rng: np.random.Generator, shown: _Shown) -> tuple[np.ndarray, np.ndarray]:
    """(images (T, 1, H, W) uint8 as shown, view (T, h, w) float32): the image as the model sees it,
    rescaled to ``MODEL_SCALE`` and standardised (before the eye shift)."""
    pool = _one_over_f_images(rng, shown.n_images, cfg.height, cfg.width)
    images_t = pool[shown.image][:, None]
    view = rescale_bilinear(pool.astype(np.float32), MODEL_SCALE)[shown.image]
    return images_t, (view - 128.0) / 45.0


@dataclass(frozen=True)
class _Behavior:
    """Behaviour and eye position over time: ``pupil`` (T,), ``speed`` (T,) running speed, ``behavior``
    (T, 3) = (pupil, its derivative, speed), ``eye`` (T, 2) pupil centre, ``eye_shift`` (T, 2) the
    receptive-field shift it causes, (x, y) pixels at the model's scale."""

    pupil: np.ndarray
    speed: np.ndarray
    behavior: np.ndarray
    eye: np.ndarray
    eye_shift: np.ndarray


def _behavior(cfg: SynthConfig, rng: np.random.Generator) -> _Behavior:
    """Slow pupil size with faster fluctuations, bouts of running, a wandering eye (AR(1) processes)."""
    T = cfg.n_trials
    pupil = np.clip(18 + 5 * _ar1(rng, T, 0.995)[:, 0] + 1.5 * _ar1(rng, T, 0.7)[:, 0], 3, None)
    dpupil = np.diff(pupil, prepend=pupil[0])
    running_state = _ar1(rng, T, 0.97)[:, 0] > 0.3
    speed = running_state * (12 + 6 * _ar1(rng, T, 0.8)[:, 0]) + 0.5 * rng.standard_normal(T)
    eye = np.array([200.0, 140.0]) + np.array([8.0, 5.0]) * _ar1(rng, T, 0.85, 2)
    eye_z = (eye - eye.mean(0)) / eye.std(0)
    behavior = np.stack([pupil, dpupil, speed], axis=1)
    return _Behavior(pupil, speed, behavior, eye, cfg.eye_shift_px * eye_z)


def _follow_the_eye(view: np.ndarray, eye_shift: np.ndarray) -> None:
    """Shift every (h, w) view in place by its trial's eye shift: the receptive fields move with the
    eye, so a neuron sees the image at x + shift."""
    from scipy import ndimage  # here, not at the top: scipy costs `sensorium synth --help` ~0.7 s

    for t in range(len(view)):
        view[t] = ndimage.shift(view[t], (-eye_shift[t, 1], -eye_shift[t, 0]), order=1, mode="nearest")


@dataclass(frozen=True)
class _Cells:
    """The neurons: ``coords`` (N, 3) cortex position, ``rf_center`` (N, 2) receptive-field centre in
    normalised [-1, 1] image coordinates, Gabor pair ``even`` / ``odd`` (N, h*w), ``simple`` (N,)."""

    coords: np.ndarray
    rf_center: np.ndarray
    even: np.ndarray
    odd: np.ndarray
    simple: np.ndarray


@dataclass(frozen=True)
class _GaborDraws:
    """Each neuron's Gabor shape, (N,) each: envelope ``sigma`` (pixels), ``freq`` (cycles per pixel),
    orientation ``theta``, ``phase``."""

    sigma: np.ndarray
    freq: np.ndarray
    theta: np.ndarray
    phase: np.ndarray


@dataclass(frozen=True)
class _CellDraws:
    """The random numbers of the neurons, in the order they are drawn: ``coords`` (N, 3) cortex position,
    ``scatter`` (N, 2) of the receptive-field centres, the Gabor shapes, ``simple`` (N,)."""

    coords: np.ndarray
    scatter: np.ndarray
    gabor: _GaborDraws
    simple: np.ndarray


def _cell_draws(rng: np.random.Generator, N: int) -> _CellDraws:
    """Draw the neurons' random numbers (every world draws them, so that the steps after this one get the
    same stream whatever the stimulus model)."""
    coords = np.stack([rng.uniform(0, 800, N), rng.uniform(0, 800, N), rng.uniform(150, 350, N)], axis=1)
    scatter = rng.standard_normal((N, 2))
    gabor = _GaborDraws(
        sigma=rng.uniform(2.0, 3.5, N),
        freq=rng.uniform(0.08, 0.16, N),
        theta=rng.uniform(0, np.pi, N),
        phase=rng.uniform(0, 2 * np.pi, N),
    )
    simple = rng.uniform(0, 1, N)  # 1: simple cell (linear), 0: complex cell (energy)
    return _CellDraws(coords, scatter, gabor, simple)


def _receptive_fields(draws: _CellDraws, h: int, w: int) -> _Cells:
    """Neurons spread over cortex, their receptive-field centres a smooth function of that position
    (retinotopy, with a little scatter), a Gabor pair at each centre and a simple/complex mix."""
    coords = draws.coords
    c = coords[:, :2] - coords[:, :2].mean(0)
    c = c / np.abs(c).max()
    rf_center = np.stack(
        [0.7 * np.sin(1.3 * c[:, 0]) + 0.1 * c[:, 1], 0.55 * c[:, 1] + 0.15 * c[:, 0] ** 2], axis=1
    )
    rf_center += 0.03 * draws.scatter
    rf_center = np.clip(rf_center, -0.85, 0.85)
    centers_px = np.stack([(rf_center[:, 0] + 1) / 2 * (w - 1), (rf_center[:, 1] + 1) / 2 * (h - 1)], axis=1)
    even, odd = _gabors(draws.gabor, centers_px, h, w)
    return _Cells(coords, rf_center, even, odd, draws.simple)


def _image_drive(view: np.ndarray, cells: _Cells) -> np.ndarray:
    """(T, N) each neuron's response to the (T, h, w) views: the linear Gabor response for a simple
    cell, the phase-invariant energy for a complex one, mixed; standardised per neuron."""
    flat = view.reshape(len(view), -1)
    lin, quad = flat @ cells.even.T, flat @ cells.odd.T  # (T, N)
    energy = np.sqrt(lin**2 + quad**2)
    drive = cells.simple * lin + (1 - cells.simple) * energy
    return (drive - drive.mean(0)) / (drive.std(0) + 1e-9)


@dataclass(frozen=True)
class _Modulators:
    """What modulates the image drive, T trials x N neurons x K latents: ``beta`` (N, 2) pupil and
    running weights, ``behavior_term`` (T, N), ``latents`` (T, K) with ``loadings`` (N, K), the session
    drift ``drift`` (T,) (standardised) with ``gain`` (T,) = exp(gain_drift x drift) and per-neuron
    ``coupling`` (N,), ``history_weight`` (N,), ``image_weight`` (N,), ``base_rate`` (N,)."""

    beta: np.ndarray
    behavior_term: np.ndarray
    latents: np.ndarray
    loadings: np.ndarray
    drift: np.ndarray
    gain: np.ndarray
    coupling: np.ndarray
    history_weight: np.ndarray
    image_weight: np.ndarray
    base_rate: np.ndarray


def _modulators(cfg: SynthConfig, rng: np.random.Generator, behavior: _Behavior) -> _Modulators:
    """Draw the per-neuron weights and the network-state and drift processes over the session."""
    T, N = cfg.n_trials, cfg.n_neurons
    pupil_z = (behavior.pupil - behavior.pupil.mean()) / behavior.pupil.std()
    run01 = np.abs(behavior.speed) / np.abs(behavior.speed).max()
    beta = np.stack(
        [rng.normal(cfg.behavior_pupil, 0.1, N), rng.normal(cfg.behavior_running, 0.15, N)], axis=1
    )
    behavior_term = np.outer(pupil_z, beta[:, 0]) + np.outer(run01 - run01.mean(), beta[:, 1])
    latents = _ar1(rng, T, cfg.latent_rho, cfg.n_latents)
    loadings = rng.normal(0, cfg.latent_weight, (N, cfg.n_latents))
    drift = _slow_drift(rng, T)
    coupling = rng.uniform(0.4, 1.6, N)
    n_hist = int(round(cfg.history_fraction * N))
    history_weight = np.zeros(N)
    history_weight[rng.permutation(N)[:n_hist]] = rng.uniform(*cfg.history_weight, n_hist)
    image_weight = rng.uniform(*cfg.image_drive, N)
    base_rate = rng.lognormal(0.0, 0.5, N)
    gain = np.exp(cfg.gain_drift * drift)
    return _Modulators(
        beta, behavior_term, latents, loadings, drift, gain, coupling, history_weight, image_weight, base_rate
    )


def _slow_drift(rng: np.random.Generator, T: int) -> np.ndarray:
    """(T,) a smooth standardised drift over the session: three slow sines of random phase, summed."""
    freqs = np.array([0.7, 1.6, 2.9])
    s = (
        np.sin(2 * np.pi * freqs[None] * np.arange(T)[:, None] / T + rng.uniform(0, 2 * np.pi, 3)[None])
    ).sum(1)
    return (s - s.mean()) / s.std()


@dataclass(frozen=True)
class _Rates:
    """(T, N) each, time order: ``pre`` the softplus argument, ``gain`` each neuron's gain drift,
    ``expected`` the rate, ``responses`` the realised responses."""

    pre: np.ndarray
    gain: np.ndarray
    expected: np.ndarray
    responses: np.ndarray


def _generate(cfg: SynthConfig, rng: np.random.Generator, drive: np.ndarray, mod: _Modulators) -> _Rates:
    """Rates and responses trial by trial in time order: the history term depends on the responses
    realised on the preceding trials; the observation noise is Gamma around the rate."""
    T, N = drive.shape
    static = 0.3 + mod.image_weight * drive + mod.behavior_term + mod.latents @ mod.loadings.T  # (T, N)
    gain_n = np.exp(cfg.gain_drift * np.outer(mod.drift, mod.coupling))
    norm = softplus(np.array(0.3))
    pre, expected, responses = np.empty((T, N)), np.empty((T, N)), np.empty((T, N))
    # last 10 responses as log1p(response / base rate): compressive, so the self-excitation stays stable
    recent = np.full((10, N), np.log1p(1.0))
    for t in range(T):
        hist = 0.6 * recent[-1] + 0.4 * recent.mean(0) - np.log1p(1.0)
        pre[t] = static[t] + mod.history_weight * 2.0 * hist
        lam = mod.base_rate * gain_n[t] * softplus(pre[t]) / norm
        y = lam * rng.gamma(cfg.noise_shape, 1.0 / cfg.noise_shape, N)
        expected[t], responses[t] = lam, y
        recent = np.roll(recent, -1, axis=0)
        recent[-1] = np.log1p(y / mod.base_rate)
    return _Rates(pre, gain_n, expected, responses)


def _trial_times(rng: np.random.Generator, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(T,) ``frame_trial_ts`` strings as the real recordings write them and (T,) ``frame_last_flip``
    frame counts, in time order: inter-trial intervals of 0.8-2 s with occasional long breaks."""
    start = np.datetime64("2019-07-01T09:00:00") + np.timedelta64(int(rng.integers(0, 365)), "D")
    iti = rng.uniform(0.8, 2.0, T)
    iti[rng.uniform(size=T) < 0.005] += rng.uniform(20, 120)  # occasional breaks between blocks
    seconds = np.floor(np.cumsum(iti)).astype(np.int64)  # 1-second resolution, some ties
    times = start + seconds.astype("timedelta64[s]")
    stamps = np.array([f"Timestamp('{str(t).replace('T', ' ')}')" for t in times])
    return stamps, np.cumsum(np.round(iti * 60)).astype(np.int64)


@dataclass(frozen=True)
class _Planted:
    """Everything generated, in time order, with ``time_of_file`` (T,): file i holds presentation
    position time_of_file[i]."""

    shown: _Shown
    images: np.ndarray
    behavior: _Behavior
    cells: _Cells
    mod: _Modulators
    rates: _Rates
    stamps: np.ndarray
    flips: np.ndarray
    time_of_file: np.ndarray

    def in_files(self, a: np.ndarray) -> np.ndarray:
        """A time-ordered array (trials first) in file order."""
        return a[self.time_of_file]


def _recording(
    cfg: SynthConfig, mouse: int, rng: np.random.Generator, p: _Planted, session_base: int = 1
) -> Recording:
    """The recording in file order (its unit ids are the stream's last draw); with ``cfg.competition``
    the test tiers' responses are zeroed, as in the competition's data."""
    f = p.in_files
    responses = f(p.rates.responses).astype(np.float32)
    if cfg.competition:
        responses[np.isin(f(p.shown.tiers), ["test", "final_test"])] = 0.0
    animal, session, scan = ANIMAL_BASE + mouse, session_base + cfg.seed % 1000, 1
    trials = _trial_table(cfg, mouse, p, (animal, session, scan))
    neurons = _neuron_table(rng, p.cells, (animal, session, scan))
    arrays = {
        "images": f(p.images),
        "responses": responses,
        "behavior": f(p.behavior.behavior).astype(np.float32),
        "pupil_center": f(p.behavior.eye).astype(np.float32),
    }
    statistics = {
        var: {variant: _statistics(arr, scalar=(var == "images")) for variant in ("all", "stimulus_frame")}
        for var, arr in arrays.items()
    }
    return Recording(
        data_key=f"{animal}-{session}-{scan}",
        images=arrays["images"],
        responses=arrays["responses"],
        behavior=arrays["behavior"],
        pupil_center=arrays["pupil_center"],
        neurons=neurons,
        trials=trials,
        statistics=statistics,
    )


def _trial_table(
    cfg: SynthConfig, mouse: int, p: _Planted, key: tuple[int, int, int]
) -> dict[str, np.ndarray]:
    """``meta/trials``: (T,) arrays in file order, as the real recordings name and type them."""
    T, f = cfg.n_trials, p.in_files
    animal, session, scan = key
    return {
        "tiers": f(p.shown.tiers),
        "frame_image_id": f(p.shown.image).astype(np.int64),
        "frame_image_class": np.full(T, "imagenet"),
        "trial_idx": f(_trial_idx(cfg, mouse)),
        "frame_trial_ts": f(p.stamps),
        "animal_id": np.full(T, animal),
        "session": np.full(T, session),
        "scan_idx": np.full(T, scan),
        "condition_hash": np.array([hashlib.md5(str(i).encode()).hexdigest()[:20] for i in f(p.shown.image)]),
        "frame_last_flip": f(p.flips),
        "frame_pre_blank_period": np.full(T, 0.3),
        "frame_presentation_time": np.full(T, 0.5),
    }


def _neuron_table(
    rng: np.random.Generator, cells: _Cells, key: tuple[int, int, int]
) -> dict[str, np.ndarray]:
    """``meta/neurons``: (N,) arrays (coordinates (N, 3)); unit ids a random permutation of 1..N."""
    N = len(cells.coords)
    animal, session, scan = key
    return {
        "unit_ids": (rng.permutation(N) + 1).astype(np.int64),
        "animal_ids": np.full(N, animal),
        "sessions": np.full(N, session),
        "scan_idx": np.full(N, scan),
        "area": np.full(N, "V1"),
        "layer": np.full(N, "L2/3"),
        "cell_motor_coordinates": cells.coords.astype(np.float32),
    }


def _trial_idx(cfg: SynthConfig, mouse: int) -> np.ndarray:
    """(T,) ``trial_idx`` in time order: the presentation position, or an MD5 hash of it (competition)."""
    if cfg.competition:
        return np.array(
            [hashlib.md5(f"{cfg.seed}-{mouse}-{p}".encode()).hexdigest() for p in range(cfg.n_trials)]
        )
    return np.arange(cfg.n_trials)


def _truth(cfg: SynthConfig, p: _Planted) -> dict[str, np.ndarray]:
    """The ground-truth sidecar: per-trial arrays in file order, per-neuron ones by neuron (float32)."""
    f, mod = p.in_files, p.mod
    return {
        "expected": f(p.rates.expected).astype(np.float32),
        "responses": f(p.rates.responses).astype(np.float32),
        "time_rank": p.time_of_file.astype(np.int64),
        "latents": f(mod.latents).astype(np.float32),
        "latent_loadings": mod.loadings.astype(np.float32),
        "gain": f(mod.gain).astype(np.float32),
        "gain_coupling": mod.coupling.astype(np.float32),
        "history_weight": mod.history_weight.astype(np.float32),
        "rf_center": p.cells.rf_center.astype(np.float32),
        "eye_shift": f(p.behavior.eye_shift).astype(np.float32),
        "behavior_weight": mod.beta.astype(np.float32),
        "image_weight": mod.image_weight.astype(np.float32),
        "config": np.array(json.dumps(asdict(cfg))),
    }


def folder_name(data_key: str) -> str:
    """The real naming scheme: ``static<key>-GrayImageNet-<hash>``."""
    return f"static{data_key}-GrayImageNet-{FOLDER_HASH}"


def truth_path(recording_path: str | Path) -> Path:
    """Ground-truth sidecar of a synthetic recording (beside, not inside, the folder or zip)."""
    p = Path(recording_path)
    return p.with_name(p.name.removesuffix(".zip") + ".truth.npz")


# Real sizes of the six SENSORIUM+ training recordings (docs/model.md#recordings), in the winner's order:
# five pre-training mice, then the competition mouse 27204-5-13 (26872-17-20 has no behaviour and is
# not used).
FULL_SIZES: tuple[tuple[int, int], ...] = (
    (8372, 5994),
    (7344, 5997),
    (7334, 5951),
    (8107, 5966),
    (8098, 5983),
    (7538, 6959),
)
# 100 images x 10 repeats per test tier (docs/model.md#recordings: 998 in 21067-10-18)
FULL_TEST_TRIALS = 1000
FULL_VALIDATION_FRACTION = 0.083  # 23964-4-22: 4490 train of 5983, ~1000 test -> ~490 validation
SCALES = ("demo", "full")


def scale_configs(scale: str, seed: int = 0) -> list[SynthConfig]:
    """One :class:`SynthConfig` per mouse of a named size.

    * ``demo``: the two small recordings of ``make demo`` (150 neurons x 1000 trials, the second
      competition-style);
    * ``full``: the six SENSORIUM+ training recordings at their real sizes (:data:`FULL_SIZES`, 7,334-8,372
      neurons, 5,951-6,959 trials, about 1,000 test trials each), the last competition-style like
      27204-5-13 (final_test tier, hashed trial_idx, zeroed test responses). Data keys stay synthetic
      (animal 90000 + mouse) so a synthetic scan can never be mistaken for, or collide with, a real one.

    Raises:
        SynthConfigError: an unknown scale.
    """
    if scale == "demo":
        return [SynthConfig(seed=seed), SynthConfig(seed=seed, competition=True)]
    if scale == "full":
        return [
            SynthConfig(
                n_neurons=n,
                n_trials=t,
                seed=seed,
                test_fraction=FULL_TEST_TRIALS / t,
                validation_fraction=FULL_VALIDATION_FRACTION,
                competition=i == len(FULL_SIZES) - 1,
            )
            for i, (n, t) in enumerate(FULL_SIZES)
        ]
    raise SynthConfigError("scale", f"one of {', '.join(SCALES)}", scale)


def write_synthetic(out: str | Path, n_mice: int, cfg: SynthConfig, *, make_zip: bool = True) -> list[Path]:
    """Write ``n_mice`` recordings (folder, zip, truth sidecar) to ``out``.

    With ``cfg.competition`` the **last** mouse is competition-style (like 27204-5-13 among the
    pre-training mice); the others are pre-training-style.

    Returns:
        The recording folders.

    Raises:
        SynthConfigError: ``n_mice`` is not a positive integer (checked before anything is written).
    """
    return write_configs(out, mouse_configs(n_mice, cfg), make_zip=make_zip)


def mouse_configs(n_mice: int, cfg: SynthConfig) -> list[SynthConfig]:
    """``n_mice`` copies of ``cfg``, only the last one competition-style (when ``cfg.competition``).

    Raises:
        SynthConfigError: ``n_mice`` is not a positive integer.
    """
    if not isinstance(n_mice, Integral) or isinstance(n_mice, bool) or n_mice < 1:
        raise SynthConfigError("n_mice", "a positive integer", n_mice)
    last = n_mice - 1
    return [
        cfg if (cfg.competition and m == last) else replace(cfg, competition=False) for m in range(n_mice)
    ]


def write_configs(
    out: str | Path,
    configs: list[SynthConfig],
    *,
    make_zip: bool = True,
    on_written: Callable[[Path], None] | None = None,
    jobs: int = 1,
    stimulus: StimulusModel | None = None,
) -> list[Path]:
    """Write mouse ``i`` of ``configs[i]`` (folder, zip, truth sidecar) to ``out``.

    ``stimulus``: where the image drive comes from (None: the Gabor world; see :func:`synthesize`). With
    a stimulus model and ``jobs`` > 1 the worker processes are spawned, not forked (torch's threads do
    not survive a fork): a script that calls this must then guard its entry point
    (``if __name__ == "__main__":``), as ``multiprocessing`` requires.

    ``jobs`` > 1 writes that many mice at once in worker processes (each mouse has its own random
    stream, so the files are the same either way; a full-size mouse needs ~8 GB while it is generated).
    ``on_written`` is called with each folder once it is complete (progress of long full-size runs).
    Returns the recording folders, in mouse order.
    """
    out = Path(out)
    if jobs <= 1 or len(configs) <= 1:
        folders = []
        for mouse, cfg in enumerate(configs):
            folders.append(_write_mouse(out, cfg, mouse, make_zip, stimulus))
            if on_written is not None:
                on_written(folders[-1])
        return folders
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # a stimulus model may run torch, whose OpenMP threads do not survive a fork (the child hangs once
    # the parent has used them): its workers start afresh; the Gabor world's are forked, as always
    context = multiprocessing.get_context("spawn") if stimulus is not None else None
    by_mouse: dict[int, Path] = {}
    with ProcessPoolExecutor(max_workers=min(jobs, len(configs)), mp_context=context) as pool:
        futures = {
            pool.submit(_write_mouse, out, cfg, m, make_zip, stimulus): m for m, cfg in enumerate(configs)
        }
        for future in as_completed(futures):
            by_mouse[futures[future]] = future.result()
            if on_written is not None:
                on_written(by_mouse[futures[future]])
    return [by_mouse[m] for m in range(len(configs))]


def _write_mouse(
    out: Path, cfg: SynthConfig, mouse: int, make_zip: bool, stimulus: StimulusModel | None = None
) -> Path:
    """Generate and write one mouse; the truth sidecar last, so its presence means the mouse is complete."""
    rec, truth = synthesize(cfg, mouse, stimulus)
    folder, _ = write_recording(rec, out / folder_name(rec.data_key), make_zip=make_zip)
    del rec  # a full-size recording holds ~0.5 GB: free it before the sidecar is compressed
    sidecar = truth_path(folder)
    tmp = sidecar.with_name(f".{sidecar.name}.tmp.npz")
    # numpy's stub: mypy matches **truth (dict[str, ndarray]) against the keyword allow_pickle: bool
    np.savez_compressed(tmp, **truth)  # type: ignore[arg-type]
    tmp.replace(sidecar)
    return folder
