"""``SqlService``: the service's databases opened together, migrated on start-up."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol

import anyio

from ._shield import uncancellable
from .backups import BackupConfig, BackupManifest, BackupScheduler, list_backups
from .backups._backend import BackupBackend
from .config import SqlConfig
from .database import Database, backend_of, refuse_inside_transaction
from .errors import BackupError, MigrationError, PoolClosed, StoreError
from .events.store import EventStore
from .health.probe import HealthReport, collect, metrics_text
from .migrations.runner import (
    MigrationSet,
    MigrationStatus,
    apply_migrations,
    migration_backend,
    migration_status,
    migration_work,
)

__all__ = ["SqlService"]

log = logging.getLogger("async_store.service")


class Component(Protocol):
    """Something running on a service that health reports on (a ``StateManager``)."""

    @property
    def projection_lag(self) -> int: ...

    @property
    def projection_error(self) -> str | None: ...


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
        backup: BackupConfig | None = None,
    ) -> None:
        """``migration_sets``: the application's own sets, applied after the built-in ones on
        the database each names; one with a baseline adopts a file of another application
        (its tables but no migration record) on that database instead of refusing it
        (:attr:`MigrationSet.baseline`). ``migrate=False`` opens without applying anything (for
        ``status`` and for walking down with :meth:`migrate`). ``backup``: where backups go
        and, with an ``interval``, the schedule the service keeps while it runs."""
        self._config = config
        self._app = Database(config.app)
        self._events = self._app if config.events is None else Database(config.events)
        self._event_store = EventStore(self._events)
        self._migration_sets = tuple(migration_sets)
        self._auto_migrate = migrate
        self._backup_config = backup or BackupConfig()
        self._backup_root = self._backup_config.directory or config.app.path.parent / "backups"
        self._scheduler = BackupScheduler(self.backup, self._backup_config, self._backup_root)
        self._background: asyncio.Task[None] | None = None
        self._last_backup_at: datetime | None = None
        self._components: list[Component] = []
        self._backups: BackupBackend | None = getattr(backend_of(config.app), "BACKUPS", None)
        self._started = False
        self._closed = False

    @property
    def config(self) -> SqlConfig:
        """The configuration the service was created with."""
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
            if self._auto_migrate:
                for database, sets, _ in self._migration_plan():
                    # A set with a baseline adopts another application's file instead.
                    if not any(s.baseline for s in sets):
                        await migration_backend(database).refuse_foreign(database.config)
            opened = await asyncio.gather(
                *(database.open() for database in self.databases), return_exceptions=True
            )
            for result in opened:
                if isinstance(result, BaseException):
                    raise result
            await self._migrate()
        except BaseException:
            await uncancellable(self._close_databases())
            self._closed = True
            raise
        newest = list_backups(self._backup_root)
        if newest:
            self._last_backup_at = newest[-1][1]
        if self._backup_config.interval is not None:
            self._background = asyncio.get_running_loop().create_task(
                self._run_background(), name="async_store.service.background"
            )

    async def _run_background(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._scheduler.run)

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
            if database is self._events:
                self._event_store.forget_versions()  # a migration down may empty the log
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

    # -- operations --------------------------------------------------------------------------

    @property
    def backup_root(self) -> Path:
        """The folder backups go to."""
        return self._backup_root

    @property
    def backup_scheduler(self) -> BackupScheduler:
        """The scheduled-backup loop (counts of backups taken and failed)."""
        return self._scheduler

    async def backup(self, dest: str | Path | None = None) -> BackupManifest:
        """Back up every database (``VACUUM INTO`` from a dedicated connection, verified,
        fsynced) into a new timestamped folder under ``dest`` (default: the configured backup
        folder) and return its manifest. Raises :class:`BackupError`; nothing is left behind
        on failure. Afterwards each WAL is truncated if no reader holds it; what that checkpoint
        did is the database's ``last_checkpoint`` (and in :meth:`health`)."""
        root = Path(dest) if dest is not None else self._backup_root
        manifest = await self._backend_backups().create(
            self.databases, root, mode=self._config.mode, event_database=self._events
        )
        self._last_backup_at = datetime.now(UTC)
        await self._backend_backups().tidy_after(self.databases)
        return manifest

    async def restore(self, backup: str | Path) -> BackupManifest:
        """Online restore: replace the live databases with a backup while the service runs.

        Everything is checked before anything is replaced: the backup must verify against
        its manifest (:func:`~async_store.backup.verify_backup`), hold databases of this
        library (the built-in migration record, with the checksums this code ships, and no
        migration set this service does not know), at versions no newer than this code, and
        be of this service's mode (an MVP backup has no events file to restore; a production
        backup's event log has no place in an MVP file). Otherwise :class:`BackupError` is
        raised and nothing is replaced.

        Writes to every database are then paused together, for the whole restore: each
        writer finishes the transactions queued before the restore, then waits. Every copy in
        the backup is opened and checked against the manifest again; then SQLite's backup API
        copies them over the live databases one after another (app_meta first), each followed
        by any migration the backup lacks, and all writers go on together once every database
        is restored. Writes queued meanwhile wait and then run on the restored data, in order.
        So app_meta and events never receive a write between their two copies. A
        ``transaction()`` open on one database that waits for a write to the other delays the
        restore rather than deadlocking it: the writer held first is let go until the other
        can be held. Readers see each database's restored data once its copy commits; a read
        snapshot opened before keeps what it saw.

        SQLite cannot replace two files in one transaction. A failure before the first copy
        commits (a copy unreadable or changed since it was verified, too little free space, a
        full disk during the first copy) replaces nothing. If a later copy fails (the disk
        fills during the events copy), the :class:`BackupError` names the databases replaced
        and those still holding live data; restoring the same backup again (online or
        offline) brings them back together.

        No copy of the replaced data is kept: take a backup first if it may be needed. A
        state manager on this service must be restarted afterwards (its state is from
        before). Raises :class:`BackupError` (a failure while copying has SQLite's error, a
        :class:`DatabaseFull` say, as its ``__cause__``), also when called inside a
        ``transaction()`` block of this service, which the restore would wait for;
        :class:`PoolClosed` when the service is closed."""
        directory = Path(backup)
        # Before the backup is read: the restore could only wait for this block.
        refuse_inside_transaction(
            self.databases, "restore()", BackupError, "; nothing was replaced"
        )
        backups = self._backend_backups()
        manifest = await backups.verify(directory, migration_sets=self._migration_sets)
        backups.check_target(
            directory, manifest.mode, self._config.mode, [db.name for db in self.databases]
        )
        migrations = (
            {
                database.name: migration_work(database.name, sets, track_user_version=tracked)
                for database, sets, tracked in self._migration_plan()
            }
            if self._auto_migrate
            else {}
        )
        # Once every writer is held: appends planned from what the store knew of the old log
        # and written after the copy are then made the careful way.
        await backups.restore_online(
            self.databases,
            directory,
            {item.database: item for item in manifest.files},
            migrations,
            before=self._event_store.forget_versions,
        )
        return manifest

    def attach(self, component: Component) -> None:
        """Report on ``component`` in :meth:`health` (a ``StateManager`` attaches itself)."""
        self._components.append(component)

    def detach(self, component: Component) -> None:
        """Stop reporting on ``component`` (a ``StateManager`` detaches itself on close)."""
        with contextlib.suppress(ValueError):
            self._components.remove(component)

    def _backend_backups(self) -> BackupBackend:
        if self._backups is None:
            raise StoreError(
                f"the {self._config.app.backend} backend keeps no backups of its own: back the "
                "store up with the server's tools (pg_dump, base backups with point-in-time "
                "recovery)"
            )
        return self._backups

    async def health(self) -> HealthReport:
        """Status (ok/degraded/failing) with reasons, and the facts behind it. Refused inside a
        ``transaction()`` block (it reads each database on its writer, which the block holds)."""
        refuse_inside_transaction(self.databases, "health()")
        lags = [c.projection_lag for c in self._components]
        errors = [c.projection_error for c in self._components if c.projection_error]
        return await collect(
            self.databases,
            mode=self._config.mode,
            events=self._events,
            projector_lag=max(lags) if lags else None,
            projector_error=errors[0] if errors else None,
            last_backup_at=self._last_backup_at,
            backup_interval=self._backup_config.interval,
            backup_failures=self._scheduler.failures,
            backup_failures_total=self._scheduler.total_failures,
            backups_taken=self._scheduler.taken,
            last_backup_error=self._scheduler.last_error,
        )

    async def metrics_text(self) -> str:
        """:meth:`health` in the Prometheus text exposition format."""
        return metrics_text(await self.health())

    # -- closing ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop background work, write the appends already made, and close every database
        (each as :meth:`Database.close` does, together: an open ``transaction()`` block gets
        5 s, then is rolled back). A timeout or cancellation around it cuts that short and is
        raised once everything is closed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        background = self._background
        try:
            self._event_store.close()  # ends subscriptions
            await self._event_store.drain()  # appends made before close() are written
            if background is not None:
                background.cancel()
                try:
                    await uncancellable(background)
                except asyncio.CancelledError:
                    if not background.cancelled():
                        raise
                except Exception:
                    log.exception("the service's background work failed")
        finally:
            # Not shielded: each database closes in full whatever happens, and a cancellation
            # (or a timeout) around close() cuts their grace periods short.
            await self._close_databases()

    async def _close_databases(self) -> None:
        # return_exceptions: every database closes to its end before this returns. Without it
        # gather returns at the first close that raises (a cancellation cut it short) and
        # leaves the others closing behind the caller's back, past the end of its event loop.
        closed = await asyncio.gather(
            *(database.close() for database in self.databases), return_exceptions=True
        )
        for result in closed:
            if isinstance(result, BaseException):
                raise result

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
