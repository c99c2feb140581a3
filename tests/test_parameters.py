"""How SQLite stores the parameter values DESIGN.md promises (``async_store.sqlite._parameters``):
ISO 8601 text of a fixed width, the same text encode/databases wrote through SQLAlchemy's SQLite
types, so a file holding both compares equal as text."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from async_store import Database, QueryError
from async_store.sqlite._parameters import adapted, adapted_rows
from tests.conftest import make_config


class Mood(enum.Enum):
    CALM = "calm"


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        pytest.param(datetime(2024, 1, 2, 3, 4, 5), "2024-01-02 03:04:05.000000", id="datetime"),
        pytest.param(
            datetime(2024, 1, 2, 3, 4, 5, 7), "2024-01-02 03:04:05.000007", id="datetime-micro"
        ),
        pytest.param(
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "2024-01-02 03:04:05.000000+02:00",
            id="datetime-zone",
        ),
        pytest.param(date(2024, 1, 2), "2024-01-02", id="date"),
        pytest.param(time(3, 4, 5), "03:04:05.000000", id="time"),
        pytest.param(Decimal("12.3400"), "12.3400", id="decimal"),
        pytest.param(
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "12345678-1234-5678-1234-567812345678",
            id="uuid",
        ),
        pytest.param(Mood.CALM, "calm", id="enum"),
        pytest.param(True, 1, id="bool"),
    ],
)
async def test_values_are_stored_as_fixed_width_text(
    tmp_path: Path, value: Any, stored: Any
) -> None:
    async with Database(make_config(tmp_path / "t.db")) as db:
        await db.execute("CREATE TABLE t(v)")
        await db.execute("INSERT INTO t(v) VALUES (?)", (value,))
        assert await db.fetch_val("SELECT v FROM t") == stored


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        pytest.param(sa.DateTime(), datetime(2024, 1, 2, 3, 4, 5), id="datetime"),
        pytest.param(sa.DateTime(), datetime(1999, 12, 31, 23, 59, 59, 10), id="datetime-micro"),
        pytest.param(sa.Date(), date(2024, 1, 2), id="date"),
        pytest.param(sa.Time(), time(3, 4, 5), id="time"),
        pytest.param(sa.Time(), time(23, 0, 0, 999), id="time-micro"),
    ],
)
def test_the_text_is_what_sqlalchemys_sqlite_types_write(type_: Any, value: Any) -> None:
    dialect = sqlite_dialect.dialect()
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    assert adapted((value,)) == [process(value)]


def test_native_values_pass_through_as_the_same_object() -> None:
    positional = ("a", 1, 2.5, b"x", None, True)
    named = {"a": "a", "b": 1}
    assert adapted(positional) is positional
    assert adapted(named) is named
    rows = [("a", 1), ("b", 2)]
    assert adapted_rows(rows) is rows
    assert adapted(None) == ()


def test_only_the_sets_that_need_it_are_copied() -> None:
    moment = datetime(2024, 1, 2)
    rows: list[tuple[Any, ...]] = [("a",), (moment,), ("c",)]
    assert adapted_rows(rows) == [("a",), ["2024-01-02 00:00:00.000000"], ("c",)]


def test_subclasses_of_native_types_are_bound_as_their_base() -> None:
    class Name(str):
        pass

    assert adapted((Name("x"),)) == ["x"]


@pytest.mark.parametrize("parameters", ["abc", b"abc", 42, object()])
def test_parameters_that_are_not_a_sequence_or_mapping_are_refused(parameters: Any) -> None:
    with pytest.raises(QueryError, match="sequence or a mapping"):
        adapted(parameters)
