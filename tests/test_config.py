from __future__ import annotations

import os
from pathlib import Path

import pytest

from async_store import ConfigError, DatabaseConfig, SqlConfig


def test_mvp_is_one_database_at_normal(tmp_path: Path) -> None:
    config = SqlConfig.mvp(tmp_path / "app.db")
    assert config.mode == "mvp"
    assert config.events is None
    assert config.app.synchronous == "NORMAL"
    assert config.databases == (config.app,)


def test_production_puts_events_at_full(tmp_path: Path) -> None:
    config = SqlConfig.production(str(tmp_path / "a.db"), tmp_path / "e.db", readers=2)
    assert config.mode == "production"
    assert config.events is not None
    assert (config.app.synchronous, config.events.synchronous) == ("NORMAL", "FULL")
    assert (config.app.name, config.events.name) == ("app_meta", "events")
    assert config.app.readers == config.events.readers == 2
    assert isinstance(config.app.path, Path)


def test_production_refuses_one_file_for_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="two files"):
        SqlConfig.production(tmp_path / "x.db", tmp_path / "x.db")


def test_in_directory(tmp_path: Path) -> None:
    production = SqlConfig.in_directory(tmp_path)
    assert production.app.path == tmp_path / "app_meta.db"
    assert production.events is not None
    assert production.events.path == tmp_path / "events.db"
    assert SqlConfig.in_directory(tmp_path, mvp=True).events is None


def test_frozen_and_keyword_only(tmp_path: Path) -> None:
    config = DatabaseConfig(path=tmp_path / "a.db")
    with pytest.raises(AttributeError):
        config.readers = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        DatabaseConfig(tmp_path / "a.db")  # type: ignore[call-arg]
    assert config.replace(readers=3).readers == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"readers": 0}, "readers must be at least 1", id="zero-readers"),
        pytest.param({"busy_timeout": -1}, "busy_timeout", id="negative-busy-timeout"),
        pytest.param({"acquire_timeout": -0.5}, "acquire_timeout", id="negative-acquire"),
        pytest.param({"writer_hold_warning": -1}, "writer_hold_warning", id="negative-hold"),
        pytest.param({"transaction_timeout": 0}, "transaction_timeout", id="zero-tx-timeout"),
        pytest.param(
            {"transaction_timeout": float("nan")}, "transaction_timeout", id="nan-tx-timeout"
        ),
        pytest.param({"transaction_timeout": True}, "transaction_timeout", id="bool-tx-timeout"),
        pytest.param({"max_batch_size": 0}, "max_batch_size", id="empty-batch"),
        pytest.param({"synchronous": "SOMETIMES"}, "synchronous must be one of", id="sync"),
        pytest.param({"mmap_size": -1}, "mmap_size", id="negative-mmap"),
        pytest.param({"busy_retries": -1}, "busy_retries", id="negative-retries"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        DatabaseConfig(path=tmp_path / "a.db", **options)  # type: ignore[arg-type]


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="readers"):
        DatabaseConfig(path=tmp_path / "a.db", readers=0)


def test_directory_under_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="is not a directory"):
        DatabaseConfig(path=blocker / "sub" / "a.db")
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_directory_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="not writable"):
        DatabaseConfig(path=locked / "a.db")


def test_path_that_is_a_directory_or_memory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        DatabaseConfig(path=tmp_path)
    with pytest.raises(ConfigError, match="in-memory"):
        DatabaseConfig(path=":memory:")  # type: ignore[arg-type]


def test_validation_creates_nothing(tmp_path: Path) -> None:
    DatabaseConfig(path=tmp_path / "deep" / "er" / "a.db")
    assert not (tmp_path / "deep").exists()


def test_from_env_production_defaults(tmp_path: Path) -> None:
    config = SqlConfig.from_env({"ASYNC_STORE_DATA": str(tmp_path)})
    assert config.mode == "production"
    assert config.app.path == tmp_path / "app_meta.db"
    assert config.events is not None
    assert config.events.path == tmp_path / "events.db"


def test_from_env_reads_every_documented_field(tmp_path: Path) -> None:
    env = {
        "ASYNC_STORE_MODE": "mvp",
        "ASYNC_STORE_APP_PATH": str(tmp_path / "one.db"),
        "ASYNC_STORE_READERS": "7",
        "ASYNC_STORE_BUSY_TIMEOUT": "1.5",
        "ASYNC_STORE_BUSY_RETRIES": "2",
        "ASYNC_STORE_CACHE_SIZE_KIB": "1024",
        "ASYNC_STORE_MMAP_SIZE": "0",
        "ASYNC_STORE_WAL_AUTOCHECKPOINT": "500",
        "ASYNC_STORE_JOURNAL_SIZE_LIMIT": "1048576",
        "ASYNC_STORE_ACQUIRE_TIMEOUT": "3",
        "ASYNC_STORE_MAX_BATCH_SIZE": "64",
        "ASYNC_STORE_TRANSACTION_TIMEOUT": "0.01",
    }
    config = SqlConfig.from_env(env)
    app = config.app
    assert config.mode == "mvp"
    assert app.path == tmp_path / "one.db"
    assert (app.readers, app.busy_timeout, app.busy_retries) == (7, 1.5, 2)
    assert (app.cache_size_kib, app.wal_autocheckpoint, app.journal_size_limit) == (
        1024,
        500,
        1048576,
    )
    assert (app.acquire_timeout, app.max_batch_size, app.transaction_timeout) == (3.0, 64, 0.01)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"ASYNC_STORE_READERS": "many"}, "ASYNC_STORE_READERS", id="not-a-number"),
        pytest.param({"ASYNC_STORE_READERS": "0"}, "readers must be at least 1", id="zero"),
        pytest.param({"ASYNC_STORE_MODE": "cluster"}, "ASYNC_STORE_MODE", id="mode"),
    ],
)
def test_from_env_errors_name_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SqlConfig.from_env({"ASYNC_STORE_DATA": str(tmp_path), **env})
