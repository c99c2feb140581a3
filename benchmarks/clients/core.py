"""Point reads written as SQLAlchemy Core statements, as code written for encode/databases reads:
``select(bench_items.c.payload).where(bench_items.c.id == item_id)``.

Two ways of writing the statement are timed. *Built per call* is how databases' documentation
writes it (a new statement object every read: SQLAlchemy builds it and derives its cache key each
time, work that is the application's and that no library can skip). *Prepared* builds it once
with a bind parameter, ``where(bench_items.c.id == bindparam("id"))``, and passes the id as a
parameter, as SQLAlchemy's own documentation advises for hot paths. Only reads are timed here; the
other `Client` operations go through SQL text as in `store.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from benchmarks.clients import encode_databases, sqlalchemy_async
from benchmarks.clients import store as async_store
from benchmarks.clients.base import Client, DbSpec

__all__ = [
    "databases_built_per_call",
    "sqlalchemy_prepared",
    "store_built_per_call",
    "store_prepared",
]


def _table() -> Any:
    import sqlalchemy as sa

    return sa.Table(
        "bench_items",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
    )


def _reader(
    connect: Callable[[DbSpec], AbstractAsyncContextManager[Any]],
    read: Callable[[Any, Any, int], Any],
    prepared: bool,
) -> Callable[[DbSpec], AbstractAsyncContextManager[Client]]:
    """A client of ``connect`` whose ``get`` is ``read(client, statement, item_id)``."""

    @asynccontextmanager
    async def open_client(spec: DbSpec) -> AsyncIterator[Client]:
        import sqlalchemy as sa

        items = _table()
        statement = (
            sa.select(items.c.payload).where(items.c.id == sa.bindparam("id")) if prepared else None
        )
        async with connect(spec) as client:
            yield _CoreClient(client, items, statement, read)

    return open_client


class _CoreClient:
    def __init__(
        self, inner: Any, items: Any, statement: Any, read: Callable[[Any, Any, int], Any]
    ) -> None:
        self._inner = inner
        self._items = items
        self._statement = statement
        self._read = read
        self.insert = inner.insert
        self.insert_many = inner.insert_many
        self.select_one = inner.select_one

    async def get(self, item_id: int) -> str | None:
        statement = self._statement
        if statement is None:
            import sqlalchemy as sa

            statement = sa.select(self._items.c.payload).where(self._items.c.id == item_id)
        row = await self._read(self._inner, statement, item_id)
        return None if row is None else str(row[0])


async def _store_read(client: Any, statement: Any, item_id: int) -> Any:
    return await client._db.fetch_one(statement, {"id": item_id})


async def _store_read_built(client: Any, statement: Any, item_id: int) -> Any:
    return await client._db.fetch_one(statement)


async def _databases_read(client: Any, statement: Any, item_id: int) -> Any:
    return await client._db.fetch_one(statement)


async def _sqlalchemy_read(client: Any, statement: Any, item_id: int) -> Any:
    async with client._engine.connect() as conn:
        return (await conn.execute(statement, {"id": item_id})).first()


store_prepared = _reader(async_store.connect, _store_read, prepared=True)
store_built_per_call = _reader(async_store.connect, _store_read_built, prepared=False)
databases_built_per_call = _reader(encode_databases.connect, _databases_read, prepared=False)
sqlalchemy_prepared = _reader(sqlalchemy_async.connect, _sqlalchemy_read, prepared=True)
