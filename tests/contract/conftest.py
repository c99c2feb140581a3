"""The contract suite's fixtures: every test here runs once per backend.

``backend`` is parametrized by the backends this suite knows (today SQLite only). A backend is a
:class:`Backend`: it builds the configurations of a fresh store in a directory of the test, and
the environment that makes ``SqlConfig.from_env()`` in another process name the same store.
Tests take what they need from it (``db_config``, ``sql_config``) or an open resource (``db``,
``observer``, ``sql``, ``store``, ``manager``), and speak to the store through the contract only:
no ``run_*``, no ``sqlite3``. The one look past the contract, a schema read from the backend's
catalog (``Backend.schema``), is the backend's to write, as eventsourcing's per-backend test
subclasses do.

Adding PostgreSQL (DESIGN.md "Tests on PostgreSQL") takes one more ``pytest.param`` in
:data:`BACKENDS` and one branch in :func:`backend` that starts a throwaway server once per session
and returns a :class:`Backend` whose configurations point at it (a schema of its own per test
directory). Nothing else here names a backend.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from async_store import (
    Database,
    DatabaseConfig,
    EventStore,
    SqlConfig,
    SqlService,
    StateManager,
)
from tests.conftest import make_config

ITEMS = (
    "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
    " qty INTEGER NOT NULL DEFAULT 0 CHECK (qty >= 0))"
)
"""The table the ``db`` fixture creates."""

SERVICE_OPTIONS: dict[str, Any] = {"readers": 2, "acquire_timeout": 10.0}
"""DatabaseConfig fields of the ``sql_config`` fixture unless a test says otherwise: a small
pool, and callers that give up well before pytest-timeout."""


class Backend(Protocol):
    """How the suite reaches one backend: the configurations of a store in ``directory``."""

    @property
    def name(self) -> str:
        """The backend's name, as ``DatabaseConfig.backend`` says it."""
        ...

    def database_config(self, directory: Path, **options: Any) -> DatabaseConfig:
        """One database of a store in ``directory``; ``options`` are DatabaseConfig fields."""
        ...

    def sql_config(self, directory: Path, *, mvp: bool = False, **options: Any) -> SqlConfig:
        """The service's databases of a store in ``directory``. ``mvp``: SQLite's one-file mode
        (a backend that keeps both migration sets in one database anyway may ignore it)."""
        ...

    def environ(self, directory: Path) -> Mapping[str, str]:
        """Environment variables under which ``SqlConfig.from_env()`` (in another process)
        names the store of ``sql_config(directory)``."""
        ...

    def schema(self, directory: Path) -> list[tuple[str, ...]]:
        """Every table, index and trigger of the store in ``directory`` and its definition
        (the migration record left out), read from the backend's own catalog, sorted: two
        equal results mean an unchanged schema."""
        ...


@dataclass(frozen=True)
class Sqlite:
    """SQLite: the store is a directory of files."""

    name: str = "sqlite"

    def database_config(self, directory: Path, **options: Any) -> DatabaseConfig:
        return make_config(directory / "test.db", **options)

    def sql_config(self, directory: Path, *, mvp: bool = False, **options: Any) -> SqlConfig:
        return SqlConfig.in_directory(directory, mvp=mvp, **options)

    def environ(self, directory: Path) -> Mapping[str, str]:
        return {"ASYNC_STORE_DATA": str(directory), "ASYNC_STORE_MODE": "production"}

    def schema(self, directory: Path) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for file in sorted(directory.glob("*.db")):
            conn = sqlite3.connect(file)
            try:
                rows.extend(
                    (file.name, *row)
                    for row in conn.execute(
                        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                        " AND name != 'schema_migrations' ORDER BY type, name"
                    )
                )
            finally:
                conn.close()
        return rows


BACKENDS = [pytest.param("sqlite", id="sqlite")]
"""The backends the contract suite runs against."""


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend under test; a server it needs starts once per session."""
    name: str = request.param
    if name == "sqlite":
        yield Sqlite()
    # elif name == "postgres": start a throwaway cluster (DESIGN.md "Tests on PostgreSQL"),
    #     yield a Backend whose configurations point at it, stop it afterwards.
    else:
        raise AssertionError(f"the contract suite does not know the backend {name!r}")


@pytest.fixture
def db_config(backend: Backend, tmp_path: Path) -> Callable[..., DatabaseConfig]:
    """``db_config(**options)``: the configuration of one database in this test's store,
    with the small pool of ``tests.conftest.make_config``; every call names the same one."""

    def build(**options: Any) -> DatabaseConfig:
        return backend.database_config(tmp_path, **options)

    return build


@pytest.fixture
def sql_config(backend: Backend, tmp_path: Path) -> Callable[..., SqlConfig]:
    """``sql_config(mvp=False, **options)``: the service configuration of this test's store
    (``SERVICE_OPTIONS`` unless overridden); every call names the same store."""

    def build(*, mvp: bool = False, **options: Any) -> SqlConfig:
        return backend.sql_config(tmp_path, mvp=mvp, **{**SERVICE_OPTIONS, **options})

    return build


@pytest.fixture
def db_options() -> dict[str, Any]:
    """Extra DatabaseConfig fields for the ``db`` fixture; override with parametrize."""
    return {}


@pytest.fixture
async def db(
    db_config: Callable[..., DatabaseConfig], db_options: dict[str, Any]
) -> AsyncIterator[Database]:
    """An open database with a table ``items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT
    NULL, qty INTEGER NOT NULL DEFAULT 0 CHECK (qty >= 0))``."""
    async with Database(db_config(**db_options)) as database:
        await database.execute(ITEMS)
        yield database


@pytest.fixture
async def observer(
    db: Database, db_config: Callable[..., DatabaseConfig]
) -> AsyncIterator[Database]:
    """Another open database object on the same store as ``db`` (another process, for all
    either knows): what it reads is what is committed."""
    async with Database(db_config()) as database:
        yield database


@pytest.fixture
async def sql(sql_config: Callable[..., SqlConfig]) -> AsyncIterator[SqlService]:
    """An open service (production mode on SQLite): migrated, empty."""
    async with SqlService(sql_config()) as service:
        yield service


@pytest.fixture
def store(sql: SqlService) -> EventStore:
    """The event store of ``sql``."""
    return sql.event_store


@pytest.fixture
async def manager(sql: SqlService) -> AsyncIterator[StateManager]:
    """A running state manager on ``sql``."""
    async with StateManager(sql) as state_manager:
        yield state_manager
