"""The contract every backend implements: :class:`Database`, the :class:`Transaction` and
:class:`ReadSnapshot` handles it yields, the :class:`Row` they return, and the choice of a
backend from the configuration.

``Database(config)`` builds the database of the backend that ``config`` names (today
``sqlite``: :class:`async_store.sqlite.SqliteDatabase`), and ``Database(url)`` the one a URL
names (``sqlite:///path/to/file.db``), importing that backend on first use,
so a backend's driver is needed only by those who use it. The code above this module (the event
store, migrations, the state manager, health, the service) speaks to a database only through
this contract, and asks a backend for the pieces written in its own dialect through
:func:`backend_of`.
"""

from __future__ import annotations

import importlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import ModuleType, TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    ParamSpec,
    Protocol,
    Self,
    TypeAlias,
    TypeVar,
    runtime_checkable,
)

from .config import DatabaseConfig
from .errors import ConfigError, PoolClosed, StoreError
from .metrics import Metrics
from .statistics import PoolStatistics

if TYPE_CHECKING:
    from sqlalchemy.sql.base import Executable
    from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "Database",
    "Parameters",
    "ReadSnapshot",
    "Row",
    "Transaction",
    "TransactionBlock",
]

T = TypeVar("T")
P = ParamSpec("P")

BACKENDS = ("sqlite",)
"""The backends this package holds, each a subpackage of that name."""

Parameters: TypeAlias = Sequence[Any] | Mapping[str, Any]
"""Positional parameters for ``?`` placeholders, or a mapping for ``:name`` placeholders (for
a SQLAlchemy statement: a mapping of its bind parameters, or of the columns of an insert)."""

Query: TypeAlias = "str | Executable"
"""SQL text in the backend's dialect, or a SQLAlchemy Core statement (``select(...)``,
``table.insert()``, ``text(...)``, ``CreateTable(...)``; the extra ``async-store[sqlalchemy]``)."""

Column: TypeAlias = "int | str | ColumnElement[Any]"
"""A column of a row: its index, its name, or (rows of a SQLAlchemy statement) the column."""


@runtime_checkable
class Row(Protocol):
    """A row of a result: ``row["col"]``, ``row[0]``, ``row.col``, ``row._mapping`` (a
    read-only mapping: ``"col" in row._mapping``, iteration over the column names),
    ``keys()``, ``len(row)``, iteration over the values, ``dict(row)``; the rows of a
    SQLAlchemy statement answer to ``row[table.c.col]`` and ``row._mapping[table.c.col]`` too,
    with the values its column types read. On SQLite a row of SQL text is a ``sqlite3.Row``
    (``async_store.sqlite``'s ``SqliteRow``)."""

    def __getitem__(self, key: Column, /) -> Any: ...

    def __getattr__(self, name: str, /) -> Any: ...

    @property
    def _mapping(self) -> Mapping[str, Any]: ...

    def keys(self) -> list[str]: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


class QueryMethods:
    """The query methods every handle has, named as in encode/databases.

    ``parameters`` may also be passed as ``values=``, the keyword encode/databases used.

    The classes of this module state the contract; a backend's classes implement every method
    (the contract suite, ``tests/contract/``, checks that none is left out)."""

    __slots__ = ()

    async def fetch_all(
        self,
        query: Query,
        parameters: Parameters | None = None,
        *,
        values: Parameters | None = None,
    ) -> list[Row]:
        """Run a query and return every row (``[]`` when none).

        Raises :class:`QueryError` for wrong SQL or parameters."""
        raise NotImplementedError

    async def fetch_one(
        self,
        query: Query,
        parameters: Parameters | None = None,
        *,
        values: Parameters | None = None,
    ) -> Row | None:
        """Run a query and return its first row, or ``None`` when it returns no row."""
        raise NotImplementedError

    async def fetch_val(
        self,
        query: Query,
        parameters: Parameters | None = None,
        column: Column = 0,
        *,
        values: Parameters | None = None,
    ) -> Any:
        """Run a query and return one column of its first row (``None`` when no row)."""
        raise NotImplementedError

    async def execute(
        self,
        query: Query,
        parameters: Parameters | None = None,
        *,
        values: Parameters | None = None,
    ) -> int | None:
        """Run one statement, committed (as its own transaction unless inside
        ``transaction()``). Returns the id of the row an ``INSERT`` wrote, else the number of
        rows the statement changed, as encode/databases does (a backend that cannot tell an
        insert's id returns ``None`` for it).

        Raises :class:`QueryError`, :class:`IntegrityViolation`, :class:`DatabaseFull`, ..."""
        raise NotImplementedError

    async def execute_many(
        self,
        query: Query,
        parameters: Iterable[Parameters] | None = None,
        *,
        values: Iterable[Parameters] | None = None,
    ) -> int:
        """Run one statement for each parameter set, all in one transaction; return the number
        of rows changed. Either every row is written or none is."""
        raise NotImplementedError

    def iterate(
        self,
        query: Query,
        parameters: Parameters | None = None,
        *,
        chunk_size: int = 256,
        values: Parameters | None = None,
    ) -> AsyncGenerator[Row, None]:
        """Stream the rows of a query: ``async for row in db.iterate(...)``; rows arrive
        ``chunk_size`` at a time, so memory stays flat however many rows there are."""
        raise NotImplementedError


class Transaction(QueryMethods):
    """The handle ``transaction()`` yields: its query methods run inside the transaction, and
    a nested ``transaction()`` is a SAVEPOINT."""

    __slots__ = ()

    def transaction(self, *, force_rollback: bool = False) -> TransactionBlock:
        """A nested block: a SAVEPOINT inside this transaction."""
        raise NotImplementedError


class TransactionBlock:
    """What ``transaction()`` returns. Three ways to use it, as in encode/databases:

    - ``async with db.transaction() as tx:`` (``tx`` is the :class:`Transaction`);
    - ``@db.transaction()`` on a coroutine function: each call runs in a block of its own;
    - ``tx = await db.transaction()``, then ``await tx.commit()`` or ``await tx.rollback()``
      (from the same task; the block is open, and holds the writer, until one of them).

    The block commits when it ends normally and rolls back when it raises or is cancelled;
    made with ``force_rollback=True``, it rolls back whenever it ends."""

    __slots__ = ()

    async def __aenter__(self) -> Transaction:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        raise NotImplementedError

    def __await__(self) -> Generator[Any, None, Self]:
        raise NotImplementedError

    async def start(self) -> Self:
        """Begin the block without ``async with``; end it with :meth:`commit` or
        :meth:`rollback`."""
        raise NotImplementedError

    async def commit(self) -> None:
        """End the block, keeping its work."""
        raise NotImplementedError

    async def rollback(self) -> None:
        """End the block, undoing its work."""
        raise NotImplementedError

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate ``fn``: each call of it runs in a block of its own."""
        raise NotImplementedError


class ReadSnapshot(QueryMethods):
    """The handle ``read()`` yields: every query sees one consistent snapshot."""

    __slots__ = ()


class Database(QueryMethods):
    """A database behind one backend: ``async with Database(config) as db`` or ``await
    db.open()`` ... ``await db.close()``.

    ``Database(config)`` returns the database of the backend ``config`` (a
    :class:`DatabaseConfig`) names; ``Database(url, **options)`` the one a URL names, as
    encode/databases spells it (``Database("sqlite:///path/to/file.db", readers=8)``; see
    :meth:`DatabaseConfig.from_url`). ``options`` are :class:`DatabaseConfig` fields, applied
    to the configuration or the URL's. Raises :class:`ConfigError` for anything else, or a
    URL or option that configuration refuses."""

    __slots__ = ()

    backend: ClassVar[str]
    """The backend's name: ``sqlite``."""

    def __new__(cls, config: DatabaseConfig | str, /, **options: Any) -> Database:
        if cls is Database:
            cls = backend_of(config_of(config, options)).DATABASE
        return super().__new__(cls)

    # -- what it is ------------------------------------------------------------------------

    @property
    def config(self) -> DatabaseConfig:
        """The database's configuration."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """The name used in messages and statistics."""
        return self.config.name

    @property
    def path(self) -> Path:
        """The database file."""
        return self.config.path

    metrics: Metrics
    """Latencies of reads, writes and transactions on this database; errors by kind."""

    @property
    def is_open(self) -> bool:
        """Whether the database serves calls (opened and not closing)."""
        raise NotImplementedError

    @property
    def is_connected(self) -> bool:
        """encode/databases' name for :attr:`is_open`."""
        return self.is_open

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the database's connections. Opening an open database does nothing (as
        encode/databases' ``connect()`` does); a closed one opens again, with new connections,
        on the same data. An open called while a ``close()`` is in progress waits for it to
        end, then opens; a ``close()`` called while an open is in progress ends that open with
        :class:`PoolClosed`, nothing left open. Raises the backend's error when the database
        cannot be opened."""
        raise NotImplementedError

    async def close(self) -> None:
        """Finish or fail what is queued and close every connection, within a bounded grace
        period; a cancellation around it is honoured. Idempotent: a close called while
        another is in progress waits for it to end. A closed database may be opened again."""
        raise NotImplementedError

    async def connect(self) -> None:
        """encode/databases' name for :meth:`open`: the same call."""
        await self.open()

    async def disconnect(self) -> None:
        """encode/databases' name for :meth:`close`: the same call."""
        await self.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Self]:
        """``async with database.connection() as connection``, as in encode/databases, yields
        this database: every call already reaches the right connection (a reader, the writer,
        or the caller's ``transaction()`` block), so there is no connection to hold. Raises
        :class:`PoolClosed` when the database is not open."""
        if not self.is_open:
            raise PoolClosed(f"{self.name}: the database is not open; connect() it first")
        yield self

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- transactions and snapshots ----------------------------------------------------------

    def transaction(self, *, force_rollback: bool = False) -> TransactionBlock:
        """``async with db.transaction() as tx``: one transaction; every call of the same task
        joins it, a nested block is a SAVEPOINT. It commits when the block ends normally and
        rolls back when the block raises or is cancelled (with ``force_rollback=True``:
        always). Also a decorator and awaitable: see :class:`TransactionBlock`."""
        raise NotImplementedError

    def read(self) -> AbstractAsyncContextManager[ReadSnapshot | Transaction]:
        """``async with db.read() as snap``: one consistent snapshot for every query in the
        block (inside a ``transaction()`` block: the transaction itself)."""
        raise NotImplementedError

    @property
    def in_transaction(self) -> bool:
        """Whether the current task is inside a ``transaction()`` block of this database."""
        raise NotImplementedError

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once the current task's work is committed: at the end of its
        ``transaction()`` block if the block commits (never if it rolls back), or at once
        outside a block. An exception from it is logged, not raised."""
        raise NotImplementedError

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool; synchronous, no I/O."""
        raise NotImplementedError


def refuse_inside_transaction(
    databases: Iterable[Database],
    what: str,
    error: type[StoreError] = StoreError,
    outcome: str = "",
) -> None:
    """Raise ``error`` when the calling task is inside a ``transaction()`` block of one of
    ``databases``: ``what`` waits for that database's writer, so it would wait for the block's
    own end, and the block for it. ``outcome`` ends the message (what was left unchanged)."""
    for database in databases:
        if database.in_transaction:
            raise error(
                f"{what} cannot run inside a transaction() block of {database.name}: it "
                "waits for that database's writer, which the block holds; run it after "
                f"the block{outcome}"
            )


def config_of(subject: DatabaseConfig | str, options: Mapping[str, Any]) -> DatabaseConfig:
    """The configuration ``Database(subject, **options)`` opens: ``subject`` itself or the
    database its URL names, with ``options`` (DatabaseConfig fields) applied. A backend's
    ``__init__`` calls it with what it was given. Raises :class:`ConfigError` for a subject
    that is neither."""
    if isinstance(subject, str):
        return DatabaseConfig.from_url(subject, **options)
    if isinstance(subject, DatabaseConfig):
        return subject.replace(**options) if options else subject
    raise ConfigError(
        "a database is built from a DatabaseConfig (SqlConfig.mvp(path).app, say) or a URL "
        f"('sqlite:///path/to/file.db'), not {type(subject).__name__}"
    )


def backend_of(subject: Database | DatabaseConfig) -> ModuleType:
    """The backend package of a database or a configuration, imported on first use. Code above
    this module asks it for the pieces a backend writes in its own dialect (the event store's
    recorder, the migration runner's statements, health facts)."""
    name = getattr(subject, "backend", None)
    if not isinstance(name, str):
        raise ConfigError(
            f"a database is built from a DatabaseConfig (SqlConfig.mvp(path).app, say), not "
            f"{type(subject).__name__}"
        )
    return backend_named(name)


def backend_named(name: str) -> ModuleType:
    """The backend package called ``name`` (``sqlite``), imported on first use; a name that is
    not one of :data:`BACKENDS` is a :class:`ConfigError`."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; the backends are {', '.join(BACKENDS)}")
    return importlib.import_module(f"{__package__}.{name}")
