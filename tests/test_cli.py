"""The ``async-store`` command line: output, JSON, and exit codes scripts rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from async_store.cli import main


def test_status_then_migrate_then_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert main(["status", "--data", data, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert [(s["migration_set"], s["applied"]) for s in before] == [
        ("app_meta", False),
        ("events", False),
        ("events", False),
    ]
    assert main(["migrate", "--data", data]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "applied app_meta 0001_initial",
        "applied events 0001_initial",
        "applied events 0002_hash_length_check",
    ]
    assert main(["migrate", "--data", data]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["status", "--data", data]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all("applied 20" in line for line in lines)


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
