"""``SqlService``: the service's databases opened together, migrated on start-up."""

from __future__ import annotations

from types import TracebackType

from ._shield import finish
from .config import SqlConfig
from .database import Database
from .errors import PoolClosed

__all__ = ["SqlService"]


class SqlService:
    """``app_meta`` and ``events`` (one ``Database`` in MVP mode) behind async pools.

    ``async with SqlService(config) as sql`` (or ``await start()`` / ``await close()``) opens every
    database, applies the embedded migrations, and on exit drains the writers, checkpoints and
    closes every connection and thread.
    """

    def __init__(self, config: SqlConfig) -> None:
        self._config = config
        self._app = Database(config.app)
        self._events = self._app if config.events is None else Database(config.events)
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
            for database in self.databases:
                await database.open()
            await self._migrate()
        except BaseException:
            await finish(self._close_databases())
            self._closed = True
            raise

    async def _migrate(self) -> None:
        """Apply the embedded migrations (added with the migrations runner)."""

    async def close(self) -> None:
        """Drain, checkpoint and close every database. Idempotent."""
        if self._closed:
            return
        self._closed = True
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
