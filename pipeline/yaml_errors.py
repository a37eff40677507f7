"""Where in a YAML file an error lies: the line (and column) a refused key, value or token stands on.

``pipeline.yaml_io`` reads and bounds the document and the config models validate it; both name what
is wrong by its dotted path (``model.config.vit.dimm``) or, for the YAML itself, by the parser's mark.
The one line a user then sees points into the file: ``demo.yaml:12:3: did not find expected ',' or ']'``
for the YAML itself, ``demo.yaml: model.config.vit.dimm: unknown key (line 14)`` for a key or value.

Finding the line composes the text once more into PyYAML's node graph (no Python object is built and no
alias is expanded, so it costs the size of the text, which ``yaml_io`` bounds) and reads the start mark
of each key and list item. It runs only once something was refused, so a valid file is parsed once.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.configs import ConfigError
from pipeline.yaml_io import MAX_BYTES

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
#: a message naming a dotted path first (``check_values``, ``validate``)
_PATH_FIRST = re.compile(r"^([A-Za-z0-9_.\-]+): (.*)$", re.DOTALL)
_INVALID = "not valid YAML: "


def file_text(path: str | Path) -> str | None:
    """The text of the YAML file ``path`` for finding lines (None: unreadable, too large or not UTF-8,
    which ``yaml_io`` has reported already)."""
    try:
        path = Path(path)
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        return None if len(raw) > MAX_BYTES else raw.decode("utf-8").removeprefix("\ufeff")
    except (OSError, UnicodeDecodeError):
        return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _compose(text: str) -> Node | None:
    """The node graph of ``text`` (None: empty, or not valid YAML)."""
    loader = _LOADER(text)
    try:
        return loader.get_single_node()
    except (yaml.YAMLError, ValueError, UnicodeError):
        return None
    finally:
        loader.dispose()


def _walk(root: Node) -> Iterable[tuple[str, Node, Node]]:
    """(dotted path, node the path starts at, value node) of every key and list item, in document order.

    A node reached a second time (an alias) is not entered again: the keys it holds are listed under the
    anchor's path, and a path through the alias falls back to the alias's own key (``line_of``).
    """
    seen: set[int] = set()
    stack: list[tuple[str, Node]] = [("", root)]
    while stack:
        path, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        items: list[tuple[str, Node, Node]] = []
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if key.tag == _MERGE_TAG:  # `<<: *base`: the merged keys belong to this mapping
                    merged = value.value if isinstance(value, SequenceNode) else [value]
                    stack.extend((path, m) for m in reversed(merged))
                elif isinstance(key, ScalarNode):
                    items.append((_join(path, key.value), key, value))
        elif isinstance(node, SequenceNode):
            items = [(_join(path, str(i)), item, item) for i, item in enumerate(node.value)]
        yield from items
        stack.extend((p, value) for p, _, value in reversed(items))


def key_lines(text: str | None) -> dict[str, int]:
    """{dotted path: 1-based line} of every key and list item of the YAML document ``text`` ({} when
    there is no text or it does not parse)."""
    root = _compose(text) if text else None
    lines: dict[str, int] = {}
    if root is None:
        return lines
    for path, start, _ in _walk(root):
        lines.setdefault(path, start.start_mark.line + 1)
    return lines


def line_of(lines: dict[str, int], path: str) -> int | None:
    """The line of ``path``, or of its nearest enclosing key present in the file (a missing key is
    reported at the mapping that should hold it; a value set from a member at its section)."""
    parts = path.split(".")
    while parts:
        line = lines.get(".".join(parts))
        if line is not None:
            return line
        parts.pop()
    return None


def _overridden(path: str, overridden: Iterable[str]) -> bool:
    """Whether ``path`` was given (or changed) by a ``--set`` rather than by the file."""
    return any(path == o or path.startswith(o + ".") or o.startswith(path + ".") for o in overridden)


def _where(path: str, lines: dict[str, int], overridden: Iterable[str]) -> str:
    if path and _overridden(path, overridden):
        return " (from --set)"
    line = line_of(lines, path) if path else None
    return f" (line {line})" if line is not None else ""


def with_key_lines(err: ConfigError, text: str | None, overridden: Iterable[str] = ()) -> ConfigError:
    """``err`` (a refused key or value) with the line of each path it names in the YAML ``text``:
    ``model.config.vit.dimm: unknown key (line 14)``; ``(from --set)`` for a path a ``--set`` gave.

    An error without a dotted path first (``--set`` syntax, the top level) is returned as it is.
    """
    overridden = list(overridden)
    lines = key_lines(text)
    if err.problems:
        message = "; ".join(
            f"{path or 'the top level'}: {what}{_where(path, lines, overridden)}"
            for path, what in err.problems
        )
        return ConfigError(message, problems=err.problems)
    match = _PATH_FIRST.match(str(err))
    if err.line is None and match and "\n" not in str(err):
        path, what = match.groups()
        where = _where(path, lines, overridden)
        if where:
            return ConfigError(f"{path}: {what}{where}", problems=((path, what),))
    return err


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


def _construct_problem(root: Node, loader: Any) -> tuple[str, Node, str, Any] | None:
    """The first key or value (in document order) that PyYAML cannot build: its path, node, the first
    line of the failure and the failure's mark if it has one (``2020-13-45`` is a date YAML cannot build;
    ``!!int x``, ``!!bool maybe``, an unknown ``!!python/...`` tag likewise)."""
    for path, start, value in _walk(root):
        for node in (start, value) if start is not value else (value,):
            if not isinstance(node, ScalarNode) and node.tag in _PLAIN_TAGS:
                continue  # its keys and items come on their own
            try:
                loader.construct_object(node, deep=not isinstance(node, ScalarNode))
            except Exception as failure:  # noqa: BLE001 - any constructor failure is this node's problem
                mark = None
                if isinstance(failure, yaml.MarkedYAMLError):
                    mark = failure.problem_mark
                    text = failure.problem or failure.context or ""
                elif isinstance(failure, KeyError):  # PyYAML's bool constructor looks the word up
                    text = f"{getattr(node, 'value', '')!r} is not a {node.tag.rsplit(':', 1)[-1]}"
                else:
                    text = str(failure).strip()
                first = (text.splitlines() or [type(failure).__name__])[0]
                return path, node, first[:160], mark
    return None


def located_read_error(err: BaseException, text: str | None) -> ConfigError:
    """A failure of reading YAML (``yaml_io`` refused it, or a constructor of PyYAML failed) as a
    ``ConfigError`` with the line and column where the text says so.

    The parser's mark of a syntax error gives both; a value PyYAML cannot build (``2020-13-45``,
    ``!!bool maybe``) is found by building each in turn; a refused value (``.nan``) by the line of its
    dotted path. ``yaml_io``'s graph checks (a key twice, an alias bomb, deep nesting) name their line in
    the message already and are kept as they are.
    """
    base = err if isinstance(err, ConfigError) else ConfigError(f"{_INVALID}{err}")
    if base.line is not None or text is None:
        return base
    loader = _LOADER(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as syntax:
            mark = syntax.problem_mark or syntax.context_mark
            what = syntax.problem or syntax.context or type(syntax).__name__
            if mark is None:
                return base
            return ConfigError(what, line=mark.line + 1, column=mark.column + 1)
        except (yaml.YAMLError, ValueError, UnicodeError):
            return base
        # yaml_io's graph checks (a key twice, an alias bomb, nesting) name their line already
        if root is not None and (str(base).startswith(_INVALID) or not isinstance(err, ConfigError)):
            found = _construct_problem(root, loader)
            if found is not None:
                path, node, what, mark = found
                mark = mark or node.start_mark
                return ConfigError(f"{path}: {what}", line=mark.line + 1, column=mark.column + 1)
    finally:
        loader.dispose()
    return with_key_lines(base, text)
