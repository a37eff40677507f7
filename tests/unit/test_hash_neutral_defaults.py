"""The defaults of the hash-neutral config fields are pinned by ``hash_neutral_defaults.json``.

A hash-neutral field (``pipeline.configs.later``) stays out of the hashed form while it sits at its
default, so rows stored before the field existed (or while it sat at its default) carry no value for it
in their hash, and rows stored before issue 28 not even in their stored config. If its default changed,
those rows would silently mean something else under the same hash. So the snapshot pins every
hash-neutral field of every config class with its default; this test fails when one is added, removed
or changes its default without the snapshot being updated (``docs/config-evolution.md``).

Rewrite the snapshot (only for an added field, never to change a default):
``.venv/bin/python -m tests.unit.test_hash_neutral_defaults``.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from pipeline import configs
from pipeline.configs import FrozenConfig, hash_neutral_defaults
from pipeline.registry import KINDS

SNAPSHOT = Path(__file__).with_name("hash_neutral_defaults.json")

WHY = (
    "the defaults of hash-neutral config fields differ from tests/unit/hash_neutral_defaults.json.\n"
    "A hash-neutral field (pipeline.configs.later) stays out of the hash at its default, so a stored row "
    "that left it out takes whatever the default is: changing the default of a hash-neutral field changes "
    "the meaning of stored rows with the same hash. Restore the default and add a new field instead. "
    "Removing one makes stored rows that set it invalid. A NEW hash-neutral field is fine: add it to the "
    "snapshot (.venv/bin/python -m tests.unit.test_hash_neutral_defaults rewrites it). "
    "docs/config-evolution.md has the rules."
)


def config_classes() -> list[type[FrozenConfig]]:
    """Every config class of ``pipeline.configs``, by name."""
    found = [
        obj
        for obj in vars(configs).values()
        if isinstance(obj, type) and issubclass(obj, FrozenConfig) and obj.__module__ == configs.__name__
    ]
    return sorted(found, key=lambda cls: cls.__name__)


def current() -> dict[str, object]:
    """``ClassName.field`` -> default (JSON) of every hash-neutral field of every config class."""
    return {
        f"{cls.__name__}.{name}": default
        for cls in config_classes()
        for name, default in hash_neutral_defaults(cls).items()
    }


def _models_in(annotation) -> set[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        return set().union(*(_models_in(arg) for arg in typing.get_args(annotation)))
    return set()


def test_hash_neutral_defaults_match_the_snapshot():
    pinned = json.loads(SNAPSHOT.read_text())
    now = current()
    added = sorted(now.keys() - pinned.keys())
    removed = sorted(pinned.keys() - now.keys())
    changed = {k: (pinned[k], now[k]) for k in sorted(now.keys() & pinned.keys()) if pinned[k] != now[k]}
    assert not (added or removed or changed), (
        f"{WHY}\nadded: {added}\nremoved: {removed}\nchanged (snapshot, now): {changed}"
    )


def test_every_hashed_config_class_is_covered():
    """Every config a registry validates, and every config nested in one, is a ``pipeline.configs`` class,
    so the snapshot covers it."""
    covered = set(config_classes())
    todo = [entry.config for registry in KINDS.values() for entry in registry.values()]
    seen: set[type[BaseModel]] = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        assert cls in covered, f"{cls.__qualname__} ({cls.__module__}) is hashed but not in pipeline.configs"
        for field in cls.model_fields.values():
            todo.extend(_models_in(field.annotation))
    assert len(seen) > 5


def test_the_snapshot_names_real_hash_neutral_fields():
    # a spot check that the marker sits on the fields (no class-level list any more)
    pinned = json.loads(SNAPSHOT.read_text())
    assert pinned["TrainerConfig.channels_last"] is False
    assert pinned["ViTConfig.pixel_kernel"] == 13
    assert pinned["BaselineModelConfig.core_type"] == "stacked2d"
    assert "TrainerConfig.max_iter" not in pinned
    assert not any(hasattr(cls, "ADDED_LATER") for cls in config_classes())


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
