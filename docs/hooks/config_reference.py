"""MkDocs hook: writes ``config-reference.md`` from the typed configs at build time.

The page lists every registered builder key of every kind (``pipeline.registry.KINDS``) and, for each
config class it takes, every field with its type, constraints, default, whether it is hash-neutral and
its description. A field's description is its pydantic ``description`` where it has one, else the
comment written beside (or just above) the field in the class's source, so the page follows the code
and cannot go stale. Nested config classes (the ViT core, the modulator, the regressors, ...) get one
section each, linked from the fields that hold them.

Run by ``mkdocs build`` (``hooks:`` in ``mkdocs.yml``); :func:`render` can be called on its own.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import sys
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PAGE = "config-reference.md"
# config classes whose fields are shown as a link to their own section instead of inline
_SECTION_PREFIX = "cfg-"
# a code comment's pointer to the model page (``see docs/model.md#history``), made a link
_MODEL_REF = re.compile(r"(?:see )?docs/model\.md#([\w-]+)")


def _repo_imports() -> tuple[Any, Any]:
    """``pipeline.registry`` and ``pipeline.configs`` imported from this checkout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pipeline import configs, registry

    return registry, configs


def _anchor(cls: type) -> str:
    return _SECTION_PREFIX + cls.__name__.lower()


def _source_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment beside it (or the comment lines just above it) in ``cls``'s body."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    pending: list[str] = []
    body_indent: int | None = None
    lines = source.splitlines()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    trailing = {tok.start[0]: tok.string for tok in tokens if tok.type == tokenize.COMMENT}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if number == 1 or not stripped:
            pending = [] if not stripped else pending
            continue
        if body_indent is None:
            body_indent = indent
        if indent != body_indent:
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"([A-Za-z_]\w*)\s*:", stripped)
        if match:
            beside = trailing.get(number, "")
            text = beside.lstrip("#").strip() if beside and not stripped.startswith("#") else ""
            text = re.sub(r"^noqa\b.*", "", text).strip()
            comments[match.group(1)] = " ".join([*pending, text]).strip()
        pending = []
    return comments


def _type_name(annotation: Any, configs: Any) -> str:
    """A readable type: ``int``, ``list[int]``, ``"std" | "minmax01"``, a link to a nested config."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a, configs) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0], configs)
    if origin is not None:
        inner = ", ".join(_type_name(a, configs) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "`null`"
    if isinstance(annotation, type) and issubclass(annotation, configs.FrozenConfig):
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    return getattr(annotation, "__name__", str(annotation))


def _nested(annotation: Any, configs: Any) -> list[type]:
    """The config classes inside a field's annotation (``RegressorsConfig | None`` -> RegressorsConfig)."""
    found: list[type] = []
    if isinstance(annotation, type) and issubclass(annotation, configs.FrozenConfig):
        found.append(annotation)
    for arg in typing.get_args(annotation):
        found.extend(_nested(arg, configs))
    return found


def _constraints(field: Any) -> str:
    """The field's bounds (``> 0``, ``<= 4096``, length limits) as text."""
    marks = []
    symbols = {
        "gt": ">",
        "ge": ">=",
        "lt": "<",
        "le": "<=",
        "min_length": "min length",
        "max_length": "max length",
    }
    for meta in field.metadata:
        for attr, symbol in symbols.items():
            value = getattr(meta, attr, None)
            if value is not None:
                marks.append(f"{symbol} {value}")
    return ", ".join(marks)


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    from pydantic_core import to_jsonable_python

    value = field.get_default(call_default_factory=True)
    try:
        text = json.dumps(to_jsonable_python(value))
    except (TypeError, ValueError):
        text = repr(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    """Markdown table cell: pipes escaped, newlines joined, model-page references made links."""
    text = text.replace("|", "\\|").replace("\n", " ")
    return _MODEL_REF.sub(r"[\1](model.md#\1)", text)


def _docstring(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    first = doc.split("\n\n")[0].replace("\n", " ")
    return _MODEL_REF.sub(r"[\1](model.md#\1)", first)


def _class_section(cls: type, configs: Any, queue: list[type]) -> list[str]:
    comments = _source_comments(cls)
    for base in cls.__mro__[1:]:
        if isinstance(base, type) and issubclass(base, configs.FrozenConfig):
            for name, text in _source_comments(base).items():
                comments.setdefault(name, text)
    out = [f"### {cls.__name__} {{#{_anchor(cls)}}}", "", _docstring(cls), ""]
    out += ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        kind = _type_name(field.annotation, configs)
        bounds = _constraints(field)
        if bounds:
            kind += f" ({bounds})"
        description = field.description or comments.get(name, "")
        if configs.is_hash_neutral(field):
            description = (description + " " if description else "") + "*(hash-neutral)*"
        out.append(f"| `{name}` | {kind} | {_default(field)} | {_cell(description)} |")
        for nested in _nested(field.annotation, configs):
            if nested not in queue:
                queue.append(nested)
    out.append("")
    return out


def render() -> str:
    """The whole reference page as Markdown."""
    registry, configs = _repo_imports()
    out = [
        "# Configuration reference",
        "",
        "Generated from the code (`pipeline/registry.py`, `pipeline/configs.py`) each time the docs are",
        "built. An experiment file names, for its `dataset`, `model` and `trainer`, a builder key (`fn`) and",
        "a `config`; the tables list what each key's config accepts. A field's type shows its bounds; a",
        "*hash-neutral* field was added after configurations were first stored and enters a config's hash",
        "only when it differs from its default ([configuration evolution](config-evolution.md)). How the",
        "settings map onto the model: [the model page](model.md).",
        "",
    ]
    queue: list[type] = []
    sections: list[str] = []
    for kind, entries in registry.KINDS.items():
        out += [f"## {kind.capitalize()} builders", ""]
        out += ["| key (`fn`) | config | what it builds |", "|---|---|---|"]
        for key, entry in entries.items():
            cls = entry.config
            out.append(f"| `{key}` | [{cls.__name__}](#{_anchor(cls)}) | {_cell(entry.description)} |")
            if cls not in queue:
                queue.append(cls)
        out.append("")
    index = 0
    while index < len(queue):
        sections += _class_section(queue[index], configs, queue)
        index += 1
    return "\n".join([*out, "## Config classes", "", *sections])


def on_files(files: Any, config: Any) -> Any:
    """MkDocs event: add the generated page to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
