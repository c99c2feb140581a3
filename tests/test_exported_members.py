"""The flat public namespace stays sorted and complete."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import async_store
from async_store import errors

PROGRAM_MODULES = {"async_store.cli", "async_store.demo", "async_store.__main__"}
"""The command-line program: not library API, so not re-exported."""


def public_modules() -> list[str]:
    """Every module and package of the package, at any depth, whose dotted name has no part
    with a leading underscore, the state package aside (its entities and deltas live in
    ``async_store.state`` by design)."""
    return sorted(
        info.name
        for info in pkgutil.walk_packages(async_store.__path__, "async_store.")
        if not any(part.startswith("_") for part in info.name.split("."))
        and info.name.split(".")[1] != "state"
        and info.name not in PROGRAM_MODULES
    )


def test_all_is_sorted_and_unique() -> None:
    assert list(async_store.__all__) == sorted(set(async_store.__all__))


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(async_store).items()
        if not name.startswith("_") and not isinstance(value, type(async_store))
    }
    assert public | {"__version__"} == set(async_store.__all__)


def test_the_public_modules_are_found() -> None:
    modules = public_modules()
    for expected in ("chunking", "events", "health", "logsinks", "migrations", "sqlite.backup"):
        assert f"async_store.{expected}" in modules
    assert "async_store.cli" not in modules
    assert "async_store.sqlite._writer" not in modules


@pytest.mark.parametrize("module_name", public_modules())
def test_every_name_in_a_public_module_is_importable_from_the_package(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module_name} has no __all__"
    missing = [name for name in names if name not in async_store.__all__]
    assert missing == [], f"{module_name}: {missing} not re-exported from async_store"
    for name in names:
        assert getattr(async_store, name) is getattr(module, name), name


def test_every_error_is_reachable_from_the_package() -> None:
    missing = [n for n in errors.__all__ if n not in async_store.__all__]
    assert missing == []
    assert not hasattr(errors, "translate")  # each backend translates at its own boundary
