"""Documents of a knowledge base and their chunks in app_meta: the values (``Document``,
``Chunk``, ``ChunkInput``, ``IngestResult``, ``KnowledgeBaseStats``), ``DocumentRepository``,
and the content hash and token estimate that ingest uses. Re-exported by
``async_store.repositories``.

Written on the contract of ``async_store.database`` alone: ingest is one ``transaction()``
block, whose chunk rows go through the backend's bulk insert (``BulkInsert``, asked of the
backend package through ``backend_of``; on SQLite ``sqlite._bulk_insert``).

All SQL is parameterized; table and column names are constants of this module, never built from
input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from .. import _ids
from .._checks import check_int, check_mapping, check_sequence, check_text
from .._clock import utc_now as _now
from .._json import JsonInput, encode_json
from ..database import Database, Row, backend_of
from ..errors import QueryError

__all__ = [
    "Chunk",
    "ChunkInput",
    "Document",
    "DocumentRepository",
    "IngestResult",
    "KnowledgeBaseStats",
    "content_hash",
    "estimate_tokens",
]


def content_hash(data: str | bytes) -> str:
    """Lowercase hex SHA-256 of ``data`` (text is hashed as UTF-8). Raises :class:`QueryError`
    for text that is not valid UTF-8 (a lone surrogate)."""
    return _digest(data, "content")[0]


_SLICE = 1 << 16
"""Characters of a long text encoded at a time while hashing it: a buffer this size is reused
by the allocator, where encoding a document of megabytes whole maps fresh memory every time."""


def _digest(data: str | bytes, what: str) -> tuple[str, int]:
    """SHA-256 (hex) of ``data`` as UTF-8, and its size in bytes."""
    if not isinstance(data, str):
        return hashlib.sha256(data).hexdigest(), len(data)
    if len(data) <= _SLICE:
        raw = _utf8(data, what)
        return hashlib.sha256(raw).hexdigest(), len(raw)
    digest, size = hashlib.sha256(), 0
    for start in range(0, len(data), _SLICE):
        raw = _utf8(data[start : start + _SLICE], what, offset=start)
        digest.update(raw)
        size += len(raw)
    return digest.hexdigest(), size


def _utf8(text: str, what: str, *, offset: int = 0) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QueryError(
            f"{what} is not valid UTF-8 text: {exc.reason} at {offset + exc.start}"
        ) from None


@dataclass(frozen=True, slots=True)
class Document:
    """A row of ``documents``: one ingested file or text of a knowledge base."""

    id: str
    kb_id: str
    title: str
    source_uri: str
    mime_type: str
    content_hash: str
    size_bytes: int
    chunk_count: int
    status: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A row of ``document_chunks``; ``id`` is the paging cursor and never reused."""

    id: int
    document_id: str
    kb_id: str
    chunk_index: int
    content: str
    token_count: int
    content_hash: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """A chunk to ingest: its text and, optionally, metadata and a token count."""

    content: str
    metadata: Mapping[str, JsonInput] = field(default_factory=dict)
    token_count: int | None = None
    """Default: :func:`estimate_tokens` of the content."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What ``ingest`` did: ``created``, ``unchanged`` (same content) or ``replaced``."""

    document_id: str
    outcome: Literal["created", "unchanged", "replaced"]
    chunk_count: int


@dataclass(frozen=True, slots=True)
class KnowledgeBaseStats:
    """Documents, chunks and bytes of one knowledge base."""

    kb_id: str
    documents: int
    chunks: int
    bytes: int


_DOCUMENT_COLUMNS = (
    "id, kb_id, title, source_uri, mime_type, content_hash, size_bytes, chunk_count, status,"
    " metadata, created_at, updated_at"
)
_CHUNK_COLUMNS = "id, document_id, kb_id, chunk_index, content, token_count, content_hash, metadata"
_INSERT_CHUNK = (
    "INSERT INTO document_chunks(document_id, kb_id, chunk_index, content, token_count,"
    " content_hash, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class BulkInsert(Protocol):
    """What ingest asks of the database's backend package (:func:`backend_of`): its fastest way
    to write many rows of one INSERT (on SQLite, statements of many rows: a third faster than
    ``execute_many`` for a 10,000-chunk document)."""

    async def insert_rows(
        self, database: Database, statement: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        """Run ``statement``, an ``INSERT ... VALUES (?, ...)`` of one row, for each of
        ``rows``, in order, as one write of the current task's transaction: all or none."""


def _document(row: Row) -> Document:
    return Document(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        json.loads(row[9]),
        row[10],
        row[11],
    )


def _chunk(row: Row) -> Chunk:
    return Chunk(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]))


class DocumentRepository:
    """Documents and their chunks in app_meta."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._backend = cast("BulkInsert", backend_of(database))

    async def ingest(
        self,
        kb_id: str,
        *,
        title: str,
        content: str | bytes,
        chunks: Sequence[str | ChunkInput],
        source_uri: str = "",
        mime_type: str = "text/plain",
        metadata: Mapping[str, JsonInput] | None = None,
        document_id: str | None = None,
    ) -> IngestResult:
        """Store a document and its chunks in one transaction (inside a ``transaction()``
        block: in a savepoint of it).

        Idempotent on the content's SHA-256: when the knowledge base already holds identical
        content, nothing is written and the existing id is returned (``unchanged``). A document
        with the same ``document_id`` (or, without one, the same non-empty ``source_uri``) but
        other content is replaced: row updated, old chunks deleted and the new ones inserted,
        atomically (``replaced``). Otherwise a new document is created.
        """
        check_text(kb_id, "kb_id")
        check_text(title, "title")
        for value, what in ((source_uri, "source_uri"), (mime_type, "mime_type")):
            if not isinstance(value, str):
                raise QueryError(f"{what} must be a str, not a {type(value).__name__}")
        if not isinstance(content, str | bytes):
            raise QueryError(f"content must be str or bytes, not a {type(content).__name__}")
        chunks = check_sequence(chunks, "chunks")
        if document_id is not None:
            check_text(document_id, "document_id")
        digest, size = _digest(content, f"document {title!r}")
        meta = check_mapping(metadata, "metadata")
        meta_text = encode_json(dict(meta), f"metadata of document {title!r}")
        new_id = document_id or _ids.new_id()
        # Rows are built for a new document; a replaced one (rare) gets its id swapped in.
        prepared = _chunk_rows(new_id, kb_id, chunks)

        async with self._db.transaction() as tx:
            same = await tx.fetch_one(
                "SELECT id, chunk_count FROM documents WHERE kb_id = ? AND content_hash = ?",
                (kb_id, digest),
            )
            if same is not None:
                return IngestResult(same[0], "unchanged", same[1])
            if document_id is not None:
                existing = await tx.fetch_one(
                    "SELECT id FROM documents WHERE id = ? AND kb_id = ?", (document_id, kb_id)
                )
            elif source_uri:
                existing = await tx.fetch_one(
                    "SELECT id FROM documents WHERE kb_id = ? AND source_uri = ?"
                    " ORDER BY created_at LIMIT 1",
                    (kb_id, source_uri),
                )
            else:
                existing = None
            now = _now()
            if existing is not None:
                target = existing[0]
                await tx.execute("DELETE FROM document_chunks WHERE document_id = ?", (target,))
                await tx.execute(
                    "UPDATE documents SET title = ?, source_uri = ?, mime_type = ?,"
                    " content_hash = ?, size_bytes = ?, chunk_count = ?, status = 'ready',"
                    " metadata = ?, updated_at = ? WHERE id = ?",
                    (
                        title,
                        source_uri,
                        mime_type,
                        digest,
                        size,
                        len(prepared),
                        meta_text,
                        now,
                        target,
                    ),
                )
                outcome: Literal["created", "replaced"] = "replaced"
            else:
                target = new_id
                await tx.execute(
                    "INSERT INTO documents(id, kb_id, title, source_uri, mime_type, content_hash,"
                    " size_bytes, chunk_count, status, metadata, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ready', ?, ?, ?)",
                    (
                        target,
                        kb_id,
                        title,
                        source_uri,
                        mime_type,
                        digest,
                        size,
                        len(prepared),
                        meta_text,
                        now,
                        now,
                    ),
                )
                outcome = "created"
            rows = prepared if target == new_id else [(target, *row[1:]) for row in prepared]
            await self._backend.insert_rows(self._db, _INSERT_CHUNK, rows)
            return IngestResult(target, outcome, len(prepared))

    async def get(self, document_id: str) -> Document | None:
        """The document with this id, or None."""
        row = await self._db.fetch_one(
            f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE id = ?", (document_id,)
        )
        return None if row is None else _document(row)

    async def find_by_hash(self, kb_id: str, digest: str) -> Document | None:
        """The knowledge base's document with this content SHA-256, or None."""
        row = await self._db.fetch_one(
            f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE kb_id = ? AND content_hash = ?",
            (kb_id, digest),
        )
        return None if row is None else _document(row)

    async def list_documents(
        self, kb_id: str, *, limit: int = 100, offset: int = 0
    ) -> list[Document]:
        """The knowledge base's documents, newest first."""
        rows = await self._db.fetch_all(
            f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE kb_id = ?"
            " ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (kb_id, limit, offset),
        )
        return [_document(row) for row in rows]

    async def delete(self, document_id: str) -> bool:
        """Delete a document; its chunks go with it (ON DELETE CASCADE). False if absent."""
        # execute_many() answers the number of rows changed (execute() does only for an INSERT).
        changed = await self._db.execute_many(
            "DELETE FROM documents WHERE id = ?", [(document_id,)]
        )
        return bool(changed)

    async def chunks(self, document_id: str) -> list[Chunk]:
        """One document's chunks, in order."""
        rows = await self._db.fetch_all(
            f"SELECT {_CHUNK_COLUMNS} FROM document_chunks WHERE document_id = ?"
            " ORDER BY chunk_index",
            (document_id,),
        )
        return [_chunk(row) for row in rows]

    async def chunk_page(self, kb_id: str, *, after: int = 0, limit: int = 500) -> list[Chunk]:
        """Up to ``limit`` chunks of the knowledge base with ids greater than ``after``, by id:
        pass the last id of one page as ``after`` for the next (stable under inserts)."""
        check_int(limit, "limit", 1)
        check_int(after, "after")
        rows = await self._db.fetch_all(
            f"SELECT {_CHUNK_COLUMNS} FROM document_chunks WHERE kb_id = ? AND id > ?"
            " ORDER BY id LIMIT ?",
            (kb_id, after, limit),
        )
        return [_chunk(row) for row in rows]

    async def iter_chunks(self, kb_id: str, *, page_size: int = 500) -> AsyncIterator[Chunk]:
        """Every chunk of the knowledge base, a page at a time (memory stays flat)."""
        after = 0
        while True:
            page = await self.chunk_page(kb_id, after=after, limit=page_size)
            for chunk in page:
                yield chunk
            if len(page) < page_size:
                return
            after = page[-1].id

    async def stats(self, kb_id: str) -> KnowledgeBaseStats:
        """Documents, chunks and bytes of one knowledge base."""
        row = await self._db.fetch_one(
            "SELECT count(*), coalesce(sum(chunk_count), 0), coalesce(sum(size_bytes), 0)"
            " FROM documents WHERE kb_id = ?",
            (kb_id,),
        )
        assert row is not None
        return KnowledgeBaseStats(kb_id, row[0], row[1], row[2])

    async def stats_all(self) -> list[KnowledgeBaseStats]:
        """:meth:`stats` of every knowledge base (those without documents included)."""
        rows = await self._db.fetch_all(
            "SELECT k.id, count(d.id), coalesce(sum(d.chunk_count), 0),"
            " coalesce(sum(d.size_bytes), 0) FROM knowledge_bases AS k"
            " LEFT JOIN documents AS d ON d.kb_id = k.id GROUP BY k.id ORDER BY k.id"
        )
        return [KnowledgeBaseStats(*row) for row in rows]


def estimate_tokens(text: str) -> int:
    """About one token per four characters: the usual rule of thumb for English text and BPE
    tokenizers, and far cheaper than counting (pass exact counts in ``ChunkInput``)."""
    return (len(text) + 3) // 4


def _chunk_rows(
    document_id: str, kb_id: str, chunks: Sequence[str | ChunkInput]
) -> list[tuple[Any, ...]]:
    """The ``document_chunks`` rows of ``chunks``, in order."""
    if all(type(chunk) is str for chunk in chunks):
        # The common case, inlined: a 10,000-chunk ingest spends most of its own time here.
        sha256, texts = hashlib.sha256, cast("Sequence[str]", chunks)
        try:
            return [
                (
                    document_id,
                    kb_id,
                    i,
                    text,
                    (len(text) + 3) // 4,
                    sha256(text.encode()).hexdigest(),
                    "{}",
                )
                for i, text in enumerate(texts)
            ]
        except UnicodeEncodeError:
            pass  # the loop below names the chunk
    return [_chunk_row(document_id, kb_id, i, chunk) for i, chunk in enumerate(chunks)]


def _chunk_row(
    document_id: str, kb_id: str, index: int, chunk: str | ChunkInput
) -> tuple[Any, ...]:
    if isinstance(chunk, str):
        digest = hashlib.sha256(_utf8(chunk, f"chunk {index}")).hexdigest()
        return (document_id, kb_id, index, chunk, estimate_tokens(chunk), digest, "{}")
    if not isinstance(chunk, ChunkInput) or not isinstance(chunk.content, str):
        got = type(chunk.content if isinstance(chunk, ChunkInput) else chunk).__name__
        raise QueryError(f"chunk {index}: must be text or a ChunkInput with text, not {got}")
    tokens = chunk.token_count if chunk.token_count is not None else estimate_tokens(chunk.content)
    metadata = "{}" if not chunk.metadata else encode_json(dict(chunk.metadata), f"chunk {index}")
    return (document_id, kb_id, index, chunk.content, tokens, content_hash(chunk.content), metadata)
