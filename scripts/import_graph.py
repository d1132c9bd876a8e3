"""Candor's import graph: its rooms (modules), the arrows that run up a layer, and the circles.

    .venv/bin/python scripts/import_graph.py            # the summary, each upward arrow and circle
    .venv/bin/python scripts/import_graph.py --dot      # the package graph in Graphviz's dot

Layers, bottom up: ``gen`` (generated protobuf code), ``lib`` (candor_kit, candor_faces,
candor_eval, candor_cli) and ``services``. An arrow runs up when a module imports one of a
higher layer: lib importing a service package, say. A circle is a set of modules that reach each
other through imports (a strongly connected component of more than one module, or a module that
imports itself); every import counts, those inside functions and under TYPE_CHECKING too, since
each is a dependency a reader has to hold. An arrow across runs from one service's package to
another's. tests/unit/test_layering.py holds all three counts at zero.
"""

from __future__ import annotations

import argparse
import ast
import gc
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Layer of each source root, bottom up; a module may import its own layer or one below.
LAYERS: dict[str, int] = {"gen": 0, "lib": 1, "services": 2}


@dataclass(frozen=True)
class Module:
    """One importable module of the tree: its dotted name, file and layer."""

    name: str
    path: Path
    layer: int

    @property
    def package(self) -> str:
        """The top-level package (``candor_kit``), by which layers are named."""
        return self.name.split(".")[0]


@dataclass
class Graph:
    """Modules and the imports between them (only those of the tree: third-party ones are left out)."""

    modules: dict[str, Module]
    imports: dict[str, set[str]] = field(default_factory=dict)

    def upward(self) -> list[tuple[str, str]]:
        """Each (importer, imported) pair where the imported module sits in a higher layer."""
        return sorted(
            (source, target)
            for source, targets in self.imports.items()
            for target in targets
            if self.modules[target].layer > self.modules[source].layer
        )

    def across(self) -> list[tuple[str, str]]:
        """Each (importer, imported) pair between two services: each runs in its own image, so one
        service's code reaching into another's is a dependency the deployment cannot see."""
        return sorted(
            (source, target)
            for source, targets in self.imports.items()
            for target in targets
            if self.modules[source].layer == self.modules[target].layer == LAYERS["services"]
            and self.modules[source].package != self.modules[target].package
        )

    def circles(self) -> list[list[str]]:
        """The modules that import each other, each circle sorted (Tarjan's components)."""
        return sorted(sorted(c) for c in _components(self.imports) if len(c) > 1 or _self_loop(self.imports, c))


def source_roots(root: Path = ROOT) -> Iterator[tuple[Path, int]]:
    """Each folder that holds top-level packages, with its layer: gen, lib and each service."""
    yield root / "gen", LAYERS["gen"]
    yield root / "lib", LAYERS["lib"]
    for service in sorted((root / "services").iterdir()):
        if service.is_dir():
            yield service, LAYERS["services"]


def find_modules(roots: Iterable[tuple[Path, int]]) -> dict[str, Module]:
    """Every module of the packages under ``roots`` (``candor_*`` folders with an __init__.py)."""
    modules: dict[str, Module] = {}
    for folder, layer in roots:
        for init in sorted(folder.glob("candor*/__init__.py")):
            package = init.parent
            for path in sorted(package.rglob("*.py")):
                parts = path.relative_to(folder).with_suffix("").parts
                name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                modules[name] = Module(name, path, layer)
    return modules


def _parse(path: Path) -> ast.Module:
    """The module's syntax tree, parsed with the garbage collector paused: in Python 3.11 before
    3.11.5 (Debian 12 has 3.11.2) a finalizer that runs Python code in the middle of the parse (an
    asyncio task of an earlier test destroyed, say) makes ast.parse raise a spurious "AST
    constructor recursion depth mismatch" SystemError (CPython gh-106905); it failed the layering
    test once in the bare Debian container."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(path.read_text(), filename=str(path))
    finally:
        if enabled:
            gc.enable()


def _imported_names(module: Module, modules: dict[str, Module]) -> Iterator[str]:
    """The dotted names a module imports, relative imports resolved. ``from package import name``
    names the submodule package.name when there is one, else the package."""
    tree = _parse(module.path)
    is_package = module.path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                yield submodule if submodule in modules else origin


def build_graph(root: Path = ROOT) -> Graph:
    """The import graph of every module under gen/, lib/ and services/."""
    modules = find_modules(source_roots(root))
    graph = Graph(modules)
    for name, module in modules.items():
        targets = {_owner(imported, modules) for imported in _imported_names(module, modules)}
        graph.imports[name] = {t for t in targets if t is not None and t != name}
    return graph


def _owner(dotted: str, modules: dict[str, Module]) -> str | None:
    """The module of the tree that ``dotted`` names, or the nearest package above it; None outside."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _self_loop(imports: dict[str, set[str]], component: list[str]) -> bool:
    return len(component) == 1 and component[0] in imports.get(component[0], set())


def _components(imports: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative: the graph's depth is not Python's stack's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in imports:
        if start in index:
            continue
        work = [(start, iter(sorted(imports[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imports.get(child, ())))))
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
                found.append(component)
    return found


def package_dot(graph: Graph) -> str:
    """The graph between top-level packages, in Graphviz's dot; upward arrows drawn red."""
    edges: dict[tuple[str, str], bool] = {}
    for source, targets in graph.imports.items():
        for target in targets:
            a, b = graph.modules[source].package, graph.modules[target].package
            if a != b:
                edges[(a, b)] = edges.get((a, b), False) or graph.modules[target].layer > graph.modules[source].layer
    lines = ["digraph candor {", "  rankdir=BT;"]
    lines += [f'  "{a}" -> "{b}"{" [color=red]" if up else ""};' for (a, b), up in sorted(edges.items())]
    return "\n".join([*lines, "}"])


def main(argv: list[str] | None = None) -> int:
    """Prints the summary (or the dot graph); exits 1 when an arrow runs up or a circle exists."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dot", action="store_true", help="print the package graph in dot instead")
    args = parser.parse_args(argv)
    graph = build_graph()
    if args.dot:
        print(package_dot(graph))
        return 0
    upward, across, circles = graph.upward(), graph.across(), graph.circles()
    arrows = sum(len(targets) for targets in graph.imports.values())
    print(
        f"rooms: {len(graph.modules)} modules, arrows: {arrows}, "
        f"arrows running up: {len(upward)}, across services: {len(across)}, circles: {len(circles)}"
    )
    for source, target in upward:
        print(f"  up: {source} -> {target}")
    for source, target in across:
        print(f"  across: {source} -> {target}")
    for circle in circles:
        print(f"  circle: {' <-> '.join(circle)}")
    return 1 if upward or across or circles else 0


if __name__ == "__main__":
    sys.exit(main())
