"""simlab's import structure, read from the source (no module is imported): every ``simlab`` import of every
module, top-level or inside a function, except those under ``if TYPE_CHECKING:``.

Two rules keep the architecture legible, and ``tests/test_architecture.py`` holds them:

* **layers**: a package imports only packages of its own or a lower layer (:data:`LAYERS`, lowest first), so
  nothing runs back up (the library never imports the tasks, the report never the simulate task...);
* **no circles** between modules.

    python -m simlab.devtools.imports            # the package graph, then any violation (exit 1 if one)
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from simlab.paths import PACKAGE_ROOT

# Lowest first; a package may import its own layer and those below. Top-level modules count as packages.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("paths", "common"),
    ("data",),
    ("metrics",),
    ("model",),
    ("runs",),
    ("training",),
    ("simulator",),
    ("baselines",),
    ("analysis",),
    ("report",),
    ("simulate",),
    ("tasks",),
    ("devtools",),
    ("cli", "__init__"),
)


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    """``simlab.a.b`` for ``<root>/a/b.py`` (a package's ``__init__.py`` is the package)."""
    parts = ("simlab", *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node) if not _type_checking_block(child))


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE_ROOT) -> set[str]:
    """The simlab modules ``path`` imports at run time (``from pkg import mod`` counts as ``pkg.mod`` when that is
    a module)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "simlab")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "simlab":
                continue
            subs = {f"{base}.{a.name}" for a in node.names} & modules
            found.update(subs or {base})
    found.discard(name)
    return {m for m in found if m in modules}


def graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """Module -> the simlab modules it imports at run time."""
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    return {module_name(p, root): imports_of(p, modules, root) for p in paths}


def package_of(module: str) -> str:
    """The first-level name under simlab (``simlab`` itself is ``__init__``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(package: str) -> int:
    for index, names in enumerate(LAYERS):
        if package in names:
            return index
    raise KeyError(f"simlab.{package} has no layer in simlab.devtools.imports.LAYERS: add it")


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a higher layer's module."""
    return sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                  if layer_of(package_of(b)) > layer_of(package_of(a)))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each holds at least one circle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for a, targets in edges.items():
        packages.setdefault(package_of(a), set()).update(
            package_of(b) for b in targets if package_of(b) != package_of(a))
    return packages


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simlab.devtools.imports", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    edges = graph()
    for package, targets in sorted(package_graph(edges).items(), key=lambda kv: layer_of(kv[0])):
        print(f"{package:10s} -> {', '.join(sorted(targets, key=layer_of)) or '-'}")
    problems = [f"runs back up: {line}" for line in upward_imports(edges)]
    problems += [f"circle: {' <-> '.join(component)}" for component in cycles(edges)]
    print("\n".join(problems) if problems else f"{len(edges)} modules: no circles, no import runs back up")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
