"""The teacher world: synthetic recordings whose image drive comes from a pretrained model of real mouse V1.

In the default (Gabor) world of :mod:`pipeline.data.synth` each neuron is a Gabor / energy filter at a
smooth retinotopy. Here the drive is instead the prediction of the competition starter kit's pretrained
SENSORIUM+ model (``sensorium_p_sota_model.pth``, trained on the real 27204-5-13 recording), the
*teacher*, evaluated on the generator's images with the generator's behaviour and eye position:

* **the model**: built as ``experiments/starter_kit_sota.yaml`` builds it (:data:`TEACHER_MODEL`: 4-layer
  depth-separable core, full Gaussian readouts whose positions an MLP predicts from the neurons' cortex
  coordinates, an MLP shifter, 3 behaviour planes), one readout and shifter per ``readout.<data key>`` of
  the file; the file is read with ``weights_only`` (:func:`pipeline.models.import_state.read_state_dict`)
  and must fit the model strictly (:func:`pipeline.models.import_state.check_fits`);
* **its input**: exactly what the starter kit's dataset configuration makes of the recording being
  written (scale 0.25, normalised with the recording's own statistics, behaviour divided by its std as
  planes after the image, the pupil centre z-scored for the shifter): 144x256 images become the
  teacher's 36x64; other sizes are resized to 36x64 (bilinear, antialiased);
* **the neurons**: drawn from the checkpoint's neurons (of every readout, or those named), without
  replacement while there are enough, then again from all of them (a repeated neuron gets its own jitter);
  each keeps the file's cortex coordinates (``readout.<key>.source_grid``, normalised: written as
  400 + 400 x grid, um-like, with the generator's drawn depth as the third column);
* **the positions**: each neuron reads the teacher's feature map at the teacher's own position for it
  (the grid predictor's output for its coordinates, an exact function of them) plus a Gaussian jitter
  of ``rf_jitter`` pixels (per axis, at the 36x64 input; 0: the teacher's own positions), as real
  receptive fields scatter around the retinotopic map; every other readout parameter (features, bias)
  is the teacher's for that neuron;
* **the drive**: the readout's output before the teacher's ELU+1 (eval mode: no position sampling; the
  teacher's shifter moves the positions with the eye), standardised per neuron. It replaces the Gabor
  drive; everything after it (behaviour gain, network state, history, drift, noise, the oracle) is
  the Gabor world's.

The teacher draws from its own random stream, seeded by (seed, mouse); the generator's stream is drawn as
in the Gabor world, so a teacher recording has the images, behaviour, latents and noise draws of the Gabor
recording with the same seed. See ``docs/teacher-world.md``.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.configs import BaselineModelConfig
from pipeline.data.behavior import normalize_behavior
from pipeline.data.images import rescale_bilinear
from pipeline.data.synth import PlantedDrive, StimulusInput, SynthConfigError
from pipeline.models.build import ScanGeometry, stacked_core_full_gauss_readout
from pipeline.models.encoder import FiringRateEncoder
from pipeline.models.import_state import StateDictImportError, check_fits, read_state_dict
from pipeline.models.readout import FullGaussian2d

#: the model config of ``experiments/starter_kit_sota.yaml`` (the starter kit's SENSORIUM+ "SOTA" model)
TEACHER_MODEL: dict = {
    "pad_input": False,
    "stack": -1,
    "layers": 4,
    "input_kern": 9,
    "gamma_input": 6.3831,
    "gamma_readout": 0.0076,
    "hidden_kern": 7,
    "hidden_channels": 64,
    "depth_separable": True,
    "grid_mean_predictor": {
        "type": "cortex",
        "input_dimensions": 2,
        "hidden_layers": 1,
        "hidden_features": 30,
        "final_tanh": True,
    },
    "init_sigma": 0.1,
    "init_mu_range": 0.3,
    "gauss_type": "full",
    "shifter": True,
}
TEACHER_IMAGE_SIZE = (36, 64)  # the teacher's input: SENSORIUM+ 144x256 images at scale 0.25
TEACHER_SCALE = 0.25
TEACHER_CHANNELS = 4  # the image and 3 behaviour planes (pupil, its derivative, running)
DEFAULT_RF_JITTER = 2.5  # pixels per axis at the teacher's 36x64 input
CORTEX_UM = 400.0  # written cortex coordinates: CORTEX_UM + CORTEX_UM x the normalised grid
TEACHER_STREAM = 1  # the teacher's random stream: default_rng([seed, mouse, 7919, TEACHER_STREAM])
BATCH_SIZE = 64  # trials the teacher evaluates at once


class TeacherError(ValueError):
    """A teacher that cannot be used (one line), naming the argument: ``teacher`` (the file) or
    ``teacher_scans``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field, self.message = field, message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Teacher:
    """A loaded teacher: the model (eval mode, CPU) with the file's weights, and per readout (data key,
    in file order) the normalised cortex coordinates ``grids`` (N_k, 2) and the teacher's own readout
    positions ``positions`` (N_k, 2), (x, y) in [-1, 1] of its feature map."""

    model: FiringRateEncoder
    path: Path
    sha256: str
    grids: dict[str, np.ndarray]
    positions: dict[str, np.ndarray]

    @property
    def map_size(self) -> tuple[int, int]:
        """(h, w) of the core's feature map for a 36x64 input."""
        _, h, w = self.model.readout[self.scans[0]].in_shape
        return h, w

    @property
    def scans(self) -> tuple[str, ...]:
        return tuple(self.grids)


def load_teacher(path: str | Path) -> Teacher:
    """Read ``path`` safely and load it, strictly, into the starter kit's SOTA model.

    Raises:
        TeacherError: unreadable, not a state_dict, no readout with cortex coordinates, or weights that
            do not fit the model (the keys and shapes that differ).
    """
    path = Path(path)
    stat = _stat(path)
    return _load(str(path), stat)


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError as err:
        raise TeacherError("teacher", f"{path}: cannot read the file ({err.strerror or err})") from None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=4)
def _load(path_str: str, stat: tuple[int, int]) -> Teacher:
    """The teacher in ``path_str`` (cached per process while the file's mtime and size stay)."""
    path = Path(path_str)
    try:
        state, sha256 = read_state_dict(path)
    except StateDictImportError as err:
        raise TeacherError("teacher", str(err)) from None
    grids = {
        name.removeprefix("readout.").removesuffix(".source_grid"): t.double().numpy()
        for name, t in state.items()
        if name.startswith("readout.") and name.endswith(".source_grid")
    }
    bad = [k for k, g in grids.items() if g.ndim != 2 or g.shape[1] != 2 or len(g) < 1]
    if not grids or bad:
        raise TeacherError(
            "teacher",
            f"{path}: expected a starter-kit model with readouts of cortex coordinates "
            "(readout.<data key>.source_grid, (N, 2)), found "
            + (f"source grids of shape {[tuple(grids[k].shape) for k in bad]}" if bad else "none"),
        )
    cfg = BaselineModelConfig.model_validate(TEACHER_MODEL)
    geometry = {key: ScanGeometry(n_neurons=len(g), cortex_xy=g) for key, g in grids.items()}
    with torch.random.fork_rng(devices=[]):  # the builder seeds torch's global generator: not the caller's
        model = stacked_core_full_gauss_readout(
            cfg, geometry, input_channels=TEACHER_CHANNELS, image_size=TEACHER_IMAGE_SIZE, seed=0
        )
    try:
        check_fits(model, state)
    except StateDictImportError as err:
        raise TeacherError(
            "teacher",
            f"{path}: not the starter kit's SOTA model (experiments/starter_kit_sota.yaml): {err}",
        ) from None
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        positions = {key: model.readout[key].mu.view(-1, 2).double().numpy().copy() for key in grids}
    return Teacher(model, path, sha256, grids, positions)


@dataclass(frozen=True)
class TeacherWorld:
    """The teacher as the generator's stimulus model (:class:`pipeline.data.synth.StimulusModel`).

    Attributes:
        teacher: the ``.pth`` state_dict (the starter kit's ``sensorium_p_sota_model.pth``).
        rf_jitter: std of each neuron's readout-position jitter around the teacher's own position,
            pixels per axis at the teacher's 36x64 input (0: the teacher's positions).
        scans: the readouts (data keys) neurons are drawn from; empty: all of the file's.
        batch_size: trials evaluated at once.

    Raises:
        SynthConfigError: ``rf_jitter`` is not a finite number >= 0, or ``batch_size`` not positive
            (the file itself is read by :meth:`load` / :meth:`plant`, which raise :class:`TeacherError`).
    """

    teacher: Path
    rf_jitter: float = DEFAULT_RF_JITTER
    scans: tuple[str, ...] = ()
    batch_size: int = BATCH_SIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "teacher", Path(self.teacher))
        jitter = self.rf_jitter
        if (
            isinstance(jitter, bool)
            or not isinstance(jitter, Real)
            or not math.isfinite(jitter)
            or jitter < 0
        ):
            raise SynthConfigError("rf_jitter", "a finite number of pixels >= 0", jitter)
        object.__setattr__(self, "rf_jitter", float(jitter))
        # a scan named twice counts once (its neurons would otherwise be drawn twice as often)
        object.__setattr__(self, "scans", tuple(dict.fromkeys(str(s) for s in self.scans)))
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SynthConfigError("batch_size", "a positive integer", size)

    @property
    def name(self) -> str:
        return "teacher"

    def load(self) -> Teacher:
        """The teacher (see :func:`load_teacher`), checked against ``scans``.

        Raises:
            TeacherError: a bad file, or a named scan that is not one of its readouts.
        """
        teacher = load_teacher(self.teacher)
        unknown = [s for s in self.scans if s not in teacher.grids]
        if unknown:
            raise TeacherError(
                "teacher_scans",
                f"{', '.join(unknown)}: not a readout of {self.teacher} (it has {', '.join(teacher.scans)})",
            )
        return teacher

    def plant(self, inp: StimulusInput) -> PlantedDrive:
        """The teacher's drive for the neurons drawn for ``inp`` (see the module docstring)."""
        teacher = self.load()
        N = inp.cfg.n_neurons
        rng = np.random.default_rng([inp.cfg.seed, inp.mouse, 7919, TEACHER_STREAM])
        scans = self.scans or teacher.scans
        pool = [(s, i) for s in scans for i in range(len(teacher.grids[s]))]
        rounds = -(-N // len(pool))  # without replacement while the pool lasts, then again
        picked = np.concatenate([rng.permutation(len(pool)) for _ in range(rounds)])[:N]
        scan_of = np.array([pool[p][0] for p in picked])
        neuron_of = np.array([pool[p][1] for p in picked], dtype=np.int64)
        z = rng.standard_normal((N, 2))

        h_map, w_map = teacher.map_size
        half = np.array([(w_map - 1) / 2, (h_map - 1) / 2])  # map cells (= input pixels) per unit
        own = np.stack([teacher.positions[s][i] for s, i in zip(scan_of, neuron_of, strict=True)])
        position = np.clip(own + self.rf_jitter * z / half, -1.0, 1.0)
        grid = np.stack([teacher.grids[s][i] for s, i in zip(scan_of, neuron_of, strict=True)])

        used = [s for s in scans if (scan_of == s).any()]
        readouts = {s: _readout_at(teacher, s, neuron_of[scan_of == s], position[scan_of == s]) for s in used}
        raw, shift = _evaluate(teacher, readouts, scan_of, inp, self.batch_size)

        mean, std = raw.mean(0), raw.std(0)
        drive = raw  # standardised in place: a full-size (T, N) array is ~0.5 GB
        drive -= mean
        drive /= std + 1e-9
        # the shifter has an offset (the file's positions were learned with it): a neuron reads at
        # position + shift, so its centre is where it reads at the mean shift, and the eye moves it by
        # the shift less that mean (as in the Gabor world, where the eye shift has mean 0)
        mean_shift = shift.mean(0)  # (S, 2)
        scan_index = np.array([used.index(s) for s in scan_of])
        centre = position + mean_shift[scan_index]
        origin, stride = teacher.model.core.map_geometry()
        pixels = origin + stride * (centre + 1) * half  # (x, y) at the 36x64 input
        h_in, w_in = TEACHER_IMAGE_SIZE
        rf_center = 2 * pixels / np.array([w_in - 1, h_in - 1]) - 1
        coords = np.column_stack([CORTEX_UM + CORTEX_UM * grid, inp.depth])
        about = {
            "file": teacher.path.name,
            "sha256": teacher.sha256,
            "model": "experiments/starter_kit_sota.yaml",
            "rf_jitter": self.rf_jitter,
            "scans": list(scans),
            "shift_scans": used,
            "image_size": list(TEACHER_IMAGE_SIZE),
        }
        return PlantedDrive(
            coords=coords,
            rf_center=rf_center,
            drive=drive,
            eye_shift=(shift[:, 0] - mean_shift[0]) * half * stride,  # the first used scan's, in pixels
            trial_truth={"teacher_shift": shift.astype(np.float32)},
            truth={
                "teacher": np.array(json.dumps(about)),
                "teacher_scan": scan_of.astype(str),
                "teacher_neuron": neuron_of,
                "teacher_position": position.astype(np.float32),
                "teacher_own_position": own.astype(np.float32),
                "teacher_drive_mean": mean.astype(np.float32),
                "teacher_drive_std": std.astype(np.float32),
            },
        )


def _readout_at(teacher: Teacher, scan: str, neurons: np.ndarray, position: np.ndarray) -> FullGaussian2d:
    """The teacher's readout of ``scan`` restricted to ``neurons`` (repeats allowed), reading at the
    free positions ``position`` (n, 2) instead of the grid predictor's; eval mode."""
    source = teacher.model.readout[scan]
    idx = torch.from_numpy(neurons)
    with torch.random.fork_rng(devices=[]):  # initialize() draws from torch's global generator
        readout = FullGaussian2d(
            source.in_shape, len(neurons), bias=source.bias is not None, align_corners=source.align_corners
        )
    with torch.no_grad():
        readout._mu.copy_(torch.as_tensor(position, dtype=readout._mu.dtype).view_as(readout._mu))
        readout.sigma.copy_(source.sigma[:, idx])
        readout._features.copy_(source.features[..., idx])
        if source.bias is not None:
            readout.bias.copy_(source.bias[idx])
    return readout.eval()


def _evaluate(
    teacher: Teacher,
    readouts: Mapping[str, FullGaussian2d],
    scan_of: np.ndarray,
    inp: StimulusInput,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """((T, N) readout drive before the teacher's nonlinearity, (T, S, 2) each used scan's shift), the
    teacher evaluated batch by batch on the trials' images, behaviour and pupil centre."""
    model = teacher.model
    T, N = len(inp.images), len(scan_of)
    image_mean, image_std = _image_statistics(inp.images)
    behavior = np.asarray(inp.behavior, dtype=np.float32)
    b_std = np.std(behavior.astype(np.float64), axis=0).astype(np.float32)
    behavior = normalize_behavior(behavior, {"std": b_std}, "std")
    pupil = np.asarray(inp.pupil_center, dtype=np.float32)
    p_mean = np.mean(pupil.astype(np.float64), axis=0).astype(np.float32)
    p_std = np.std(pupil.astype(np.float64), axis=0).astype(np.float32)
    pupil = (pupil - p_mean) / np.where(p_std > 0, p_std, np.float32(1.0))
    raw, shift = np.empty((T, N)), np.empty((T, len(readouts), 2))
    columns = {s: np.flatnonzero(scan_of == s) for s in readouts}
    h, w = TEACHER_IMAGE_SIZE
    with torch.no_grad():
        for start in range(0, T, batch_size):
            sl = slice(start, min(start + batch_size, T))
            images = _teacher_view(inp.images[sl, 0], image_mean, image_std)
            b = torch.from_numpy(behavior[sl])
            x = torch.cat([images[:, None], b[:, :, None, None].expand(-1, 3, h, w)], dim=1)
            features = model.core(x)
            pc = torch.from_numpy(pupil[sl])
            for k, (scan, readout) in enumerate(readouts.items()):
                assert model.shifter is not None  # TEACHER_MODEL has one
                s = model.shifter(pc, scan)
                shift[sl, k] = s.double().numpy()
                raw[sl, columns[scan]] = readout(features, shift=s).double().numpy()
    return raw, shift


def _image_statistics(images: np.ndarray, chunk: int = 256) -> tuple[float, float]:
    """Mean and std of every pixel of ``images`` (as the recording's ``statistics/images/all``, float32
    values), summed in chunks of trials (no float64 copy of all images)."""
    total = squares = 0.0
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].astype(np.float64)
        total += float(part.sum())
        squares += float((part * part).sum())
    n = images.size
    mean = total / n
    std = math.sqrt(max(squares / n - mean * mean, 0.0))
    return float(np.float32(mean)), float(np.float32(std))


def _teacher_view(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """(B, H, W) uint8 images -> (B, 36, 64) float32 as the loaders give them: rescaled (0.25 when that
    gives 36x64, else resized to it) and normalised with the recording's image statistics."""
    H, W = images.shape[-2:]
    if (round(H * TEACHER_SCALE), round(W * TEACHER_SCALE)) == TEACHER_IMAGE_SIZE:
        view = torch.from_numpy(rescale_bilinear(images, TEACHER_SCALE))
    else:
        view = F.interpolate(
            torch.from_numpy(images.astype(np.float32))[:, None],
            size=TEACHER_IMAGE_SIZE,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[:, 0]
    return (view - mean) / (std if std > 0 else 1.0)
