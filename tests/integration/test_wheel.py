"""The SQL migrations ship inside the wheel: build it, install it into a fresh virtual
environment, and start the service from another directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

CHECK = textwrap.dedent(
    """
    import asyncio, pathlib, sys
    import async_store
    from async_store import SqlConfig, SqlService

    async def main():
        async with SqlService(SqlConfig.in_directory(sys.argv[1])) as sql:
            rows = await sql.app.fetch_all("SELECT migration_set, version FROM schema_migrations")
            events = await sql.events.fetch_all(
                "SELECT migration_set, max(version) FROM schema_migrations"
            )
        print(pathlib.Path(async_store.__file__).resolve())
        print(sorted(tuple(r) for r in rows), [tuple(r) for r in events])

    asyncio.run(main())
    """
)


def test_the_wheel_carries_the_migrations_and_starts_elsewhere(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("async_store-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "async_store/sql/sqlite/app_meta/0001_initial/up.sql" in names
    assert "async_store/sql/sqlite/events/0001_initial/down.sql" in names
    assert "async_store/py.typed" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [str(python), "-c", CHECK, str(tmp_path / "data")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    location, tables = done.stdout.strip().splitlines()
    assert location.startswith(str(venv))
    assert tables == "[('app_meta', 1)] [('events', 2)]"
