"""Pipeline runs in app_meta: ``PipelineRun``, its ``RunStatus``, and
``PipelineRunRepository`` (start, heartbeat, finish, fail or cancel, paging, stuck runs).
Re-exported by ``async_store.repositories``.

All SQL is parameterized; table and column names are constants of this module, never built from
input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .. import _ids
from .._checks import check_mapping, check_text
from .._clock import format_utc
from .._clock import utc_now as _now
from .._json import JsonInput, encode_json
from ..database import Database, Row
from ..errors import QueryError

__all__ = [
    "PipelineRun",
    "PipelineRunRepository",
    "RunStatus",
]

RunStatus = Literal["running", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """A row of ``pipeline_runs``."""

    id: str
    pipeline_id: str
    status: RunStatus
    started_at: str
    finished_at: str | None
    stats: dict[str, Any]
    error: str | None
    heartbeat_at: str | None


_RUN_COLUMNS = "id, pipeline_id, status, started_at, finished_at, stats, error, heartbeat_at"


def _run(row: Row) -> PipelineRun:
    return PipelineRun(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7])


class PipelineRunRepository:
    """Runs of pipelines: started, then finished, failed or cancelled, with stats."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def start(self, pipeline_id: str, *, run_id: str | None = None) -> PipelineRun:
        """Record a run as started (``running``) now. The pipeline must exist."""
        check_text(pipeline_id, "pipeline_id")
        if run_id is not None:
            check_text(run_id, "run_id")
        now = _now()
        run = PipelineRun(run_id or _ids.new_id(), pipeline_id, "running", now, None, {}, None, now)
        await self._db.execute(
            "INSERT INTO pipeline_runs(id, pipeline_id, status, started_at, stats, heartbeat_at)"
            " VALUES (?, ?, 'running', ?, '{}', ?)",
            (run.id, pipeline_id, now, now),
        )
        return run

    async def heartbeat(self, run_id: str) -> None:
        """Mark a running run as alive (stuck-run detection looks at the newest heartbeat)."""
        await self._db.execute(
            "UPDATE pipeline_runs SET heartbeat_at = ? WHERE id = ? AND status = 'running'",
            (_now(), run_id),
        )

    async def finish(
        self, run_id: str, *, stats: Mapping[str, JsonInput] | None = None
    ) -> PipelineRun:
        """Mark a running run ``succeeded`` with its stats."""
        return await self._end(run_id, "succeeded", stats, None)

    async def fail(
        self, run_id: str, error: str, *, stats: Mapping[str, JsonInput] | None = None
    ) -> PipelineRun:
        """Mark a running run ``failed`` with the error."""
        return await self._end(run_id, "failed", stats, error)

    async def cancel(self, run_id: str) -> PipelineRun:
        """Mark a running run ``cancelled``."""
        return await self._end(run_id, "cancelled", None, None)

    async def _end(
        self,
        run_id: str,
        status: RunStatus,
        stats: Mapping[str, JsonInput] | None,
        error: str | None,
    ) -> PipelineRun:
        check_text(run_id, "run_id")
        stats_text = encode_json(dict(check_mapping(stats, "stats")), f"stats of run {run_id}")

        async with self._db.transaction() as tx:
            # execute_many() answers the number of rows changed (execute() does only for an
            # INSERT).
            changed = await tx.execute_many(
                "UPDATE pipeline_runs SET status = ?, finished_at = ?, stats = ?, error = ?"
                " WHERE id = ? AND status = 'running'",
                [(status, _now(), stats_text, error, run_id)],
            )
            row = await tx.fetch_one(
                f"SELECT {_RUN_COLUMNS} FROM pipeline_runs WHERE id = ?", (run_id,)
            )
            if row is None:
                raise QueryError(f"pipeline run {run_id!r} does not exist")
            if not changed:
                raise QueryError(f"pipeline run {run_id!r} is {row[2]}, not running")
            return _run(row)

    async def get(self, run_id: str) -> PipelineRun | None:
        """The run with this id, or None."""
        row = await self._db.fetch_one(
            f"SELECT {_RUN_COLUMNS} FROM pipeline_runs WHERE id = ?", (run_id,)
        )
        return None if row is None else _run(row)

    async def list_for_pipeline(
        self, pipeline_id: str, *, limit: int = 50, before: PipelineRun | None = None
    ) -> list[PipelineRun]:
        """A pipeline's runs, newest first. Pass the last run of a page as ``before`` for the
        next page: the cursor is (started_at, id), so runs that started in the same clock tick
        are neither skipped nor repeated."""
        if before is None:
            rows = await self._db.fetch_all(
                f"SELECT {_RUN_COLUMNS} FROM pipeline_runs WHERE pipeline_id = ?"
                " ORDER BY started_at DESC, id DESC LIMIT ?",
                (pipeline_id, limit),
            )
        else:
            rows = await self._db.fetch_all(
                f"SELECT {_RUN_COLUMNS} FROM pipeline_runs WHERE pipeline_id = ?"
                " AND (started_at, id) < (?, ?) ORDER BY started_at DESC, id DESC LIMIT ?",
                (pipeline_id, before.started_at, before.id, limit),
            )
        return [_run(row) for row in rows]

    async def stuck(
        self, *, silent_for: float = 0.0, now: datetime | None = None
    ) -> list[PipelineRun]:
        """Runs still ``running`` whose last heartbeat (or start) is older than ``silent_for``
        seconds: after a crash, the runs nobody will finish."""
        moment = now or datetime.now(UTC)
        if moment.tzinfo is None:
            raise QueryError("now must be timezone-aware (run times are stored in UTC)")
        cutoff = format_utc(moment - timedelta(seconds=silent_for))
        rows = await self._db.fetch_all(
            f"SELECT {_RUN_COLUMNS} FROM pipeline_runs WHERE status = 'running'"
            " AND coalesce(heartbeat_at, started_at) <= ? ORDER BY started_at",
            (cutoff,),
        )
        return [_run(row) for row in rows]
