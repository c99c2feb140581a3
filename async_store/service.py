"""``SqlService``: the service's databases opened together, migrated on start-up."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from types import TracebackType

from ._shield import finish
from .config import SqlConfig
from .database import Database
from .errors import MigrationError, PoolClosed
from .events import EventStore
from .migrations import MigrationSet, MigrationStatus, apply_migrations, migration_status

__all__ = ["SqlService"]


class SqlService:
    """``app_meta`` and ``events`` (one ``Database`` in MVP mode) behind async pools.

    ``async with SqlService(config) as sql`` (or ``await start()`` / ``await close()``) opens every
    database, applies the embedded migrations, and on exit drains the writers, checkpoints and
    closes every connection and thread.
    """

    def __init__(
        self,
        config: SqlConfig,
        *,
        migration_sets: Sequence[MigrationSet] = (),
        migrate: bool = True,
    ) -> None:
        """``migration_sets``: the application's own sets, applied after the built-in ones on
        the database each names. ``migrate=False`` opens without applying anything (for
        ``status`` and for walking down with :meth:`migrate`)."""
        self._config = config
        self._app = Database(config.app)
        self._events = self._app if config.events is None else Database(config.events)
        self._event_store = EventStore(self._events)
        self._migration_sets = tuple(migration_sets)
        self._auto_migrate = migrate
        self._started = False
        self._closed = False

    @property
    def config(self) -> SqlConfig:
        return self._config

    @property
    def app(self) -> Database:
        """The app_meta database (MVP mode: the one database)."""
        return self._app

    @property
    def events(self) -> Database:
        """The events database (MVP mode: the same object as :attr:`app`)."""
        return self._events

    @property
    def event_store(self) -> EventStore:
        """The event store on the events database (MVP mode: the one file)."""
        return self._event_store

    @property
    def databases(self) -> tuple[Database, ...]:
        """Every distinct database of the service, app_meta first."""
        return (self._app,) if self._events is self._app else (self._app, self._events)

    async def start(self) -> None:
        """Open every database and apply pending migrations. On failure everything opened is
        closed again and the error is raised."""
        if self._started:
            raise PoolClosed("SqlService.start() was already called")
        self._started = True
        try:
            opened = await asyncio.gather(
                *(database.open() for database in self.databases), return_exceptions=True
            )
            for result in opened:
                if isinstance(result, BaseException):
                    raise result
            await self._migrate()
        except BaseException:
            await finish(self._close_databases())
            self._closed = True
            raise

    async def _migrate(self) -> None:
        if not self._auto_migrate:
            return
        for database, sets, tracked in self._migration_plan():
            await apply_migrations(database, sets, track_user_version=tracked)

    def _migration_plan(self) -> list[tuple[Database, list[MigrationSet], str]]:
        """Which sets run on which database, and the set ``user_version`` follows there."""
        app_meta, events = _builtin_sets()
        own_app = [s for s in self._migration_sets if s.database == "app_meta"]
        own_events = [s for s in self._migration_sets if s.database == "events"]
        if self._events is self._app:
            return [(self._app, [app_meta, events, *own_app, *own_events], "app_meta")]
        return [
            (self._app, [app_meta, *own_app], "app_meta"),
            (self._events, [events, *own_events], "events"),
        ]

    async def migrate(
        self, target: int | None = None, *, migration_set: str | None = None
    ) -> list[str]:
        """Apply migrations; return what was applied or reverted.

        With no arguments every set goes to its newest version. With ``target`` (and
        ``migration_set``, default ``app_meta``) that one set goes up or down to version
        ``target``, down through each version's ``down.sql``. Raises :class:`MigrationError`;
        a migration that fails changes nothing."""
        plan = self._migration_plan()
        if target is not None and migration_set is None:
            migration_set = "app_meta"
        if migration_set is not None and not any(
            migration_set == s.name for _, sets, _ in plan for s in sets
        ):
            raise MigrationError(f"unknown migration set {migration_set!r}")
        done: list[str] = []
        for database, sets, tracked in plan:
            if migration_set is not None and all(s.name != migration_set for s in sets):
                continue
            done += await apply_migrations(
                database, sets, track_user_version=tracked, target=target, target_set=migration_set
            )
        return done

    async def migration_status(self) -> list[MigrationStatus]:
        """Every version of every set: applied (when, checksum intact) or pending."""
        result: list[MigrationStatus] = []
        for database, sets, _ in self._migration_plan():
            result += await migration_status(database, sets)
        return result

    async def close(self) -> None:
        """Drain, checkpoint and close every database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._event_store.close()
        await finish(self._close_databases())

    async def _close_databases(self) -> None:
        for database in reversed(self.databases):
            await database.close()

    async def __aenter__(self) -> SqlService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@functools.cache
def _builtin_sets() -> tuple[MigrationSet, MigrationSet]:
    """The shipped sets, read and checked once per process."""
    return MigrationSet.builtin("app_meta"), MigrationSet.builtin("events")
