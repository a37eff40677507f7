"""Sweep files: a base experiment, a search space over its config paths, a sampler and a budget.

Example (``experiments/sweeps/demo_lr.yaml``)::

    name: demo_lr
    base: ../winner_demo.yaml          # an experiment file (relative to this one), or a mapping
    sampler: tpe                       # grid | random | tpe (Optuna)
    budget: 12                         # trials in all
    parallel: 4                        # trials in flight at once (one per free worker)
    space:
      model.config.hidden_channels: [16, 32]                 # a list: one of these values
      trainer.config.lr_init: {log_uniform: [0.001, 0.02]}   # a range: uniform, log_uniform, int, log_int
      model.config.modulator_params.alpha_hist: {uniform: [0, 1]}
    pruning: {warmup_epochs: 3, startup_trials: 3}         # optional: stop clearly worse trials early
    fixed: {trainer.config.max_iter: 12}                   # optional: set on the base for every trial

Each trial is the base experiment with the sampled values set at their paths, named
``<sweep>.t<number>``; it is scored by its members' validation correlation (the early-stopping score,
on each member's own validation trials), never by a test tier.

Sweep files and their ``base:`` files are read by ``pipeline.yaml_io`` (bounded, strict YAML), like
experiment files.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.configs import MAX_EPOCHS, ConfigError, FrozenConfig, validate
from pipeline.experiments import (
    MAX_SEED,
    ExperimentSpec,
    apply_overrides,
    get_path,
    locate_in_file,
    parse_experiment,
    read_config_file,
    set_path,
)
from pipeline.registry import resolve
from pipeline.yaml_io import check_values

PRIMITIVE = (str, int, float, bool, type(None))
RANGE_KINDS = ("uniform", "log_uniform", "int", "log_int")
MAX_TRIALS = 999  # budget, trials in flight, values listed for one path
MAX_PATHS = 100  # swept or fixed config paths


class Pruning(FrozenConfig):
    """Median pruning: after ``warmup_epochs``, stop a trial whose validation correlation at an epoch is
    below the median of earlier trials at the same epoch (once ``startup_trials`` trials finished)."""

    warmup_epochs: int = Field(3, ge=0, le=MAX_EPOCHS)
    startup_trials: int = Field(3, ge=0, le=MAX_TRIALS)


class SweepSpec(FrozenConfig):
    """A validated sweep file (the base experiment inlined)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,56}$")  # trial experiments are <name>.t<number>
    comment: str = ""
    base: dict[str, Any]  # the base experiment (a mapping, validated as an experiment)
    sampler: Literal["grid", "random", "tpe"] = "tpe"
    seed: int = Field(0, ge=0, le=MAX_SEED)  # the sampler's seed
    budget: int = Field(gt=0, le=MAX_TRIALS)  # trials in all (grid: at most the grid's size)
    parallel: int = Field(4, gt=0, le=MAX_TRIALS)  # trials in flight at once
    tpe_startup_trials: int = Field(5, ge=1, le=MAX_TRIALS)  # random trials before TPE models the space
    # what trials are ranked by: the mean over members of the restored best weights' validation
    # single-trial correlation (each member's own validation trials); the test tier is never used
    objective: Literal["validation_correlation"] = "validation_correlation"
    space: dict[str, list[Any] | dict[str, list[float]]] = Field(min_length=1, max_length=MAX_PATHS)
    pruning: Pruning | None = None
    # {config path: value} set on the base for all trials
    fixed: dict[str, Any] = Field(default_factory=dict, max_length=MAX_PATHS)

    @field_validator("fixed")
    @classmethod
    def _fixed_paths(cls, fixed):
        for path in fixed:
            if path.split(".")[0] not in ("dataset", "model", "trainer"):
                raise ValueError(f"{path}: a fixed path starts with dataset., model. or trainer.")
        return fixed

    @field_validator("space")
    @classmethod
    def _parameters(cls, space):
        for path, param in space.items():
            if path.split(".")[0] not in ("dataset", "model", "trainer"):
                raise ValueError(f"{path}: a swept path starts with dataset., model. or trainer.")
            if isinstance(param, list):
                if not param:
                    raise ValueError(f"{path}: an empty list of values")
                if len(param) > MAX_TRIALS:
                    raise ValueError(f"{path}: {len(param)} values listed; at most {MAX_TRIALS}")
                continue
            if len(param) != 1 or next(iter(param)) not in RANGE_KINDS:
                raise ValueError(f"{path}: expected a list of values or one of {list(RANGE_KINDS)}")
            kind, bounds = next(iter(param.items()))
            if len(bounds) != 2 or not bounds[0] < bounds[1]:
                raise ValueError(f"{path}: {kind} needs [low, high] with low < high (got {bounds})")
            if kind.startswith("log") and bounds[0] <= 0:
                raise ValueError(f"{path}: {kind} needs a positive low bound (got {bounds[0]})")
            if kind.endswith("int") and any(float(b) != int(b) for b in bounds):
                raise ValueError(f"{path}: {kind} needs integer bounds (got {bounds})")
        return space

    @model_validator(mode="after")
    def _fits(self):
        if self.sampler == "grid":
            ranges = [p for p, v in self.space.items() if not isinstance(v, list)]
            if ranges:
                raise ValueError(f"the grid sampler needs lists of values; ranges at {ranges}")
            if self.budget > self.grid_size():
                raise ValueError(f"budget {self.budget} is above the grid's {self.grid_size()} points")
        if self.pruning is not None and len(self.base.get("seeds") or self.base.get("members") or []) > 1:
            raise ValueError("pruning needs one member per trial (the base has several seeds or members)")
        return self

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.space.values() if isinstance(v, list))

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def encode_choice(value: Any) -> Any:
    """Optuna's categorical choices are primitives; lists and mappings travel as their JSON text."""
    return value if isinstance(value, PRIMITIVE) else json.dumps(value, sort_keys=True)


def decode_params(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's params -> config values (JSON-encoded choices decoded, int ranges as int)."""
    out = {}
    for path, value in params.items():
        param = spec.space[path]
        if isinstance(param, list) and not all(isinstance(c, PRIMITIVE) for c in param):
            value = json.loads(value)
        out[path] = value
    return out


def trial_name(sweep: str, number: int) -> str:
    return f"{sweep}.t{number:03d}"


def trial_experiment(spec: SweepSpec, number: int, params: dict[str, Any]) -> ExperimentSpec:
    """The experiment of trial ``number``: the base with ``params`` (config values) at their paths.

    Raises:
        ConfigError: a value is refused by its builder (the message names the path).
    """
    data = copy.deepcopy(spec.base)
    data.pop("ensemble", None)  # a trial is scored on its own; ensembles are for the chosen config
    data["name"] = trial_name(spec.name, number)
    data["comment"] = f"sweep {spec.name}, trial {number}"
    for path, value in {**spec.fixed, **params}.items():
        set_path(data, path, value)
    return parse_experiment(data)


def base_values(spec: SweepSpec) -> dict[str, Any]:
    """The base experiment's value at every swept path, after ``fixed``, defaults filled in by the
    builders' configs (so an unset option reads as its default, not as None)."""
    data = copy.deepcopy(spec.base)
    for path, value in spec.fixed.items():
        set_path(data, path, value)
    full = {}
    for kind in ("dataset", "model", "trainer"):
        part = data[kind]
        full[kind] = {"config": resolve(kind, part["fn"], part.get("config") or {}).model_dump(mode="json")}
    return {path: get_path(full, path) for path in spec.space}


def corner_params(spec: SweepSpec) -> list[dict[str, Any]]:
    """Parameter sets that touch every listed value and both ends of every range, so that a value a
    builder refuses is found when the sweep is added, not when a worker trains the trial."""
    per_path = {}
    for path, param in spec.space.items():
        if isinstance(param, list):
            per_path[path] = list(param)
        else:
            kind, (low, high) = next(iter(param.items()))
            per_path[path] = [int(low), int(high)] if kind.endswith("int") else [float(low), float(high)]
    longest = max(len(v) for v in per_path.values())
    return [{p: v[i % len(v)] for p, v in per_path.items()} for i in range(longest)]


def parse_sweep(data: dict[str, Any], base_dir: Path | None = None) -> SweepSpec:
    """Validate a sweep given as a dict (``base`` a path, relative to ``base_dir``, or a mapping).

    Raises:
        ConfigError: naming the offending key, path or value.
    """
    check_values(data)
    data = dict(data)
    base = data.get("base")
    if isinstance(base, str):
        path = Path(base)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            data["base"] = read_config_file(path)
        except ConfigError as err:
            raise ConfigError(f"base: {err.located(path)}") from None
        if not isinstance(data["base"], dict):
            raise ConfigError(f"base: {path} holds no experiment mapping")
    spec = validate(SweepSpec, data)
    try:
        parse_experiment(spec.base)
    except ConfigError as err:
        raise ConfigError(f"base: {err}") from None
    if spec.base.get("import_only"):
        raise ConfigError("base: an import_only experiment cannot be swept (its members are not trained)")
    for params in corner_params(spec):
        try:
            trial_experiment(spec, 0, params)
        except ConfigError as err:
            raise ConfigError(f"space: with {params}: {err}") from None
    return spec


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read (``pipeline.experiments.read_config_file``), override (``--set``) and validate a sweep file.

    Raises:
        ConfigError: the file is unreadable, refused by the YAML bounds or invalid, with the line of each
            key it names; the message does not name the file: callers show ``err.located(path)``.
    """
    path = Path(path)
    data = read_config_file(path)
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", line=1)
    try:
        return parse_sweep(apply_overrides(data, overrides or []), path.parent)
    except ConfigError as err:
        raise locate_in_file(err, path, overrides) from None


def grid_points(spec: SweepSpec) -> dict[str, list[Any]]:
    """The grid sampler's search space (encoded choices)."""
    return {path: [encode_choice(c) for c in values] for path, values in spec.space.items()}
