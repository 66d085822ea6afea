"""The dependency between the packages runs one way (`workers` imports `ingest`), and no
module imports another that imports it back, at module level or inside a function (an
import hidden in a function to dodge a cycle is still a cycle). The command line
(`ingest.cli`) is the one place that composes both: it starts the workers."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSITION_ROOT = {"ingest.cli", "ingest.__main__", "ingest.commands.processes",
                    "ingest.commands.jobs"}  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for package in ("ingest", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_by(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours `name` imports, anywhere in it (`from a import b` imports `a`,
    and `a.b` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported_by(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert cycles(graph()) == []


def test_ingest_never_imports_workers_but_from_the_command_line() -> None:
    wrong = {
        name: sorted(m for m in imports if m.startswith("workers"))
        for name, imports in graph().items()
        if name.startswith("ingest") and name not in COMPOSITION_ROOT
    }
    assert {name: found for name, found in wrong.items() if found} == {}


def test_operations_and_the_api_never_import_a_surface() -> None:
    """The operations layer is below the CLI, the API and the console: they call it, it
    calls none of them."""
    surfaces = ("ingest.cli", "ingest.commands", "ingest.api", "ingest.console")
    wrong = {
        name: sorted(m for m in imports if m.startswith(surfaces))
        for name, imports in graph().items()
        if name.startswith("ingest.operations")
    }
    assert {name: found for name, found in wrong.items() if found} == {}


def test_the_check_sees_a_cycle_when_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
