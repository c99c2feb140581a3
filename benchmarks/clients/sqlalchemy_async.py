"""SQLAlchemy 2.0's async engine on `sqlite+aiosqlite`, with its default pool.

Each operation checks a connection out of the pool, as a request handler would:
`engine.begin()` for writes (commit on exit), `engine.connect()` for reads. The PRAGMAs are set
in a "connect" event listener, the way SQLAlchemy's SQLite documentation shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from benchmarks.clients.base import Client, DbSpec, connection_pragmas
from benchmarks.schema import INSERT_NAMED, SELECT_BY_ID_NAMED, SELECT_ONE

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["connect"]


@asynccontextmanager
async def connect(spec: DbSpec) -> AsyncIterator[Client]:
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{spec.path}")
    pragmas = connection_pragmas(spec)

    def set_pragmas(dbapi_connection: Any, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    event.listen(engine.sync_engine, "connect", set_pragmas)
    try:
        yield SqlAlchemyClient(engine)
    finally:
        await engine.dispose()


class SqlAlchemyClient:
    def __init__(self, engine: AsyncEngine) -> None:
        from sqlalchemy import text

        self._engine = engine
        self._insert = text(INSERT_NAMED)
        self._select = text(SELECT_BY_ID_NAMED)
        self._one = text(SELECT_ONE)

    async def insert(self, payload: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(self._insert, {"payload": payload})

    async def insert_many(self, rows: Sequence[tuple[str]]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(self._insert, [{"payload": p} for (p,) in rows])

    async def get(self, item_id: int) -> str | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(self._select, {"id": item_id})).first()
        return None if row is None else str(row[0])

    async def select_one(self) -> object:
        async with self._engine.connect() as conn:
            return await conn.scalar(self._one)
