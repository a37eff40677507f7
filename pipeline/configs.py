"""Typed, frozen configurations with a canonical JSON form and a hash.

Every builder (dataset, model, trainer) takes exactly one of these. They forbid unknown keys, so a typo
in an experiment file is refused with a message naming the key.

Two JSON forms (``docs/config-evolution.md``):

* ``stored_form``: the full validated config, every default included: what the database stores
  (``*_config`` of the fabrik tables), so a row says what it meant even if a default changes later;
* ``canonical_json``: the reduced form that is hashed (``config_hash``, the ``*_hash`` of the tables):
  the full form less every *hash-neutral* field (declared with :func:`later`) that sits at its default,
  so that configs stored before such a field existed keep their hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

# Upper bounds (issue 26): a size far beyond any real use is refused when the file is read, not when a
# worker tries to allocate it (``hidden_channels: 100000`` once asked for 18 GB). They are generous for
# GPU work: the winner uses 64 channels, 4 layers, 9x9 / 10x10 kernels, batches of 128 and 200 epochs;
# a ViT core of a few hundred dims. Bounds are validation only: stored configs and hashes are unchanged.
MAX_CHANNELS = 1024  # CNN / stem / pixel / shifter channels, MLP widths (the winner: 64)
MAX_DIM = 4096  # ViT token width (ViT-Huge: 1280)
MAX_LAYERS = 64  # CNN layers, transformer blocks, MLP layers (the winner: 4)
MAX_KERNEL = 64  # kernel and patch sizes, pixels (the winner: 9 and 10; an image at scale 0.25: 36x64)
MAX_BATCH = 4096  # images per batch (the winner: 128)
MAX_EPOCHS = 10_000  # epochs and epoch counts of the trainer (the winner: 200)
MAX_STEPS = 1_000_000  # iterations of the regressors' fits, batches per epoch
MAX_FEATURES = 10_000  # regressor sizes: PCA components, ranks, history / state features
MAX_CONFIG_SEED = 2**32 - 1  # seeds inside configs: numpy's RandomState takes 0 .. 2**32 - 1
#: weights of the core, estimated from the config (``core_parameters`` of the model configs): 10^9
#: float32 are 4 GB, 16 GB with Adam's state and the gradients; the winner's core has about 5 x 10^4
MAX_CORE_PARAMETERS = 10**9

#: the key of a field's ``json_schema_extra`` that marks it hash-neutral (set by :func:`later`)
HASH_NEUTRAL = "hash_neutral"


def later(default: Any = PydanticUndefined, **kwargs: Any) -> Any:
    """``Field(default, **kwargs)`` marked *hash-neutral*: a field added after configurations were stored.

    At its default such a field stays out of the hashed form (``canonical_json``), so every config stored
    before it existed keeps its hash; away from its default it enters the hash. Its default must never
    change (``tests/unit/hash_neutral_defaults.json`` pins it): a stored row that left the field out
    would silently take the new default under the same hash. To change behaviour, add a new field.
    """
    extra = kwargs.pop("json_schema_extra", None) or {}
    return Field(default, json_schema_extra={**extra, HASH_NEUTRAL: True}, **kwargs)


def is_hash_neutral(field: FieldInfo) -> bool:
    """Whether ``field`` was declared with :func:`later`."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(HASH_NEUTRAL))


def hash_neutral_fields(cls: type[BaseModel]) -> frozenset[str]:
    """Names of the hash-neutral fields of ``cls`` (inherited ones included)."""
    return frozenset(name for name, field in cls.model_fields.items() if is_hash_neutral(field))


def hash_neutral_defaults(cls: type[BaseModel]) -> dict[str, Any]:
    """Field name -> default, as JSON, of every hash-neutral field of ``cls`` (what the snapshot pins)."""
    fields = cls.model_fields
    return {
        name: to_jsonable_python(fields[name].get_default(call_default_factory=True))
        for name in sorted(hash_neutral_fields(cls))
    }


class FrozenConfig(BaseModel):
    """Base: immutable, unknown keys refused, strict-ish types.

    Fields added after configurations were first stored are declared with :func:`later` (hash-neutral):
    they enter the hashed form only when they differ from their default, so that every configuration
    stored before keeps its hash (and an experiment added again is still recognised as the same).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def stored_form(config: BaseModel) -> dict[str, Any]:
    """The full validated config as a JSON-able dict, every default included (hash-neutral ones too):
    what the database stores. ``type(config).model_validate(stored_form(config))`` equals ``config`` and
    hashes the same; the hash itself is always computed from the validated config, never from this dict
    (``config_hash(fn, resolve(kind, fn, stored))``)."""
    return config.model_dump(mode="json")


def canonical_json(config: BaseModel | dict) -> str:
    """Sorted-key, compact JSON of the reduced config that is hashed: the full config less the
    hash-neutral fields at their default, at every level of nesting (a dict is taken as it is)."""
    data = (
        _without_later_defaults(config, config.model_dump(mode="json"))
        if isinstance(config, BaseModel)
        else config
    )
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _without_later_defaults(config: BaseModel, data: dict) -> dict:
    """``data`` (the JSON dump of ``config``) without the hash-neutral fields that sit at their default,
    here and in every nested config (``data`` is changed in place and returned)."""
    fields = type(config).model_fields
    later_fields = hash_neutral_fields(type(config))
    for name in fields:
        value = getattr(config, name)
        if name in later_fields and value == fields[name].get_default(call_default_factory=True):
            data.pop(name, None)
        elif isinstance(value, BaseModel) and isinstance(data.get(name), dict):
            _without_later_defaults(value, data[name])
        elif isinstance(value, list | tuple) and isinstance(data.get(name), list):
            for item, dumped in zip(value, data[name], strict=False):
                if isinstance(item, BaseModel) and isinstance(dumped, dict):
                    _without_later_defaults(item, dumped)
    return data


def config_hash(fn: str, config: BaseModel | dict) -> str:
    """32-hex hash of a builder key and its canonical (reduced) config (nnfabrik's ``*_hash``)."""
    return hashlib.md5(f"{fn}:{canonical_json(config)}".encode()).hexdigest()


class ConfigError(ValueError):
    """A configuration is invalid; the message names each offending key.

    Besides the message, an error may say where it is, for callers that point into the file it came from:
    ``problems`` holds (dotted path, what is wrong) of each refused key or value (``validate`` fills it),
    ``line`` / ``column`` (1-based) the place in the text for an error of the YAML itself; ``detail`` is
    then the message without that place. :meth:`located` writes the one line a user sees.
    """

    def __init__(
        self,
        message: str,
        *,
        problems: tuple[tuple[str, str], ...] = (),
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.detail = message
        self.problems = tuple(problems)
        self.line, self.column = line, column
        if line is not None:  # the place stays in the message for callers that only prefix a name
            message = f"line {line}{f', column {column}' if column else ''}: {message}"
        super().__init__(message)

    def located(self, source: object) -> str:
        """One line naming ``source`` (a file name): ``FILE:LINE:COLUMN: what`` where the error has a
        place in the text, else ``FILE: what``."""
        if self.line is None:
            return f"{source}: {self}"
        place = f"{self.line}:{self.column}" if self.column else f"{self.line}"
        return f"{source}:{place}: {self.detail}"


ConfigT = TypeVar("ConfigT", bound=FrozenConfig)


def validate(cls: type[ConfigT], data: dict[str, Any], where: str = "") -> ConfigT:
    """``cls.model_validate(data)`` with an error naming every bad key by its dotted path."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        problems: list[tuple[str, str]] = []
        for e in err.errors():
            path = ".".join(str(p) for p in (where, *e["loc"]) if p != "")
            value = e.get("input")
            if e["type"] == "extra_forbidden":
                problems.append((path, "unknown key"))
            elif e["type"] == "missing" or isinstance(value, dict | list):
                # not the value: a mapping may be a whole file given by mistake (a store spec and its key)
                problems.append((path, e["msg"]))
            else:
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                problems.append((path, f"{e['msg']} (got {shown})"))
        message = "; ".join(f"{path or 'the top level'}: {what}" for path, what in problems)
        raise ConfigError(message, problems=tuple(problems)) from None


# ----------------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------------


class DatasetConfig(FrozenConfig):
    """Which scans and how the loaders present them (see docs/model.md#input-pipeline)."""

    scans: list[str] | Literal["all"] = "all"  # data keys, or every ingested scan
    batch_size: int = Field(128, gt=0, le=MAX_BATCH)
    scale: float = Field(0.25, gt=0, le=1)  # image rescale factor (0.25: 144x256 -> 36x64)
    normalize: bool = True
    include_behavior: bool = True  # behaviour as 3 constant image channels
    include_eye_position: bool = True  # pupil centre delivered to the shifter
    behavior_normalization: Literal["std", "minmax01"] = "std"  # docs/model.md#behaviour-normalisation
    # seed of the training-loader generator (docs/model.md#ensembles)
    shuffle_seed: int = Field(8654, ge=0, le=MAX_CONFIG_SEED)
    regressors: RegressorsConfig | None = None  # history / state / rank (docs/model.md#winner)
    split: SplitConfig | None = None  # re-split for ensemble members (docs/model.md#ensembles)

    @field_validator("scans")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("name at least one scan, or 'all'")
        return v


# ----------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------


class GridMeanPredictorConfig(FrozenConfig):
    """MLP from cortex coordinates to readout positions (docs/model.md#readout)."""

    type: Literal["cortex"] = "cortex"
    input_dimensions: int = Field(2, gt=0, le=16)
    hidden_layers: int = Field(1, ge=0, le=MAX_LAYERS)
    hidden_features: int = Field(30, gt=0, le=MAX_CHANNELS)
    nonlinearity: Literal["ELU", "ReLU"] = "ELU"
    final_tanh: bool = True


class ViTConfig(FrozenConfig):
    """Vision-transformer core (``pipeline.models.vit``); small defaults for 36x64.

    The core of ``sensorium.models.vit_core_full_gauss_readout`` (``ViTModelConfig.vit``), and of the
    rows stored under the old keys with ``core_type: vit`` (``BaselineModelConfig.vit``).
    """

    kind: ClassVar[Literal["vit"]] = "vit"

    patch_size: int = Field(4, gt=0, le=MAX_KERNEL)  # square patches (pixels at the model's image scale)
    patch_stride: int = Field(4, gt=0, le=MAX_KERNEL)  # < patch_size: overlapping patches, more tokens
    dim: int = Field(32, gt=0, le=MAX_DIM)  # token width = feature channels the readout sees
    layers: int = Field(3, gt=0, le=MAX_LAYERS)  # transformer blocks
    heads: int = Field(4, gt=0, le=256)
    mlp_ratio: int = Field(2, gt=0, le=16)  # feed-forward width / dim
    dropout: float = Field(0.0, ge=0, lt=1)
    behavior_injection: bool = True  # behaviour -> per-block MLP -> added to every token
    # a convolutional stem before the patches (conv -> BatchNorm -> ELU, size kept; "early convolutions
    # help transformers see better", Xiao et al. 2021): 0 = none, the patches read the image (V1T)
    stem_channels: int = later(0, ge=0, le=MAX_CHANNELS)
    stem_kernel: int = later(9, gt=0, le=MAX_KERNEL)
    stem_init: Literal["xavier", "gabor"] = later("xavier")  # gabor: pipeline.models.gabor, trainable
    # before every block, a depthwise k x k convolution over the token grid added to the tokens
    # (position from the neighbourhood, local linear mixing; CPVT's "PEG", Chu et al. 2023): 0 = none
    local_kernel: int = later(0, ge=0, le=MAX_KERNEL)
    # feature map for the readout: "last" block's tokens (V1T), or "all": every block's output, each
    # layer-normed, concatenated (dim x layers features; the early, near-linear ones included)
    readout_blocks: Literal["last", "all"] = later("last")
    # a full-resolution linear pathway beside the tokens (pipeline.models.vit): pixel_channels filters of
    # pixel_kernel x pixel_kernel (Gabor-initialised, trainable, batch-normed, no nonlinearity), read by
    # the same readout at one-pixel precision together with the tokens resampled to full resolution;
    # pixel_energy adds the energy sqrt(a^2 + b^2) of each filter pair (a, b). 0 = none
    pixel_channels: int = later(0, ge=0, le=MAX_CHANNELS)
    pixel_kernel: int = later(13, gt=0, le=MAX_KERNEL)
    pixel_energy: bool = later(False)

    @model_validator(mode="after")
    def _heads_divide_dim(self):
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if self.stem_init != "xavier" and not self.stem_channels:
            raise ValueError(f"stem_init {self.stem_init} needs a stem: set stem_channels > 0")
        if self.local_kernel and self.local_kernel % 2 == 0:
            raise ValueError(f"local_kernel must be odd (it keeps the token grid), not {self.local_kernel}")
        if self.pixel_channels and self.pixel_kernel % 2 == 0:
            raise ValueError(f"pixel_kernel must be odd (it keeps the image size), not {self.pixel_kernel}")
        if self.pixel_energy and (self.pixel_channels < 2 or self.pixel_channels % 2):
            raise ValueError(
                "pixel_energy pairs the filters: pixel_channels must be even and >= 2, "
                f"not {self.pixel_channels}"
            )
        return self

    def estimated_weights(self, input_channels: int = 4) -> int:
        """About how many weights this core has (see ``ModelConfigBase.core_parameters``)."""
        stem = input_channels * self.stem_channels * self.stem_kernel**2
        patches = (self.stem_channels or input_channels) * self.patch_size**2 * self.dim
        blocks = self.layers * (4 + 2 * self.mlp_ratio) * self.dim**2
        pixel = input_channels * self.pixel_channels * self.pixel_kernel**2
        return stem + patches + blocks + pixel


class StackedCoreFields(FrozenConfig):
    """The fields of the SENSORIUM+ stacked 2-D CNN core (``pipeline.models.core.Stacked2dCore``,
    docs/model.md#core): ``StackedCoreConfig``, and the top level of ``BaselineModelConfig``, where
    they always sat (stored configs keep their hash)."""

    hidden_channels: int = Field(64, gt=0, le=MAX_CHANNELS)
    input_kern: int = Field(9, gt=0, le=MAX_KERNEL)
    # first-layer filters: "xavier" (neuralpredictors) or a trainable Gabor bank (pipeline.models.gabor)
    input_init: Literal["xavier", "gabor"] = later("xavier")
    # quadrature Gabor pairs whose fixed even, odd and energy responses join the core's output channels
    # (pipeline.models.bank_core); 0: none
    bank_pairs: int = later(0, ge=0, le=48)
    hidden_kern: int = Field(7, gt=0, le=MAX_KERNEL)
    layers: int = Field(4, gt=0, le=MAX_LAYERS)
    skip: int = Field(0, ge=0, le=MAX_LAYERS)
    final_nonlinearity: bool = True
    linear: bool = later(False)  # no nonlinearity anywhere in the core (the starter kit's LN model)
    momentum: float = Field(0.9, gt=0, le=1)
    pad_input: bool = False
    batch_norm: bool = True
    hidden_dilation: int = Field(1, ge=1, le=16)
    laplace_padding: int | None = Field(None, ge=0, le=MAX_KERNEL)
    use_avg_reg: bool = False
    stack: int | None = Field(-1, ge=-MAX_LAYERS, le=MAX_LAYERS)
    depth_separable: bool = True
    core_bias: bool = False

    def _check_stack(self) -> None:
        stacked = self.layers if self.stack is None else len(range(self.layers)[self.stack :])
        grows = (self.hidden_kern - 1) * self.hidden_dilation % 2
        if stacked > 1 and grows:
            # the hidden padding rounds up, so each hidden layer grows the map by one pixel and the
            # stacked layers' maps cannot be concatenated
            raise ValueError(
                f"stack {self.stack} concatenates {stacked} layers, but hidden_kern {self.hidden_kern} "
                f"(dilation {self.hidden_dilation}) grows each hidden layer's map by one pixel: use an odd "
                "hidden_kern or stack: -1"
            )
        if self.bank_pairs:
            # where the core's map starts, as pipeline.models.core.Stacked2dCore.map_geometry computes it
            input_shift = (self.input_kern - 1) / 2 - (self.input_kern // 2 if self.pad_input else 0)
            span = (self.hidden_kern - 1) * self.hidden_dilation
            origin = input_shift + (span / 2 - (span + 1) // 2) * (self.layers - 1)
            if origin < 0:
                raise ValueError(
                    f"bank_pairs reads a Gabor bank on the core's map cells, but this core's map starts "
                    f"at pixel {origin}, off the image (pad_input with even kernels): set pad_input: false"
                )


class StackedCoreConfig(StackedCoreFields):
    """The stacked CNN core of a model (``BaselineModelConfig.core()``)."""

    kind: ClassVar[Literal["stacked"]] = "stacked"

    def estimated_weights(self, input_channels: int = 4) -> int:
        """About how many weights this core has (see ``ModelConfigBase.core_parameters``)."""
        h = self.hidden_channels
        first = input_channels * h * self.input_kern**2
        per_layer = h * self.hidden_kern**2 + h * h if self.depth_separable else h * h * self.hidden_kern**2
        return first + (self.layers - 1) * per_layer


#: a model's core: the union of the core kinds, discriminated by ``kind``; each kind has its own model
#: builder keys (``pipeline.registry.MODELS``)
CoreConfig = StackedCoreConfig | ViTConfig


class ModelConfigBase(FrozenConfig):
    """What every model shares, whatever its core (docs/model.md#baseline): the smoothness of
    the first filters the image meets, the full-Gaussian readout, the output nonlinearity and the shifter.

    Subclasses add the core's fields and say which core they build (``core()``).
    """

    # Laplace smoothness of the first filters the image meets: the CNN's input layer, or the ViT's
    # patch embedding (its stem when it has one)
    gamma_input: float = Field(6.3831, ge=0)
    init_mu_range: float = Field(0.3, gt=0)
    # where free readout positions start: "uniform" U(+-init_mu_range) (neuralpredictors), or "rf_map" at
    # receptive-field centres mapped from the training trials (pipeline.models.rf_map)
    init_mu: Literal["uniform", "rf_map"] = later("uniform")
    # with rf_map: map at most this many neurons of a scan (evenly strided) and place every neuron with
    # the retinotopic fit made on them; the map's cost grows with neurons, while the fit has 10 terms
    # (at least 100: its robust refits need peaks to spare; None: all)
    rf_map_neurons: int | None = later(None, ge=100, le=100_000)
    init_sigma: float = Field(0.1, gt=0)
    readout_bias: bool = True
    gamma_readout: float = Field(0.0076, ge=0)
    elu_offset: float = 0.0
    # rates = f(drive + elu_offset): "elu1" ELU + 1 (SENSORIUM+), or softplus with beta fixed or learned
    output_nonlinearity: Literal["elu1", "softplus"] = later("elu1")
    softplus_beta: float = later(1.0, gt=0)
    learn_softplus_beta: bool = later(False)
    gauss_type: Literal["full"] = "full"
    grid_mean_predictor: GridMeanPredictorConfig | None = GridMeanPredictorConfig()
    shifter: bool = True
    input_channels_shifter: int = Field(2, gt=0, le=16)
    hidden_channels_shifter: int = Field(5, gt=0, le=MAX_CHANNELS)
    shift_layers: int = Field(3, gt=0, le=MAX_LAYERS)
    gamma_shifter: float = Field(0.0, ge=0)
    shifter_bias: bool = True

    def core(self) -> CoreConfig:
        """The settings of this model's core."""
        raise NotImplementedError

    def core_parameters(self, input_channels: int = 4) -> int:
        """About how many weights the core has (an upper estimate: ``input_channels`` is the image and
        three behaviour channels; biases, norms and the data-sized readout are left out)."""
        return self.core().estimated_weights(input_channels)

    def _check_readout(self) -> None:
        if self.init_mu == "rf_map" and self.grid_mean_predictor is not None:
            raise ValueError(
                "init_mu rf_map starts free readout positions, but a grid_mean_predictor computes them: "
                "set grid_mean_predictor: null"
            )
        if self.rf_map_neurons is not None and self.init_mu != "rf_map":
            raise ValueError(
                "rf_map_neurons sets how many neurons init_mu rf_map maps: set init_mu: rf_map, or "
                "rf_map_neurons: null"
            )

    def _check_size(self) -> None:
        weights = self.core_parameters()
        if weights > MAX_CORE_PARAMETERS:
            raise ValueError(
                f"the core would have about {weights:.1e} weights (at most {MAX_CORE_PARAMETERS:.0e}): "
                "use fewer channels or layers, or smaller kernels"
            )


class BaselineModelConfig(ModelConfigBase, StackedCoreFields):
    """``stacked_core_full_gauss_readout`` (docs/model.md#baseline). Defaults: the SENSORIUM+ baseline.

    The stacked CNN core's fields (``StackedCoreFields``) at the top level, beside the shared ones.

    ``core_type`` / ``vit`` are kept only so that rows stored before the ViT had its own key still
    validate and build the same model (a ViT core, the CNN fields then unused): new ViT models use
    ``sensorium.models.vit_core_full_gauss_readout`` (``ViTModelConfig``, ``vit_equivalent``).
    """

    # legacy: "vit" builds the transformer `vit` (None: ViTConfig()) under this key; gamma_input then
    # smooths its patch filters
    core_type: Literal["stacked2d", "vit"] = later("stacked2d")
    vit: ViTConfig | None = later(None)

    @model_validator(mode="after")
    def _vit_settings_need_vit(self):
        if self.vit is not None and self.core_type != "vit":
            raise ValueError("`vit` settings need core_type: vit")
        if self.input_init != "xavier" and self.core_type != "stacked2d":
            raise ValueError("input_init sets the CNN's first layer; a ViT's is vit.stem_init")
        if self.bank_pairs and self.core_type != "stacked2d":
            raise ValueError("bank_pairs adds a Gabor bank to the CNN's output; a ViT core has none")
        self._check_readout()
        if self.core_type == "stacked2d":
            self._check_stack()
        self._check_size()
        return self

    def core(self) -> CoreConfig:
        """The CNN's settings, or (a legacy row with ``core_type: vit``) the transformer's."""
        if self.core_type == "vit":
            return self.vit or ViTConfig()
        return StackedCoreConfig.model_validate(
            {name: getattr(self, name) for name in StackedCoreConfig.model_fields}
        )


class ViTModelConfig(ModelConfigBase):
    """``vit_core_full_gauss_readout``: a vision-transformer core (``vit``) under the baseline's readout,
    shifter and output nonlinearity (issue 12). No CNN field: they would enter the hash but do nothing."""

    vit: ViTConfig = ViTConfig()

    @model_validator(mode="after")
    def _fits(self):
        self._check_readout()
        self._check_size()
        return self

    def core(self) -> CoreConfig:
        return self.vit


# ----------------------------------------------------------------------------------------------------
# trainer
# ----------------------------------------------------------------------------------------------------


class TrainerConfig(FrozenConfig):
    """``standard_trainer`` (docs/model.md#trainer). Defaults: the SENSORIUM+ baseline notebook.

    The throughput options (``autocast`` .. ``compile_core``, see ``pipeline.training.speed``) and the
    schedule options came later (hash-neutral, :func:`later`): at their defaults they stay out of the
    hashed form, so every stored trainer keeps its hash.
    """

    max_iter: int = Field(200, gt=0, le=MAX_EPOCHS)  # epochs
    lr_init: float = Field(0.009, gt=0)
    lr_decay_steps: int = Field(4, ge=1, le=MAX_EPOCHS)
    lr_decay_factor: float = Field(0.3, gt=0, lt=1)
    min_lr: float = Field(0.0001, gt=0)
    patience: int = Field(5, ge=1, le=MAX_EPOCHS)
    tolerance: float = Field(1e-6, ge=0)
    interval: int = Field(1, ge=1, le=MAX_EPOCHS)  # epochs between validation evaluations
    avg_loss: bool = False
    scale_loss: bool = True
    # "GammaLoss" (issue 12): the Gamma likelihood of multiplicative noise (pipeline.training.losses)
    loss_function: Literal["PoissonLoss", "GammaLoss"] = "PoissonLoss"
    stop_function: Literal["get_correlations"] = "get_correlations"
    maximize: bool = True
    restore_best: bool = True
    # None: one optimiser step per round of one batch per scan
    loss_accum_batch_n: int | None = Field(None, ge=0, le=MAX_STEPS)
    detach_core: bool = False
    # cap for tests / smoke runs (None: full epoch)
    max_batches_per_epoch: int | None = Field(None, gt=0, le=MAX_STEPS)
    # mixed-precision forward pass (weights and loss stay float32)
    autocast: Literal["bf16"] | None = later(None)
    channels_last: bool = later(False)  # NHWC memory layout of images and convolution weights
    fused_adam: bool = later(False)  # Adam's update as one fused kernel
    # torch.compile the core's forward (the first epoch pays the compile time)
    compile_core: bool = later(False)
    # beyond the winner (issue 12), all off by default: AdamW with decoupled weight decay; a linear
    # warm-up then cosine decay to min_lr over max_iter epochs, stepped per optimiser step, instead of
    # the plateau rounds (cosine runs all max_iter epochs, patience and lr_decay_* unused, best weights
    # by validation restored); an exponential moving average of the weights (and BatchNorm statistics),
    # which is what validation, early stopping and the stored model use
    # "muon": Muon on the core's filters, AdamW on the rest (pipeline.training.muon; teacher world's
    # sixth round)
    optimizer: Literal["adam", "adamw", "muon"] = later("adam")
    weight_decay: float = later(0.0, ge=0)
    # "wsd": warm-up, then lr_init held, then a linear decay to min_lr over the last decay_epochs epochs
    # (the warm-up / stable / decay schedule of Hu et al. 2024 and Hagele et al. 2024), stepped per
    # optimiser step like cosine: the rate stays high while the model still improves, and the run
    # still ends annealed
    lr_schedule: Literal["plateau", "cosine", "wsd"] = later("plateau")
    warmup_epochs: int = later(0, ge=0, le=MAX_EPOCHS)
    decay_epochs: int = later(0, ge=0, le=MAX_EPOCHS)
    ema_decay: float | None = later(None, gt=0, lt=1)
    # learning rate of every parameter outside the core (readout, shifter, modulator: the per-neuron and
    # per-scan parts) as a multiple of the core's; the schedules scale both groups alike
    readout_lr_scale: float = later(1.0, gt=0)

    @model_validator(mode="after")
    def _schedule_options_fit(self):
        if self.weight_decay > 0 and self.optimizer == "adam":
            raise ValueError(
                "weight_decay needs optimizer: adamw or muon (Adam's weight decay is an L2 penalty)"
            )
        if self.fused_adam and self.optimizer == "muon":
            raise ValueError("fused_adam is an Adam kernel; optimizer: muon has none")
        if self.warmup_epochs and self.lr_schedule == "plateau":
            raise ValueError("warmup_epochs needs lr_schedule: cosine or wsd")
        if self.warmup_epochs >= self.max_iter:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below max_iter ({self.max_iter})")
        if (self.lr_schedule == "wsd") != (self.decay_epochs > 0):
            raise ValueError("lr_schedule: wsd and decay_epochs > 0 go together")
        if self.warmup_epochs + self.decay_epochs > self.max_iter:
            raise ValueError(
                f"warmup_epochs + decay_epochs ({self.warmup_epochs + self.decay_epochs}) exceed max_iter "
                f"({self.max_iter})"
            )
        return self


# ----------------------------------------------------------------------------------------------------
# the winning model (docs/model.md#winner)
# ----------------------------------------------------------------------------------------------------


class ModulatorParams(FrozenConfig):
    """``HistoryStateGain`` modulator (docs/model.md#modulator). Defaults: Model 4 of the winning entry.

    ``learned_state`` (issue 12, off by default): a network state learned end to end, a rank-r linear map
    from the population's history features (every neuron's mean known response over the first
    ``learned_state_lags`` lags, in time order) to a drive added to every neuron, beside or instead of
    the two-stage PCA / RRR / NMF state (``behav_state``).
    """

    include_gain: bool = True
    gain_kernel_std: float = Field(30.0, gt=0)  # std (trials) of the causal half-Gaussian smoothing the gain
    diff_reg: float = Field(100.0, ge=0)  # weight of sum (gamma_{t+1} - gamma_t)^2
    per_neuron_gain_adjust: bool = True  # per-neuron coupling to the shared gain
    gain_adjust_alpha: float = Field(0.3, ge=0)  # L1 on the coupling
    include_history: bool = True
    nr_history: int = Field(5, gt=0, le=MAX_FEATURES)  # history features per neuron (one per lag)
    alpha_hist: float = Field(0.3, ge=0)  # L1 on the history weights
    behav_state: bool = True
    nr_behav_state: int = Field(10, gt=0, le=MAX_FEATURES)  # network-state features per trial
    alpha_behav: float = Field(0.3, ge=0)  # L1 on the state-encoder weights
    learned_state: bool = later(False)
    learned_state_rank: int = later(8, gt=0, le=MAX_FEATURES)  # r: width of the bottleneck
    # history lags read (the first ones: the most recent trials)
    learned_state_lags: int = later(2, gt=0, le=MAX_FEATURES)
    alpha_learned_state: float = later(0.0, ge=0)  # L2 on the encoder's input weights

    @model_validator(mode="after")
    def _lags_fit(self):
        if self.learned_state and self.learned_state_lags > self.nr_history:
            raise ValueError(
                f"learned_state_lags ({self.learned_state_lags}) exceeds nr_history ({self.nr_history})"
            )
        return self


class ModulatorSettings(FrozenConfig):
    """The winner's modulator (docs/model.md#modulator), added to any core by the modulated keys."""

    with_modulator: bool = True
    modulator_type: Literal["HistoryStateGain"] = "HistoryStateGain"
    modulator_params: ModulatorParams = ModulatorParams()


class ModulatedModelConfig(BaselineModelConfig, ModulatorSettings):
    """``modulated_stacked_core_full_gauss_readout``: the baseline plus the modulator that replaces ELU+1."""


class ModulatedViTModelConfig(ViTModelConfig, ModulatorSettings):
    """``modulated_vit_core_full_gauss_readout``: the ViT-core model plus the winner's modulator."""


#: a model's config (one class per builder key; ``config.core()`` is its core)
ModelConfig = BaselineModelConfig | ViTModelConfig


def vit_equivalent(config: BaselineModelConfig) -> ViTModelConfig:
    """The config under the ViT key (``ViTModelConfig``, or ``ModulatedViTModelConfig`` for a modulated
    config) that builds the same model as a legacy ``core_type: vit`` config of the stacked keys: the
    same ViT, readout, shifter, output and modulator settings, the unused CNN fields dropped."""
    if config.core_type != "vit":
        raise ValueError("only a config with core_type: vit has a ViT-key equivalent")
    target = ModulatedViTModelConfig if isinstance(config, ModulatedModelConfig) else ViTModelConfig
    data = stored_form(config)
    data = {name: data[name] for name in target.model_fields if name != "vit"}
    return target.model_validate({**data, "vit": stored_form(config.vit or ViTConfig())})


#: how trials are put in time order (``pipeline.regressors.trial_order``): the stable timestamp sort of
#: the winner's fixed code, or ``exact`` (ties within a second broken by a numeric trial_idx)
TrialOrderRule = Literal["timestamp", "exact"]


class HistoryConfig(FrozenConfig):
    """History filter bank (docs/model.md#history): boxcar means of each neuron's own known responses."""

    # trials (a recording has about 7000); at most 64 lags
    lags: list[int] = Field(default_factory=lambda: [1, 2, 5, 10, 30], min_length=1, max_length=64)
    trial_order: TrialOrderRule = later("timestamp")
    # "none": boxcars of the responses (the winner's); "log1p": boxcars of log(1 + r / m), m the neuron's
    # mean over the known trials, which compresses the heavy-tailed bursts (issue 12)
    transform: Literal["none", "log1p"] = later("none")

    @field_validator("lags")
    @classmethod
    def _positive_increasing(cls, v):
        if any(lag < 1 for lag in v) or sorted(set(v)) != list(v):
            raise ValueError("lags must be positive and strictly increasing")
        if v[-1] > 100_000:
            raise ValueError(f"a lag of {v[-1]} trials; at most 100000")
        return v


class StateConfig(FrozenConfig):
    """Network state (docs/model.md#network-state): sqrt, PCA, reduced-rank VAR(1), NMF; known pairs."""

    n_pca: int = Field(500, gt=0, le=MAX_FEATURES)  # PCA components (fewer when the data is smaller)
    rank: int = Field(20, gt=0, le=MAX_FEATURES)  # rank of the VAR(1) transition
    n_iter: int = Field(100, gt=0, le=MAX_STEPS)  # alternating-least-squares iterations
    n_components: int = Field(10, gt=0, le=MAX_FEATURES)  # NMF components = state features per trial
    rrr_seed: int = Field(4534, ge=0, le=MAX_CONFIG_SEED)
    nmf_seed: int = Field(674, ge=0, le=MAX_CONFIG_SEED)
    nmf_max_iter: int = Field(1000, gt=0, le=MAX_STEPS)
    eps: float = Field(1e-6, ge=0)  # added before the square root
    trial_order: TrialOrderRule = later("timestamp")  # which time order defines the "consecutive" pairs


class SplitConfig(FrozenConfig):
    """Ensemble re-splits of the train/validation labels (docs/model.md#ensembles)."""

    n_splits: int = Field(5, gt=0, le=1000)
    seed: int = Field(35382, ge=0, le=MAX_CONFIG_SEED)
    index: int = Field(0, ge=0)  # which split this dataset uses
    # share of each recording's known trials that a re-split labels validation (None: as many as the
    # recording labels validation, the winner's re-splits); the rest train. Smaller than the recording's
    # own share: more training trials per member, a noisier validation score (docs/model.md#ensembles)
    validation_share: float | None = later(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _index_in_range(self):
        if self.index >= self.n_splits:
            raise ValueError(
                f"split index {self.index} is out of range: the config makes {self.n_splits} splits "
                f"(indices 0..{self.n_splits - 1})"
            )
        return self


class RegressorsConfig(FrozenConfig):
    """Which per-trial regressors a dataset delivers (None: not delivered)."""

    history: HistoryConfig | None = None
    state: StateConfig | None = None
    rank: bool = False  # time rank of each trial (needed by the learned gain)
    rank_order: TrialOrderRule = later("timestamp")  # the order the rank counts in

    def _rules(self) -> set[TrialOrderRule]:
        rules: set[TrialOrderRule] = {self.rank_order} if self.rank else set()
        return rules | {part.trial_order for part in (self.history, self.state) if part is not None}

    def order_rule(self) -> TrialOrderRule:
        """The one time-order rule of the delivered regressors (``timestamp`` when none is delivered)."""
        return next(iter(self._rules()), "timestamp")

    @model_validator(mode="after")
    def _one_trial_order(self):
        rules = self._rules()
        if len(rules) > 1:
            raise ValueError(
                "history.trial_order, state.trial_order and rank_order differ; use one time order for all"
            )
        return self


DatasetConfig.model_rebuild()
