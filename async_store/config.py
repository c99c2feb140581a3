"""Configuration: frozen, keyword-only dataclasses validated on construction.

:class:`DatabaseConfig` describes one SQLite database and its pool; :class:`SqlConfig` describes
the service: one database in MVP mode, or ``app_meta`` and ``events`` in production mode.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._urls import parse_url
from .errors import ConfigError

__all__ = ["ENV_PREFIX", "DatabaseConfig", "SqlConfig", "Synchronous"]

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_SYNCHRONOUS: tuple[str, ...] = ("OFF", "NORMAL", "FULL", "EXTRA")

ENV_PREFIX = "ASYNC_STORE_"
"""Prefix of the environment variables read by :meth:`SqlConfig.from_env`."""


@dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    """One SQLite database file and its pool: one writer connection and ``readers`` readers."""

    path: Path
    """The database file (``str`` or ``os.PathLike`` accepted). Missing parent directories are
    created when the service starts."""

    name: str = "app_meta"
    """The name used in error messages, statistics and health reports."""

    synchronous: Synchronous = "NORMAL"
    """``PRAGMA synchronous``. ``NORMAL`` in WAL mode survives an application crash; after power
    loss the newest commits may roll back. ``FULL`` fsyncs every commit. Default ``NORMAL``."""

    readers: int = 4
    """Reader connections (``query_only``), at least 1. Default 4."""

    busy_timeout: float = 5.0
    """Seconds SQLite waits on a lock held by another process before reporting busy. Default 5."""

    busy_retries: int = 5
    """Retries of ``BEGIN IMMEDIATE`` after ``busy_timeout`` expired, with jittered exponential
    backoff; a half-done transaction is never retried. Default 5."""

    busy_backoff: float = 0.05
    """Seconds of the first backoff between busy retries; doubled each retry. Default 0.05."""

    cache_size_kib: int = 65536
    """Page cache per connection, in KiB (``PRAGMA cache_size=-N``). Default 65536 (64 MiB)."""

    mmap_size: int = 0
    """Bytes of the file read through memory mapping (``PRAGMA mmap_size``). Default 0 (off).
    Mapping speeds up reads, but an I/O error on mapped memory arrives as SIGBUS and kills the
    process instead of raising an error; 134217728 (128 MiB) suits read-heavy local use."""

    wal_autocheckpoint: int = 1000
    """Pages in the WAL that trigger an automatic checkpoint. Default 1000."""

    journal_size_limit: int = 64 * 1024 * 1024
    """Bytes the WAL file is truncated to after a checkpoint. Default 64 MiB."""

    acquire_timeout: float = 30.0
    """Seconds a caller waits for a reader or for the writer before :class:`PoolTimeout`
    (its work is then withdrawn: nothing of it runs). One ``transaction()`` block held open
    holds up every writer behind it for as long. Default 30."""

    transaction_timeout: float | None = None
    """Seconds a ``transaction()`` block may hold the writer. Past it the writer rolls the
    block's work back and serves the next caller; the block's next call, or its end, raises
    :class:`TransactionTimeout`. Default ``None``: no limit."""

    writer_hold_warning: float = 5.0
    """Seconds one holder (a ``transaction()`` block, a batch, a migration) may keep the writer
    before ``health()`` reports the service degraded and names it. Default 5."""

    max_batch_size: int = 256
    """Most transactions one group commit holds. Default 256."""

    max_queued: int = 10_000
    """Bound of the writer queue; callers beyond it wait (up to ``acquire_timeout``). Default
    10 000: enough for every task of a busy service, small enough to keep memory bounded."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a database name must be a non-empty str, not {self.name!r:.60}")
        object.__setattr__(self, "path", _as_path(self.path, self.name))
        for attr, limit in _INT_FIELDS.items():
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool) or abs(value) > limit:
                raise ConfigError(
                    f"{self.name}: {attr} must be an int of at most {limit}, not {value!r:.60}"
                )
        for attr in _SECONDS_FIELDS:
            value = getattr(self, attr)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
            ):
                raise ConfigError(
                    f"{self.name}: {attr} must be a finite number of seconds, not {value!r:.60}"
                )
        # SQLite reads busy_timeout (milliseconds) as a 32-bit int.
        _require(
            self.busy_timeout * 1000 <= _INT32,
            self.name,
            "busy_timeout",
            self.busy_timeout,
            f"at most {_INT32 // 1000} seconds",
        )
        if self.synchronous not in _SYNCHRONOUS:
            raise ConfigError(
                f"{self.name}: synchronous must be one of {', '.join(_SYNCHRONOUS)}, "
                f"not {self.synchronous!r}"
            )
        _require(self.readers >= 1, self.name, "readers", self.readers, "at least 1")
        for attr in _SECONDS_FIELDS:
            value = getattr(self, attr)
            _require(value >= 0, self.name, attr, value, "a number of seconds >= 0")
        timeout = self.transaction_timeout
        if timeout is not None and (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ConfigError(
                f"{self.name}: transaction_timeout must be None or a finite number of seconds "
                f"> 0, not {timeout!r:.60}"
            )
        _require(self.busy_retries >= 0, self.name, "busy_retries", self.busy_retries, ">= 0")
        _require(self.cache_size_kib >= 0, self.name, "cache_size_kib", self.cache_size_kib, ">= 0")
        _require(self.mmap_size >= 0, self.name, "mmap_size", self.mmap_size, ">= 0")
        _require(
            self.wal_autocheckpoint >= 0,
            self.name,
            "wal_autocheckpoint",
            self.wal_autocheckpoint,
            ">= 0",
        )
        _require(
            self.journal_size_limit >= -1,
            self.name,
            "journal_size_limit",
            self.journal_size_limit,
            ">= -1",
        )
        _require(self.max_batch_size >= 1, self.name, "max_batch_size", self.max_batch_size, ">= 1")
        _require(self.max_queued >= 1, self.name, "max_queued", self.max_queued, ">= 1")
        _check_creatable(self.path, self.name)

    @property
    def backend(self) -> str:
        """The backend that serves this database: ``sqlite``."""
        return "sqlite"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DatabaseConfig:
        """The database a URL names, as encode/databases and SQLAlchemy spell it:
        ``sqlite:///relative/file.db``, ``sqlite:////absolute/file.db``, or the same with
        ``sqlite+aiosqlite://``.

        The URL's query parameters and ``options`` are fields of this class
        (``sqlite:///app.db?readers=8&busy_timeout=2``, ``readers=8``); a query parameter is
        parsed as ``SqlConfig.from_env`` parses its variables.

        Raises :class:`ConfigError` for another scheme (naming it and the supported ones), an
        in-memory URL (``sqlite://``, ``sqlite:///:memory:``: not supported yet), a query
        parameter that is not a field or does not parse (naming it), a field given both in the
        query and in ``options``, and any invalid value.
        """
        parsed = parse_url(url)
        where = f"{parsed.scheme}:// URL"
        _check_fields(options, where)
        query = {
            name: _parse_field(name, raw, f"{where}: {name}={raw!r}")
            for name, raw in parsed.query.items()
        }
        given_twice = sorted(query.keys() & options.keys())
        if given_twice:
            raise ConfigError(
                f"{parsed.scheme}:// URL: {', '.join(given_twice)} given both in the URL's "
                "query and as an option; give each once"
            )
        return cls(path=parsed.path, **query, **options)

    def replace(self, **changes: Any) -> DatabaseConfig:
        """Return a copy with ``changes`` applied (validated again). Raises
        :class:`ConfigError` for a name that is not a field, or a value it refuses."""
        fields = [field.name for field in dataclasses.fields(self)]
        unknown = sorted(changes.keys() - set(fields))
        if unknown:
            raise ConfigError(
                f"{self.name}: {', '.join(unknown)} not a field of DatabaseConfig; the fields "
                f"are {', '.join(fields)}"
            )
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class SqlConfig:
    """The service's databases: ``events is None`` means MVP mode (one file holds everything)."""

    app: DatabaseConfig
    """``app_meta``: settings, knowledge bases, documents, chunks, pipelines and projections."""

    events: DatabaseConfig | None = None
    """``events``: the event store, at ``synchronous=FULL``. ``None`` in MVP mode."""

    def __post_init__(self) -> None:
        if not isinstance(self.app, DatabaseConfig):
            raise ConfigError(f"app must be a DatabaseConfig, not {type(self.app).__name__}")
        if self.events is not None and not isinstance(self.events, DatabaseConfig):
            raise ConfigError(
                f"events must be a DatabaseConfig or None, not {type(self.events).__name__}"
            )
        if self.events is not None and _same_file(self.app.path, self.events.path):
            raise ConfigError(
                f"production mode needs two files; app_meta and events are both {self.app.path}"
            )

    @property
    def mode(self) -> Literal["mvp", "production"]:
        """``"mvp"`` (one file) or ``"production"`` (app_meta and events apart)."""
        return "mvp" if self.events is None else "production"

    @classmethod
    def mvp(cls, path: str | os.PathLike[str], **options: Any) -> SqlConfig:
        """One file holding every table, at ``synchronous=NORMAL`` unless ``options`` say else.

        ``options`` are :class:`DatabaseConfig` fields (``readers=8``, ``synchronous="FULL"``).
        """
        return cls(app=DatabaseConfig(path=_as_path(path, "app_meta"), **options))

    @classmethod
    def production(
        cls,
        app_path: str | os.PathLike[str],
        events_path: str | os.PathLike[str],
        **options: Any,
    ) -> SqlConfig:
        """``app_meta`` at ``synchronous=NORMAL`` and ``events`` at ``synchronous=FULL``.

        ``options`` are :class:`DatabaseConfig` fields applied to both databases.
        """
        app_options = {"synchronous": "NORMAL", **options}
        event_options = {**options, "synchronous": "FULL", "name": "events"}
        return cls(
            app=DatabaseConfig(path=_as_path(app_path, "app_meta"), **app_options),
            events=DatabaseConfig(path=_as_path(events_path, "events"), **event_options),
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqlConfig:
        """MVP mode (one file holding every table) on the database ``url`` names:
        ``sqlite:///relative/file.db``, ``sqlite:////absolute/file.db`` or
        ``sqlite+aiosqlite://...``, as encode/databases and SQLAlchemy spell them.

        ``options`` and the URL's query parameters are :class:`DatabaseConfig` fields
        (``sqlite:///app.db?readers=8``); see :meth:`DatabaseConfig.from_url`, which raises
        :class:`ConfigError` for what it refuses.
        """
        return cls(app=DatabaseConfig.from_url(url, **options))

    @classmethod
    def in_directory(
        cls, directory: str | os.PathLike[str], *, mvp: bool = False, **options: Any
    ) -> SqlConfig:
        """``DIR/app_meta.db`` and ``DIR/events.db`` (MVP: ``DIR/app_meta.db`` alone)."""
        root = _as_path(directory, "the data directory")
        if mvp:
            return cls.mvp(root / "app_meta.db", **options)
        return cls.production(root / "app_meta.db", root / "events.db", **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SqlConfig:
        """Read the configuration from environment variables.

        ``ASYNC_STORE_URL``        a database URL (``sqlite:///path/to/file.db``): MVP mode on
                                   that file, as :meth:`from_url` reads it; the variables
                                   naming files or the production mode may not be set with it
        ``ASYNC_STORE_DATA``       directory holding ``app_meta.db`` and ``events.db`` (default
                                   ``./data``)
        ``ASYNC_STORE_MODE``       ``production`` (default) or ``mvp``
        ``ASYNC_STORE_APP_PATH``   the app_meta file (overrides ``ASYNC_STORE_DATA``)
        ``ASYNC_STORE_EVENTS_PATH`` the events file (production mode)
        ``ASYNC_STORE_READERS``, ``ASYNC_STORE_BUSY_TIMEOUT``, ``ASYNC_STORE_BUSY_RETRIES``,
        ``ASYNC_STORE_CACHE_SIZE_KIB``, ``ASYNC_STORE_MMAP_SIZE``,
        ``ASYNC_STORE_WAL_AUTOCHECKPOINT``, ``ASYNC_STORE_JOURNAL_SIZE_LIMIT``,
        ``ASYNC_STORE_ACQUIRE_TIMEOUT``, ``ASYNC_STORE_MAX_BATCH_SIZE``,
        ``ASYNC_STORE_TRANSACTION_TIMEOUT``,
        ``ASYNC_STORE_WRITER_HOLD_WARNING``: the :class:`DatabaseConfig` field of the same
        name, applied to every database.

        Raises :class:`ConfigError` naming the variable when a value cannot be parsed, and
        for an ``ASYNC_STORE_URL`` that :meth:`from_url` refuses.
        """
        env = os.environ if environ is None else environ
        raw_mode = env.get(f"{ENV_PREFIX}MODE", "").strip()
        mode = (raw_mode or "production").lower()
        if mode not in ("production", "mvp"):
            raise ConfigError(f"{ENV_PREFIX}MODE must be 'production' or 'mvp', not {mode!r}")
        options: dict[str, Any] = {}
        for name in _ENV_FIELDS:
            variable = f"{ENV_PREFIX}{name.upper()}"
            raw = env.get(variable)
            if raw is not None and raw.strip() != "":
                options[name] = _parse_field(name, raw.strip(), f"{variable}={raw!r}")
        url = env.get(f"{ENV_PREFIX}URL", "").strip()
        if url:
            clashing = [
                f"{ENV_PREFIX}{name}"
                for name in ("DATA", "APP_PATH", "EVENTS_PATH")
                if env.get(f"{ENV_PREFIX}{name}")
            ]
            if raw_mode and mode == "production":
                clashing.append(f"{ENV_PREFIX}MODE=production")
            if clashing:
                raise ConfigError(
                    f"{ENV_PREFIX}URL names the one database of MVP mode; unset "
                    f"{', '.join(clashing)}"
                )
            return cls.from_url(url, **options)
        data = Path(env.get(f"{ENV_PREFIX}DATA", "data"))
        app_path = Path(env.get(f"{ENV_PREFIX}APP_PATH", data / "app_meta.db"))
        if mode == "mvp":
            return cls.mvp(app_path, **options)
        events_path = Path(env.get(f"{ENV_PREFIX}EVENTS_PATH", data / "events.db"))
        return cls.production(app_path, events_path, **options)

    @property
    def databases(self) -> tuple[DatabaseConfig, ...]:
        """Every database of the service, app_meta first."""
        return (self.app,) if self.events is None else (self.app, self.events)


_INT32 = 2**31 - 1
_INT64 = 2**63 - 1

# Integer fields and the largest magnitude SQLite keeps: cache_size and wal_autocheckpoint are
# read as 32-bit ints (a larger value reads back as 0), the others as 64-bit ones.
_INT_FIELDS: dict[str, int] = {
    "readers": _INT32,
    "busy_retries": _INT32,
    "cache_size_kib": _INT32,
    "mmap_size": _INT64,
    "wal_autocheckpoint": _INT32,
    "journal_size_limit": _INT64,
    "max_batch_size": _INT64,
    "max_queued": _INT64,
}
_SECONDS_FIELDS = (
    "busy_timeout",
    "busy_backoff",
    "acquire_timeout",
    "writer_hold_warning",
)

_ENV_FIELDS = (
    "readers",
    "busy_timeout",
    "busy_retries",
    "cache_size_kib",
    "mmap_size",
    "wal_autocheckpoint",
    "journal_size_limit",
    "acquire_timeout",
    "max_batch_size",
    "transaction_timeout",
    "writer_hold_warning",
)
"""The DatabaseConfig fields ``SqlConfig.from_env`` reads, each from ``ASYNC_STORE_<FIELD>``."""


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _boolean(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "on": True}.get(text.lower())
    if value is None and text.lower() not in ("false", "0", "no", "off"):
        raise ValueError(f"expected true or false, not {text!r}")
    return bool(value)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "float | None": _optional_float,
    "bool": _boolean,
    "str": str,
    "Synchronous": str.upper,
}
"""How a field given as text (an environment variable, a URL's query) is read, by the type
its annotation names."""

_TEXT_FIELDS: dict[str, Callable[[str], Any]] = {
    field.name: _PARSERS[str(field.type)]
    for field in dataclasses.fields(DatabaseConfig)
    if str(field.type) in _PARSERS
}
"""The DatabaseConfig fields that may be given as text, and how each is read."""


def _parse_field(name: str, raw: str, where: str) -> Any:
    """``raw`` read as the field ``name``; ``where`` names its source in the error."""
    parse = _TEXT_FIELDS.get(name)
    if parse is None:
        raise ConfigError(f"{where}: not an option; the options are {', '.join(_TEXT_FIELDS)}")
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_fields(options: Mapping[str, Any], where: str) -> None:
    """Refuse options that are not DatabaseConfig fields, or that name the path."""
    fields = [field.name for field in dataclasses.fields(DatabaseConfig) if field.name != "path"]
    unknown = sorted(options.keys() - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: not an option: {', '.join(unknown)}; the options are "
            f"{', '.join(fields)} (the URL names the file)"
        )


def _require(ok: bool, name: str, attr: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {attr} must be {expected}, not {value!r}")


def _as_path(value: object, name: str) -> Path:
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        if isinstance(text, str) and text and text != ":memory:":
            return Path(text)
    raise ConfigError(
        f"{name}: path must be a file path (str or os.PathLike); got {value!r}"
        " (in-memory databases cannot be shared by a pool)"
    )


def _check_creatable(path: Path, name: str) -> None:
    """Refuse a path whose parent directory cannot exist or cannot be written, without creating
    anything: the nearest existing ancestor must be a writable directory."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        raise ConfigError(f"{name}: {path!r} cannot be encoded as a file name") from None
    if "\x00" in str(path):
        raise ConfigError(f"{name}: {path!r} holds a NUL character")
    if path.is_dir():
        raise ConfigError(f"{name}: {path} is a directory, not a database file")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise ConfigError(f"{name}: {ancestor} is a dangling symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(
            f"{name}: cannot create the directory of {path}: {ancestor} is not a directory"
        )
    if not path.exists() and not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}: cannot create {path}: {ancestor} is not writable")


def _same_file(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)
