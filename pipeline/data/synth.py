"""Synthetic SENSORIUM recordings with a known ground truth.

The generative model holds every effect the winning model exploits (SPEC section 3), each strong enough
to matter, so that every model can be measured against the best possible prediction (the *oracle*: the
expected response given everything up to the trial):

* images: natural-like 1/f noise, shown once (train/validation) or ~10 times (test, final_test);
* receptive fields: a Gabor-like linear part and a phase-invariant energy part, read from the image as
  the model sees it (rescaled to 36x64, SPEC 1.5);
* retinotopy: receptive-field centre a smooth function of the cortex coordinates;
* eye position: the pupil centre shifts every receptive field;
* behaviour: pupil size and running speed modulate the rate;
* history: a fraction of the neurons depend on their own responses on the preceding trials;
* network state: a low-dimensional latent AR(1) process over trials with per-neuron loadings;
* slow gain drift: a smooth multiplicative drift over the session with per-neuron coupling;
* calcium-like observations: non-negative Gamma-distributed responses around the expected rate.

Rates are generated in presentation (time) order; files are then written in a random permutation, as in
the real data (file names carry no time information).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.data.format import write_recording
from pipeline.data.images import rescale_bilinear
from pipeline.data.recording import STATISTICS, Recording

FOLDER_HASH = hashlib.md5(b"sensorium-pipeline synthetic").hexdigest()
MODEL_SCALE = 0.25  # the image scale every training run uses (SPEC 1.5)
MIN_TRAIN_TRIALS = 10  # fewer leaves nothing to fit; synthesize() has always refused them
MIN_TEST_IMAGES = 2  # distinct test images per test tier, whatever the fractions
ANIMAL_BASE = 90000  # mouse m's animal_id (the first part of its data key) is ANIMAL_BASE + m


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


def _gabors(rng, centers_px: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Even and odd Gabor filters, (N, h*w) each, unit norm, centred at ``centers_px`` (N, 2) = (x, y)."""
    N = len(centers_px)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    sigma = rng.uniform(2.0, 3.5, N)[:, None, None]
    freq = rng.uniform(0.08, 0.16, N)[:, None, None]  # cycles per pixel
    theta = rng.uniform(0, np.pi, N)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, N)[:, None, None]
    dx = xx[None] - centers_px[:, 0, None, None]
    dy = yy[None] - centers_px[:, 1, None, None]
    u = dx * np.cos(theta) + dy * np.sin(theta)
    env = np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    even = (env * np.cos(2 * np.pi * freq * u + phase)).reshape(N, -1)
    odd = (env * np.sin(2 * np.pi * freq * u + phase)).reshape(N, -1)
    even /= np.linalg.norm(even, axis=1, keepdims=True)
    odd /= np.linalg.norm(odd, axis=1, keepdims=True)
    return even, odd


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _statistics(arr: np.ndarray, scalar: bool) -> dict[str, np.ndarray]:
    axis = None if scalar else 0
    a = arr.astype(np.float64)
    if not scalar:
        a = a.reshape(a.shape[0], -1)
    funcs = {"min": np.min, "max": np.max, "mean": np.mean, "median": np.median, "std": np.std}
    return {s: np.asarray(funcs[s](a, axis=axis), dtype=np.float32) for s in STATISTICS}


def synthesize(cfg: SynthConfig, mouse: int = 0) -> tuple[Recording, dict[str, np.ndarray]]:
    """Generate one recording and its ground truth.

    Args:
        cfg: sizes and effect strengths.
        mouse: index of the mouse (0-based); with ``cfg.seed`` it fixes the random stream and the data key.

    Returns:
        (recording, truth). Per-trial truth arrays are in file-index order, like the recording:
        ``expected`` (T, N) expected response given everything up to the trial; ``responses`` (T, N) the
        responses before zeroing; ``time_rank`` (T,) presentation position; ``latents`` (T, K);
        ``gain`` (T,) session drift factor; ``gain_coupling`` (N,); ``history_weight`` (N,);
        ``rf_center`` (N, 2) in normalised [-1, 1] image coordinates; ``eye_shift`` (T, 2) pixels at 36x64.
    """
    if not isinstance(mouse, Integral) or isinstance(mouse, bool) or mouse < 0:
        raise SynthConfigError("mouse", "a non-negative integer", mouse)
    mouse = int(mouse)
    rng = np.random.default_rng([cfg.seed, mouse, 7919])
    T, N = cfg.n_trials, cfg.n_neurons
    h, w = int(round(cfg.height * MODEL_SCALE)), int(round(cfg.width * MODEL_SCALE))

    # ---- schedule in presentation order (SynthConfig has checked that every tier gets trials)
    n_train, n_val, n_test_img, n_final_img = _schedule(cfg, T)
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
    order = rng.permutation(T)  # presentation position p shows label order[p]
    tiers_t, image_t = labels[order], image_of_label[order]

    # ---- images, as the model sees them (rescaled, standardised), shifted by the eye position
    pool = _one_over_f_images(rng, len(unique_ids), cfg.height, cfg.width)
    images_t = pool[image_t][:, None]  # (T, 1, H, W) uint8
    view = rescale_bilinear(pool.astype(np.float32), MODEL_SCALE)[image_t]  # (T, h, w)
    view = (view - 128.0) / 45.0

    # ---- behaviour and eye position over time
    pupil = np.clip(18 + 5 * _ar1(rng, T, 0.995)[:, 0] + 1.5 * _ar1(rng, T, 0.7)[:, 0], 3, None)
    dpupil = np.diff(pupil, prepend=pupil[0])
    running_state = _ar1(rng, T, 0.97)[:, 0] > 0.3
    speed = running_state * (12 + 6 * _ar1(rng, T, 0.8)[:, 0]) + 0.5 * rng.standard_normal(T)
    behavior_t = np.stack([pupil, dpupil, speed], axis=1)
    eye_t = np.array([200.0, 140.0]) + np.array([8.0, 5.0]) * _ar1(rng, T, 0.85, 2)
    eye_z = (eye_t - eye_t.mean(0)) / eye_t.std(0)
    eye_shift = cfg.eye_shift_px * eye_z  # (T, 2) = (x, y) pixels at model scale
    for t in range(T):
        # the receptive field moves with the eye: sample the image at x + shift
        view[t] = ndimage.shift(view[t], (-eye_shift[t, 1], -eye_shift[t, 0]), order=1, mode="nearest")

    # ---- neurons: cortex position, retinotopy, receptive fields
    coords = np.stack([rng.uniform(0, 800, N), rng.uniform(0, 800, N), rng.uniform(150, 350, N)], axis=1)
    c = coords[:, :2] - coords[:, :2].mean(0)
    c = c / np.abs(c).max()
    rf_center = np.stack(
        [0.7 * np.sin(1.3 * c[:, 0]) + 0.1 * c[:, 1], 0.55 * c[:, 1] + 0.15 * c[:, 0] ** 2], axis=1
    )
    rf_center += 0.03 * rng.standard_normal((N, 2))
    rf_center = np.clip(rf_center, -0.85, 0.85)
    centers_px = np.stack([(rf_center[:, 0] + 1) / 2 * (w - 1), (rf_center[:, 1] + 1) / 2 * (h - 1)], axis=1)
    even, odd = _gabors(rng, centers_px, h, w)
    flat = view.reshape(T, -1)
    lin, quad = flat @ even.T, flat @ odd.T  # (T, N)
    energy = np.sqrt(lin**2 + quad**2)
    simple = rng.uniform(0, 1, N)  # 1: simple cell (linear), 0: complex cell (energy)
    drive = simple * lin + (1 - simple) * energy
    drive = (drive - drive.mean(0)) / (drive.std(0) + 1e-9)

    # ---- modulators
    pupil_z = (pupil - pupil.mean()) / pupil.std()
    run01 = np.abs(speed) / np.abs(speed).max()
    beta = np.stack(
        [rng.normal(cfg.behavior_pupil, 0.1, N), rng.normal(cfg.behavior_running, 0.15, N)], axis=1
    )
    behavior_term = np.outer(pupil_z, beta[:, 0]) + np.outer(run01 - run01.mean(), beta[:, 1])
    latents = _ar1(rng, T, cfg.latent_rho, cfg.n_latents)
    loadings = rng.normal(0, cfg.latent_weight, (N, cfg.n_latents))
    freqs = np.array([0.7, 1.6, 2.9])
    s = (
        np.sin(2 * np.pi * freqs[None] * np.arange(T)[:, None] / T + rng.uniform(0, 2 * np.pi, 3)[None])
    ).sum(1)
    s = (s - s.mean()) / s.std()
    gain = np.exp(cfg.gain_drift * s)
    coupling = rng.uniform(0.4, 1.6, N)
    n_hist = int(round(cfg.history_fraction * N))
    history_weight = np.zeros(N)
    history_weight[rng.permutation(N)[:n_hist]] = rng.uniform(*cfg.history_weight, n_hist)
    image_weight = rng.uniform(*cfg.image_drive, N)
    base_rate = rng.lognormal(0.0, 0.5, N)

    # ---- generate in time order: history depends on the realised responses
    static = 0.3 + image_weight * drive + behavior_term + latents @ loadings.T  # (T, N)
    gain_n = np.exp(cfg.gain_drift * np.outer(s, coupling))
    norm = _softplus(np.array(0.3))
    expected = np.empty((T, N))
    responses = np.empty((T, N))
    # last 10 responses as log1p(response / base rate): compressive, so the self-excitation stays stable
    recent = np.full((10, N), np.log1p(1.0))
    for t in range(T):
        hist = 0.6 * recent[-1] + 0.4 * recent.mean(0) - np.log1p(1.0)
        lam = base_rate * gain_n[t] * _softplus(static[t] + history_weight * 2.0 * hist) / norm
        y = lam * rng.gamma(cfg.noise_shape, 1.0 / cfg.noise_shape, N)
        expected[t], responses[t] = lam, y
        recent = np.roll(recent, -1, axis=0)
        recent[-1] = np.log1p(y / base_rate)

    # ---- trial metadata in presentation order
    start = np.datetime64("2019-07-01T09:00:00") + np.timedelta64(int(rng.integers(0, 365)), "D")
    iti = rng.uniform(0.8, 2.0, T)
    iti[rng.uniform(size=T) < 0.005] += rng.uniform(20, 120)  # occasional breaks between blocks
    seconds = np.floor(np.cumsum(iti)).astype(np.int64)  # 1-second resolution, some ties
    times = start + seconds.astype("timedelta64[s]")
    timestamps_t = np.array([f"Timestamp('{str(t).replace('T', ' ')}')" for t in times])
    animal, session, scan = ANIMAL_BASE + mouse, 1 + cfg.seed % 1000, 1
    if cfg.competition:
        trial_idx_t = np.array(
            [hashlib.md5(f"{cfg.seed}-{mouse}-{p}".encode()).hexdigest() for p in range(T)]
        )
    else:
        trial_idx_t = np.arange(T)

    # ---- permute into file order
    time_of_file = rng.permutation(T)  # file i holds presentation position time_of_file[i]

    def f(a: np.ndarray) -> np.ndarray:
        return a[time_of_file]

    file_responses = f(responses).astype(np.float32)
    if cfg.competition:
        file_responses[np.isin(f(tiers_t), ["test", "final_test"])] = 0.0
    trials = {
        "tiers": f(tiers_t),
        "frame_image_id": f(image_t).astype(np.int64),
        "frame_image_class": np.full(T, "imagenet"),
        "trial_idx": f(trial_idx_t),
        "frame_trial_ts": f(timestamps_t),
        "animal_id": np.full(T, animal),
        "session": np.full(T, session),
        "scan_idx": np.full(T, scan),
        "condition_hash": np.array([hashlib.md5(str(i).encode()).hexdigest()[:20] for i in f(image_t)]),
        "frame_last_flip": f(np.cumsum(np.round(iti * 60)).astype(np.int64)),
        "frame_pre_blank_period": np.full(T, 0.3),
        "frame_presentation_time": np.full(T, 0.5),
    }
    neurons = {
        "unit_ids": (rng.permutation(N) + 1).astype(np.int64),
        "animal_ids": np.full(N, animal),
        "sessions": np.full(N, session),
        "scan_idx": np.full(N, scan),
        "area": np.full(N, "V1"),
        "layer": np.full(N, "L2/3"),
        "cell_motor_coordinates": coords.astype(np.float32),
    }
    arrays = {
        "images": f(images_t),
        "responses": file_responses,
        "behavior": f(behavior_t).astype(np.float32),
        "pupil_center": f(eye_t).astype(np.float32),
    }
    statistics = {
        var: {variant: _statistics(arr, scalar=(var == "images")) for variant in ("all", "stimulus_frame")}
        for var, arr in arrays.items()
    }
    rec = Recording(
        data_key=f"{animal}-{session}-{scan}", neurons=neurons, trials=trials, statistics=statistics, **arrays
    )
    truth = {
        "expected": f(expected).astype(np.float32),
        "responses": f(responses).astype(np.float32),
        "time_rank": time_of_file.astype(np.int64),
        "latents": f(latents).astype(np.float32),
        "latent_loadings": loadings.astype(np.float32),
        "gain": f(gain).astype(np.float32),
        "gain_coupling": coupling.astype(np.float32),
        "history_weight": history_weight.astype(np.float32),
        "rf_center": rf_center.astype(np.float32),
        "eye_shift": f(eye_shift).astype(np.float32),
        "behavior_weight": beta.astype(np.float32),
        "image_weight": image_weight.astype(np.float32),
        "config": np.array(json.dumps(asdict(cfg))),
    }
    return rec, truth


def folder_name(data_key: str) -> str:
    """The real naming scheme: ``static<key>-GrayImageNet-<hash>``."""
    return f"static{data_key}-GrayImageNet-{FOLDER_HASH}"


def truth_path(recording_path: str | Path) -> Path:
    """Ground-truth sidecar of a synthetic recording (beside, not inside, the folder or zip)."""
    p = Path(recording_path)
    return p.with_name(p.name.removesuffix(".zip") + ".truth.npz")


# Real sizes of the six SENSORIUM+ training recordings (SPEC 1.1), in the winner's order: five pre-training
# mice, then the competition mouse 27204-5-13 (26872-17-20 has no behaviour and is not used).
FULL_SIZES: tuple[tuple[int, int], ...] = (
    (8372, 5994),
    (7344, 5997),
    (7334, 5951),
    (8107, 5966),
    (8098, 5983),
    (7538, 6959),
)
FULL_TEST_TRIALS = 1000  # 100 images x 10 repeats per test tier (SPEC 1.1: 998 in 21067-10-18)
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
) -> list[Path]:
    """Write mouse ``i`` of ``configs[i]`` (folder, zip, truth sidecar) to ``out``.

    ``jobs`` > 1 writes that many mice at once in worker processes (each mouse has its own random
    stream, so the files are the same either way; a full-size mouse needs ~8 GB while it is generated).
    ``on_written`` is called with each folder once it is complete (progress of long full-size runs).
    Returns the recording folders, in mouse order.
    """
    out = Path(out)
    if jobs <= 1 or len(configs) <= 1:
        folders = []
        for mouse, cfg in enumerate(configs):
            folders.append(_write_mouse(out, cfg, mouse, make_zip))
            if on_written is not None:
                on_written(folders[-1])
        return folders
    from concurrent.futures import ProcessPoolExecutor, as_completed

    folders: dict[int, Path] = {}
    with ProcessPoolExecutor(max_workers=min(jobs, len(configs))) as pool:
        futures = {pool.submit(_write_mouse, out, cfg, m, make_zip): m for m, cfg in enumerate(configs)}
        for future in as_completed(futures):
            folders[futures[future]] = future.result()
            if on_written is not None:
                on_written(folders[futures[future]])
    return [folders[m] for m in range(len(configs))]


def _write_mouse(out: Path, cfg: SynthConfig, mouse: int, make_zip: bool) -> Path:
    """Generate and write one mouse; the truth sidecar last, so its presence means the mouse is complete."""
    rec, truth = synthesize(cfg, mouse)
    folder, _ = write_recording(rec, out / folder_name(rec.data_key), make_zip=make_zip)
    del rec  # a full-size recording holds ~0.5 GB: free it before the sidecar is compressed
    sidecar = truth_path(folder)
    tmp = sidecar.with_name(f".{sidecar.name}.tmp.npz")
    np.savez_compressed(tmp, **truth)
    tmp.replace(sidecar)
    return folder
