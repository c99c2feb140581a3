"""The operational commands of ``async-store``: backup, verify, restore, health and metrics —
their output, JSON purity and exit codes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import async_store.health.probe as health_module
from async_store import SqlConfig, SqlService
from async_store.cli import main
from tests.test_backup import held_open
from tests.test_health import parse_prometheus


def data_args(tmp_path: Path, *, mvp: bool = False) -> list[str]:
    return ["--data", str(tmp_path / "data"), *(["--mvp"] if mvp else [])]


def take_backup(tmp_path: Path, capsys: pytest.CaptureFixture[str], *, mvp: bool = False) -> Path:
    assert main(["backup", *data_args(tmp_path, mvp=mvp), "--json"]) == 0
    return Path(json.loads(capsys.readouterr().out)["directory"])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("mvp", "files"),
    [
        pytest.param(False, ["app_meta.db", "events.db"], id="production"),
        pytest.param(True, ["app_meta.db"], id="mvp"),
    ],
)
def test_backup_json_prints_only_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mvp: bool, files: list[str]
) -> None:
    assert main(["backup", *data_args(tmp_path, mvp=mvp), "--json"]) == 0
    out = capsys.readouterr().out
    manifest = json.loads(out)  # stdout is JSON and nothing else
    directory = Path(manifest["directory"])
    assert directory.parent == tmp_path / "data" / "backups"
    assert manifest["mode"] == ("mvp" if mvp else "production")
    assert [item["name"] for item in manifest["files"]] == files
    for item in manifest["files"]:
        assert digest(directory / item["name"]) == item["sha256"]
    assert (directory / "manifest.json").exists()


def test_backup_to_a_chosen_folder_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "elsewhere"
    assert main(["backup", *data_args(tmp_path), "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    (folder,) = dest.iterdir()
    assert out.startswith(f"backup {folder} (production")
    assert "app_meta.db:" in out
    assert "events.db:" in out


def test_verify_exits_0_on_a_good_backup_and_1_on_a_corrupted_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = take_backup(tmp_path, capsys)
    assert main(["verify", str(backup)]) == 0
    assert capsys.readouterr().out.startswith("ok: backup ")
    assert main(["verify", str(backup), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["directory"] == str(backup)

    copy = backup / "app_meta.db"
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert main(["verify", str(backup), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "app_meta.db" in captured.err
    assert "sha256" in captured.err


def test_verify_of_a_folder_without_manifest_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["verify", str(tmp_path / "empty")]) == 1
    assert "manifest" in capsys.readouterr().err


def test_restore_exits_1_while_another_process_holds_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = take_backup(tmp_path, capsys)
    app = tmp_path / "data" / "app_meta.db"
    before = digest(app)
    with held_open(app):
        assert main(["restore", *data_args(tmp_path), str(backup)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "open in another process" in captured.err
    assert "nothing was replaced" in captured.err
    assert digest(app) == before
    assert list((tmp_path / "data").glob("replaced-*")) == []


def test_restore_exits_0_and_brings_the_backup_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = take_backup(tmp_path, capsys)
    app = tmp_path / "data" / "app_meta.db"
    conn = sqlite3.connect(app)
    conn.execute("INSERT INTO settings(key, value) VALUES ('after', '1')")
    conn.commit()
    conn.close()

    assert main(["restore", *data_args(tmp_path), str(backup)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"restored {backup}")
    (aside,) = (tmp_path / "data").glob("replaced-*")
    assert str(aside) in out
    conn = sqlite3.connect(app)
    try:
        assert conn.execute("SELECT count(*) FROM settings WHERE key = 'after'").fetchone() == (0,)
    finally:
        conn.close()


def backup_behind_the_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *, mvp: bool
) -> Path:
    """A backup of databases one migration behind the code: events walked down to version 1,
    then backed up by a service that does not migrate on open."""
    args = data_args(tmp_path, mvp=mvp)
    assert main(["migrate", *args, "--target", "1", "--set", "events"]) == 0
    capsys.readouterr()

    async def backup() -> Path:
        config = SqlConfig.in_directory(tmp_path / "data", mvp=mvp)
        async with SqlService(config, migrate=False) as sql:
            return (await sql.backup(tmp_path / "backups")).directory

    directory = asyncio.run(backup())
    assert main(["migrate", *args]) == 0  # the live data moves on to the current schema
    assert capsys.readouterr().out.splitlines() == ["applied events 0002_hash_length_check"]
    return directory


@pytest.mark.parametrize(
    "mvp", [pytest.param(False, id="production"), pytest.param(True, id="mvp")]
)
def test_restore_lists_the_migrations_applied_to_an_older_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mvp: bool
) -> None:
    backup = backup_behind_the_code(tmp_path, capsys, mvp=mvp)
    assert main(["restore", *data_args(tmp_path, mvp=mvp), str(backup)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"restored {backup}; the replaced files are in ")
    assert lines[1:] == ["applied events 0002_hash_length_check"]
    assert main(["status", *data_args(tmp_path, mvp=mvp), "--json"]) == 0
    assert all(item["applied"] for item in json.loads(capsys.readouterr().out))


def test_restore_json_reports_the_migrations_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = backup_behind_the_code(tmp_path, capsys, mvp=False)
    assert main(["restore", *data_args(tmp_path), str(backup), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (aside,) = (tmp_path / "data").glob("replaced-*")
    assert report == {
        "restored": str(backup),
        "replaced": str(aside),
        "migrations": [
            {
                "action": "applied",
                "migration_set": "events",
                "version": 2,
                "name": "hash_length_check",
            }
        ],
    }


def test_restore_of_a_current_backup_applies_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = take_backup(tmp_path, capsys)
    assert main(["restore", *data_args(tmp_path), str(backup), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["migrations"] == []
    assert main(["restore", *data_args(tmp_path), str(backup)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "the backup's schema is current: no migration applied"


def test_health_json_exits_0_when_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", *data_args(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "ok"
    assert set(report["databases"]) == {"app_meta", "events"}
    assert report["databases"]["events"]["synchronous"] == "FULL"


def test_health_exits_3_when_degraded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No free-space threshold the disk can meet: the low-disk rule fires.
    monkeypatch.setattr(health_module, "LOW_DISK_BYTES", 10**18)
    assert main(["health", *data_args(tmp_path), "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "degraded"
    assert any("free" in reason for reason in report["reasons"])
    assert main(["health", *data_args(tmp_path)]) == 3
    out = capsys.readouterr().out
    assert out.startswith("status: degraded")


def test_health_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", *data_args(tmp_path, mvp=True)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "status: ok"
    assert any(line.startswith("app_meta: ") and "journal wal" in line for line in lines)


def test_metrics_prints_prometheus_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", *data_args(tmp_path)]) == 0
    samples = parse_prometheus(capsys.readouterr().out)
    assert samples[("async_store_status", "")] == 0
    assert ("async_store_latency_seconds", '{operation="read",quantile="0.99"}') in samples


def test_python_dash_m_backup_json_keeps_stdout_pure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "async_store", "backup", *data_args(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert len(manifest["files"]) == 2
    assert Path(manifest["directory"], "manifest.json").exists()
