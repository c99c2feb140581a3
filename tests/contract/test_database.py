"""The query API of the contract's ``Database`` on every backend: parameters, rows, fetches,
``execute``/``execute_many``, transactions and savepoints, snapshots, iteration, the error
mapping, cancellation, ``after_commit``, and that a backend implements every contract method.

``observer`` is another database object on the same store: what it reads is committed."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

import pytest

from async_store import (
    CheckViolation,
    DatabaseConfig,
    ForeignKeyViolation,
    IntegrityViolation,
    NotNullViolation,
    PoolClosed,
    QueryError,
    StoreError,
    UniqueViolation,
)
from async_store.database import (
    Database,
    Parameters,
    ReadSnapshot,
    Row,
    Transaction,
    backend_of,
)

BOUND = 20.0
"""What a test waits at most for something that must end on its own (a machine twice as slow
as the one this was written on still ends in a fraction of it)."""

LONG_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
    "SELECT count(*) FROM c"
)
"""Minutes of work on any backend: it ends in a test only if it is stopped."""


# -- parameters, rows, fetches ----------------------------------------------------------------


async def test_positional_and_named_parameters(db: Database) -> None:
    await db.execute("INSERT INTO items(name, qty) VALUES (?, ?)", ("apple", 3))
    await db.execute(
        "INSERT INTO items(name, qty) VALUES (:name, :qty)", {"name": "pear", "qty": 5}
    )
    rows = await db.fetch_all(
        "SELECT name, qty FROM items WHERE qty > :min ORDER BY name", {"min": 0}
    )
    assert [(row["name"], row[1]) for row in rows] == [("apple", 3), ("pear", 5)]
    assert list(rows[0].keys()) == ["name", "qty"]


async def test_rows_by_name_index_keys_length_and_values(db: Database) -> None:
    await db.execute("INSERT INTO items(name, qty) VALUES ('apple', 3)")
    row = await db.fetch_one("SELECT id, name, qty FROM items")
    assert row is not None
    assert isinstance(row, Row)
    assert (row["id"], row["name"], row["qty"]) == (1, "apple", 3)
    assert (row[0], row[1], row[2]) == (1, "apple", 3)
    assert list(row.keys()) == ["id", "name", "qty"]
    assert len(row) == 3
    assert list(row) == [1, "apple", 3]
    assert dict(zip(row.keys(), row, strict=True)) == {"id": 1, "name": "apple", "qty": 3}
    assert dict(row) == {"id": 1, "name": "apple", "qty": 3}


async def test_rows_by_attribute_and_as_a_mapping(db: Database) -> None:
    await db.execute("INSERT INTO items(name, qty) VALUES ('apple', 3)")
    row = await db.fetch_one("SELECT id, name, qty FROM items")
    assert row is not None
    assert (row.id, row.name, row.qty) == (1, "apple", 3)
    with pytest.raises(AttributeError, match="no column 'price'"):
        _ = row.price
    mapping = row._mapping
    assert "name" in mapping
    assert "price" not in mapping
    assert list(mapping) == ["id", "name", "qty"]
    assert len(mapping) == 3
    assert mapping["qty"] == 3
    assert dict(mapping) == {"id": 1, "name": "apple", "qty": 3}
    with pytest.raises(KeyError):
        mapping["price"]
    with pytest.raises(TypeError):
        mapping["name"] = "pear"  # type: ignore[index]


@pytest.mark.parametrize(
    ("query", "statement", "parameters"),
    [
        pytest.param(
            "SELECT ?, ?", "INSERT INTO items(name, qty) VALUES (?, ?)", ("x",), id="positional"
        ),
        pytest.param(
            "SELECT :a, :b",
            "INSERT INTO items(name, qty) VALUES (:a, :b)",
            {"a": "x"},
            id="named",
        ),
    ],
)
async def test_a_missing_parameter_is_a_query_error_never_null(
    db: Database, query: str, statement: str, parameters: Parameters
) -> None:
    with pytest.raises(QueryError):
        await db.fetch_one(query, parameters)
    with pytest.raises(QueryError):
        await db.execute(statement, parameters)
    assert await db.fetch_val("SELECT count(*) FROM items") == 0


async def test_fetch_one_is_none_without_a_row(db: Database) -> None:
    assert await db.fetch_one("SELECT * FROM items WHERE id = ?", (42,)) is None
    assert await db.fetch_val("SELECT qty FROM items WHERE id = ?", (42,)) is None


async def test_fetch_val_by_index_and_name(db: Database) -> None:
    await db.execute("INSERT INTO items(name, qty) VALUES ('a', 7)")
    assert await db.fetch_val("SELECT name, qty FROM items") == "a"
    assert await db.fetch_val("SELECT name, qty FROM items", column=1) == 7
    assert await db.fetch_val("SELECT name, qty FROM items", column="qty") == 7
    with pytest.raises(QueryError, match="no column 'price'"):
        await db.fetch_val("SELECT name, qty FROM items", column="price")


# -- execute and execute_many ---------------------------------------------------------------


async def test_execute_returns_the_rows_changed_by_what_is_not_an_insert(db: Database) -> None:
    await db.execute_many("INSERT INTO items(name, qty) VALUES (?, ?)", [("a", 1), ("b", 2)])
    assert await db.execute("UPDATE items SET qty = qty + 1") == 2
    assert await db.execute("DELETE FROM items WHERE name = ?", ("a",)) == 1
    assert await db.execute("DELETE FROM items WHERE name = ?", ("zzz",)) == 0
    async with db.transaction() as tx:
        assert await tx.execute("UPDATE items SET qty = 0 WHERE name = 'b'") == 1


async def test_execute_commits_before_returning(db: Database, observer: Database) -> None:
    for i in range(5):
        await db.execute("INSERT INTO items(name) VALUES (?)", (f"n{i}",))
        assert await observer.fetch_val("SELECT count(*) FROM items") == i + 1


async def test_execute_many_is_all_or_nothing(db: Database, observer: Database) -> None:
    changed = await db.execute_many(
        "INSERT INTO items(name, qty) VALUES (?, ?)", [(f"n{i}", i) for i in range(100)]
    )
    assert changed == 100
    with pytest.raises(UniqueViolation):
        await db.execute_many(
            "INSERT INTO items(name) VALUES (?)", [("fresh-1",), ("fresh-2",), ("n5",)]
        )
    assert await observer.fetch_val("SELECT count(*) FROM items") == 100
    generated = await db.execute_many(
        "INSERT INTO items(name) VALUES (:n)", ({"n": f"g{i}"} for i in range(3))
    )
    assert generated == 3


# -- the error mapping ------------------------------------------------------------------------

SCHEMA = [
    "CREATE TABLE parent(id INTEGER PRIMARY KEY)",
    "CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id),"
    " name TEXT NOT NULL UNIQUE, qty INTEGER CHECK (qty >= 0))",
    "INSERT INTO parent(id) VALUES (1)",
    "INSERT INTO child(parent_id, name, qty) VALUES (1, 'a', 1)",
]

ERRORS = [
    pytest.param("INSERT INTO child(name) VALUES ('a')", UniqueViolation, id="unique"),
    pytest.param("INSERT INTO parent(id) VALUES (1)", UniqueViolation, id="primary-key"),
    pytest.param(
        "INSERT INTO child(parent_id, name) VALUES (99, 'orphan')",
        ForeignKeyViolation,
        id="foreign-key",
    ),
    pytest.param("DELETE FROM parent", ForeignKeyViolation, id="foreign-key-on-delete"),
    pytest.param("INSERT INTO child(name, qty) VALUES ('neg', -1)", CheckViolation, id="check"),
    pytest.param("INSERT INTO child(name) VALUES (NULL)", NotNullViolation, id="not-null"),
    pytest.param("UPDATE child SET name = NULL", NotNullViolation, id="not-null-on-update"),
    pytest.param("SELEC 1", QueryError, id="syntax"),
    pytest.param("SELECT * FROM missing", QueryError, id="no-such-table"),
    pytest.param("SELECT nope FROM child", QueryError, id="no-such-column"),
]


@pytest.mark.parametrize(("statement", "expected"), ERRORS)
@pytest.mark.parametrize("where", ["execute", "transaction", "fetch"])
async def test_driver_errors_map_to_the_most_specific_store_error(
    db: Database, statement: str, expected: type[StoreError], where: str
) -> None:
    for setup in SCHEMA:
        await db.execute(setup)
    with pytest.raises(StoreError) as caught:
        if where == "execute":
            await db.execute(statement)
        elif where == "transaction":
            async with db.transaction() as tx:
                await tx.execute(statement)
        elif statement.startswith("SELECT"):
            await db.fetch_all(statement)
        else:
            async with db.transaction() as tx:
                await tx.fetch_all(statement)
    assert type(caught.value) is expected
    assert caught.value.__cause__ is not None, "the driver's error is the cause"
    # Nothing changed, and the database keeps serving.
    assert await db.fetch_val("SELECT count(*) FROM child") == 1
    assert await db.fetch_val("SELECT count(*) FROM parent") == 1
    await db.execute("INSERT INTO child(parent_id, name) VALUES (1, 'b')")


def test_constraint_errors_are_integrity_violations() -> None:
    for kind in (UniqueViolation, ForeignKeyViolation, CheckViolation, NotNullViolation):
        assert issubclass(kind, IntegrityViolation)
        assert issubclass(kind, StoreError)


# -- transactions and savepoints ------------------------------------------------------------


async def test_transaction_commits_on_success(db: Database, observer: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items(name) VALUES ('a')")
        await db.execute("INSERT INTO items(name) VALUES ('b')")  # same task: joins tx
        assert await tx.fetch_val("SELECT count(*) FROM items") == 2
        assert await db.fetch_val("SELECT count(*) FROM items") == 2  # reads see own writes
        assert await observer.fetch_val("SELECT count(*) FROM items") == 0
    assert await observer.fetch_val("SELECT count(*) FROM items") == 2


async def test_transaction_rolls_back_on_error(db: Database, observer: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items(name) VALUES ('a')")
            raise RuntimeError("boom")
    assert await observer.fetch_val("SELECT count(*) FROM items") == 0
    await db.execute("INSERT INTO items(name) VALUES ('after')")


async def test_nested_transaction_is_a_savepoint(db: Database, observer: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items(name) VALUES ('outer')")
        with pytest.raises(UniqueViolation):
            async with tx.transaction() as inner:
                await inner.execute("INSERT INTO items(name) VALUES ('inner')")
                await inner.execute("INSERT INTO items(name) VALUES ('outer')")
        async with db.transaction():
            await db.execute("INSERT INTO items(name) VALUES ('kept')")
    names = [row[0] for row in await observer.fetch_all("SELECT name FROM items ORDER BY id")]
    assert names == ["outer", "kept"]


async def test_a_finished_transaction_cannot_be_used(db: Database) -> None:
    async with db.transaction() as tx:
        pass
    with pytest.raises(PoolClosed, match="already ended"):
        await tx.execute("INSERT INTO items(name) VALUES ('late')")


async def test_statement_error_inside_transaction_can_be_caught(
    db: Database, observer: Database
) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items(name) VALUES ('a')")
        with pytest.raises(UniqueViolation):
            await tx.execute("INSERT INTO items(name) VALUES ('a')")
        await tx.execute("INSERT INTO items(name) VALUES ('b')")
    assert await observer.fetch_val("SELECT count(*) FROM items") == 2


async def test_in_transaction_is_true_inside_a_block_of_this_task_only(db: Database) -> None:
    assert not db.in_transaction
    look = asyncio.Event()
    seen_by_other_task: list[bool] = []

    async def elsewhere() -> None:
        await look.wait()
        seen_by_other_task.append(db.in_transaction)

    other = asyncio.ensure_future(elsewhere())  # started outside the block
    async with asyncio.timeout(BOUND), db.transaction() as tx:
        assert db.in_transaction
        async with tx.transaction():
            assert db.in_transaction
        assert db.in_transaction
        look.set()
        await other
    assert seen_by_other_task == [False]
    assert not db.in_transaction


async def test_read_inside_a_transaction_sees_its_writes(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items(name) VALUES ('a')")
        async with db.read() as snapshot:
            assert await snapshot.fetch_val("SELECT count(*) FROM items") == 1


# -- after_commit -----------------------------------------------------------------------------


async def test_after_commit_runs_once_the_block_commits_and_never_after_a_rollback(
    db: Database,
) -> None:
    calls: list[str] = []
    db.after_commit(lambda: calls.append("outside"))
    assert calls == ["outside"], "outside a block: at once"

    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items(name) VALUES ('a')")
        db.after_commit(lambda: calls.append("committed"))
        async with tx.transaction():
            db.after_commit(lambda: calls.append("nested, kept"))
        assert calls == ["outside"], "not before the commit"
    assert calls == ["outside", "committed", "nested, kept"]

    with pytest.raises(LookupError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items(name) VALUES ('b')")
            db.after_commit(lambda: calls.append("rolled back"))
            raise LookupError
    assert calls == ["outside", "committed", "nested, kept"]


async def test_an_after_commit_callback_that_raises_is_logged_not_raised(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("callback broke")

    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items(name) VALUES ('a')")
        db.after_commit(broken)
    assert await db.fetch_val("SELECT count(*) FROM items") == 1
    assert "callback broke" in caplog.text


# -- snapshots and iteration ----------------------------------------------------------------


async def test_read_snapshot_is_consistent(db: Database) -> None:
    await db.execute("INSERT INTO items(name) VALUES ('a')")
    async with db.read() as snapshot:
        assert await snapshot.fetch_val("SELECT count(*) FROM items") == 1
        await db.execute("INSERT INTO items(name) VALUES ('b')")
        assert await snapshot.fetch_val("SELECT count(*) FROM items") == 1
    assert await db.fetch_val("SELECT count(*) FROM items") == 2


async def test_read_snapshot_refuses_writes(db: Database) -> None:
    async with db.read() as snapshot:
        with pytest.raises(StoreError, match="read-only"):
            await snapshot.execute("INSERT INTO items(name) VALUES ('x')")


async def test_iterate_streams_every_row_in_chunks(db: Database) -> None:
    await db.execute_many("INSERT INTO items(name) VALUES (?)", [(f"n{i}",) for i in range(1000)])
    seen = [row["id"] async for row in db.iterate("SELECT id FROM items ORDER BY id", chunk_size=7)]
    assert seen == list(range(1, 1001))
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items(name) VALUES ('in-tx')")
        count = 0
        async for _ in tx.iterate("SELECT id FROM items"):
            count += 1
        assert count == 1001
    async with db.read() as snapshot:
        assert len([row async for row in snapshot.iterate("SELECT id FROM items")]) == 1001
    with pytest.raises(QueryError, match="chunk_size"):
        db.iterate("SELECT 1", chunk_size=0)
    with pytest.raises(QueryError):
        async for _ in db.iterate("SELECT * FROM nowhere"):
            pass
    assert db.statistics().readers_idle == db.statistics().readers_total


# -- cancellation -----------------------------------------------------------------------------


async def test_a_task_cancelled_inside_a_block_leaves_nothing_behind(
    db: Database, observer: Database
) -> None:
    inside = asyncio.Event()

    async def victim() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items(name) VALUES ('lost')")
            inside.set()
            await asyncio.Event().wait()

    async with asyncio.timeout(BOUND):
        task = asyncio.ensure_future(victim())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The next block proceeds: no transaction, lock or connection was left behind.
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items(name) VALUES ('next')")
    names = [row[0] for row in await observer.fetch_all("SELECT name FROM items")]
    assert names == ["next"]


async def test_a_child_cancelled_inside_its_savepoint_undoes_only_the_savepoint(
    db: Database, observer: Database
) -> None:
    inside = asyncio.Event()

    async def child() -> None:
        async with db.transaction() as tx:  # nested: it inherited the parent's transaction
            await tx.execute("INSERT INTO items(name) VALUES ('child')")
            inside.set()
            await asyncio.Event().wait()

    async with asyncio.timeout(BOUND), db.transaction() as tx:
        await tx.execute("INSERT INTO items(name) VALUES ('parent')")
        task = asyncio.ensure_future(child())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await tx.execute("INSERT INTO items(name) VALUES ('parent again')")
    names = [row[0] for row in await observer.fetch_all("SELECT name FROM items ORDER BY id")]
    assert names == ["parent", "parent again"]


@pytest.mark.parametrize("inside", ["fetch", "read-block"])
async def test_a_cancelled_long_read_is_stopped_and_its_connection_returned(
    db: Database, inside: str
) -> None:
    async def long_read() -> object:
        if inside == "fetch":
            return await db.fetch_val(LONG_QUERY)
        async with db.read() as snapshot:
            return await snapshot.fetch_val(LONG_QUERY)

    async with asyncio.timeout(BOUND):
        task = asyncio.ensure_future(long_read())
        await asyncio.sleep(0.05)  # under way, or at least queued
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.fetch_val("SELECT 2") == 2
        async with db.read() as snapshot:
            assert await snapshot.fetch_val("SELECT 3") == 3
    stats = db.statistics()
    assert stats.readers_idle == stats.readers_total


# -- lifecycle --------------------------------------------------------------------------------


async def test_closed_database_refuses_work_and_close_is_idempotent(
    db_config: Callable[..., DatabaseConfig],
) -> None:
    db = Database(db_config())
    await db.open()
    await db.close()
    await db.close()
    with pytest.raises(PoolClosed):
        await db.fetch_all("SELECT 1")
    with pytest.raises(PoolClosed):
        await db.execute("SELECT 1")


async def test_a_database_built_from_a_config_is_its_backends(
    db: Database, db_config: Callable[..., DatabaseConfig]
) -> None:
    config = db_config()
    assert type(db) is backend_of(config).DATABASE
    assert db.backend == config.backend
    assert db.is_open
    assert db.config == config


# -- every contract method is implemented -----------------------------------------------------


def _abstract_names(contract: type) -> set[str]:
    """The methods and properties of ``contract`` (and its contract bases) that only raise
    NotImplementedError: each backend must override them."""
    names: set[str] = set()
    for klass in contract.__mro__:
        if klass.__module__ != Database.__module__:
            continue
        for name, member in vars(klass).items():
            function = member.fget if isinstance(member, property) else member
            if inspect.isfunction(function) and "raise NotImplementedError" in inspect.getsource(
                function
            ):
                names.add(name)
    return names


def _implementations(contract: type, package: str) -> list[type]:
    found: list[type] = []
    pending: list[type] = list(contract.__subclasses__())
    while pending:
        klass = pending.pop()
        pending.extend(klass.__subclasses__())
        if klass.__module__.startswith(f"{package}."):
            found.append(klass)
    return found


@pytest.mark.parametrize("contract", [Database, Transaction, ReadSnapshot])
def test_the_backend_implements_every_method_of_the_contract(
    db_config: Callable[..., DatabaseConfig], contract: type
) -> None:
    package = backend_of(db_config()).__name__
    implementations = _implementations(contract, package)
    assert implementations, f"{package} has no {contract.__name__}"
    abstract = _abstract_names(contract)
    assert {"fetch_all", "fetch_one", "fetch_val", "execute", "execute_many", "iterate"} <= abstract
    for implementation in implementations:
        left_out = sorted(
            name
            for name in abstract
            if inspect.getattr_static(implementation, name)
            is inspect.getattr_static(contract, name)
        )
        assert not left_out, f"{implementation.__qualname__} does not implement {left_out}"
