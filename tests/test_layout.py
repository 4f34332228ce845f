"""The package's layers: each module imports only from its own layer or the ones below, and no import circles.

Every import counts, also the ones inside functions (they run too). The order, bottom to top, is the one
docs/architecture.md draws; run ``python tests/test_layout.py`` to print the module graph's violations.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "compiler"

# bottom to top; a module's layer is its subpackage's (or its own name's, for top-level modules)
LAYERS = [
    {"errors", "common", "runtime"},
    {"facts"},
    {"front"},
    {"lower"},
    {"build", "render"},
    {"pipeline"},
    {"interop", "workflow"},
    {"cli"},
    {"__init__"},
]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compiler"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("compiler"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    return next(i for i, names in enumerate(LAYERS) if key in names)


def upward_imports() -> list[str]:
    return [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in sorted(graph().items())
        for b in sorted(targets)
        if layer(b) > layer(a) or (layer(b) == layer(a) and a.split(".")[1:2] != b.split(".")[1:2] and a != "compiler")
    ]


def circles() -> list[list[str]]:
    edges = graph()
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return found


def test_every_module_has_a_layer() -> None:
    for module in graph():
        layer(module)


def test_no_module_imports_a_higher_layer_or_a_sibling_package() -> None:
    assert upward_imports() == []


def test_no_import_circles() -> None:
    assert circles() == []


if __name__ == "__main__":
    print("\n".join(upward_imports()) or "no upward imports")
    print("\n".join(" -> ".join(c) for c in circles()) or "no circles")
