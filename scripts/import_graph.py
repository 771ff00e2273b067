"""The import graph of livesignal/, read from the code: fails on any import circle.

    python scripts/import_graph.py          # check: exit 1 and name the circles, if any
    python scripts/import_graph.py --dot    # the module graph in Graphviz DOT
    python scripts/import_graph.py --parts  # which part imports which (folders, not modules)

Every `import` and `from ... import` counts, those under `if TYPE_CHECKING:` and inside
functions included: a circle that only type checking closes is still a circle a reader walks.
`from package import name` counts as importing `package.name` when that is a module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "livesignal"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def graph(found: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in found:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
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

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def part(module: str) -> str:
    """The folder a module belongs to (livesignal.signal.ws.hub -> livesignal.signal.ws)."""
    depth = 3 if module.startswith(f"{PACKAGE}.signal.") else 2
    return ".".join(module.split(".")[:depth])


def main() -> int:
    edges = graph(modules())
    if "--parts" in sys.argv:
        parts: dict[str, set[str]] = {}
        for name, targets in edges.items():
            here = part(name)
            parts.setdefault(here, set()).update(part(t) for t in targets if part(t) != here)
        for name in sorted(parts):
            print(f"{name} -> {', '.join(sorted(parts[name])) or '(nothing)'}")
        return 0
    if "--dot" in sys.argv:
        print("digraph livesignal {")
        for name in sorted(edges):
            for target in sorted(edges[name]):
                print(f'  "{name}" -> "{target}";')
        print("}")
        return 0
    found = circles(edges)
    count = sum(len(targets) for targets in edges.values())
    if found:
        for component in found:
            print("import circle:", " <-> ".join(component))
        return 1
    print(f"import graph: {len(edges)} modules, {count} imports, no circle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
