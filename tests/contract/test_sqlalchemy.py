"""SQLAlchemy Core statements through every query method, on every backend: what code written
for encode/databases does (``notes.insert()`` with values, ``notes.select()``, ``row.text``,
``row[notes.c.text]``), with the column types applied both ways, Core DDL, and the errors."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable, DropTable

from async_store import QueryError, UniqueViolation
from async_store.database import Database, Row


class Status(enum.Enum):
    OPEN = "open"
    DONE = "done"


class Tags(sa.types.TypeDecorator[list[str]]):
    """A list of tags stored as one comma-separated string."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Any) -> str | None:
        return None if value is None else ",".join(value)

    def process_result_value(self, value: str | None, dialect: Any) -> list[str] | None:
        return None if value is None else value.split(",")


metadata = sa.MetaData()
notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.String(100), nullable=False, unique=True),
    sa.Column("completed", sa.Boolean, nullable=False, default=False),
    sa.Column("created", sa.DateTime),
    sa.Column("day", sa.Date),
    sa.Column("alarm", sa.Time),
    sa.Column("price", sa.Numeric(10, 2)),
    sa.Column("status", sa.Enum(Status)),
    sa.Column("extra", sa.JSON),
    sa.Column("tags", Tags),
    sa.Column("token", sa.Uuid),
)

FULL = {
    "text": "buy milk",
    "completed": True,
    "created": datetime(2024, 1, 2, 3, 4, 5, 6),
    "day": date(2024, 1, 2),
    "alarm": time(7, 30),
    "price": Decimal("3.25"),
    "status": Status.DONE,
    "extra": {"shop": ["corner", 1]},
    "tags": ["food", "today"],
    "token": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


@pytest.fixture
async def core(db: Database) -> Database:
    await db.execute(CreateTable(notes))
    return db


async def test_an_insert_with_values_returns_its_id_and_reads_back_typed(core: Database) -> None:
    assert await core.execute(notes.insert(), FULL) == 1
    assert await core.execute(notes.insert().values(text="call mum")) == 2
    row = await core.fetch_one(notes.select().where(notes.c.id == 1))
    assert row is not None
    assert {key: row[key] for key in FULL} == FULL
    assert row.text == "buy milk"
    assert row[notes.c.created] == FULL["created"]
    mapping: Any = row._mapping  # typed by name; a statement's rows answer to columns too
    assert mapping[notes.c.status] is Status.DONE
    assert "extra" in row._mapping
    assert notes.c.tags in row._mapping
    assert row[0] == 1
    assert dict(row)["completed"] is True
    assert row.keys()[:3] == ["id", "text", "completed"]
    other = await core.fetch_one(sa.select(notes).where(notes.c.text == "call mum"))
    assert other is not None
    assert (other.completed, other.extra, other.tags) == (False, None, None)


async def test_the_stored_values_are_what_the_column_types_write(core: Database) -> None:
    await core.execute(notes.insert(), FULL)
    row = await core.fetch_one(
        "SELECT created, completed, extra FROM notes WHERE text = ?", ("buy milk",)
    )
    assert row is not None
    assert row["completed"] in (1, True)
    assert json.loads(row["extra"]) == FULL["extra"]


async def test_every_query_method_takes_a_statement(core: Database) -> None:
    assert await core.execute_many(notes.insert(), [{"text": f"n{i}"} for i in range(5)]) == 5
    rows = await core.fetch_all(
        sa.select(notes.c.id, notes.c.text).where(notes.c.id > 2).order_by(notes.c.id)
    )
    assert [(row.id, row.text) for row in rows] == [(3, "n2"), (4, "n3"), (5, "n4")]
    assert all(isinstance(row, Row) for row in rows)
    count = sa.select(sa.func.count()).select_from(notes)
    assert await core.fetch_val(count) == 5
    assert await core.fetch_val(sa.select(notes.c.id, notes.c.text), column=notes.c.text) == "n0"
    streamed = [row.text async for row in core.iterate(notes.select(), chunk_size=2)]
    assert streamed == [f"n{i}" for i in range(5)]
    changed = await core.execute(notes.update().where(notes.c.id <= 2).values(completed=True))
    assert changed == 2
    assert await core.execute(notes.delete().where(notes.c.id == 5)) == 1
    assert await core.fetch_val(count) == 4


async def test_bind_parameters_and_expanding_in(core: Database) -> None:
    await core.execute_many(notes.insert(), [{"text": t} for t in ("a", "b", "c", "d")])
    by_id = sa.select(notes.c.text).where(notes.c.id == sa.bindparam("id"))
    assert [await core.fetch_val(by_id, {"id": i}) for i in (1, 3)] == ["a", "c"]
    some = sa.select(notes.c.text).where(notes.c.id.in_([2, 4])).order_by(notes.c.id)
    assert [row.text for row in await core.fetch_all(some)] == ["b", "d"]
    picked = sa.select(notes.c.text).where(notes.c.id.in_(sa.bindparam("ids", expanding=True)))
    assert len(await core.fetch_all(picked, {"ids": [1, 2, 3]})) == 3
    assert len(await core.fetch_all(picked, {"ids": [4]})) == 1


async def test_the_same_shape_with_other_values_reads_other_rows(core: Database) -> None:
    await core.execute_many(notes.insert(), [{"text": t} for t in ("a", "b")])
    for i, text in ((1, "a"), (2, "b"), (1, "a")):
        assert await core.fetch_val(sa.select(notes.c.text).where(notes.c.id == i)) == text


async def test_insert_returning_runs_on_the_writer(core: Database, observer: Database) -> None:
    new_id = await core.fetch_val(notes.insert().returning(notes.c.id), {"text": "x"})
    assert new_id == 1
    assert await observer.fetch_val("SELECT text FROM notes WHERE id = 1") == "x"


async def test_text_statements_and_a_transaction(core: Database, observer: Database) -> None:
    async with core.transaction() as tx:
        await tx.execute(notes.insert(), {"text": "inside"})
        found = await tx.fetch_all(
            sa.text("SELECT text FROM notes WHERE text = :t"), {"t": "inside"}
        )
        assert [row.text for row in found] == ["inside"]
    assert await observer.fetch_val(sa.select(sa.func.count()).select_from(notes)) == 1


async def test_constraint_errors_are_the_same_store_errors(core: Database) -> None:
    await core.execute(notes.insert(), {"text": "once"})
    with pytest.raises(UniqueViolation):
        await core.execute(notes.insert(), {"text": "once"})
    assert await core.fetch_val(sa.select(sa.func.count()).select_from(notes)) == 1


async def test_core_ddl_creates_and_drops(core: Database) -> None:
    extra = sa.Table("extra", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    await core.execute(CreateTable(extra))
    assert await core.execute(extra.insert(), {"id": 7}) == 7
    await core.execute(DropTable(extra))
    with pytest.raises(QueryError, match="no such table"):
        await core.fetch_all(extra.select())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda db: db.fetch_all(notes.select(), ("a",)), "a mapping", id="positional"),
        pytest.param(
            lambda db: db.fetch_all(sa.select(notes).where(notes.c.id == sa.bindparam("id"))),
            "value is required for bind parameter 'id'",
            id="missing-bind",
        ),
        pytest.param(
            lambda db: db.execute(notes.insert(), {"text": "x", "created": "yesterday"}),
            r"parameter :created \(str\) does not fit",
            id="wrong-type",
        ),
        pytest.param(
            lambda db: db.execute(notes.insert(), {"text": "x", "colour": "red"}),
            "no parameter or column named colour",
            id="unknown-column",
        ),
        pytest.param(lambda db: db.fetch_all(notes.c.id), "part of a statement", id="column"),
        pytest.param(lambda db: db.fetch_all(42), "str or a SQLAlchemy", id="not-sql"),
        pytest.param(
            lambda db: db.execute_many(notes.insert(), [{"text": "a"}, {"completed": True}]),
            "parameter set 2",
            id="uneven-sets",
        ),
    ],
)
async def test_bad_statements_and_values_are_query_errors_that_change_nothing(
    core: Database, call: Any, message: str
) -> None:
    with pytest.raises(QueryError, match=message):
        await call(core)
    assert await core.fetch_val(sa.select(sa.func.count()).select_from(notes)) == 0


async def test_a_row_the_column_type_cannot_read_is_a_query_error(core: Database) -> None:
    await core.execute("INSERT INTO notes(text, completed, created) VALUES ('x', 0, 'not a date')")
    with pytest.raises(QueryError, match="column 'created'"):
        await core.fetch_one(notes.select())
