"""The shape of the search/ package: no import cycle (the kind that once hid a bug), read from the code.

Every import counts, also those inside functions (they run too, just later). A package's
``__init__.py`` that only hands names on lazily is not an edge.
"""
from __future__ import annotations

import ast

from helpers import ROOT

PACKAGE = ROOT / "search"


def _module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, modules: set[str]) -> set[str]:
    """The search.* modules that ``path`` imports (relative or absolute, at any depth)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]  # `from . import x` names a module
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_search():
    graph = import_graph()
    graph["search"] = set()  # the package's face: lazy hand-over of names (search.__getattr__) only
    assert "search.pipeline" in graph and "search.engines.optuna_engine" in graph
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_lower_layers_do_not_reach_up():
    graph = import_graph()
    assert "search.cli" not in graph["search.workers"]  # a worker never needs the command line
    for engine in [m for m in graph if m.startswith("search.engines")]:
        assert not graph[engine] & {"search.cli", "search.pipeline", "search.study", "search.workers"}, engine
