"""Embedded SQL migrations, applied on start-up on the writer's connection.

A *migration set* is a directory of versions, each a folder ``NNNN_name`` holding ``up.sql`` and
``down.sql``. The built-in sets ``app_meta`` and ``events`` ship inside the package; applications
add their own with :meth:`MigrationSet.from_directory` or :meth:`MigrationSet.from_package`.

Rules (learned from the data loss users of other migration tools reported):

* ``schema_migrations(migration_set, version, name, checksum, applied_at, duration_ms)`` records
  what is applied; the checksum covers ``up.sql`` with a BOM stripped and CRLF turned into LF.
* The write lock (``BEGIN IMMEDIATE``) is taken before reading what is applied, so processes
  starting at once apply each version exactly once, and all of them start.
* A migration and its bookkeeping row commit in one transaction. Statements run one at a time
  (split with ``sqlite3.complete_statement``), never through ``executescript()``, which would
  commit on its own. ``PRAGMA foreign_key_check`` runs before COMMIT.
* A migration whose ``up.sql`` starts with the line ``-- async_store: foreign_keys=off`` (a table
  rebuild) runs with foreign keys switched off outside its transaction, then back on, read back.
* Refused with a :class:`MigrationError` naming the file, nothing changed: an applied migration
  edited since, a database newer than the code, a gap, files with transaction control, VACUUM or
  journal_mode/synchronous/foreign_keys PRAGMAs.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from ._connection import run_on_file
from ._writer import begin_immediate
from .database import Database
from .errors import MigrationError, StoreError, translate
from .statistics import Counters

__all__ = [
    "BUILTIN_SETS",
    "Migration",
    "MigrationSet",
    "MigrationStatus",
    "apply_migrations",
    "migration_status",
    "refuse_foreign_file",
    "split_statements",
]

BUILTIN_SETS = ("app_meta", "events")
"""The sets shipped with the package, in the order MVP mode applies them to its one file."""

FOREIGN_KEYS_OFF = "-- async_store: foreign_keys=off"
"""First line of an ``up.sql`` (or ``down.sql``) that rebuilds tables."""

_DIRECTIONS: tuple[Literal["up", "down"], ...] = ("up", "down")
_VERSION_DIR = re.compile(r"^(\d{4,})_([A-Za-z0-9_]+)$")
_FORBIDDEN = re.compile(
    r"^(?:BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE|VACUUM|ATTACH|DETACH)\b"
    r"|^PRAGMA\s+(?:\w+\s*\.\s*)?(?:journal_mode|synchronous|foreign_keys|writable_schema)\b",
    re.IGNORECASE,
)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    migration_set TEXT    NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    name          TEXT    NOT NULL,
    checksum      TEXT    NOT NULL,
    applied_at    TEXT    NOT NULL,
    duration_ms   REAL    NOT NULL,
    PRIMARY KEY (migration_set, version)
) WITHOUT ROWID
"""


@dataclass(frozen=True)
class Migration:
    """One version of a migration set."""

    migration_set: str
    version: int
    name: str
    up_sql: str
    down_sql: str
    source: str
    """Where the files came from, for error messages (``migrations/app_meta/0001_initial``)."""

    @property
    def checksum(self) -> str:
        """SHA-256 of ``up.sql``, normalised (BOM stripped, CRLF → LF)."""
        return hashlib.sha256(normalize(self.up_sql).encode("utf-8")).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.migration_set} {self.version:04d}_{self.name}"

    def statements(self, direction: Literal["up", "down"]) -> list[str]:
        sql = self.up_sql if direction == "up" else self.down_sql
        return split_statements(sql, f"{self.source}/{direction}.sql")

    def foreign_keys_off(self, direction: Literal["up", "down"]) -> bool:
        sql = normalize(self.up_sql if direction == "up" else self.down_sql)
        return sql.lstrip().lower().startswith(FOREIGN_KEYS_OFF)


@dataclass(frozen=True)
class MigrationSet:
    """An ordered, gap-free sequence of migrations, validated when loaded."""

    name: str
    migrations: tuple[Migration, ...]
    database: Literal["app_meta", "events"] = "app_meta"
    """Which database of a production service the set belongs to (MVP: the one file)."""

    @property
    def latest(self) -> int:
        return self.migrations[-1].version if self.migrations else 0

    @classmethod
    def builtin(cls, name: str) -> MigrationSet:
        """One of the sets shipped inside the package (``app_meta`` or ``events``)."""
        if name not in BUILTIN_SETS:
            raise MigrationError(f"no built-in migration set {name!r}; known: {BUILTIN_SETS}")
        root = _builtin_root() / name
        database: Literal["app_meta", "events"] = "events" if name == "events" else "app_meta"
        return cls._load(name, root, f"migrations/{name}", database)

    @classmethod
    def from_directory(
        cls,
        name: str,
        path: str | Path,
        *,
        database: Literal["app_meta", "events"] = "app_meta",
    ) -> MigrationSet:
        """An application's own set from a directory of ``NNNN_name/{up,down}.sql`` folders."""
        root = Path(path)
        if not root.is_dir():
            raise MigrationError(f"migration set {name!r}: {root} is not a directory")
        return cls._load(name, root, str(root), database)

    @classmethod
    def from_package(
        cls,
        name: str,
        package: str,
        subdirectory: str = "",
        *,
        database: Literal["app_meta", "events"] = "app_meta",
    ) -> MigrationSet:
        """An application's own set shipped as package data (read with importlib.resources)."""
        root = importlib.resources.files(package)
        for part in filter(None, subdirectory.split("/")):
            root = root / part
        if not root.is_dir():
            raise MigrationError(f"migration set {name!r}: {package}/{subdirectory} not found")
        return cls._load(name, root, f"{package}/{subdirectory}".rstrip("/"), database)

    @classmethod
    def _load(
        cls,
        name: str,
        root: Traversable,
        where: str,
        database: Literal["app_meta", "events"],
    ) -> MigrationSet:
        if name in BUILTIN_SETS and not where.startswith("migrations/"):
            raise MigrationError(f"{where}: the set name {name!r} is reserved for async_store")
        found: dict[int, Migration] = {}
        for entry in root.iterdir():
            if not entry.is_dir() or entry.name.startswith((".", "__")):
                continue
            match = _VERSION_DIR.match(entry.name)
            source = f"{where}/{entry.name}"
            if match is None:
                raise MigrationError(f"{source}: a version folder is named NNNN_name")
            version = int(match.group(1))
            if version in found:
                raise MigrationError(f"{source}: version {version} is defined twice")
            texts = {}
            for direction in _DIRECTIONS:
                file = entry / f"{direction}.sql"
                if not file.is_file():
                    raise MigrationError(f"{source}: {direction}.sql is missing")
                texts[direction] = normalize(file.read_bytes().decode("utf-8"))
            migration = Migration(name, version, match.group(2), texts["up"], texts["down"], source)
            for direction in _DIRECTIONS:
                _check_statements(migration.statements(direction), f"{source}/{direction}.sql")
            found[version] = migration
        ordered = tuple(found[v] for v in sorted(found))
        for expected, migration in enumerate(ordered, start=1):
            if migration.version != expected:
                raise MigrationError(
                    f"{migration.source}: versions must run 1, 2, 3, ... without gaps; "
                    f"expected {expected:04d}, found {migration.version:04d}"
                )
        return cls(name, ordered, database)


@dataclass(frozen=True)
class MigrationStatus:
    """One version of one set, as found in a database."""

    migration_set: str
    version: int
    name: str
    applied: bool
    applied_at: str | None
    checksum_ok: bool | None
    """False when the applied migration's file was edited since; None when not applied."""


def normalize(sql: str) -> str:
    """Strip a byte-order mark and turn CRLF (and lone CR) into LF."""
    return sql.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def split_statements(sql: str, source: str = "<sql>") -> list[str]:
    """Split SQL into complete statements with ``sqlite3.complete_statement`` (which knows
    strings, comments and trigger bodies). Comment-only pieces are dropped."""
    statements: list[str] = []
    buffer = ""
    for piece in re.split(r"(;)", sql):
        buffer += piece
        if piece == ";" and sqlite3.complete_statement(buffer):
            if _COMMENTS.sub("", buffer).strip(" \t\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if _COMMENTS.sub("", buffer).strip():
        raise MigrationError(f"{source}: the last statement is not terminated by ';'")
    return statements


def _check_statements(statements: Sequence[str], source: str) -> None:
    for number, statement in enumerate(statements, start=1):
        head = _COMMENTS.sub("", statement).strip()
        if _FORBIDDEN.match(head):
            first = " ".join(head.split())[:60]
            raise MigrationError(
                f"{source}: statement {number} ({first!r}) is not allowed in a migration: the "
                "runner owns transactions, and journal_mode, synchronous and foreign_keys are "
                "set by the library"
            )


def _builtin_root() -> Traversable:
    packaged = importlib.resources.files("async_store") / "migrations"
    if packaged.is_dir():
        return packaged
    # A source checkout (editable install): the sets live in the top-level migrations/ folder,
    # which the wheel build copies into the package.
    return Path(__file__).resolve().parent.parent / "migrations"


# -- applying --------------------------------------------------------------------------------


async def apply_migrations(
    database: Database,
    sets: Iterable[MigrationSet],
    *,
    track_user_version: str | None,
    target: int | None = None,
    target_set: str | None = None,
) -> list[str]:
    """Bring every set in ``sets`` to its newest version on ``database`` or, when
    ``target_set`` is given, that set alone to ``target`` (up or down; ``None`` = newest).
    Returns the labels of the migrations applied or reverted.

    ``track_user_version`` names the set whose version ``PRAGMA user_version`` follows.
    Raises :class:`MigrationError`; a failing migration leaves the database as it was.
    """
    sets = list(sets)
    if target_set is not None and target_set not in {s.name for s in sets}:
        raise MigrationError(f"{database.name}: no migration set {target_set!r} on this database")
    config = database.config
    counters = Counters()

    def run(conn: sqlite3.Connection) -> list[str]:
        # No race with other processes migrating: their first migration commits its tables
        # and its record together, so a file never holds one without the other.
        reason = _foreign_reason(conn)
        if reason is not None:
            raise MigrationError(f"{database.name}: {reason}; it belongs to another application")
        done: list[str] = []
        for migration_set in sets:
            if target_set is not None and migration_set.name != target_set:
                continue
            goal = target if migration_set.name == target_set else None
            tracks = migration_set.name == track_user_version
            done += _migrate_set(
                conn,
                migration_set,
                goal,
                tracks,
                config.busy_retries,
                config.busy_backoff,
                counters,
                database.name,
            )
        return done

    try:
        return await database.run_on_writer(run)
    except MigrationError:
        raise
    except StoreError as exc:
        raise MigrationError(f"{database.name}: migrations could not run: {exc}") from exc


async def migration_status(
    database: Database, sets: Iterable[MigrationSet]
) -> list[MigrationStatus]:
    """Every known version of every set, applied or pending, as recorded in ``database``."""
    sets = list(sets)

    def read(conn: sqlite3.Connection) -> list[MigrationStatus]:
        applied = _applied_rows(conn)
        result = []
        for migration_set in sets:
            for migration in migration_set.migrations:
                row = applied.get((migration_set.name, migration.version))
                result.append(
                    MigrationStatus(
                        migration_set.name,
                        migration.version,
                        migration.name,
                        row is not None,
                        row[1] if row else None,
                        (row[0] == migration.checksum) if row else None,
                    )
                )
        return result

    return await database.run_on_writer(read)


def _applied_rows(conn: sqlite3.Connection) -> dict[tuple[str, int], tuple[str, str]]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return {}
    rows = conn.execute(
        "SELECT migration_set, version, checksum, applied_at FROM schema_migrations"
    ).fetchall()
    return {(row[0], row[1]): (row[2], row[3]) for row in rows}


def _migrate_set(
    conn: sqlite3.Connection,
    migration_set: MigrationSet,
    target: int | None,
    tracks_user_version: bool,
    retries: int,
    backoff: float,
    counters: Counters,
    database: str,
) -> list[str]:
    """Runs on the writer's thread. One transaction per migration, each taken under the write
    lock after re-reading what is applied."""
    goal = migration_set.latest if target is None else target
    if not 0 <= goal <= migration_set.latest:
        raise MigrationError(
            f"{database}: {migration_set.name} has versions 1..{migration_set.latest}; "
            f"cannot migrate to {goal}"
        )
    done: list[str] = []
    while True:
        # A first look, in a read transaction so that its two reads (the record and
        # user_version) see one snapshot while other processes migrate; it is taken again
        # under the write lock before anything changes.
        conn.execute("BEGIN")
        try:
            current = _current_version(conn, migration_set, database, tracks_user_version)
        finally:
            conn.execute("ROLLBACK")
        if current == goal:
            return done
        direction: Literal["up", "down"] = "up" if current < goal else "down"
        migration = migration_set.migrations[current if direction == "up" else current - 1]
        fk_off = migration.foreign_keys_off(direction)
        if fk_off:
            conn.execute("PRAGMA foreign_keys = OFF")
        try:
            begin_immediate(conn, retries, backoff, counters, database)
            try:
                # Re-read under the write lock: another process may have moved on meanwhile.
                if _current_version(conn, migration_set, database, tracks_user_version) != current:
                    conn.execute("ROLLBACK")
                    continue
                _run_one(conn, migration, direction, tracks_user_version)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            if fk_off:
                conn.execute("PRAGMA foreign_keys = ON")
                if conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
                    raise MigrationError(f"{database}: foreign_keys did not switch back on")
        done.append(f"{'applied' if direction == 'up' else 'reverted'} {migration.label}")


_HEADER = b"SQLite format 3\x00"


async def refuse_foreign_file(path: Path, database: str) -> None:
    """Raise :class:`MigrationError` if ``path`` is another application's SQLite database
    (tables or a ``user_version``, but no migration record), reading it only. Run before the
    pool opens the file: switching a rollback-journal file to WAL rewrites its header, and a
    file that is not ours must be refused exactly as it was found. A file in WAL mode already
    is left to the migration check, which refuses it before writing anything."""
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except OSError:
        return  # missing (created on open) or unreadable (the open reports it)
    if len(header) < 100 or not header.startswith(_HEADER) or header[18:20] != b"\x01\x01":
        return
    try:
        reason = await run_on_file(path, _foreign_reason, readonly=True)
    except sqlite3.Error:
        return  # damaged: the pool's open reports it
    if reason is not None:
        raise MigrationError(f"{database}: {reason}; it belongs to another application")


def _foreign_reason(conn: sqlite3.Connection) -> str | None:
    """Why the file is not an async_store database (None: it is one, or is empty)."""
    if conn.in_transaction:
        return _foreign_reason_in(conn)
    # One read transaction: read statement by statement, the record and user_version of a
    # first migration another process commits in between would look like another
    # application's file.
    conn.execute("BEGIN")
    try:
        return _foreign_reason_in(conn)
    finally:
        conn.execute("ROLLBACK")


def _foreign_reason_in(conn: sqlite3.Connection) -> str | None:
    if _applied_rows(conn):
        return None
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    if user_version:
        return f"the file has user_version {user_version} but no async_store migration record"
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
            " AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name"
        )
    ]
    if tables and tables != ["schema_migrations"]:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        return f"the file holds tables ({shown}) but no async_store migration record"
    return None


def _current_version(
    conn: sqlite3.Connection, migration_set: MigrationSet, database: str, tracks: bool
) -> int:
    """The set's applied version, after checking the record against the code."""
    applied = {
        version: row
        for (name, version), row in _applied_rows(conn).items()
        if name == migration_set.name
    }
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    known = {m.version: m for m in migration_set.migrations}
    newest = max(applied, default=0)
    if tracks and user_version > newest and not applied:
        raise MigrationError(
            f"{database}: the file has user_version {user_version} but no async_store migration "
            f"record for the {migration_set.name} set; it belongs to another application"
        )
    if newest > migration_set.latest or (tracks and user_version > migration_set.latest):
        raise MigrationError(
            f"{database}: the database is at {migration_set.name} version "
            f"{max(newest, user_version if tracks else 0)}, newer than this code "
            f"(which knows versions up to {migration_set.latest}); upgrade async_store"
        )
    for version in range(1, newest + 1):
        if version not in applied:
            raise MigrationError(
                f"{database}: {migration_set.name} version {version} is missing from "
                f"schema_migrations while {newest} is applied; the record has a gap"
            )
        checksum = applied[version][0]
        if checksum != known[version].checksum:
            raise MigrationError(
                f"{database}: {known[version].source}/up.sql was edited after it was applied "
                f"(checksum {checksum[:12]}… recorded, {known[version].checksum[:12]}… now); "
                "add a new migration instead of editing an applied one"
            )
    return newest


def _run_one(
    conn: sqlite3.Connection,
    migration: Migration,
    direction: Literal["up", "down"],
    tracks_user_version: bool,
) -> None:
    conn.execute(_CREATE_TABLE)
    source = f"{migration.source}/{direction}.sql"
    started = time.perf_counter()
    for number, statement in enumerate(migration.statements(direction), start=1):
        try:
            conn.execute(statement)
        except sqlite3.Error as exc:
            error = translate(exc, database=migration.migration_set)
            raise MigrationError(
                f"{source}: statement {number} failed: {error}; nothing was changed"
            ) from exc
    violations = conn.execute("PRAGMA foreign_key_check").fetchall()
    if violations:
        listed = ", ".join(f"{row[0]} rowid {row[1]} → {row[2]}" for row in violations[:5])
        raise MigrationError(
            f"{source}: leaves {len(violations)} foreign key violation(s) ({listed}); "
            "nothing was changed"
        )
    if direction == "up":
        conn.execute(
            "INSERT INTO schema_migrations(migration_set, version, name, checksum, applied_at,"
            " duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (
                migration.migration_set,
                migration.version,
                migration.name,
                migration.checksum,
                datetime.now(UTC).isoformat(timespec="microseconds"),
                round((time.perf_counter() - started) * 1000, 3),
            ),
        )
        new_version = migration.version
    else:
        conn.execute(
            "DELETE FROM schema_migrations WHERE migration_set = ? AND version = ?",
            (migration.migration_set, migration.version),
        )
        new_version = migration.version - 1
    if tracks_user_version:
        conn.execute(f"PRAGMA user_version = {int(new_version)}")
