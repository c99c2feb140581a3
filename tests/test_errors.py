"""The sqlite3 → StoreError mapping, pinned with errors raised by real SQLite connections."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import async_store
from async_store import errors
from async_store.sqlite._errors import translate


def _schema(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id),"
        " name TEXT NOT NULL UNIQUE, qty INTEGER CHECK (qty >= 0))"
    )


def _unique(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("INSERT INTO child(name) VALUES ('a')")
    conn.execute("INSERT INTO child(name) VALUES ('a')")


def _primary_key(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("INSERT INTO parent(id) VALUES (1)")
    conn.execute("INSERT INTO parent(id) VALUES (1)")


def _foreign_key(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("INSERT INTO child(parent_id, name) VALUES (99, 'orphan')")


def _check(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("INSERT INTO child(name, qty) VALUES ('neg', -1)")


def _not_null(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("INSERT INTO child(name) VALUES (NULL)")


def _syntax(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("SELEC 1")


def _no_table(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("SELECT * FROM missing")


def _wrong_parameter_count(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("SELECT ?, ?", (1,))


def _unbindable_parameter(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("SELECT ?", (object(),))


def _misuse_closed(conn: sqlite3.Connection, path: Path) -> None:
    other = sqlite3.connect(path)
    other.close()
    other.execute("SELECT 1")


def _busy(conn: sqlite3.Connection, path: Path) -> None:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            waiter.execute("BEGIN IMMEDIATE")
        finally:
            waiter.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _full(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("CREATE TABLE blob_t(b BLOB)")
    count = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {count + 1}")
    conn.execute("INSERT INTO blob_t VALUES (zeroblob(1000000))")


def _read_only(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("PRAGMA query_only = ON")
    conn.execute("INSERT INTO parent(id) VALUES (5)")


def _not_a_database(conn: sqlite3.Connection, path: Path) -> None:
    foreign = path.with_name("foreign.db")
    foreign.write_bytes(b"this is a text file, not a database" * 200)
    other = sqlite3.connect(foreign)
    try:
        other.execute("SELECT * FROM sqlite_master")
    finally:
        other.close()


def _corrupt(conn: sqlite3.Connection, path: Path) -> None:
    broken = path.with_name("broken.db")
    source = sqlite3.connect(broken)
    source.execute("CREATE TABLE t(x)")
    source.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    source.commit()
    source.close()
    data = bytearray(broken.read_bytes())
    data[4096 + 8 : 4096 + 64] = b"\xff" * 56  # trash the b-tree page header of page 2
    broken.write_bytes(bytes(data))
    other = sqlite3.connect(broken)
    try:
        other.execute("SELECT count(*), max(length(x)) FROM t").fetchall()
    finally:
        other.close()


def _interrupted(conn: sqlite3.Connection, path: Path) -> None:
    conn.set_progress_handler(lambda: 1, 100)
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000)"
        " SELECT count(*) FROM c"
    ).fetchall()


CASES = [
    pytest.param(_unique, errors.UniqueViolation, id="unique"),
    pytest.param(_primary_key, errors.UniqueViolation, id="primary-key"),
    pytest.param(_foreign_key, errors.ForeignKeyViolation, id="foreign-key"),
    pytest.param(_check, errors.CheckViolation, id="check"),
    pytest.param(_not_null, errors.NotNullViolation, id="not-null"),
    pytest.param(_syntax, errors.QueryError, id="syntax"),
    pytest.param(_no_table, errors.QueryError, id="no-such-table"),
    pytest.param(_wrong_parameter_count, errors.QueryError, id="parameter-count"),
    pytest.param(_unbindable_parameter, errors.QueryError, id="parameter-type"),
    pytest.param(_misuse_closed, errors.QueryError, id="misuse-closed"),
    pytest.param(_busy, errors.DatabaseBusy, id="busy"),
    pytest.param(_full, errors.DatabaseFull, id="full"),
    pytest.param(_read_only, errors.DatabaseReadOnly, id="read-only"),
    pytest.param(_not_a_database, errors.NotADatabase, id="not-a-database"),
    pytest.param(_corrupt, errors.DatabaseCorrupt, id="corrupt"),
    pytest.param(_interrupted, errors.Interrupted, id="interrupted"),
]


@pytest.mark.parametrize(("provoke", "expected"), CASES)
def test_sqlite_errors_map_to_the_most_specific_store_error(
    tmp_path: Path,
    provoke: Callable[[sqlite3.Connection, Path], None],
    expected: type[errors.StoreError],
) -> None:
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _schema(conn)
        with pytest.raises((sqlite3.Error, TypeError, OverflowError, ValueError)) as info:
            provoke(conn, path)
    finally:
        conn.close()
    translated = translate(info.value, database="app_meta", sql="SELECT 1")
    assert type(translated) is expected
    assert isinstance(translated, errors.StoreError)
    assert str(translated).startswith("app_meta: ")


def test_the_reader_refusal_says_what_to_do_instead(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    _schema(conn)
    with pytest.raises(sqlite3.Error) as info:
        _read_only(conn, tmp_path)
    conn.close()
    translated = translate(info.value, database="app_meta", sql="INSERT ...", on_reader=True)
    assert type(translated) is errors.ReadOnlyQuery
    assert "use execute() or transaction()" in str(translated)


def test_message_quotes_the_sql_shortened() -> None:
    long_sql = "SELECT " + ", ".join(f"c{i}" for i in range(200)) + " FROM t"
    error = translate(sqlite3.OperationalError("no such table: t"), database="db", sql=long_sql)
    assert "no such table: t" in str(error)
    assert "[sql: SELECT c0, c1" in str(error)
    assert len(str(error)) < 300


def test_store_errors_pass_through_unchanged() -> None:
    original = errors.ConcurrencyError("stream s: expected 1, found 2")
    assert translate(original, database="events") is original


def test_built_in_bases_where_callers_expect_them() -> None:
    assert issubclass(errors.PoolTimeout, TimeoutError)
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.NotADatabase, errors.DatabaseCorrupt)


def test_every_error_is_exported_and_rooted_at_store_error() -> None:
    for name in errors.__all__:
        if name == "translate":
            continue
        kind = getattr(errors, name)
        assert issubclass(kind, errors.StoreError), name
        assert getattr(async_store, name) is kind, name
        assert name in (errors.__doc__ or ""), f"{name} missing from the drawn tree"
