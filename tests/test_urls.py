"""Database URLs as encode/databases and SQLAlchemy spell them: ``DatabaseConfig.from_url``,
``SqlConfig.from_url``, ``Database(url, **options)`` and ``ASYNC_STORE_URL`` in
``SqlConfig.from_env``; and every URL the library refuses, with a message that says why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from async_store import ConfigError, Database, DatabaseConfig, SqlConfig, SqlService
from async_store.sqlite import SqliteDatabase


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's directory as the working directory: relative URLs land in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("url", "path"),
    [
        pytest.param("sqlite:///app.db", Path("app.db"), id="relative"),
        pytest.param("sqlite:///data/app.db", Path("data/app.db"), id="relative-dir"),
        pytest.param("sqlite:////srv/x/app.db", Path("/srv/x/app.db"), id="absolute"),
        pytest.param("sqlite+aiosqlite:///app.db", Path("app.db"), id="aiosqlite"),
        pytest.param("sqlite+aiosqlite:////srv/app.db", Path("/srv/app.db"), id="aiosqlite-abs"),
        pytest.param("SQLite:///app.db", Path("app.db"), id="scheme-case"),
        pytest.param("sqlite:///my%20notes%23.db", Path("my notes#.db"), id="percent-encoded"),
    ],
)
def test_a_sqlite_url_names_a_file(url: str, path: Path) -> None:
    config = DatabaseConfig.from_url(url)
    assert config.path == path
    assert config.backend == "sqlite"
    assert config == DatabaseConfig(path=path)


def test_query_parameters_and_options_are_fields(tmp_path: Path) -> None:
    url = (
        f"sqlite:///{tmp_path}/app.db?readers=8&busy_timeout=2&synchronous=full"
        "&transaction_timeout=none&name=mine"
    )
    config = DatabaseConfig.from_url(url, acquire_timeout=3.0)
    assert config.path == tmp_path / "app.db"
    assert (config.readers, config.busy_timeout, config.synchronous) == (8, 2.0, "FULL")
    assert (config.transaction_timeout, config.name, config.acquire_timeout) == (
        None,
        "mine",
        3.0,
    )


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        pytest.param(
            "postgresql://user:secret@host/db",
            {},
            r"the scheme 'postgresql'; the supported schemes are sqlite://, sqlite\+aiosqlite://",
            id="postgresql",
        ),
        pytest.param("mysql://host/db", {}, "the scheme 'mysql'", id="mysql"),
        pytest.param("app.db", {}, "a URL without a scheme", id="a-path"),
        pytest.param("sqlite://", {}, "in-memory database URLs are not supported yet", id="mem"),
        pytest.param("sqlite:///", {}, "in-memory", id="empty-path"),
        pytest.param("sqlite:///:memory:", {}, "in-memory", id="memory"),
        pytest.param("sqlite+aiosqlite:///:memory:", {}, "in-memory", id="aiosqlite-memory"),
        pytest.param("sqlite://host/app.db", {}, "not a host", id="host"),
        pytest.param("sqlite:///app.db#x", {}, "fragment", id="fragment"),
        pytest.param("sqlite:///app.db?readers=many", {}, "readers='many'", id="bad-int"),
        pytest.param("sqlite:///app.db?readers=0", {}, "readers must be at least 1", id="zero"),
        pytest.param("sqlite:///app.db?mode=memory", {}, "mode='memory': not an option", id="mode"),
        pytest.param("sqlite:///app.db?path=x.db", {}, "path='x.db': not an option", id="path"),
        pytest.param("sqlite:///app.db?readers=1&readers=2", {}, "given twice", id="twice"),
        pytest.param(
            "sqlite:///app.db?readers=2", {"readers": 3}, "both in the URL's query", id="both"
        ),
        pytest.param("sqlite:///app.db", {"path": "b.db"}, "not an option: path", id="opt-path"),
        pytest.param("sqlite:///app.db", {"colour": 1}, "not an option: colour", id="opt-unknown"),
        pytest.param("sqlite:///app.db", {"readers": "8"}, "readers must be an int", id="opt-str"),
    ],
)
def test_a_url_the_library_refuses_is_a_config_error_saying_why(
    in_tmp: Path, url: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        DatabaseConfig.from_url(url, **options)
    assert "secret" not in str(caught.value)
    assert list(in_tmp.iterdir()) == []


def test_sql_config_from_url_is_mvp_mode(tmp_path: Path) -> None:
    config = SqlConfig.from_url(f"sqlite:///{tmp_path}/one.db?readers=2", busy_timeout=1.0)
    assert config.mode == "mvp"
    assert config.app == DatabaseConfig(path=tmp_path / "one.db", readers=2, busy_timeout=1.0)


def test_from_env_reads_async_store_url(tmp_path: Path) -> None:
    config = SqlConfig.from_env(
        {"ASYNC_STORE_URL": f"sqlite:///{tmp_path}/env.db?readers=3", "ASYNC_STORE_MODE": "mvp"}
    )
    assert config.mode == "mvp"
    assert config.app.path == tmp_path / "env.db"
    assert config.app.readers == 3
    with_fields = SqlConfig.from_env(
        {"ASYNC_STORE_URL": f"sqlite:///{tmp_path}/env.db", "ASYNC_STORE_BUSY_TIMEOUT": "2"}
    )
    assert with_fields.app.busy_timeout == 2.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"ASYNC_STORE_URL": "postgresql://u:secret@h/db"}, "'postgresql'", id="postgresql"
        ),
        pytest.param({"ASYNC_STORE_URL": "sqlite://"}, "in-memory", id="memory"),
        pytest.param(
            {"ASYNC_STORE_URL": "sqlite:///a.db", "ASYNC_STORE_DATA": "data"},
            "unset ASYNC_STORE_DATA",
            id="with-data",
        ),
        pytest.param(
            {"ASYNC_STORE_URL": "sqlite:///a.db", "ASYNC_STORE_MODE": "production"},
            "unset ASYNC_STORE_MODE=production",
            id="production",
        ),
        pytest.param(
            {"ASYNC_STORE_URL": "sqlite:///a.db?readers=2", "ASYNC_STORE_READERS": "3"},
            "readers given both",
            id="twice",
        ),
        pytest.param(
            {"ASYNC_STORE_URL": "sqlite:///a.db", "ASYNC_STORE_READERS": "x"},
            "ASYNC_STORE_READERS='x'",
            id="bad-variable",
        ),
    ],
)
def test_from_env_refuses_a_url_it_cannot_use(
    in_tmp: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        SqlConfig.from_env(env)
    assert "secret" not in str(caught.value)


async def test_database_from_a_url_opens_the_file(in_tmp: Path) -> None:
    async with Database("sqlite:///data/app.db", readers=2) as db:
        assert isinstance(db, SqliteDatabase)
        assert db.config == DatabaseConfig(path=Path("data/app.db"), readers=2)
        await db.execute("CREATE TABLE t(x)")
        await db.execute("INSERT INTO t VALUES (1)")
    assert (in_tmp / "data" / "app.db").exists()
    async with Database(f"sqlite+aiosqlite:///{os.fspath(in_tmp)}/data/app.db") as db:
        assert await db.fetch_val("SELECT x FROM t") == 1


async def test_database_from_a_config_with_options(tmp_path: Path) -> None:
    config = DatabaseConfig(path=tmp_path / "a.db")
    assert SqliteDatabase(config).config is config
    assert Database(config, readers=1).config == config.replace(readers=1)
    with pytest.raises(ConfigError, match="colour not a field"):
        Database(config, colour=1)


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        pytest.param(b"sqlite:///a.db", "not bytes", id="bytes"),
        pytest.param(None, "not NoneType", id="none"),
        pytest.param("postgresql://h/db", "the scheme 'postgresql'", id="postgresql"),
        pytest.param("sqlite://", "in-memory", id="memory"),
    ],
)
def test_database_from_something_else_is_a_config_error(subject: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Database(subject)  # type: ignore[arg-type]


async def test_a_service_on_a_url(tmp_path: Path) -> None:
    async with SqlService(SqlConfig.from_url(f"sqlite:///{tmp_path}/svc.db")) as sql:
        assert sql.app is sql.events
        await sql.app.execute("INSERT INTO settings(key, value) VALUES ('k', '1')")
    assert (tmp_path / "svc.db").exists()
