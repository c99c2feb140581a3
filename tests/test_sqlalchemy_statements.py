"""How SQLAlchemy statements are compiled on SQLite (``async_store._sqlalchemy`` and
``sqlite._queries.STATEMENTS``): once per shape, within a bound, refusing what text refuses,
with Python-side column defaults, and without importing SQLAlchemy for those who never use it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from async_store import Database, QueryError, _sqlalchemy
from async_store.sqlite._queries import STATEMENTS
from tests.conftest import make_config

metadata = sa.MetaData()
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("slug", sa.String, default=lambda ctx: ctx.get_current_parameters()["name"].lower()),
    sa.Column("seen", sa.DateTime, default=lambda: datetime(2024, 5, 6)),
    sa.Column("edits", sa.Integer, default=0, onupdate=sa.text("edits + 1")),
    sa.Column("note", sa.String, onupdate="edited"),
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database(make_config(tmp_path / "core.db")) as database:
        await database.execute(CreateTable(events))
        yield database


async def test_statements_of_one_shape_share_one_compiled_form(db: Database) -> None:
    await db.execute_many(events.insert(), [{"name": f"e{i}"} for i in range(3)])
    before = len(STATEMENTS)
    for i in range(1, 4):
        assert await db.fetch_val(sa.select(events.c.name).where(events.c.id == i)) == f"e{i - 1}"
    assert len(STATEMENTS) == before + 1


async def test_the_cache_of_shapes_is_bounded(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlalchemy, "CACHE_SIZE", len(STATEMENTS) + 3)
    for i in range(10):
        await db.fetch_all(sa.text(f"SELECT {i} AS n"))
    assert len(STATEMENTS) == _sqlalchemy.CACHE_SIZE
    row: Any = await db.fetch_one(sa.text("SELECT 1 AS n"))
    assert row == (1,)


async def test_python_side_defaults_are_computed_per_row(db: Database) -> None:
    await db.execute(events.insert(), {"name": "Launch"})
    await db.execute_many(events.insert(), [{"name": "A"}, {"name": "B"}])
    rows = await db.fetch_all(sa.select(events).order_by(events.c.id))
    assert [(row.slug, row.seen, row.edits) for row in rows] == [
        ("launch", datetime(2024, 5, 6), 0),
        ("a", datetime(2024, 5, 6), 0),
        ("b", datetime(2024, 5, 6), 0),
    ]
    await db.execute(events.update().where(events.c.id == 1), {"name": "Liftoff"})
    row = await db.fetch_one(sa.select(events).where(events.c.id == 1))
    assert row is not None
    assert (row.name, row.edits, row.note) == ("Liftoff", 1, "edited")


@pytest.mark.parametrize("sql", ["BEGIN", "COMMIT", "PRAGMA query_only = 0", "ATTACH 'x.db' AS x"])
async def test_text_statements_are_refused_as_sql_text_is(db: Database, sql: str) -> None:
    with pytest.raises(QueryError, match="cannot"):
        await db.execute(sa.text(sql))


async def test_rows_of_a_statement(db: Database) -> None:
    await db.execute(events.insert(), {"name": "x"})
    row: Any = await db.fetch_one(sa.select(events.c.id, events.c.name.label("title")))
    assert (row.title, row["title"], row["TITLE"], row[1], row[-1]) == ("x",) * 5
    assert row == (1, "x")
    assert hash(row) == hash((1, "x"))
    assert repr(row) == "(1, 'x')"
    assert row[0:1] == (1,)
    with pytest.raises(KeyError, match="no column 'nope'"):
        row["nope"]
    with pytest.raises(KeyError):
        row[["unhashable"]]
    with pytest.raises(AttributeError, match="its columns: id, title"):
        _ = row.nope
    mapping: Any = row._mapping
    assert list(mapping) == ["id", "title"]
    assert len(mapping) == 2
    assert 0 not in mapping
    assert ["x"] not in mapping
    with pytest.raises(KeyError):
        mapping[0]
    assert repr(mapping) == "RowMapping({'id': 1, 'title': 'x'})"


def test_sqlalchemy_is_imported_only_when_a_statement_arrives(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from async_store import Database, DatabaseConfig

        async def main():
            async with Database(DatabaseConfig(path={str(tmp_path / "t.db")!r})) as db:
                await db.execute("CREATE TABLE t(x)")
                await db.execute_many("INSERT INTO t(x) VALUES (?)", [(1,), (2,)])
                assert await db.fetch_val("SELECT sum(x) FROM t") == 3
                try:
                    await db.fetch_all(object())
                except Exception as exc:
                    print(type(exc).__name__)
            print("sqlalchemy" in sys.modules)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["QueryError", "False"]


def test_a_statement_that_does_not_compile_is_a_query_error() -> None:
    with pytest.raises(QueryError, match=r"cannot compile .*Unconsumed column names: nosuch"):
        STATEMENTS.prepare(sa.update(events).values(nosuch=1), None)
