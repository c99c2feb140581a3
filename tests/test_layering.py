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
        for name in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*[A-Za-z0-9_]", names):
            assert name not in levels, f"{name} is placed twice in the diagram"
            levels[name] = level
    return levels


def module_of(path: Path) -> str:
    """The dotted name of ``path`` inside the package ("" for the package itself)."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str, levels: dict[str, int]) -> str | None:
    """The diagram's name that places ``module``: the module itself or its nearest package."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in levels:
            return name
    return None


def imported_modules(path: Path) -> set[str]:
    """The package's modules that ``path`` imports at run time (dotted, inside the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_checking_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                type_checking_only.update(id(n) for n in ast.walk(child))
    here = module_of(path).split(".") if module_of(path) else []
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_checking_only or not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0:
            if node.module and node.module.split(".")[0] == "async_store":
                base = node.module.split(".")[1:]
            else:
                continue
        else:
            base = package[: len(package) - (node.level - 1)] + (
                node.module.split(".") if node.module else []
            )
        for alias in node.names:
            candidate = [*base, alias.name]
            if (PACKAGE.joinpath(*candidate).with_suffix(".py")).exists() or (
                PACKAGE.joinpath(*candidate) / "__init__.py"
            ).exists():
                found.add(".".join(candidate))
            else:
                found.add(".".join(base))
    return found


def modules() -> list[tuple[Path, str]]:
    return [
        (path, module_of(path))
        for path in sorted(PACKAGE.rglob("*.py"))
        if module_of(path) not in ("", "__main__")
    ]


def test_the_diagram_places_every_module() -> None:
    levels = diagram_levels()
    unplaced = [module for _, module in modules() if unit_of(module, levels) is None]
    assert unplaced == []
    placed = {unit_of(module, levels) for _, module in modules()}
    assert sorted(set(levels) - placed) == []


def test_no_module_imports_one_above_it() -> None:
    levels = diagram_levels()
    upward = []
    for path, module in modules():
        unit = unit_of(module, levels)
        assert unit is not None
        for imported in imported_modules(path):
            target = unit_of(imported, levels)
            if target is None or target == unit:
                continue
            if levels[target] > levels[unit]:
                upward.append(f"{module} ({unit}) imports {imported} ({target})")
    assert upward == []
