"""The layers hold and no product module takes part in an import cycle (imports inside functions count).

The layer contract itself is import-linter's (``[tool.importlinter]`` in pyproject.toml, run here and by
``make test``); this test adds the module-level cycle check that import-linter's sibling contract does
not make (a package's ``__init__`` and one of its modules, or two modules through a third package).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).parents[2]
PACKAGES = ("pipeline", "schemas", "jobs", "usecases", "cli")


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each one is an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    """The imports inside one cycle, ``importer:line -> imported``."""
    members = set(component)
    lines = []
    for importer in component:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"{importer}:{detail['line_number']} -> {imported}")
    return "; ".join(lines)


def test_no_import_cycle_in_product_code():
    graph = grimp.build_graph(*PACKAGES)
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles: " + " | ".join(describe(graph, c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y", line_number=1, line_contents="import a.y")
    graph.add_import(importer="a.y", imported="a.x", line_number=5, line_contents="import a.x")
    graph.add_import(importer="a.y", imported="a.z", line_number=6, line_contents="import a.z")
    assert strongly_connected(graph) == [["a.x", "a.y"]]


def test_import_contracts_are_kept():
    """``lint-imports``: the layers, no DataJoint in ``pipeline``, no cycle between siblings."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_schema_modules_are_listed_in_dependency_order():
    """``schemas.SCHEMA_MODULES`` is the order of activation: a table module imports only those before it."""
    from schemas import SCHEMA_MODULES

    graph = grimp.build_graph("schemas")
    for position, name in enumerate(SCHEMA_MODULES):
        imported = {
            m.split(".")[1]
            for m in graph.find_modules_directly_imported_by(f"schemas.{name}")
            if m.count(".") == 1
        }
        later = sorted(imported & set(SCHEMA_MODULES[position + 1 :]))
        assert not later, f"schemas.{name} imports {later}, listed after it in SCHEMA_MODULES"


def test_tables_live_only_in_table_modules():
    """Every DataJoint table class is declared in one of ``SCHEMA_MODULES`` (jobs, use cases, the command
    line declare none)."""
    import datajoint as dj

    import schemas

    declared = {m.__name__ for m in schemas.modules()}
    for package in ("jobs", "usecases"):
        graph = grimp.build_graph(package)
        for name in sorted(graph.modules):
            module = __import__(name, fromlist=["_"])
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, dj.Table) and obj.__module__ == name:
                    raise AssertionError(
                        f"{name} declares table {obj.__name__}; tables go in {sorted(declared)}"
                    )
