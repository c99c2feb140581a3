"""``SqliteRow``: the rows SQLite connections return, ``sqlite3.Row`` with the contract's
extras (``row.col``, ``row._mapping``). A subclass of the C type without slots of its own, so a
row costs what a ``sqlite3.Row`` costs until an extra is used; ``_connection`` makes it every
connection's row factory."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["RowMapping", "SqliteRow"]


class SqliteRow(sqlite3.Row):
    """A result row: ``row["col"]``, ``row[0]``, ``row.col``, ``row._mapping``, ``keys()``,
    ``len(row)``, iteration over the values, ``dict(row)``. Column names match without regard
    to case, as in SQLite."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        # Called only for names the row does not have as attributes (keys, _mapping, ...).
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except IndexError:
            raise AttributeError(
                f"the row has no column {name!r}; its columns: {', '.join(self.keys())}"
            ) from None

    @property
    def _mapping(self) -> RowMapping:
        """The row as a read-only mapping from column name to value."""
        return RowMapping(self)


class RowMapping(Mapping[str, Any]):
    """A row seen as a read-only mapping: ``"col" in row._mapping``, iteration over its
    column names."""

    __slots__ = ("_row",)

    def __init__(self, row: sqlite3.Row) -> None:
        self._row = row

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str):
            raise KeyError(key)
        try:
            return self._row[key]
        except IndexError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._row.keys())

    def __len__(self) -> int:
        return len(self._row)

    def __repr__(self) -> str:
        return f"RowMapping({dict(self)!r})"
