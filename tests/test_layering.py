"""The import rules of ARCHITECTURE.md: lower packages import neither nas nor each other, and no module of
ours imports in a cycle (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search_spaces", "devices", "predictors", "nas")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_in_a_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_packages_import_neither_nas_nor_each_other():
    bad = []
    for module, deps in _graph().items():
        top = module.split(".")[0]
        if top == "nas":
            continue
        bad += [f"{module} -> {d}" for d in deps if d.split(".")[0] != top]
    assert bad == []


def test_rooms_below_the_runs_never_import_the_runs_or_the_cli():
    upper = ("nas.cli", "nas.pipeline", "nas.lm", "nas.bench")
    lower = ("nas.latency", "nas.training", "nas.supernet", "nas.search", "nas.quantize", "nas.recipes", "nas.rundir")
    bad = [f"{m} -> {d}" for m, deps in _graph().items() if m.startswith(lower) for d in deps if d.startswith(upper)]
    bad += [
        f"{m} -> {d}"
        for m, deps in _graph().items()
        if not m.startswith("nas.cli")
        for d in deps
        if d.startswith("nas.cli")
    ]
    assert bad == []
