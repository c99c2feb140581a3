"""encode/databases 0.9 on `sqlite+aiosqlite`, used as its documentation shows.

For SQLite it has no pool: every query outside a transaction opens (and closes) a new aiosqlite
connection, thread included, in autocommit mode. It has no connection-initialisation hook either,
so the PRAGMAs are set by a `sqlite3.Connection` subclass passed through its connect options
(`factory=`), which reach `sqlite3.connect` unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from benchmarks.clients.base import Client, DbSpec, connection_pragmas
from benchmarks.schema import INSERT_NAMED, SELECT_BY_ID_NAMED, SELECT_ONE

__all__ = ["connect"]


def _connection_class(spec: DbSpec) -> type[sqlite3.Connection]:
    pragmas = connection_pragmas(spec)

    class PragmaConnection(sqlite3.Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for pragma in pragmas:
                self.execute(pragma)

    return PragmaConnection


@asynccontextmanager
async def connect(spec: DbSpec) -> AsyncIterator[Client]:
    import databases

    database = databases.Database(
        f"sqlite+aiosqlite:///{spec.path}", factory=_connection_class(spec)
    )
    await database.connect()
    try:
        yield DatabasesClient(database)
    finally:
        await database.disconnect()


class DatabasesClient:
    def __init__(self, database: Any) -> None:
        self._db = database

    async def insert(self, payload: str) -> None:
        await self._db.execute(INSERT_NAMED, {"payload": payload})

    async def insert_many(self, rows: Sequence[tuple[str]]) -> None:
        async with self._db.transaction():
            await self._db.execute_many(INSERT_NAMED, [{"payload": p} for (p,) in rows])

    async def get(self, item_id: int) -> str | None:
        row = await self._db.fetch_one(SELECT_BY_ID_NAMED, {"id": item_id})
        return None if row is None else str(row[0])

    async def select_one(self) -> object:
        return await self._db.fetch_val(SELECT_ONE)
