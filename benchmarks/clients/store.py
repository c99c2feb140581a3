"""async_store, through its public API only: `SqlService` in MVP mode, `sql.app` queries.

The service applies its own migrations to the same file on start; the benchmark table does not
clash with them. Its other PRAGMAs (cache size, mmap, ...) are the library's defaults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from benchmarks.clients.base import Client, DbSpec
from benchmarks.schema import CREATE_TABLE, INSERT, SELECT_BY_ID, SELECT_ONE

if TYPE_CHECKING:
    from async_store import Database

__all__ = ["connect"]


@asynccontextmanager
async def connect(spec: DbSpec) -> AsyncIterator[Client]:
    from async_store import SqlConfig, SqlService

    config = SqlConfig.mvp(spec.path, synchronous=spec.synchronous)
    async with SqlService(config) as sql:
        await sql.app.execute(CREATE_TABLE)
        yield StoreClient(sql.app)


class StoreClient:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, payload: str) -> None:
        await self._db.execute(INSERT, (payload,))

    async def insert_many(self, rows: Sequence[tuple[str]]) -> None:
        await self._db.execute_many(INSERT, rows)

    async def get(self, item_id: int) -> str | None:
        row = await self._db.fetch_one(SELECT_BY_ID, (item_id,))
        return None if row is None else str(row["payload"])

    async def select_one(self) -> object:
        return await self._db.fetch_val(SELECT_ONE)
