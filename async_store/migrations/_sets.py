"""Migration sets as read from disk, checked before anything runs.

A set is a directory of versions, each a folder ``NNNN_name`` holding ``up.sql`` and ``down.sql``,
read from the package (the built-in sets, in the folder of the backend's dialect:
``migrations/sqlite/<set>``), from an application's directory or from its package data. Text
is normalised (BOM stripped, CRLF turned into LF) before the checksum is taken, and split into
statements by the backend the set is written for (``sqlite``: with
``sqlite3.complete_statement``, in ``sqlite._migrations``). A set is refused with a
:class:`MigrationError` naming the file when it is loaded: a misnamed folder, a version defined
twice, a missing file, a gap, an unterminated last statement, or a statement the runner owns
(transaction control, VACUUM, ATTACH, DETACH, and the journal_mode, synchronous, foreign_keys
and writable_schema PRAGMAs).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

from ..database import backend_named
from ..errors import MigrationError

__all__ = [
    "BASELINE_NOTE",
    "BUILTIN_SETS",
    "FOREIGN_KEYS_OFF",
    "Migration",
    "MigrationSet",
    "normalize",
]

BUILTIN_SETS = ("app_meta", "events")
"""The sets shipped with the package, in the order MVP mode applies them to its one file."""

BASELINE_NOTE = "(baseline)"
"""What follows a migration's name in the record when it was recorded by a baseline, without
running (its ``duration_ms`` is 0)."""

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
    backend: str = "sqlite"
    """The backend whose dialect the SQL is written in."""

    @property
    def checksum(self) -> str:
        """SHA-256 of ``up.sql``, normalised (BOM stripped, CRLF → LF)."""
        return hashlib.sha256(normalize(self.up_sql).encode("utf-8")).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.migration_set} {self.version:04d}_{self.name}"

    def statements(self, direction: Literal["up", "down"]) -> list[str]:
        sql = self.up_sql if direction == "up" else self.down_sql
        return _split(self.backend, sql, f"{self.source}/{direction}.sql")

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
    baseline: int = 0
    """Versions 1..``baseline`` describe a schema that files made before this set may hold
    already (Flyway's ``baselineVersion``, Alembic's ``stamp``). A service that finds another
    application's file (tables, no migration record) adopts it instead of refusing it: these
    versions are recorded as applied, with their checksums, without running; later versions
    and the library's own sets then run. On a new file, or one with a migration record, the
    baseline does nothing. Default 0: no baseline."""

    def __post_init__(self) -> None:
        baseline = self.baseline
        if not isinstance(baseline, int) or isinstance(baseline, bool):
            raise MigrationError(
                f"migration set {self.name!r}: baseline must be an int, not {baseline!r:.60}"
            )
        if not 0 <= baseline <= self.latest:
            raise MigrationError(
                f"migration set {self.name!r}: baseline {baseline} is not one of its versions "
                f"(0..{self.latest})"
            )
        if baseline and self.name in BUILTIN_SETS:
            raise MigrationError(f"the built-in set {self.name!r} takes no baseline")

    @property
    def latest(self) -> int:
        return self.migrations[-1].version if self.migrations else 0

    @classmethod
    def builtin(cls, name: str, backend: str = "sqlite") -> MigrationSet:
        """One of the sets shipped inside the package (``app_meta`` or ``events``), in the
        dialect of ``backend``."""
        if name not in BUILTIN_SETS:
            raise MigrationError(f"no built-in migration set {name!r}; known: {BUILTIN_SETS}")
        root = _builtin_root(_migration_backend(backend).folder) / name
        database: Literal["app_meta", "events"] = "events" if name == "events" else "app_meta"
        return cls._load(name, root, f"migrations/{name}", database, backend)

    @classmethod
    def from_directory(
        cls,
        name: str,
        path: str | Path,
        *,
        database: Literal["app_meta", "events"] = "app_meta",
        backend: str = "sqlite",
        baseline: int = 0,
    ) -> MigrationSet:
        """An application's own set from a directory of ``NNNN_name/{up,down}.sql`` folders,
        written in the dialect of ``backend``. ``baseline``: see :attr:`baseline`."""
        root = Path(path)
        if not root.is_dir():
            raise MigrationError(f"migration set {name!r}: {root} is not a directory")
        return cls._load(name, root, str(root), database, backend, baseline)

    @classmethod
    def from_package(
        cls,
        name: str,
        package: str,
        subdirectory: str = "",
        *,
        database: Literal["app_meta", "events"] = "app_meta",
        backend: str = "sqlite",
        baseline: int = 0,
    ) -> MigrationSet:
        """An application's own set shipped as package data (read with importlib.resources),
        written in the dialect of ``backend``. ``baseline``: see :attr:`baseline`."""
        root = importlib.resources.files(package)
        for part in filter(None, subdirectory.split("/")):
            root = root / part
        if not root.is_dir():
            raise MigrationError(f"migration set {name!r}: {package}/{subdirectory} not found")
        where = f"{package}/{subdirectory}".rstrip("/")
        return cls._load(name, root, where, database, backend, baseline)

    @classmethod
    def _load(
        cls,
        name: str,
        root: Traversable,
        where: str,
        database: Literal["app_meta", "events"],
        backend: str,
        baseline: int = 0,
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
            migration = Migration(
                name, version, match.group(2), texts["up"], texts["down"], source, backend
            )
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
        return cls(name, ordered, database, baseline)


def normalize(sql: str) -> str:
    """Strip a byte-order mark and turn CRLF (and lone CR) into LF."""
    return sql.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _migration_backend(backend: str) -> Any:
    """The migration piece (a ``_backend.MigrationBackend``) of the backend called
    ``backend``, imported on first use."""
    return backend_named(backend).MIGRATIONS


def _split(backend: str, sql: str, source: str) -> list[str]:
    statements: list[str] = _migration_backend(backend).split_statements(sql, source)
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


def _builtin_root(folder: str) -> Traversable:
    """The built-in sets in one dialect: ``folder`` is the backend's (``sqlite``)."""
    packaged = importlib.resources.files("async_store") / "sql" / folder
    if packaged.is_dir():
        return packaged
    # A source checkout (editable install): the sets live in the top-level migrations/ folder,
    # which the wheel build copies into the package as sql/.
    return Path(__file__).resolve().parents[2] / "migrations" / folder
