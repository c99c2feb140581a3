"""Code written as encode/databases' documentation writes it runs unchanged, on every backend:
its query pages (``query=``/``values=`` keywords, SQL text and Core statements, raw SQL with named
parameters), and its transaction page (``async with``, the decorator, the low-level
``await database.transaction()`` with ``commit()``/``rollback()``, ``force_rollback=True``).
Each test follows one example of those pages; the differences that remain on purpose are in the
README's "Coming from encode/databases"."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from async_store import PoolClosed, QueryError, StoreError
from async_store.database import Database

metadata = sa.MetaData()
notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.String(length=100)),
    sa.Column("completed", sa.Boolean),
)


async def test_the_readme_example(db: Database) -> None:
    query = """CREATE TABLE HighScores (id INTEGER PRIMARY KEY, name VARCHAR(100), score INTEGER)"""
    await db.execute(query=query)
    query = "INSERT INTO HighScores(name, score) VALUES (:name, :score)"
    values = [
        {"name": "Daisy", "score": 92},
        {"name": "Neil", "score": 87},
        {"name": "Carol", "score": 43},
    ]
    await db.execute_many(query=query, values=values)
    rows = await db.fetch_all(query="SELECT * FROM HighScores")
    assert [(row["name"], row["score"]) for row in rows] == [
        ("Daisy", 92),
        ("Neil", 87),
        ("Carol", 43),
    ]


async def test_queries_with_core_statements(db: Database) -> None:
    await db.execute(CreateTable(notes))
    query = notes.insert()
    values = {"text": "example1", "completed": True}
    assert await db.execute(query=query, values=values) == 1
    values_many = [
        {"text": "example2", "completed": False},
        {"text": "example3", "completed": True},
    ]
    await db.execute_many(query=query, values=values_many)
    query_all = notes.select()
    rows = await db.fetch_all(query=query_all)
    assert [(row.text, row.completed) for row in rows] == [
        ("example1", True),
        ("example2", False),
        ("example3", True),
    ]
    row = await db.fetch_one(query=query_all)
    assert row is not None
    assert row[notes.c.text] == "example1"
    assert [r["text"] async for r in db.iterate(query=query_all)] == [
        "example1",
        "example2",
        "example3",
    ]
    assert await db.fetch_val(query=query_all) == 1
    assert await db.fetch_val(query=query_all, column=notes.c.completed) is True


async def test_raw_queries_with_named_values(db: Database) -> None:
    await db.execute(CreateTable(notes))
    query = "INSERT INTO notes(text, completed) VALUES (:text, :completed)"
    values = {"text": "example1", "completed": True}
    await db.execute(query=query, values=values)
    result = await db.fetch_one(query="SELECT * FROM notes WHERE id = :id", values={"id": 1})
    assert result is not None
    assert (result["text"], result["completed"]) == ("example1", 1)


async def test_execute_returns_the_id_then_the_rowcount(db: Database) -> None:
    await db.execute(CreateTable(notes))
    assert await db.execute(notes.insert(), {"text": "a"}) == 1
    assert await db.execute(notes.insert(), {"text": "b"}) == 2
    assert await db.execute(notes.update().values(completed=True)) == 2
    assert await db.execute(notes.delete().where(notes.c.id == 1)) == 1


async def test_parameters_are_given_once(db: Database) -> None:
    with pytest.raises(QueryError, match="not both"):
        await db.fetch_all("SELECT ?", (1,), values=(2,))


# -- transactions ------------------------------------------------------------------------------


async def test_a_transaction_block(db: Database, observer: Database) -> None:
    async with db.transaction():
        await db.execute("INSERT INTO items(name) VALUES ('a')")
    assert await observer.fetch_val("SELECT count(*) FROM items") == 1


async def test_the_decorator_runs_each_call_in_a_block_of_its_own(
    db: Database, observer: Database
) -> None:
    @db.transaction()
    async def create_users(names: list[str]) -> int:
        for name in names:
            await db.execute("INSERT INTO items(name) VALUES (?)", (name,))
        assert db.in_transaction
        return len(names)

    assert await create_users(["a", "b"]) == 2
    with pytest.raises(StoreError):
        await create_users(["c", "a"])  # the second name is taken: the block rolls back
    assert await create_users(["d"]) == 1
    names = await observer.fetch_all("SELECT name FROM items ORDER BY name")
    assert [row["name"] for row in names] == ["a", "b", "d"]
    await asyncio.gather(create_users(["e"]), create_users(["f"]))
    assert await observer.fetch_val("SELECT count(*) FROM items") == 5


async def test_the_low_level_api_commits(db: Database, observer: Database) -> None:
    transaction = await db.transaction()
    try:
        await db.execute("INSERT INTO items(name) VALUES ('kept')")
    except Exception:
        await transaction.rollback()
        raise
    else:
        await transaction.commit()
    assert await observer.fetch_val("SELECT count(*) FROM items") == 1
    assert not db.in_transaction
    with pytest.raises(StoreError, match="has ended"):
        await transaction.commit()


async def test_the_low_level_api_rolls_back(db: Database, observer: Database) -> None:
    transaction = await db.transaction()
    await db.execute("INSERT INTO items(name) VALUES ('undone')")
    nested = await db.transaction()
    await db.execute("INSERT INTO items(name) VALUES ('inner')")
    await nested.rollback()
    assert await db.fetch_val("SELECT count(*) FROM items") == 1
    await transaction.rollback()
    assert await observer.fetch_val("SELECT count(*) FROM items") == 0
    assert await db.execute("INSERT INTO items(name) VALUES ('after')") == 1


async def test_a_block_made_to_roll_back(db: Database, observer: Database) -> None:
    async with db.transaction(force_rollback=True):
        await db.execute("INSERT INTO items(name) VALUES ('a')")
        assert await db.fetch_val("SELECT count(*) FROM items") == 1
    assert await observer.fetch_val("SELECT count(*) FROM items") == 0
    async with db.transaction():
        async with db.transaction(force_rollback=True):
            await db.execute("INSERT INTO items(name) VALUES ('inner')")
        await db.execute("INSERT INTO items(name) VALUES ('outer')")
    names = await observer.fetch_all("SELECT name FROM items")
    assert [row["name"] for row in names] == ["outer"]


async def test_a_block_is_started_once(db: Database) -> None:
    block = db.transaction()
    with pytest.raises(StoreError, match="never started"):
        await block.commit()
    await block.start()
    with pytest.raises(StoreError, match="started already"):
        await block.start()
    await block.rollback()


async def test_a_connection_block_yields_the_database(db: Database, observer: Database) -> None:
    async with db.connection() as connection:
        async with connection.transaction():
            await connection.execute("INSERT INTO items(name) VALUES ('a')")
        assert await connection.fetch_val("SELECT count(*) FROM items") == 1
    assert await observer.fetch_val("SELECT count(*) FROM items") == 1
    await db.disconnect()
    with pytest.raises(PoolClosed, match="connect"):
        async with db.connection():
            pass
