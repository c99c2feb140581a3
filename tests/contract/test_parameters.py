"""Parameter values and statements that both write and return rows, on every backend.

DESIGN.md: besides the driver's own types, ``datetime``, ``date``, ``time``, ``Decimal``,
``UUID``, ``Enum`` and ``bool`` are accepted; anything else is a ``QueryError`` naming the
parameter and its type. ``fetch_*`` of a statement that writes runs on the writer, as its own
transaction or in the caller's. How a value is stored is the backend's (SQLite's text forms are
pinned in ``tests/test_parameters.py``); here a value written is found again by the same value.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from async_store import QueryError, ReadOnlyQuery
from async_store.database import Database


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    LARGE = 3


VALUES = [
    pytest.param(datetime(2024, 1, 2, 3, 4, 5), id="datetime"),
    pytest.param(datetime(2024, 1, 2, 3, 4, 5, 123), id="datetime-micro"),
    pytest.param(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), id="datetime-utc"),
    pytest.param(
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))), id="datetime-zone"
    ),
    pytest.param(date(2024, 1, 2), id="date"),
    pytest.param(time(3, 4, 5), id="time"),
    pytest.param(Decimal("12.3400"), id="decimal"),
    pytest.param(uuid.UUID("12345678-1234-5678-1234-567812345678"), id="uuid"),
    pytest.param(Colour.RED, id="enum"),
    pytest.param(Size.LARGE, id="int-enum"),
    pytest.param(True, id="bool"),
]


@pytest.mark.parametrize("value", VALUES)
async def test_a_value_written_is_found_by_the_same_value(db: Database, value: Any) -> None:
    await db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    await db.execute("INSERT INTO t(v) VALUES (?)", (value,))
    await db.execute("INSERT INTO t(v) VALUES (:v)", {"v": value})
    await db.execute_many("INSERT INTO t(v) VALUES (?)", [(value,), (None,)])
    assert await db.fetch_val("SELECT count(*) FROM t WHERE v = ?", (value,)) == 3
    assert await db.fetch_val("SELECT count(*) FROM t WHERE v = :v", {"v": value}) == 3
    async with db.transaction() as tx:
        assert await tx.fetch_val("SELECT count(*) FROM t WHERE v = ?", (value,)) == 3


async def test_datetimes_written_as_text_sort_in_time_order(db: Database) -> None:
    await db.execute("CREATE TABLE t(at TEXT)")
    moments = [
        datetime(2024, 1, 2, 3, 4, 5, 1),
        datetime(2024, 1, 2, 3, 4, 5),
        datetime(2024, 1, 2, 3, 4, 6),
        datetime(2023, 12, 31, 23, 59, 59, 999999),
    ]
    await db.execute_many("INSERT INTO t(at) VALUES (?)", [(m,) for m in moments])
    rows = await db.fetch_all("SELECT at FROM t ORDER BY at")
    assert [str(row[0]) for row in rows] == [
        str(m).replace("T", " ") if m.microsecond else f"{m}.000000" for m in sorted(moments)
    ]


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param([1, 2], "list", id="list"),
        pytest.param({"a": 1}, "dict", id="dict"),
        pytest.param(Opaque(), "Opaque", id="object"),
        pytest.param(timedelta(seconds=1), "timedelta", id="timedelta"),
    ],
)
async def test_another_type_is_a_query_error_naming_the_parameter(
    db: Database, value: Any, type_name: str
) -> None:
    await db.execute("CREATE TABLE t(a, b)")
    with pytest.raises(QueryError, match=rf"parameter 2 is a \S*{type_name}\b"):
        await db.execute("INSERT INTO t(a, b) VALUES (?, ?)", ("x", value))
    with pytest.raises(QueryError, match=rf"parameter :b is a \S*{type_name}\b"):
        await db.fetch_all("SELECT * FROM t WHERE a = :a AND b = :b", {"a": 1, "b": value})
    with pytest.raises(QueryError, match=rf"parameter set 2 .*parameter 2 is a \S*{type_name}"):
        await db.execute_many("INSERT INTO t(a, b) VALUES (?, ?)", [(1, 2), (3, value)])
    assert await db.fetch_val("SELECT count(*) FROM t") == 0


# -- fetch_* of a statement that writes -------------------------------------------------------


async def test_fetch_of_an_insert_returning_runs_on_the_writer_and_commits(
    db: Database, observer: Database
) -> None:
    new_id = await db.fetch_val(
        "INSERT INTO items(name, qty) VALUES (?, ?) RETURNING id", ("apple", 3)
    )
    assert new_id == 1
    assert await observer.fetch_val("SELECT name FROM items WHERE id = ?", (new_id,)) == "apple"
    row = await db.fetch_one(
        "  -- a comment first\n INSERT INTO items(name) VALUES ('pear') RETURNING id, name"
    )
    assert row is not None
    assert (row["id"], row["name"]) == (2, "pear")
    rows = await db.fetch_all("UPDATE items SET qty = qty + 1 RETURNING name")
    assert sorted(row["name"] for row in rows) == ["apple", "pear"]
    gone = await db.fetch_all("DELETE FROM items WHERE name = 'pear' RETURNING id")
    assert [row["id"] for row in gone] == [2]
    assert await observer.fetch_val("SELECT sum(qty) FROM items") == 4


async def test_a_writing_statement_behind_a_with_clause_reaches_the_writer(
    db: Database, observer: Database
) -> None:
    await db.execute("INSERT INTO items(name, qty) VALUES ('apple', 1)")
    names = await db.fetch_all(
        "WITH wanted(n) AS (SELECT 'apple') "
        "UPDATE items SET qty = 9 WHERE name IN (SELECT n FROM wanted) RETURNING name"
    )
    assert [row["name"] for row in names] == ["apple"]
    assert await observer.fetch_val("SELECT qty FROM items") == 9


async def test_fetch_of_a_writing_statement_joins_the_callers_transaction(
    db: Database, observer: Database
) -> None:
    with pytest.raises(RuntimeError, match="undo"):
        async with db.transaction():
            new_id = await db.fetch_val("INSERT INTO items(name) VALUES ('a') RETURNING id")
            assert await db.fetch_val("SELECT name FROM items WHERE id = ?", (new_id,)) == "a"
            raise RuntimeError("undo")
    assert await observer.fetch_val("SELECT count(*) FROM items") == 0


async def test_a_read_block_still_refuses_a_writing_fetch(db: Database) -> None:
    async with db.read() as snapshot:
        with pytest.raises(ReadOnlyQuery):
            await snapshot.fetch_val("INSERT INTO items(name) VALUES ('a') RETURNING id")
    assert await db.fetch_val("SELECT count(*) FROM items") == 0
