"""The flat public namespace stays sorted and complete."""

from __future__ import annotations

import async_store
from async_store import errors


def test_all_is_sorted_and_unique() -> None:
    assert list(async_store.__all__) == sorted(set(async_store.__all__))


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(async_store).items()
        if not name.startswith("_") and not isinstance(value, type(async_store))
    }
    assert public | {"__version__"} == set(async_store.__all__)


def test_every_error_is_reachable_from_the_package() -> None:
    missing = [n for n in errors.__all__ if n != "translate" and n not in async_store.__all__]
    assert missing == []
