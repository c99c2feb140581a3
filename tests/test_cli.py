"""The ``async-store`` command line: output, JSON, and exit codes scripts rely on."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from async_store import ENV_PREFIX, SqlConfig
from async_store.cli import main
from async_store.demo import DEFAULT_DATA

ALL_MIGRATIONS = [
    ("app_meta", 1, "initial"),
    ("events", 1, "initial"),
    ("events", 2, "hash_length_check"),
]


def applied_in(*files: Path) -> list[tuple[str, int, str]]:
    """The migrations recorded in ``files``, read with plain sqlite3."""
    found: list[tuple[str, int, str]] = []
    for file in files:
        conn = sqlite3.connect(file)
        try:
            found += conn.execute(
                "SELECT migration_set, version, name FROM schema_migrations"
            ).fetchall()
        finally:
            conn.close()
    return sorted(found)


def test_status_on_a_new_directory_creates_and_migrates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["status", "--data", str(data), "--json"]) == 0
    captured = capsys.readouterr()
    status = json.loads(captured.out)
    assert [(s["migration_set"], s["version"], s["applied"]) for s in status] == [
        ("app_meta", 1, True),
        ("events", 1, True),
        ("events", 2, True),
    ]
    assert f"created and migrated {data / 'app_meta.db'}" in captured.err
    assert f"created and migrated {data / 'events.db'}" in captured.err
    assert applied_in(data / "app_meta.db", data / "events.db") == ALL_MIGRATIONS
    assert main(["migrate", "--data", str(data)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["status", "--data", str(data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all("applied 20" in line for line in lines)


def test_status_shows_what_is_pending_on_a_database_behind_without_applying_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert main(["migrate", "--data", data, "--target", "1", "--set", "events"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "applied app_meta 0001_initial",
        "applied events 0001_initial",
        "applied events 0002_hash_length_check",
        "reverted events 0002_hash_length_check",
    ]
    for _ in range(2):  # status itself applies nothing
        assert main(["status", "--data", data, "--json"]) == 0
        captured = capsys.readouterr()
        status = json.loads(captured.out)
        assert [(s["migration_set"], s["version"], s["applied"]) for s in status] == [
            ("app_meta", 1, True),
            ("events", 1, True),
            ("events", 2, False),
        ]
        assert captured.err == ""
    assert main(["migrate", "--data", data]) == 0
    assert capsys.readouterr().out.splitlines() == ["applied events 0002_hash_length_check"]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["status"], id="status"),
        pytest.param(["status", "--json"], id="status-json"),
        pytest.param(["migrate", "--target", "1"], id="migrate-target"),
        pytest.param(["health", "--json"], id="health"),
        pytest.param(["metrics"], id="metrics"),
        pytest.param(["backup", "--json"], id="backup"),
    ],
)
@pytest.mark.parametrize(
    "mvp", [pytest.param(False, id="production"), pytest.param(True, id="mvp")]
)
def test_every_command_creates_and_migrates_missing_databases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], mvp: bool
) -> None:
    data = tmp_path / "data"
    args = [*command, "--data", str(data), *(["--mvp"] if mvp else [])]
    assert main(args) == 0
    capsys.readouterr()
    files = [data / "app_meta.db"] if mvp else [data / "app_meta.db", data / "events.db"]
    assert sorted(p.name for p in data.glob("*.db")) == sorted(f.name for f in files)
    assert applied_in(*files) == ALL_MIGRATIONS


def test_status_creates_only_the_missing_file_and_leaves_the_other_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["migrate", "--data", str(data), "--target", "1", "--set", "events"]) == 0
    capsys.readouterr()
    (data / "app_meta.db").unlink()
    assert main(["status", "--data", str(data), "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == f"created and migrated {data / 'app_meta.db'}"
    applied = [(s["migration_set"], s["version"], s["applied"]) for s in json.loads(captured.out)]
    assert applied == [("app_meta", 1, True), ("events", 1, True), ("events", 2, False)]


def test_migrate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert main(["migrate", "--data", data, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "migrations": [
            {"action": "applied", "migration_set": s, "version": v, "name": n}
            for s, v, n in ALL_MIGRATIONS
        ]
    }
    assert main(["migrate", "--data", data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"migrations": []}
    assert main(["migrate", "--data", data, "--json", "--target", "0", "--set", "events"]) == 0
    assert json.loads(capsys.readouterr().out)["migrations"] == [
        {
            "action": "reverted",
            "migration_set": "events",
            "version": 2,
            "name": "hash_length_check",
        },
        {"action": "reverted", "migration_set": "events", "version": 1, "name": "initial"},
    ]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["demo"], id="demo"),
        pytest.param(["migrate"], id="migrate"),
        pytest.param(["status", "--json"], id="status"),
        pytest.param(["backup"], id="backup"),
        pytest.param(["restore", "some-backup"], id="restore"),
        pytest.param(["health"], id="health"),
        pytest.param(["metrics"], id="metrics"),
    ],
)
def test_mvp_without_data_is_a_usage_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main([*command, "--mvp"])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--mvp needs --data DIR" in captured.err
    assert "ASYNC_STORE_MODE=mvp" in captured.err
    assert list(tmp_path.iterdir()) == []


def clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_demo_without_data_uses_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_environment(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASYNC_STORE_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("ASYNC_STORE_MODE", "mvp")
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert f"open {tmp_path / 'env' / 'app_meta.db'} in MVP mode" in out
    assert "identical to before the restart" in out
    assert sorted(p.name for p in (tmp_path / "env").iterdir()) == ["app_meta.db", "backups"]
    assert not (tmp_path / "data").exists()
    assert applied_in(tmp_path / "env" / "app_meta.db") == ALL_MIGRATIONS


def test_demo_without_data_or_environment_uses_the_default_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_environment(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    assert f"open {DEFAULT_DATA}/ in production mode" in capsys.readouterr().out
    data = tmp_path / DEFAULT_DATA
    assert {"app_meta.db", "events.db", "backups"} <= {p.name for p in data.iterdir()}
    assert SqlConfig.from_env({}) == SqlConfig.in_directory(DEFAULT_DATA)


def test_demo_with_data_honours_mvp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_environment(monkeypatch)
    monkeypatch.setenv("ASYNC_STORE_MODE", "production")  # --data wins over the environment
    data = tmp_path / "mvp"
    assert main(["demo", "--data", str(data), "--mvp"]) == 0
    out = capsys.readouterr().out
    assert "in MVP mode" in out
    assert "status ok" in out
    assert not (data / "events.db").exists()
    assert applied_in(data / "app_meta.db") == ALL_MIGRATIONS


def test_migrate_down_to_a_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path)
    assert main(["migrate", "--data", data, "--mvp"]) == 0
    capsys.readouterr()
    assert main(["migrate", "--data", data, "--mvp", "--target", "0", "--set", "events"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "reverted events 0002_hash_length_check",
        "reverted events 0001_initial",
    ]
    assert main(["status", "--data", data, "--mvp", "--json"]) == 0
    status = {s["migration_set"]: s["applied"] for s in json.loads(capsys.readouterr().out)}
    assert status == {"app_meta": True, "events": False}


def test_a_failure_exits_1_with_the_reason_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--data", str(tmp_path), "--target", "7"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot migrate to 7" in captured.err


def test_wrong_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["migrate", "--target", "seven"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_configuration_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ASYNC_STORE_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("ASYNC_STORE_MODE", "mvp")
    assert main(["migrate"]) == 0
    assert (tmp_path / "env" / "app_meta.db").exists()
    assert not (tmp_path / "env" / "events.db").exists()


def test_python_dash_m_with_json_keeps_stdout_pure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "async_store", "status", "--data", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), list)
