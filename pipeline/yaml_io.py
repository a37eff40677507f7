"""Bounded, strict YAML for everything users hand the pipeline: experiment and sweep files, a sweep's
``base:`` file and ``--set`` values.

PyYAML's safe loader builds no objects from tags, but it still expands aliases (600 bytes of nested
aliases are 10^8 list items once pydantic or ``deepcopy`` walks them), keeps the last of two equal keys
silently, reads any number of bytes in any encoding and gives ``.nan``, ``.inf`` and dates. Here:

- a file must be a regular file of at most ``MAX_BYTES`` (no more is read) and UTF-8 text;
- the document is composed into its node graph first (libyaml when present), where an alias is a
  shared node and nothing is expanded, and that graph is checked before any Python object is built:
  at most ``MAX_DEPTH`` levels of nesting and ``MAX_NODES`` values counted *with every alias expanded*
  (the count is memoised per node, so it costs the size of the graph, never of the expansion), no
  recursive alias, no key twice in one mapping (keys brought in by a merge ``<<`` may be overridden);
- integers have at most 24 characters (a 64-bit one has 20 digits; the config models bound each field
  far lower), and the values are checked: strings, integers, finite floats, booleans, null, lists and
  mappings with string keys only.

Every refusal is a ``ConfigError`` of one line naming the line or the dotted path of what was wrong,
never the file's contents; the caller prefixes the file or ``--set`` argument.
"""

from __future__ import annotations

import math
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.configs import ConfigError

#: at most this many bytes are read (the largest shipped experiment file has 3 KB; a file is written by
#: hand, and 64 KiB is some 800 full lines)
MAX_BYTES = 64 * 1024
#: values of a document, every alias expanded (a shipped experiment file has about 150)
MAX_NODES = 20_000
#: levels of nesting (a shipped experiment file has 5)
MAX_DEPTH = 32

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (error messages never echo long input)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_yaml_file(path: str | Path) -> Any:
    """The checked content of the YAML file ``path`` (see the module docstring).

    Raises:
        ConfigError: unreadable, not a regular file, too large, not UTF-8, or refused by ``loads_yaml``.
    """
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError("cannot read: not a regular file")
        if info.st_size > MAX_BYTES:
            raise ConfigError(_too_large(info.st_size))
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror or type(err).__name__}") from None
    if len(raw) > MAX_BYTES:  # grew since the stat
        raise ConfigError(_too_large(len(raw)))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); save the file as UTF-8"
        ) from None
    return loads_yaml(text)


def _too_large(size: int) -> str:
    return f"the file has {size} bytes; at most {MAX_BYTES} ({MAX_BYTES // 1024} KiB) are read"


def loads_yaml(text: str, where: str = "") -> Any:
    """Parse one YAML document with the bounds of the module docstring; None for an empty one
    (``where``: the dotted path the document will take, for the messages of ``check_values``).

    Raises:
        ConfigError: one line naming the line and column, or the dotted path, of what was refused.
    """
    if len(text) > MAX_BYTES:  # characters <= bytes: a cheap first test
        raise ConfigError(_too_large(len(text)))
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise ConfigError(_too_large(len(text.encode("utf-8", "surrogatepass"))))
    text = text.removeprefix("\ufeff")
    try:  # a lone surrogate would reach the C parser, which fails without saying where
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("not UTF-8 text") from None
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(loader, node)
        data = loader.construct_document(node)
    except ConfigError:
        raise
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {_yaml_problem(err)}") from None
    # a scalar its constructor refuses (KeyError: `!!bool maybe`, a bool tag on a word it does not know)
    except (ValueError, TypeError, OverflowError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if isinstance(err, KeyError):
            first += " is not a bool"
        raise ConfigError(f"not valid YAML: {first[:120]}") from None
    finally:
        loader.dispose()
    check_values(data, where)
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line: where and what, without the snippet of the document PyYAML adds."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        what = err.problem or err.context or type(err).__name__
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return f"{where}{what}"[:200]
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _line(node: Node) -> str:
    return f"line {node.start_mark.line + 1}" if node.start_mark is not None else "somewhere"


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_keys(loader: Any, node: MappingNode) -> None:
    """No key twice among the mapping's own keys (merged-in keys may be overridden)."""
    seen: dict[Any, Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
            continue
        try:
            key: Any = (key_node.tag, loader.construct_object(key_node))
            hash(key)
        except Exception:  # noqa: BLE001 - an unconstructible key is refused when the document is built
            key = (key_node.tag, key_node.value)
        if key in seen:
            raise ConfigError(
                f"{_line(key_node)}: the key {short(key_node.value, 40)} appears twice in one mapping "
                f"(first on {_line(seen[key])})"
            )
        seen[key] = key_node


def _check_graph(loader: Any, root: Node) -> None:
    """Bound the expanded size and depth of the node graph, refuse recursive aliases and duplicate keys.

    Iterative post-order walk; each node is visited once however many aliases point at it.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    open_nodes: set[int] = set()  # the nodes on the current path (an alias to one is recursive)
    shared = False
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            children = _children(node)
            values = 1 + sum(measured[id(c)][0] for c in children)
            depth = 1 + max((measured[id(c)][1] for c in children), default=0)
            open_nodes.discard(key)
            measured[key] = (values, depth)
            if values > MAX_NODES:
                how = " once its aliases are expanded (an alias bomb?)" if shared else ""
                raise ConfigError(f"{_line(node)}: more than {MAX_NODES} values{how}; refused")
            if depth > MAX_DEPTH:
                raise ConfigError(f"{_line(node)}: nested deeper than {MAX_DEPTH} levels; refused")
            continue
        if key in measured:
            shared = True
            continue
        if key in open_nodes:
            raise ConfigError(f"{_line(node)}: an alias refers to a node that contains it; refused")
        open_nodes.add(key)
        stack.append((node, True))
        if isinstance(node, MappingNode):
            _check_keys(loader, node)
        elif node.tag == _INT_TAG and len(node.value) > 24:  # 64 bits have 20 digits (and "_" or "0x")
            raise ConfigError(f"{_line(node)}: an integer of {len(node.value)} characters is out of range")
        for child in reversed(_children(node)):
            if id(child) in measured:
                shared = True
            stack.append((child, False))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_KINDS = {
    "bool": "a boolean",
    "int": "an integer",
    "float": "a number",
    "NoneType": "null",
    "date": "a date",
    "datetime": "a timestamp",
    "bytes": "binary data",
    "set": "a set",
    "tuple": "a pair",
}


def _kind(value: Any) -> str:
    """What YAML made of a value, in words."""
    name = type(value).__name__
    return _KINDS.get(name, f"a {name}")


def check_values(data: Any, where: str = "") -> None:
    """Refuse anything but strings, integers, finite floats, booleans, null, lists and mappings with
    string keys, anywhere in ``data`` (``where``: the dotted path of ``data`` itself).

    Raises:
        ConfigError: naming the dotted path of the first refused value.
    """
    stack: list[tuple[str, Any]] = [(where, data)]
    while stack:
        path, value = stack.pop()
        label = path or "the document"
        if isinstance(value, dict):
            items = list(value.items())
            for k, _ in items:
                if not isinstance(k, str):
                    raise ConfigError(
                        f"{label}: the key {short(k, 40)} is {_kind(k)}, not a string; quote it"
                    )
            stack.extend((_join(path, k), v) for k, v in reversed(items))
        elif isinstance(value, list):
            stack.extend((_join(path, str(i)), v) for i, v in reversed(list(enumerate(value))))
        elif value is None or isinstance(value, str | int):  # bool is an int
            continue
        elif isinstance(value, float):
            if not math.isfinite(value):
                name = ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
                raise ConfigError(f"{label}: {name} is not allowed; give a finite number")
        else:
            raise ConfigError(
                f"{label}: YAML reads {_kind(value)} here; only strings, numbers, booleans, null, lists "
                "and mappings are allowed (quote it to give a string)"
            )
