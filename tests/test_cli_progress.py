"""The command line's progress bar: drawn on standard error when it is a terminal (a real
pseudo-terminal here), never when it is a pipe or a file, and never on standard output."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli_operations import data_args

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


def run_with_terminal_stderr(*argv: str) -> tuple[int, str, str]:
    """Run ``python -m async_store ARGV`` with standard error on a pseudo-terminal and standard
    output on a pipe: its exit code, its output, and what the terminal showed."""
    primary, secondary = pty.openpty()
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "async_store", *argv],
            stdout=subprocess.PIPE,
            stderr=secondary,
            stdin=subprocess.DEVNULL,
        ) as process:
            os.close(secondary)
            secondary = -1
            shown = bytearray()
            while True:
                ready, _, _ = select.select([primary], [], [], 60)
                if not ready:
                    process.kill()
                    raise AssertionError(f"no output for 60 s; so far: {bytes(shown)!r}")
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # the terminal closed: the process has exited
                    break
                if not chunk:
                    break
                shown += chunk
            assert process.stdout is not None
            out = process.stdout.read().decode()
            code = process.wait(timeout=60)
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    return code, out, shown.decode(errors="replace")


def make_data(tmp_path: Path) -> list[str]:
    args = data_args(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "async_store", "migrate", *args],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return args


def test_backup_draws_its_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    args = make_data(tmp_path)
    code, out, shown = run_with_terminal_stderr("backup", *args, "--json")
    assert code == 0, shown
    assert "backup [" in shown
    assert shown.rstrip().endswith("100%")
    manifest = json.loads(out)  # standard output stays pure JSON
    assert len(manifest["files"]) == 2

    piped = subprocess.run(
        [sys.executable, "-m", "async_store", "backup", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "backup [" not in piped.stderr
    assert "%" not in piped.stderr


def test_restore_draws_its_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    args = make_data(tmp_path)
    backup = subprocess.run(
        [sys.executable, "-m", "async_store", "backup", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert backup.returncode == 0, backup.stderr
    directory = json.loads(backup.stdout)["directory"]

    code, out, shown = run_with_terminal_stderr("restore", directory, *args)
    assert code == 0, shown
    assert "restore [" in shown
    assert "100%" in shown
    assert "restore [" not in out

    piped = subprocess.run(
        [sys.executable, "-m", "async_store", "restore", directory, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "restore [" not in piped.stderr
