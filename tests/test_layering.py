"""The dependency diagram at the top of ``async_store/__init__.py`` is true: it places every
module, and no module imports one the diagram puts above it (imports made for type checking
only are exempt; the ``state`` package counts as one module)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import async_store

PACKAGE = Path(async_store.__file__).parent


def diagram_levels() -> dict[str, int]:
    doc = async_store.__doc__ or ""
    start = doc.index("Dependencies point one way")
    body = doc[doc.index("\n\n", start) + 2 :]
    body = body[: body.index("\n\n")]
    levels: dict[str, int] = {}
    for level, names in enumerate(body.split("→")):
        for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", names):
            assert name not in levels, f"{name} is placed twice in the diagram"
            levels[name] = level
    return levels


def unit_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_units(path: Path) -> set[str]:
    """The package's modules that ``path`` imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_checking_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                type_checking_only.update(id(n) for n in ast.walk(child))
    inside_state = unit_of(path) == "state"
    units: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_checking_only or not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0:
            if node.module and node.module.split(".")[0] == "async_store":
                parts = node.module.split(".")
                units.add(parts[1] if len(parts) > 1 else "__init__")
            continue
        # Relative: from the package itself, or from inside the state package.
        if node.level != (2 if inside_state else 1):
            continue  # within the state package
        if node.module:
            units.add(node.module.split(".")[0])
        else:
            units.update(alias.name for alias in node.names)
    return units


def test_the_diagram_places_every_module() -> None:
    levels = diagram_levels()
    modules = {unit_of(path) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"}
    modules.discard("__main__")
    assert sorted(modules - set(levels)) == []
    assert sorted(set(levels) - modules) == []


def test_no_module_imports_one_above_it() -> None:
    levels = diagram_levels()
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of(path)
        if unit in ("__init__", "__main__"):
            continue
        for imported in imported_units(path):
            if imported in levels and levels[imported] > levels[unit]:
                upward.append(f"{path.relative_to(PACKAGE)} ({unit}) imports {imported}")
    assert upward == []
