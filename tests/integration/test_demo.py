"""The main job end to end: ``python -m async_store demo`` in a subprocess, twice on the same
directory (the second run must be a no-op ingest and keep every entity)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def run_demo(data: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "async_store", "demo", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_the_demo_runs_twice_on_the_same_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run_demo(data)
    assert "added knowledge base 'kb-storage'" in first
    assert first.count(": created,") == 4
    assert "succeeded" in first
    assert "verified; event position" in first
    assert "undo -> ui.theme = None" in first
    assert "redo -> ui.theme = 'dark'" in first
    assert "identical to before the restart" in first
    assert "status ok" in first
    for kind in ("read", "write", "transaction", "append", "mutate"):
        assert f"   {kind} " in first

    second = run_demo(data)
    assert "exists already (kept)" in second
    assert second.count(": unchanged,") == 4
    assert ": created," not in second
    assert "identical to before the restart" in second

    conn = sqlite3.connect(data / "app_meta.db")
    try:
        assert conn.execute("SELECT count(*) FROM documents").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM pipeline_runs").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM knowledge_bases").fetchone()[0] == 2
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    assert len(list((data / "backups").glob("backup-*"))) == 2
