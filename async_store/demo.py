"""The main job: ``async-store demo`` (``make demo``) runs the library on a data directory and
shows what it does."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TextIO

from .config import SqlConfig
from .service import SqlService
from .statistics import PoolStatistics

__all__ = ["run_demo"]

DEFAULT_DATA = Path("data")


async def run_demo(data: Path = DEFAULT_DATA, *, out: TextIO) -> None:
    """Open the service in production mode on ``data``, write and read through the pools, and
    print what happened. Safe to run again on the same directory."""

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    config = SqlConfig.in_directory(data)
    started = time.perf_counter()
    async with SqlService(config) as sql:
        say(f"opened {config.app.path} and {config.events.path if config.events else '-'}")
        say(f"  start-up with migrations: {(time.perf_counter() - started) * 1000:.1f} ms")
        status = await sql.migration_status()
        for item in status:
            mark = "applied" if item.applied else "pending"
            say(f"  migration {item.migration_set} {item.version:04d}_{item.name}: {mark}")

        app = sql.app
        await app.execute(
            "INSERT INTO settings(key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            ("theme", json.dumps("dark")),
        )
        runs = await app.fetch_val("SELECT value FROM settings WHERE key = 'demo.runs'")
        runs = (json.loads(runs) if runs is not None else 0) + 1

        # 100 concurrent writers: the writer folds them into a few group commits.
        began = time.perf_counter()
        await asyncio.gather(
            *(
                app.execute(
                    "INSERT INTO knowledge_bases(id, name, description) VALUES (?, ?, ?)"
                    " ON CONFLICT(id) DO UPDATE SET description = excluded.description",
                    (f"kb-{i:03d}", f"Knowledge base {i}", f"written by demo run {runs}"),
                )
                for i in range(100)
            )
        )
        elapsed = time.perf_counter() - began
        say(f"wrote 100 knowledge bases from 100 concurrent tasks in {elapsed * 1000:.1f} ms")

        async with app.transaction() as tx:
            await tx.execute(
                "INSERT INTO settings(key, value) VALUES ('demo.runs', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (json.dumps(runs),),
            )
            total = await tx.fetch_val("SELECT count(*) FROM knowledge_bases")
        say(f"demo run #{runs}: {total} knowledge bases in app_meta")

        row = await app.fetch_one("SELECT id, name FROM knowledge_bases WHERE id = ?", ("kb-042",))
        if row is not None:
            say(f"read back {row['id']}: {row['name']!r}")
        theme = await app.fetch_val("SELECT value FROM settings WHERE key = 'theme'")
        say(f"setting theme = {json.loads(theme)}")

        say("pool statistics:")
        for database in sql.databases:
            say(_format_statistics(database.statistics()))


def _format_statistics(stats: PoolStatistics) -> str:
    return (
        f"  {stats.database}: readers {stats.readers_busy} busy / {stats.readers_idle} idle, "
        f"queue {stats.writer_queue_depth}, {stats.transactions} transactions in "
        f"{stats.batches} group commits (mean {stats.mean_batch_size:.1f}, largest "
        f"{stats.largest_batch}), busy retries {stats.busy_retries}, "
        f"acquire waits {stats.acquire_waits}"
    )
