"""Experiment files: a name, the dataset / model / trainer builders with their configs, and the seeds.

Example (``experiments/demo.yaml``)::

    name: demo
    comment: small baseline for 2 CPU cores
    dataset:
      fn: sensorium.datasets.static_loaders
      config: {scans: all, batch_size: 64}
    model:
      fn: sensorium.models.stacked_core_full_gauss_readout
      config: {hidden_channels: 16, layers: 3}
    trainer:
      fn: sensorium.training.standard_trainer
      config: {max_iter: 15}
    seeds: [42]

``--set path.to.key=value`` overrides any entry before validation (values are parsed as YAML, so
``--set trainer.config.max_iter=3`` gives an integer and ``--set seeds=[1,2]`` a list).

Files and ``--set`` values are read by ``pipeline.yaml_io`` (bounded size, aliases and nesting, UTF-8,
no duplicate keys, finite numbers only). Seeds are integers in 0 .. 2**31 - 1 (``fabrik.Seed.seed`` is an
int32), each at most once per experiment.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from pipeline.configs import ConfigError, FrozenConfig, stored_form, validate
from pipeline.registry import entry, resolve
from pipeline.yaml_errors import file_text, located_read_error, with_key_lines
from pipeline.yaml_io import check_values, loads_yaml, read_yaml_file, short

#: the largest seed: ``fabrik.Seed.seed`` is an int32 (and torch / numpy take 0 .. 2**31 - 1 everywhere)
MAX_SEED = 2**31 - 1
#: members of one experiment (each one a trained model; the winner has 5)
MAX_MEMBERS = 1000
SeedValue = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Part(FrozenConfig):
    fn: str
    config: dict[str, Any] = Field(default_factory=dict)
    comment: str = ""


class Member(FrozenConfig):
    """One trained model of an experiment: its seed and, for ensembles, its train/validation re-split."""

    seed: SeedValue
    split: int | None = Field(None, ge=0, le=999)  # which re-split of the dataset (docs/model.md#ensembles)


class EnsembleDecl(FrozenConfig):
    """The ensemble of an experiment's members, formed once all are trained (docs/model.md#ensembles)."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")  # default: the experiment's name
    comment: str = ""


class ExperimentSpec(FrozenConfig):
    """A validated experiment file: either ``seeds`` (one model per seed, same data) or ``members``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    comment: str = ""
    dataset: Part
    model: Part
    trainer: Part
    seeds: list[SeedValue] | None = Field(None, min_length=1, max_length=MAX_MEMBERS)
    members: list[Member] | None = Field(None, min_length=1, max_length=MAX_MEMBERS)
    ensemble: EnsembleDecl | None = None  # form a mean ensemble of all members
    # the members' weights come from `sensorium import-checkpoint`: populate and workers never train them
    import_only: bool = False

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is None:
            return seeds
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        if twice:
            raise ValueError(f"seed {twice[0]} is given more than once (each seed trains one model)")
        return seeds

    @field_validator("members")
    @classmethod
    def _distinct_members(cls, members: list[Member] | None) -> list[Member] | None:
        pairs = [(m.seed, m.split) for m in members or []]
        twice = sorted({p for p in pairs if pairs.count(p) > 1}, key=str)
        if twice:
            seed, split = twice[0]
            raise ValueError(f"the member with seed {seed} and split {split} is given more than once")
        return members

    @model_validator(mode="after")
    def _seeds_or_members(self):
        if (self.seeds is None) == (self.members is None):
            raise ValueError("give either `seeds` or `members`, not both")
        named_splits = self.members and any(m.split is not None for m in self.members)
        if named_splits and not self.dataset.config.get("split"):
            raise ValueError("members name splits, so dataset.config needs a `split` section")
        return self

    def member_list(self) -> list[tuple[dict[str, Any], int]]:
        """(dataset config, seed) of every member."""
        if self.seeds is not None:
            return [(self.dataset.config, s) for s in self.seeds]
        assert self.members is not None  # either seeds or members (_seeds_or_members)
        out = []
        for m in self.members:
            config = copy.deepcopy(self.dataset.config)
            if m.split is not None:
                config["split"] = {**config["split"], "index": m.split}
            out.append((config, m.seed))
        return out

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``path.to.key=value`` overrides to a copy of ``data`` (values parsed as YAML, bounded like
    the files: ``pipeline.yaml_io``).

    Raises:
        ConfigError: ``--set 'ITEM': what was wrong`` (no ``=``, a value that is no valid YAML, ...).
    """
    out = copy.deepcopy(data)
    for item in overrides:
        where = f"--set {short(item)}"
        if "=" not in item:
            raise ConfigError(f"{where}: expected path.to.key=value")
        try:  # an argument the shell could not decode arrives with lone surrogates, which YAML cannot read
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{where}: not UTF-8 text") from None
        path, raw = item.split("=", 1)
        try:
            value = loads_yaml(raw, where=path.strip())
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        except KeyError as err:  # PyYAML's bool constructor on a word it does not know (`!!bool maybe`)
            raise ConfigError(
                f"{where}: not valid YAML: {short(err.args[0] if err.args else '')} is not a bool"
            ) from None
        set_path(out, path.strip(), value, where=where)
    return out


def set_path(data: dict[str, Any], path: str, value: Any, where: str = "") -> None:
    """Set ``data[a][b][c] = value`` for ``path`` ``a.b.c`` in place (missing or null levels become {})."""
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        if node.get(k) is None:
            node[k] = {}
        if not isinstance(node[k], dict):
            raise ConfigError(f"{where or path}: {k!r} is not a mapping")
        node = node[k]
    node[keys[-1]] = value


def get_path(data: dict[str, Any], path: str) -> Any:
    """``data[a][b][c]`` for ``path`` ``a.b.c``, or None where a level is missing (the builder default)."""
    node: Any = data
    for k in path.split("."):
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def overridden_paths(overrides: list[str] | None) -> list[str]:
    """The dotted paths that ``--set`` arguments give (their values do not come from the file)."""
    return [item.split("=", 1)[0].strip() for item in overrides or [] if "=" in item]


def read_config_file(path: str | Path) -> Any:
    """The checked content of a YAML file users hand in (``pipeline.yaml_io.read_yaml_file``), its
    errors placed in the file (``pipeline.yaml_errors``).

    Raises:
        ConfigError: unreadable, refused by the YAML bounds or not valid YAML; ``err.located(path)`` is
            the line to show (``FILE:LINE:COLUMN: what`` for the YAML itself).
    """
    try:
        return read_yaml_file(path)
    except ConfigError as err:
        raise located_read_error(err, file_text(path)) from None
    except KeyError as err:  # PyYAML's bool constructor on a word it does not know (`!!bool maybe`)
        raise located_read_error(err, file_text(path)) from None


def locate_in_file(err: ConfigError, path: str | Path, overrides: list[str] | None = None) -> ConfigError:
    """``err`` (keys or values of the file ``path`` refused) with the line of each path it names, or
    ``(from --set)`` for one that ``overrides`` gave: ``model.config.vit.dimm: unknown key (line 14)``."""
    return with_key_lines(err, file_text(path), overridden_paths(overrides))


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Read (``read_config_file``), override and validate an experiment file (builder configs included).

    Raises:
        ConfigError: the file is unreadable or refused by the YAML bounds, or a key or value is wrong
            (named by its path in the file, with its line); the message does not name the file: callers
            show ``err.located(path)`` (or prefix the file themselves).
    """
    data = read_config_file(path)
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", line=1)
    try:
        return parse_experiment(apply_overrides(data, overrides or []))
    except ConfigError as err:
        raise locate_in_file(err, path, overrides) from None


def parse_experiment(data: dict[str, Any]) -> ExperimentSpec:
    """Validate an experiment given as a dict; builder configs are checked against their registries.

    Raises:
        ConfigError: naming each unknown key or wrong value (``.nan`` included) by its path.
    """
    check_values(data)
    spec = validate(ExperimentSpec, data)
    for kind in ("model", "trainer"):
        part = getattr(spec, kind)
        _builder(kind, part.fn)
        resolve(kind, part.fn, part.config, where=f"{kind}.config")
    _builder("dataset", spec.dataset.fn)
    for config, _ in spec.member_list():
        resolve("dataset", spec.dataset.fn, config, where="dataset.config")
    return spec


def _builder(kind: str, fn: str) -> None:
    """Refuse an unknown builder under its path in the file (``model.fn``), listing the registered ones."""
    try:
        entry(kind, fn)
    except ConfigError as err:
        what = str(err).split(": ", 1)[-1]
        raise ConfigError(f"{kind}.fn: {what}", problems=((f"{kind}.fn", what),)) from None


# -- comparing two experiments ------------------------------------------------------------------------


def effective_form(spec: ExperimentSpec) -> dict[str, Any]:
    """The experiment as the pipeline reads it: its fields, each builder config in full (every default
    written out, ``pipeline.configs.stored_form``), so that leaving out a default and writing it are the
    same and two experiments compare by what they mean."""
    form = spec.as_dict()
    for kind in ("dataset", "model", "trainer"):
        part = form[kind]
        part["config"] = stored_form(resolve(kind, part["fn"], part["config"]))
    return form


def stored_effective_form(stored: dict[str, Any]) -> dict[str, Any]:
    """``effective_form`` of an experiment as stored (``Experiment.experiment_spec``); the stored dict
    as it is when today's code no longer reads it."""
    try:
        return effective_form(parse_experiment(copy.deepcopy(stored)))
    except ConfigError:
        return copy.deepcopy(stored)


def readable_form(stored: dict[str, Any]) -> dict[str, Any]:
    """An experiment as stored (``Experiment.experiment_spec``, whose JSON column keeps no key order)
    in the order of a file: the fields of ``ExperimentSpec``, each part's ``fn``, ``config``, ``comment``,
    config keys in the order of their builder's config; empty comments, nulls and ``import_only: false``
    left out, as a file would."""
    order = [*ExperimentSpec.model_fields, *(k for k in stored if k not in ExperimentSpec.model_fields)]
    out: dict[str, Any] = {}
    for k in order:
        value = stored.get(k)
        if value is None or value == "" or (k == "import_only" and value is False):
            continue
        if k in ("dataset", "model", "trainer") and isinstance(value, dict):
            value = _readable_part(k, value)
        elif k == "ensemble" and isinstance(value, dict):
            value = {n: v for n, v in value.items() if v not in (None, "")}
        out[k] = value
    return out


def _readable_part(kind: str, part: dict[str, Any]) -> dict[str, Any]:
    config = part.get("config") or {}
    try:
        fields = list(entry(kind, part.get("fn", "")).config.model_fields)
    except ConfigError:
        fields = []
    ordered = {k: config[k] for k in fields if k in config} | {
        k: v for k, v in config.items() if k not in fields
    }
    out = {"fn": part.get("fn"), "config": ordered}
    if part.get("comment"):
        out["comment"] = part["comment"]
    return out


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    """{dotted path: value} of the leaves; a list of plain values is one leaf, a list holding mappings
    (``members``) is indexed like the paths of ``--set``."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _leaves(v, f"{path}.{k}" if path else str(k))
        return out
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        out = {}
        for i, v in enumerate(value):
            out |= _leaves(v, f"{path}.{i}" if path else str(i))
        return out
    return {path: value}


def _shown(value: Any) -> str:
    """A value as in a YAML flow: ``48``, ``'all'``, ``[1, 2]``, ``null``; long ones cut."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return short(value)


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changes from ``old`` to ``new``, one line per path: ``model.config.vit.dim: 32 -> 48``,
    ``model.config.x: added (3)``, ``model.config.y: removed (was 5)``; empty when they are equal.

    Paths come in the order of ``old``, then those only ``new`` has; a null that appears or goes with
    its section (``ensemble: null`` against ``ensemble: {name: null, ...}``) is no line of its own.
    """
    before, after = _leaves(old), _leaves(new)
    lines = []
    for path in [*before, *(p for p in after if p not in before)]:
        if path not in after:
            if before[path] is not None:  # a null that goes with its section says nothing
                lines.append(f"{path}: removed (was {_shown(before[path])})")
        elif path not in before:
            if after[path] is not None:
                lines.append(f"{path}: added ({_shown(after[path])})")
        elif before[path] != after[path] or type(before[path]) is not type(after[path]):
            lines.append(f"{path}: {_shown(before[path])} -> {_shown(after[path])}")
    return lines
