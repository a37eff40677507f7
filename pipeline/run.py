"""One training run from its parts: recordings + dataset / model / trainer configs + seed.

Used by the ``TrainedModel`` table and by the benchmarks; nothing here touches the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pipeline.configs import DatasetConfig, ModelConfig, TrainerConfig, config_hash
from pipeline.data.loaders import ScanTensors
from pipeline.data.recording import Recording
from pipeline.models.build import ScanGeometry
from pipeline.models.encoder import FiringRateEncoder
from pipeline.models.rf_map import RFMap, map_receptive_fields, readout_positions
from pipeline.registry import STATIC_LOADERS, entry, resolve
from pipeline.training.checkpoint import Checkpointer
from pipeline.training.progress import PROGRESS_LOGGER, model_label
from pipeline.training.trainer import EpochRecord, TrainResult

if TYPE_CHECKING:
    from pipeline.experiments import ExperimentSpec

progress_log = logging.getLogger(PROGRESS_LOGGER)


@dataclass(frozen=True)
class RunSpec:
    """What a run is made of: builder keys, their validated configs and the seed."""

    dataset_fn: str
    dataset_config: DatasetConfig
    model_fn: str
    model_config: ModelConfig  # the class of model_fn's registry entry (a modulated subclass, too)
    trainer_fn: str
    trainer_config: TrainerConfig
    seed: int

    @classmethod
    def from_dicts(cls, dataset_fn, dataset_config, model_fn, model_config, trainer_fn, trainer_config, seed):
        return cls(
            dataset_fn,
            resolve("dataset", dataset_fn, dataset_config),
            model_fn,
            resolve("model", model_fn, model_config),
            trainer_fn,
            resolve("trainer", trainer_fn, trainer_config),
            int(seed),
        )

    @classmethod
    def of_member(
        cls,
        exp: ExperimentSpec,
        seed: int | None = None,
        trainer_options: Mapping[str, Any] | None = None,
        index: int = 0,
    ) -> RunSpec:
        """The run of ``exp``'s member ``index`` (its re-split and seed; ``seed`` replaces the seed) over
        every ingested scan, ``trainer_options`` laid over the trainer config: the one-member runs of the
        benchmarks and research scripts, outside the database."""
        members = exp.member_list()
        if not 0 <= index < len(members):
            raise ValueError(f"member {index}: the experiment has {len(members)} (0..{len(members) - 1})")
        dataset, member_seed = members[index]
        trainer = {**exp.trainer.config, **(trainer_options or {})}
        return cls.from_dicts(
            exp.dataset.fn,
            {**dataset, "scans": "all"},
            exp.model.fn,
            exp.model.config,
            exp.trainer.fn,
            trainer,
            member_seed if seed is None else seed,
        )


class Lazy(Mapping):
    """A read-only mapping that computes each value on access and keeps none of them.

    With ``run_training`` this streams the scans: each recording is fetched, turned into tensors and
    dropped before the next is fetched, so a training process never holds all raw recordings at once
    (at SENSORIUM+ size 0.4 GB of images and responses per recording, beside the tensors).
    """

    def __init__(self, keys: list[str], fn: Callable[[str], Any]) -> None:
        self._keys, self._fn = list(keys), fn

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return self._fn(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def build_scans(
    recordings: Mapping[str, Recording],
    cfg: DatasetConfig,
    device: torch.device,
    cache_dir: Path | None = None,
    regressors: Mapping[str, dict] | None = None,
) -> dict[str, ScanTensors]:
    """Tensors of every scan, in the order given, on ``device`` (with each scan's regressors, if given)."""
    return load_scans(recordings, cfg, device, cache_dir, regressors)[0]


def load_scans(
    recordings: Mapping[str, Recording],
    cfg: DatasetConfig,
    device: torch.device,
    cache_dir: Path | None = None,
    regressors: Mapping[str, dict] | None = None,
    *,
    dataset_fn: str = STATIC_LOADERS,
) -> tuple[dict[str, ScanTensors], dict[str, ScanGeometry]]:
    """Tensors and geometry of every scan, one scan at a time: ``recordings[k]`` and ``regressors[k]``
    are read once each, and nothing of them but the tensors and the geometry is kept (see :class:`Lazy`).
    Each scan's tensors come from the builder of ``dataset_fn`` (``pipeline.registry.DATASETS``).
    """
    regressors = regressors or {}
    build_scan_tensors = entry("dataset", dataset_fn).build
    scans, geometry = {}, {}
    for k in recordings:
        rec = recordings[k]
        tensors = build_scan_tensors(rec, cfg, cache_dir, regressors.get(k))
        scans[k] = tensors.to(device)
        geometry[k] = scan_geometry(rec)
        del rec, tensors  # on an accelerator the host copies go here, before the next scan is read
    return scans, geometry


def scan_geometry(rec: Recording) -> ScanGeometry:
    """What the model builder needs of a recording: neuron count, cortex positions, trial count."""
    return ScanGeometry(
        n_neurons=rec.n_neurons,
        cortex_xy=np.asarray(rec.neurons["cell_motor_coordinates"], dtype=np.float64)[:, :2],
        n_trials=rec.n_trials,
    )


def build_model(
    spec: RunSpec,
    recordings: Mapping[str, Recording | ScanGeometry],
    scans: Mapping[str, ScanTensors],
):
    """The model of ``spec`` for these scans (recordings or their geometry), initialised from
    ``spec.seed`` (on the CPU), by the builder of ``spec.model_fn`` (``pipeline.registry.MODELS``)."""
    build = entry("model", spec.model_fn).build
    geometry = {k: g if isinstance(g, ScanGeometry) else scan_geometry(g) for k, g in recordings.items()}
    first = next(iter(scans.values()))
    return build(
        spec.model_config,
        geometry,
        input_channels=first.input_channels,
        image_size=tuple(first.images.shape[-2:]),
        seed=spec.seed,
    )


def start_at_rf_map(
    model: FiringRateEncoder,
    scans: Mapping[str, ScanTensors],
    geometry: Mapping[str, ScanGeometry],
    progress: bool = False,
    label: str = "training",
    max_neurons: int | None = None,
) -> dict[str, RFMap]:
    """Move every scan's free readout positions to receptive-field centres mapped from its training
    trials (``init_mu: rf_map``, :mod:`pipeline.models.rf_map`), less the untrained shifter's mean shift
    over those trials (the readout reads at position + shift); returns the maps.

    The map is made from the split's ``train`` tier only, so validation and test trials never shape the
    start; it draws no random numbers. ``max_neurons``: map at most this many neurons of each scan
    (``model.config.rf_map_neurons``; every neuron starts at the retinotopic fit made on them).
    ``progress``: one line per scan on the ``pipeline.progress`` logger at INFO (else at DEBUG), starting
    with ``label``.
    """
    if any(model.readout[key]._predicted_grid for key in scans):  # checked before any mapping work
        raise ValueError("init_mu rf_map needs free readout positions (grid_mean_predictor: null)")
    maps = {}
    for key, scan in scans.items():
        idx = torch.from_numpy(scan.tier_indices("train")).to(scan.images.device)
        # on the scan's device: the CPU's result is bit-identical run to run; an accelerator maps a
        # SENSORIUM-size scan in seconds instead of minutes
        images, responses = scan.images[idx, :1], scan.responses[idx]  # the image channel only
        maps[key] = rf = map_receptive_fields(images, responses, geometry[key].cortex_xy, max_neurons)
        readout = model.readout[key]
        _, map_h, map_w = readout.in_shape  # (c, h, w) of the core's map
        map_size = (map_h, map_w)
        origin, stride = model.core.map_geometry()
        mu = readout_positions(rf.centres, map_size, origin, stride)
        if model.shifter is not None:
            # the readout reads at mu + shifter(pupil): take the untrained shifter's mean shift over the
            # training trials off, so the positions it reads at start on the map on average
            with torch.no_grad():
                shift = model.shifter(scan.pupil_center[idx], key).mean(0)
            mu = np.clip(mu - shift.double().cpu().numpy(), -1.0, 1.0)
        with torch.no_grad():
            readout.mu.copy_(torch.as_tensor(mu, dtype=readout.mu.dtype).view_as(readout.mu))
        progress_log.log(
            logging.INFO if progress else logging.DEBUG,
            "%s: %s: readout started at mapped receptive fields (%d of %d mapped neurons' peaks on the "
            "retinotopic fit; %d neurons)",
            label,
            key,
            int(rf.inliers.sum()),
            int(rf.mapped.sum()),
            len(rf.inliers),
        )
    return maps


def start_as_configured(
    spec: RunSpec,
    model: FiringRateEncoder,
    scans: Mapping[str, ScanTensors],
    geometry: Mapping[str, ScanGeometry],
    progress: bool = False,
    label: str = "training",
) -> dict[str, RFMap]:
    """The readout's start the model config asks for, after the model is built: with ``init_mu: rf_map``
    :func:`start_at_rf_map` (at most ``rf_map_neurons`` mapped per scan) and its maps; otherwise nothing
    to do (the positions the builder drew stay) and ``{}``. Training (``run_training``), the research tools
    that train members and ``benchmarks.memory`` start models through here, so a start option is read in
    one place (``benchmarks.train_throughput`` times epochs, which the start does not change, and skips
    it)."""
    if spec.model_config.init_mu != "rf_map":
        return {}
    return start_at_rf_map(
        model, scans, geometry, progress=progress, label=label, max_neurons=spec.model_config.rf_map_neurons
    )


def run_training(
    spec: RunSpec,
    recordings: Mapping[str, Recording],
    device: torch.device,
    *,
    cache_dir: Path | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = True,
    regressors: Mapping[str, dict] | None = None,
    checkpoint: Checkpointer | None = None,
    should_stop: Callable[[], bool] | None = None,
    should_prune: Callable[[EpochRecord], bool] | None = None,
    label: str | None = None,
) -> tuple[torch.nn.Module, dict[str, ScanTensors], TrainResult]:
    """Build tensors and model, train, and return (model with best weights, scan tensors, result).

    ``checkpoint``, ``should_stop`` and ``should_prune`` are passed to
    :func:`pipeline.training.trainer.train` (resume from / save after every epoch; stop between batches;
    end after an epoch). ``progress``: one line per epoch on the ``pipeline.progress`` logger at INFO
    (else at DEBUG), each starting with ``label``, which names the run for the person reading it (its
    experiment and seed, which only the caller knows); without one, the model's short hash and the seed.
    """
    if label is None:
        label = run_label(spec)
    scans, geometry = load_scans(
        recordings, spec.dataset_config, device, cache_dir, regressors, dataset_fn=spec.dataset_fn
    )
    model = build_model(spec, geometry, scans).to(device)
    # also when resuming: a checkpoint that turns out unusable means training from scratch, which must
    # start here; a usable one then restores the learned positions over the map
    start_as_configured(spec, model, scans, geometry, progress=progress, label=label)
    result = train_model(
        spec,
        model,
        scans,
        on_epoch=on_epoch,
        progress=progress,
        checkpoint=checkpoint,
        should_stop=should_stop,
        should_prune=should_prune,
        label=label,
    )
    return model, scans, result


def train_model(
    spec: RunSpec, model: torch.nn.Module, scans: dict[str, ScanTensors], **options: Any
) -> TrainResult:
    """Train a built ``model`` on ``scans`` with ``spec``'s trainer (``pipeline.registry.TRAINERS``), batch
    size, shuffling seed and seed; ``options`` go to the trainer (on_epoch, progress, checkpoint, ...)."""
    train = entry("trainer", spec.trainer_fn).build  # pipeline.training.trainer.train
    return train(
        model,
        scans,
        spec.trainer_config,
        batch_size=spec.dataset_config.batch_size,
        shuffle_seed=spec.dataset_config.shuffle_seed,
        seed=spec.seed,
        **options,
    )


def run_label(spec: RunSpec) -> str:
    """A run's name in progress lines when its experiment is not known: the short hash of its model
    config (as stored in the ``model_hash`` column) and its seed."""
    return model_label(config_hash(spec.model_fn, spec.model_config), spec.seed)
