"""A small JSON web service over async_store: knowledge bases and their documents.

It shows how an asyncio application uses the library:

* the service and the state manager are opened once, in the ASGI lifespan, and closed on
  shutdown (``async with`` both);
* knowledge bases live in the application state: the list is read from
  ``StateManager.read_state()`` with no database round trip, and changes go through
  ``StateManager.mutate`` as ``KnowledgeBaseAdd`` / ``KnowledgeBaseRemove`` deltas;
* documents and their chunks are high-volume rows written directly with
  ``DocumentRepository`` (idempotent ingest, keyset paging of chunks);
* every ``StoreError`` becomes a JSON error with a sensible HTTP status.

Run it with ``python -m examples.web_service --data DIR --port 8000`` (uvicorn, if installed),
or serve ``examples.web_service:app`` with any ASGI server. See ``examples/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import os
import re
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from async_store import (
    ConcurrencyError,
    DatabaseBusy,
    DatabaseFull,
    EntityExists,
    EntityInUse,
    EntityNotFound,
    IntegrityViolation,
    InvalidDelta,
    PoolClosed,
    PoolTimeout,
    SqlConfig,
    SqlService,
    StateManagerClosed,
    StateManagerFull,
    StoreError,
)
from async_store.repositories import DocumentRepository
from async_store.state import KnowledgeBase, KnowledgeBaseAdd, KnowledgeBaseRemove, StateManager

__all__ = ["app", "app_from_env", "create_app", "main", "split_text"]

log = logging.getLogger("examples.web_service")

CHUNK_CHARS = 500
"""Longest chunk :func:`split_text` makes, in characters."""
MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body accepted (Starlette answers 413 beyond it)."""
PROJECTION_TIMEOUT = 10.0
"""Seconds a request waits for the app_meta tables to catch up with the state."""


def split_text(text: str, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Split ``text`` into chunks: paragraphs (separated by blank lines), each cut at word
    boundaries into pieces of at most ``max_chars`` characters. Whitespace inside a paragraph
    is collapsed to single spaces; blank paragraphs give no chunk."""
    chunks: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        chunks.extend(textwrap.wrap(paragraph, width=max_chars))
    return chunks


# -- the application -------------------------------------------------------------------------


def create_app(data_dir: Path, *, mvp: bool = False) -> Starlette:
    """The ASGI application, storing its data in ``data_dir``.

    Production mode keeps ``app_meta.db`` and ``events.db`` there; ``mvp=True`` one file,
    ``app_meta.db``. Nothing is opened until the server runs the lifespan.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The state manager is closed first (it drains its queue and waits for the
        # projection), then the service (it drains the writers and checkpoints).
        async with (
            SqlService(SqlConfig.in_directory(data_dir, mvp=mvp)) as sql,
            StateManager(sql) as state,
        ):
            app.state.sql = sql
            app.state.state = state
            app.state.documents = DocumentRepository(sql.app)
            yield

    return Starlette(
        routes=ROUTES,
        exception_handlers={HTTPException: _http_error, StoreError: _store_error},
        lifespan=lifespan,
        max_body_size=MAX_BODY_BYTES,
    )


def app_from_env() -> Starlette:
    """:func:`create_app` configured by the environment: the data directory from
    ``ASYNC_STORE_DATA`` (default ``data``), the mode from ``ASYNC_STORE_MODE`` (``production``,
    the default, or ``mvp``)."""
    data = Path(os.environ.get("ASYNC_STORE_DATA", "data"))
    return create_app(data, mvp=os.environ.get("ASYNC_STORE_MODE", "").lower() == "mvp")


# Starlette's app.state is untyped: these accessors give the handlers typed objects.


def _sql(request: Request) -> SqlService:
    sql: SqlService = request.app.state.sql
    return sql


def _state(request: Request) -> StateManager:
    state: StateManager = request.app.state.state
    return state


def _documents(request: Request) -> DocumentRepository:
    documents: DocumentRepository = request.app.state.documents
    return documents


# -- endpoints -------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    """``GET /health``: the service's health report; 503 when it is failing."""
    report = await _sql(request).health()
    status = 503 if report.status == "failing" else 200
    return JSONResponse(report.to_dict(), status_code=status)


async def list_knowledge_bases(request: Request) -> Response:
    """``GET /knowledge-bases``: every knowledge base with its document and chunk counts."""
    snapshot = _state(request).read_state()
    stats = {s.kb_id: s for s in await _documents(request).stats_all()}
    items = []
    for kb_id in sorted(snapshot.knowledge_bases):
        kb_stats = stats.get(kb_id)
        items.append(
            {
                **snapshot.knowledge_bases[kb_id].to_json(),
                "documents": kb_stats.documents if kb_stats else 0,
                "chunks": kb_stats.chunks if kb_stats else 0,
            }
        )
    return JSONResponse({"version": snapshot.version, "knowledge_bases": items})


async def create_knowledge_base(request: Request) -> Response:
    """``POST /knowledge-bases`` with ``{"id", "name", ...}``: 201, or 409 when the id is taken,
    422 when a field is invalid."""
    body = await _json_object(request)
    for key in ("id", "name"):
        if not isinstance(body.get(key), str):
            raise HTTPException(422, f"{key!r} is required and must be a string")
    kb = KnowledgeBase.from_json(body)  # InvalidDelta (→ 422) for an unknown or invalid field
    state = _state(request)
    version = await state.mutate(KnowledgeBaseAdd(kb))  # EntityExists → 409, see below
    await _wait_for_projection(state)
    return JSONResponse({"id": kb.id, "version": version}, status_code=201)


async def delete_knowledge_base(request: Request) -> Response:
    """``DELETE /knowledge-bases/{kb_id}``: the knowledge base and its documents; 404 when it
    does not exist, 409 when another entity (a pipeline) still refers to it."""
    kb_id: str = request.path_params["kb_id"]
    state = _state(request)
    version = await state.mutate(KnowledgeBaseRemove(kb_id))  # EntityNotFound → 404
    await _wait_for_projection(state)
    return JSONResponse({"id": kb_id, "version": version})


async def ingest_document(request: Request) -> Response:
    """``POST /knowledge-bases/{kb_id}/documents`` with ``{"title", "content", "source_uri"?}``:
    201 when created; 200 when the same content was there already (``unchanged``, same id) or
    a document from the same ``source_uri`` was replaced (``replaced``)."""
    kb_id = _existing_kb(request)
    body = await _json_object(request)
    title, content = body.get("title"), body.get("content")
    source_uri = body.get("source_uri", "")
    if not isinstance(title, str) or not title:
        raise HTTPException(422, "'title' is required and must be a non-empty string")
    if not isinstance(content, str) or not content.strip():
        raise HTTPException(422, "'content' is required and must be a non-empty string")
    if not isinstance(source_uri, str):
        raise HTTPException(422, "'source_uri' must be a string")
    result = await _documents(request).ingest(
        kb_id, title=title, content=content, chunks=split_text(content), source_uri=source_uri
    )
    return JSONResponse(
        {"id": result.document_id, "outcome": result.outcome, "chunks": result.chunk_count},
        status_code=201 if result.outcome == "created" else 200,
    )


async def list_documents(request: Request) -> Response:
    """``GET /knowledge-bases/{kb_id}/documents?limit=100&offset=0``: newest first."""
    kb_id = _existing_kb(request)
    limit = _int_query(request, "limit", 100, low=1, high=1000)
    offset = _int_query(request, "offset", 0, low=0)
    documents = await _documents(request).list_documents(kb_id, limit=limit, offset=offset)
    return JSONResponse({"documents": [dataclasses.asdict(d) for d in documents]})


async def get_document(request: Request) -> Response:
    """``GET /documents/{doc_id}``: the document, with its ``chunk_count``; 404 if absent."""
    doc_id: str = request.path_params["doc_id"]
    document = await _documents(request).get(doc_id)
    if document is None:
        raise HTTPException(404, f"document {doc_id!r} does not exist")
    return JSONResponse(dataclasses.asdict(document))


async def delete_document(request: Request) -> Response:
    """``DELETE /documents/{doc_id}``: 204, or 404 if absent. Its chunks go with it."""
    doc_id: str = request.path_params["doc_id"]
    if not await _documents(request).delete(doc_id):
        raise HTTPException(404, f"document {doc_id!r} does not exist")
    return Response(status_code=204)


async def list_chunks(request: Request) -> Response:
    """``GET /knowledge-bases/{kb_id}/chunks?after=0&limit=100``: chunks with ids greater than
    ``after``, by id. Pass ``next_after`` back as ``after`` for the next page; it is ``null``
    on the last page. Keyset paging stays correct while documents are added."""
    kb_id = _existing_kb(request)
    after = _int_query(request, "after", 0, low=0)
    limit = _int_query(request, "limit", 100, low=1, high=1000)
    page = await _documents(request).chunk_page(kb_id, after=after, limit=limit)
    return JSONResponse(
        {
            "chunks": [dataclasses.asdict(c) for c in page],
            "next_after": page[-1].id if len(page) == limit else None,
        }
    )


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/knowledge-bases", list_knowledge_bases, methods=["GET"]),
    Route("/knowledge-bases", create_knowledge_base, methods=["POST"]),
    Route("/knowledge-bases/{kb_id}", delete_knowledge_base, methods=["DELETE"]),
    Route("/knowledge-bases/{kb_id}/documents", ingest_document, methods=["POST"]),
    Route("/knowledge-bases/{kb_id}/documents", list_documents, methods=["GET"]),
    Route("/knowledge-bases/{kb_id}/chunks", list_chunks, methods=["GET"]),
    Route("/documents/{doc_id}", get_document, methods=["GET"]),
    Route("/documents/{doc_id}", delete_document, methods=["DELETE"]),
]


# -- helpers ---------------------------------------------------------------------------------


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:  # json.JSONDecodeError, UnicodeDecodeError
        raise HTTPException(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the request body must be a JSON object")
    return body


def _int_query(
    request: Request, name: str, default: int, *, low: int, high: int | None = None
) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name!r} must be an integer, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise HTTPException(400, f"{name!r} must be {bounds}, not {value}")
    return value


def _existing_kb(request: Request) -> str:
    """The ``kb_id`` path parameter; 404 unless the state holds that knowledge base."""
    kb_id: str = request.path_params["kb_id"]
    if kb_id not in _state(request).read_state().knowledge_bases:
        raise HTTPException(404, f"knowledge base {kb_id!r} does not exist")
    return kb_id


async def _wait_for_projection(state: StateManager) -> None:
    # mutate() returns once the event is durable; the knowledge_bases table follows in the
    # background (the projector). Documents refer to its rows by foreign key, so a document
    # posted right after "201 Created" needs the row to be there.
    try:
        async with asyncio.timeout(PROJECTION_TIMEOUT):
            await state.flush()
    except TimeoutError:
        detail = f"the change is saved but not yet projected: {state.projection_error}"
        raise HTTPException(503, detail) from None


# -- errors ----------------------------------------------------------------------------------

# The most specific class first: the first match wins.
_STATUS_OF_ERROR: tuple[tuple[type[StoreError], int], ...] = (
    (EntityExists, 409),
    (EntityNotFound, 404),
    (EntityInUse, 409),
    (InvalidDelta, 422),
    (IntegrityViolation, 409),  # e.g. a document posted while its knowledge base is removed
    (ConcurrencyError, 409),
    (DatabaseFull, 507),
    (PoolTimeout, 503),
    (DatabaseBusy, 503),
    (StateManagerFull, 503),
    (PoolClosed, 503),
    (StateManagerClosed, 503),
)
"""The HTTP status for each kind of error, most specific first; any other one is a 500."""


def _error_response(status: int, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)


def _store_error(request: Request, exc: Exception) -> Response:
    status = next((s for kind, s in _STATUS_OF_ERROR if isinstance(exc, kind)), 500)
    if status >= 500:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error_response(status, exc)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": HTTPStatus(exc.status_code).phrase, "detail": exc.detail},
        status_code=exc.status_code,
        headers=exc.headers,
    )


# -- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m examples.web_service --data DIR [--mvp] [--host H] [--port N]``: serve the
    app with uvicorn when it is installed; otherwise say how to serve it with any ASGI server
    and return 1."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.web_service", description="Serve the example web service."
    )
    parser.add_argument("--data", type=Path, default=Path("data"), help="data directory")
    parser.add_argument("--mvp", action="store_true", help="one database file instead of two")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        # Imported by name: uvicorn is optional, not a dependency of async_store or its tests.
        uvicorn = importlib.import_module("uvicorn")
    except ImportError:
        mode = "mvp" if args.mvp else "production"
        env = f"ASYNC_STORE_DATA={args.data} ASYNC_STORE_MODE={mode}"
        print(
            "uvicorn is not installed. Install it (pip install uvicorn) and run this again,\n"
            "or serve the module's `app` with any ASGI server, for example:\n"
            f"  {env} hypercorn --bind {args.host}:{args.port} examples.web_service:app\n"
            f"  {env} granian --interface asgi --port {args.port} examples.web_service:app",
            file=sys.stderr,
        )
        return 1
    uvicorn.run(create_app(args.data, mvp=args.mvp), host=args.host, port=args.port)
    return 0


app = app_from_env()
"""For ASGI servers given ``examples.web_service:app``; nothing is opened until the lifespan."""

if __name__ == "__main__":
    sys.exit(main())
