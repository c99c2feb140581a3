"""Typed repositories for the high-volume app_meta tables that do not live in the state, and
read access to every app_meta table.

Documents with their chunks live in ``_documents``, pipeline runs in ``_pipeline_runs``; this
module re-exports both and holds ``Catalog``, the read-only view of the tables the state manager
projects (knowledge bases, tools, pipelines, schedules, flows) and of the settings.

All SQL is parameterized; table names are constants of this module, never built from input.
"""

from __future__ import annotations

import json
from typing import Any

from ..database import Database
from ..errors import QueryError
from ._documents import (
    Chunk,
    ChunkInput,
    Document,
    DocumentRepository,
    IngestResult,
    KnowledgeBaseStats,
    content_hash,
    estimate_tokens,
)
from ._pipeline_runs import PipelineRun, PipelineRunRepository, RunStatus

__all__ = [
    "Catalog",
    "Chunk",
    "ChunkInput",
    "Document",
    "DocumentRepository",
    "IngestResult",
    "KnowledgeBaseStats",
    "PipelineRun",
    "PipelineRunRepository",
    "RunStatus",
    "content_hash",
    "estimate_tokens",
]


class Catalog:
    """Read access to the app_meta tables the state manager projects (for code that has a
    database but no state manager, and for reporting)."""

    _TABLES = ("knowledge_bases", "tools", "pipelines", "schedules", "flows")

    def __init__(self, database: Database) -> None:
        self._db = database

    async def rows(self, table: str, *, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        """Rows of one projected table, by id. ``table`` must be one of the known names."""
        if table not in self._TABLES:
            raise QueryError(f"unknown table {table!r}; one of {', '.join(self._TABLES)}")
        rows = await self._db.fetch_all(
            f"SELECT * FROM {table} ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
        )
        return [dict(zip(row.keys(), row, strict=True)) for row in rows]

    async def row(self, table: str, row_id: str) -> dict[str, Any] | None:
        """One row of a projected table by id, or None."""
        if table not in self._TABLES:
            raise QueryError(f"unknown table {table!r}; one of {', '.join(self._TABLES)}")
        row = await self._db.fetch_one(f"SELECT * FROM {table} WHERE id = ?", (row_id,))
        return None if row is None else dict(zip(row.keys(), row, strict=True))

    async def settings(self) -> dict[str, Any]:
        """Every setting, decoded from JSON."""
        rows = await self._db.fetch_all("SELECT key, value FROM settings ORDER BY key")
        return {row[0]: json.loads(row[1]) for row in rows}

    async def setting(self, key: str, default: Any = None) -> Any:
        """One setting, decoded from JSON (``default`` when absent)."""
        value = await self._db.fetch_val("SELECT value FROM settings WHERE key = ?", (key,))
        return default if value is None else json.loads(value)
