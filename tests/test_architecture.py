"""The import graph of glassvi: arrows between parts point one way.

A *part* is a subpackage of ``glassvi`` (``model``, ``pp``, ...) or a top-level module
(``cli``). Every ``import`` statement counts, including those inside functions. Two rules:

- no cycle between parts;
- a part imports only the public names of another part (``from ..pp import read_gmt``), never
  one of its private modules (``from ..pp._peaks import ...``).

Top-level private modules (``glassvi._keys``, ``glassvi._validation``, ...) are the shared low
level: every part may import them, and they import no part.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "glassvi"
PACKAGE = "glassvi"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names a ``from ... import ...`` statement reaches (module or module.name)."""
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{alias.name}" for alias in node.names] or [prefix]


def imports() -> list[tuple[str, str, int]]:
    """All ``(importing module, imported glassvi name, line)`` in the source tree."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                targets = _resolve(module, is_package, node)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    found.append((module, target, node.lineno))
    return found


def part_of(name: str) -> str | None:
    """The part a dotted name belongs to; ``None`` for the package root itself."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def _is_shared(part: str) -> bool:
    return part.startswith("_") and (SRC / f"{part}.py").exists()


def _existing_module(name: str) -> str:
    """The longest prefix of ``name`` that is a module or package in the source tree."""
    parts = name.split(".")
    while len(parts) > 1:
        rel = Path(*parts[1:])
        if (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists():
            return ".".join(parts)
        parts = parts[:-1]
    return PACKAGE


def part_edges() -> dict[tuple[str, str], list[str]]:
    """Edges between parts, each with the places that make it."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, target, line in imports():
        source_part = part_of(module)
        if source_part is None:  # the package root gathers the public namespaces
            continue
        target_part = part_of(_existing_module(target)) or PACKAGE
        if target_part != source_part:
            edges.setdefault((source_part, target_part), []).append(f"{module}:{line} -> {target}")
    return edges


def cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one part (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def private_imports() -> list[str]:
    """Imports of another part's private module, e.g. ``from ..pp._peaks import x``."""
    bad = []
    for module, target, line in imports():
        source_part = part_of(module)
        target_module = _existing_module(target)
        target_part = part_of(target_module)
        if source_part is None or target_part is None or target_part == source_part:
            continue
        if _is_shared(target_part):
            continue
        if any(p.startswith("_") for p in target_module.split(".")[1:]):
            bad.append(f"{module}:{line} -> {target}")
    return bad


def test_imports_are_found():
    # a sanity check of the walker itself: it sees function-level imports too
    edges = part_edges()
    assert ("model", "module") in edges
    assert ("cli", "model") in edges


def test_no_import_cycles_between_parts():
    edges = part_edges()
    found = cycles(edges)
    details = [
        f"{a} -> {b}: {edges[(a, b)]}"
        for component in found
        for a in component
        for b in component
        if (a, b) in edges
    ]
    assert not found, "import cycles between parts:\n" + "\n".join(details)


def test_no_imports_of_other_parts_private_modules():
    bad = private_imports()
    assert not bad, "imports of another part's private module:\n" + "\n".join(bad)


SHARED = sorted(p.stem for p in SRC.glob("_*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", SHARED)
def test_shared_modules_import_no_part(module):
    edges = part_edges()
    reached = sorted(b for a, b in edges if a == module)
    assert not reached, f"glassvi.{module} is shared low level but imports {reached}"
