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

from pipeline.configs import ConfigError, FrozenConfig, validate
from pipeline.registry import resolve
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
    split: int | None = Field(None, ge=0, le=999)  # index into the dataset's `split` re-splits (SPEC 3g)


class EnsembleDecl(FrozenConfig):
    """An ensemble to form from all of an experiment's members once they are trained (SPEC 3g)."""

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
        path, raw = item.split("=", 1)
        try:
            value = loads_yaml(raw, where=path.strip())
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
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


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Read (``pipeline.yaml_io.read_yaml_file``), override and validate an experiment file (builder
    configs included).

    Raises:
        ConfigError: the file is unreadable or refused by the YAML bounds, or a key or value is wrong
            (named by its path in the file); the message does not name the file: callers prefix it.
    """
    data = read_yaml_file(path)
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level")
    return parse_experiment(apply_overrides(data, overrides or []))


def parse_experiment(data: dict[str, Any]) -> ExperimentSpec:
    """Validate an experiment given as a dict; builder configs are checked against their registries.

    Raises:
        ConfigError: naming each unknown key or wrong value (``.nan`` included) by its path.
    """
    check_values(data)
    spec = validate(ExperimentSpec, data)
    for kind in ("model", "trainer"):
        part = getattr(spec, kind)
        resolve(kind, part.fn, part.config, where=f"{kind}.config")
    for config, _ in spec.member_list():
        resolve("dataset", spec.dataset.fn, config, where="dataset.config")
    return spec
