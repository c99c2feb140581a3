"""The layout keeps its promises: the dependency diagram at the top of ``async_store/__init__.py``
places every module and no module imports one the diagram puts above it; no import cycle exists,
not even through imports made for type checking only; and the backend seam holds: nothing
outside ``async_store/sqlite/`` imports ``sqlite3``, ``aiosqlite`` or the SQLite backend itself.
The package's ``__init__`` (the flat public namespace) is exempt, and so are ``cli`` and
``demo``, the command-line program: an application of the library that may name SQLite's
public backup functions, as any application may; they do not import ``sqlite3``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import async_store

PACKAGE = Path(async_store.__file__).parent
PROGRAM = ("cli", "demo")
"""The command-line program: it may use the SQLite backend's public backup functions."""


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


def imported_modules(path: Path, *, type_checking: bool = False) -> set[str]:
    """The package's modules that ``path`` imports (dotted, inside the package): at run time,
    and with ``type_checking`` also those imported for type checking only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_checking_only: set[int] = set()
    for node in ast.walk(tree):
        if (
            not type_checking
            and isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test)
        ):
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


def drivers_imported(path: Path) -> set[str]:
    """The top-level names of the outside modules ``path`` imports, type checking included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_sqlite_backend_imports_sqlite() -> None:
    crossing = []
    for path, module in modules():
        if module.split(".")[0] == "sqlite":
            continue
        drivers = drivers_imported(path) & {"sqlite3", "aiosqlite"}
        backend = {
            m for m in imported_modules(path, type_checking=True) if m.split(".")[0] == "sqlite"
        }
        if module in PROGRAM:
            backend = {m for m in backend if m != "sqlite.backup"}
        if drivers or backend:
            crossing.append(f"{module} imports {sorted(drivers | backend)}")
    assert crossing == []


def test_no_import_cycle_even_for_type_checking() -> None:
    graph = {
        module: {m for m in imported_modules(path, type_checking=True) if m != module}
        for path, module in modules()
    }
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycles.append([*trail[trail.index(module) :], module])
            return
        if module in done or module not in graph:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert [" → ".join(cycle) for cycle in cycles] == []


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def test_the_architecture_page_draws_the_diagram_of_the_package() -> None:
    page = ARCHITECTURE.read_text(encoding="utf-8")
    drawn = page[page.index("```\n") + 4 : page.index("\n```", page.index("```\n"))]
    doc = async_store.__doc__ or ""
    start = doc.index("Dependencies point one way")
    body = doc[doc.index("\n\n", start) + 2 :]
    body = body[: body.index("\n\n")]
    assert [line.strip() for line in drawn.splitlines()] == [
        line.strip() for line in body.splitlines()
    ]


def test_every_file_the_architecture_page_names_exists() -> None:
    """Paths in backticks are inside the package (``sqlite/_writer.py``) or the repository
    (``migrations/sqlite/app_meta/``, ``tests/contract/``); a bare file name (``store.py``, in
    the row of its package) is in one of the package's folders."""
    page = ARCHITECTURE.read_text(encoding="utf-8")
    named = set(re.findall(r"`([A-Za-z_][\w/.]*(?:\.py|/))`", page))
    assert len(named) > 30
    files = {path.name for path in PACKAGE.rglob("*.py")}
    missing = [
        name
        for name in sorted(named)
        if not (PACKAGE / name).exists()
        and not (PACKAGE.parent / name).exists()
        and not ("/" not in name and name in files)
    ]
    assert missing == []
