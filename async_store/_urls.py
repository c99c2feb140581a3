"""Database URLs as encode/databases and SQLAlchemy spell them: which backend a scheme names,
where the database is, and the URL's query parameters (raw text: ``config`` parses them into
:class:`~async_store.DatabaseConfig` fields, as it parses the environment).

SQLite URLs: ``sqlite:///relative/file.db`` (three slashes: a path relative to the working
directory), ``sqlite:////absolute/file.db`` (four: an absolute path), and the same with the
``sqlite+aiosqlite`` scheme. A character that a URL reserves (``?``, ``#``, ``%``) is written
percent-encoded in the path.

Error messages name a URL's scheme and its path, never the whole URL: a server's URL may hold a
password.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from .errors import ConfigError

__all__ = ["SCHEMES", "DatabaseUrl", "parse_url"]

SCHEMES: dict[str, str] = {"sqlite": "sqlite", "sqlite+aiosqlite": "sqlite"}
"""URL schemes and the backend each names. A backend that is added (PostgreSQL: DESIGN.md
"Backends") adds its schemes here and a branch in :func:`parse_url` that reads its location."""

IN_MEMORY = ("", ":memory:")
"""SQLite paths that mean an in-memory database: ``sqlite://`` and ``sqlite:///:memory:``."""


@dataclass(frozen=True)
class DatabaseUrl:
    """A database URL taken apart."""

    scheme: str
    """The scheme as written (lower case): ``sqlite`` or ``sqlite+aiosqlite``."""

    backend: str
    """The backend the scheme names: ``sqlite``."""

    path: Path
    """The database file."""

    query: dict[str, str]
    """The query parameters, each named once, as raw text."""


def parse_url(url: str) -> DatabaseUrl:
    """Take ``url`` apart.

    Raises :class:`ConfigError` for a scheme that is not one of :data:`SCHEMES` (the message
    names it and the supported ones), a SQLite URL with a host, a fragment or no path, an
    in-memory URL (not supported yet), and a query parameter given twice."""
    if not isinstance(url, str):
        raise ConfigError(f"a database URL is a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise ConfigError(f"not a database URL: {exc}") from None
    scheme = parts.scheme.lower()
    backend = SCHEMES.get(scheme)
    if backend is None:
        supported = ", ".join(f"{name}://" for name in SCHEMES)
        named = f"the scheme {scheme!r}" if scheme else "a URL without a scheme"
        raise ConfigError(
            f"unsupported database URL: {named}; the supported schemes are {supported}"
            " (a file path goes to SqlConfig.mvp(path) or DatabaseConfig(path=...))"
        )
    # The only backend so far; another adds its own branch here, reading its location.
    path = _sqlite_path(parts, scheme)
    return DatabaseUrl(scheme=scheme, backend=backend, path=path, query=_query(parts, scheme))


def _sqlite_path(parts: SplitResult, scheme: str) -> Path:
    netloc, path, fragment = parts.netloc, parts.path, parts.fragment
    if netloc:
        raise ConfigError(
            f"a {scheme}:// URL names a file, not a host ({netloc!r}): write "
            f"{scheme}:///relative/file.db or {scheme}:////absolute/file.db"
        )
    if fragment:
        raise ConfigError(
            f"a {scheme}:// URL has no fragment ('#{fragment}'); write a '#' in a file name as %23"
        )
    # The path after the host: "/relative.db" names "relative.db", "//abs.db" names "/abs.db".
    file = unquote(path.removeprefix("/"))
    if file in IN_MEMORY:
        # The one place an in-memory URL is recognised: it maps to an in-memory database here
        # once the SQLite backend has them.
        raise ConfigError(
            f"{scheme}://{path}: in-memory database URLs are not supported yet; "
            f"name a file ({scheme}:///path/to/file.db)"
        )
    return Path(file)


def _query(parts: SplitResult, scheme: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in options:
            raise ConfigError(f"{scheme}:// URL: the option {name!r} is given twice")
        options[name] = value
    return options
