"""Several OS processes starting at once on fresh files: each migration is applied exactly once
and every process starts."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

STARTER = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from async_store import SqlConfig, SqlService

    data, go = sys.argv[1], sys.argv[2]
    while not os.path.exists(go):
        time.sleep(0.001)

    async def main():
        config = SqlConfig.in_directory(data, mvp=sys.argv[3] == "mvp")
        async with SqlService(config, migrate=False) as sql:
            done = await sql.migrate()
            count = await sql.app.fetch_val("SELECT count(*) FROM knowledge_bases")
        print(json.dumps({"applied": done, "count": count}))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("mode", ["production", "mvp"])
@pytest.mark.parametrize("round_", range(3))
def test_four_processes_start_at_once(tmp_path: Path, mode: str, round_: int) -> None:
    data, go = tmp_path / "data", tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(data), str(go), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(0.3)  # let every interpreter reach the starting line
    go.touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    applied = sorted(label for result in results for label in result["applied"])
    assert applied == [
        "applied app_meta 0001_initial",
        "applied events 0001_initial",
        "applied events 0002_hash_length_check",
    ]
    assert all(result["count"] == 0 for result in results)
    files = [data / "app_meta.db"] + ([data / "events.db"] if mode == "production" else [])
    rows = []
    for file in files:
        conn = sqlite3.connect(file)
        rows += conn.execute("SELECT migration_set, version FROM schema_migrations").fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    assert sorted(rows) == [("app_meta", 1), ("events", 1), ("events", 2)]
