"""The notes application of encode/databases' documentation, ported to async_store.

The port changed the import line and the ``Database(...)`` call: the queries are the same
SQLAlchemy Core statements, the same ``fetch_all``/``execute`` calls, the same rows
(``result["text"]``). Starlette 1.x has no ``on_startup``/``on_shutdown`` hooks any more, so
the database is connected in the lifespan, where the table is also created (the original
created it with a synchronous SQLAlchemy engine and ``metadata.create_all``).

Tests run it as databases' documentation advised: with ``force_rollback=True``, every write of
the test happens in one transaction rolled back when the database disconnects, so each test
starts from the same state (``tests/test_notes_example.py``).

Run it with ``DATABASE_URL=sqlite:///notes.db uvicorn examples.notes:app``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy
from sqlalchemy.schema import CreateTable
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from async_store import Database

__all__ = ["app", "create_app", "notes"]

metadata = sqlalchemy.MetaData()

notes = sqlalchemy.Table(
    "notes",
    metadata,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("text", sqlalchemy.String),
    sqlalchemy.Column("completed", sqlalchemy.Boolean),
)


def create_app(database: Database) -> Starlette:
    """The application, serving ``database``: ``GET /notes`` and ``POST /notes``."""

    async def list_notes(request: Request) -> JSONResponse:
        query = notes.select()
        results = await database.fetch_all(query)
        content = [{"text": result["text"], "completed": result["completed"]} for result in results]
        return JSONResponse(content)

    async def add_note(request: Request) -> JSONResponse:
        data = await request.json()
        query = notes.insert().values(text=data["text"], completed=data["completed"])
        await database.execute(query)
        return JSONResponse({"text": data["text"], "completed": data["completed"]})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await database.connect()
        try:
            await database.execute(CreateTable(notes, if_not_exists=True))
            yield
        finally:
            await database.disconnect()

    return Starlette(
        routes=[
            Route("/notes", endpoint=list_notes, methods=["GET"]),
            Route("/notes", endpoint=add_note, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def _app_from_env() -> Starlette:
    url = os.environ.get("DATABASE_URL", "sqlite:///notes.db")
    testing = os.environ.get("TESTING", "") == "1"
    return create_app(Database(url, force_rollback=testing))


app = _app_from_env()
"""The application ``uvicorn examples.notes:app`` serves: its database is ``DATABASE_URL``
(default ``sqlite:///notes.db``), rolled back at shutdown when ``TESTING=1``."""
