"""Ingest: one document of 10,000 chunks into a knowledge base.

async_store stores it with ``DocumentRepository(sql.app).ingest(kb_id, title=..., content=...,
chunks=[...])``: one transaction on the writer holding the document row and every chunk row
(content, token count, sha256, metadata), in production mode (app_meta at ``synchronous=NORMAL``).
The baseline is raw sqlite3 on the same schema (a database the service created and migrated:
same tables, indexes, triggers and foreign keys), with the service's PRAGMAs: one ``BEGIN
IMMEDIATE``, the document row, one ``executemany`` of the 10,000 chunk rows, ``COMMIT``, with
every value computed before the timer starts. A second raw row computes the sha256 hashes (of
the document and of each chunk) and the token counts inside the timed section, as the library
does.

Each run ingests a warm-up document first, then the timed one; every document has a fresh id
and content of its own (the store would answer an identical content with ``unchanged``).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import random
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Contender,
    ErrorLog,
    Measurement,
    Profile,
    Scenario,
    Target,
    Throughput,
)

__all__ = ["ingest_10k"]

KB_ID = "kb"
CHUNKS_FULL = 10_000
CHUNKS_QUICK = 1_000
CHUNK_CHARS = 500

RAW = "raw executemany, precomputed"
RAW_HASHING = "raw executemany, hashes timed"
STORE = "async_store ingest()"

INSERT_DOCUMENT = (
    "INSERT INTO documents(id, kb_id, title, source_uri, mime_type, content_hash, size_bytes,"
    " chunk_count, status, metadata, created_at, updated_at)"
    " VALUES (?, ?, ?, '', 'text/plain', ?, ?, ?, 'ready', '{}', ?, ?)"
)
INSERT_CHUNK = (
    "INSERT INTO document_chunks(document_id, kb_id, chunk_index, content, token_count,"
    " content_hash, metadata) VALUES (?, ?, ?, ?, ?, ?, '{}')"
)
_TEXT = (
    "the a of to and in is that for it as with was on be by this are or from at an which have "
    "not retrieval augmented generation vector index embedding chunk document knowledge base "
    "query answer context model token sqlite database storage event state snapshot backup"
)
_WORDS = _TEXT.split()


def _chunks(count: int, seed: str) -> list[str]:
    """`count` chunks of about `CHUNK_CHARS` characters of words, unique to `seed`."""
    rng = random.Random(seed)
    chunks = []
    for n in range(count):
        words = [f"{seed}-{n}"]
        length = len(words[0])
        while length < CHUNK_CHARS:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        chunks.append(" ".join(words))
    return chunks


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _prepare(template: Path) -> None:
    """app_meta.db created and migrated by the service, holding the knowledge base."""
    from async_store import SqlConfig, SqlService

    directory = template.parent / "migrate"

    async def create() -> None:
        async with SqlService(SqlConfig.in_directory(directory)) as sql:
            await sql.app.execute(
                "INSERT INTO knowledge_bases(id, name) VALUES (?, ?)", (KB_ID, "KB")
            )

    asyncio.run(create())
    for suffix in ("-wal", "-shm"):
        if Path(f"{directory / 'app_meta.db'}{suffix}").exists():
            raise RuntimeError(f"app_meta.db{suffix} is left behind; the copy would miss it")
    shutil.move(directory / "app_meta.db", template)
    shutil.rmtree(directory)


def _stored_chunks(conn: sqlite3.Connection, document_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM document_chunks WHERE document_id = ?", (document_id,)
    ).fetchone()
    return int(row[0])


def _check(errors: ErrorLog, stored: int, expected: int) -> None:
    if stored != expected:
        errors.record(LookupError(f"{stored:,} chunks stored, expected {expected:,}"))


# -- raw sqlite3 ---------------------------------------------------------------------------------

_RAW_PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA cache_size=-65536",
    "PRAGMA temp_store=MEMORY",
)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


Rows = tuple[tuple[Any, ...], list[tuple[Any, ...]]]
"""The document row and the chunk rows."""


def _rows(document_id: str, chunks: Sequence[str]) -> Rows:
    content = "\n".join(chunks)
    now = _now()
    document = (
        document_id,
        KB_ID,
        f"Document {document_id}",
        _sha256(content),
        len(content.encode("utf-8")),
        len(chunks),
        now,
        now,
    )
    rows = [
        (document_id, KB_ID, index, text, len(text.split()), _sha256(text))
        for index, text in enumerate(chunks)
    ]
    return document, rows


def _raw_contender(name: str, count: int, *, hash_in_timed: bool) -> Contender:
    async def run(path: Path) -> Measurement:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            for pragma in _RAW_PRAGMAS:
                conn.execute(pragma).fetchall()

            def ingest(document_id: str, chunks: Sequence[str]) -> Callable[[], None]:
                """The timed part; with `hash_in_timed`, the rows are built inside it."""
                prepared = None if hash_in_timed else _rows(document_id, chunks)

                def timed() -> None:
                    document, rows = prepared or _rows(document_id, chunks)
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        conn.execute(INSERT_DOCUMENT, document)
                        conn.executemany(INSERT_CHUNK, rows)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")

                return timed

            ingest(str(uuid.uuid4()), _chunks(count, "warm"))()
            document_id = str(uuid.uuid4())
            timed = ingest(document_id, _chunks(count, "timed"))
            gc.collect()
            started = time.perf_counter()
            timed()
            seconds = time.perf_counter() - started
            errors = ErrorLog()
            _check(errors, _stored_chunks(conn, document_id), count)
        finally:
            conn.close()
        return Throughput(ops=count, seconds=seconds, errors=errors.kinds())

    return Contender(name, run, ("sqlite3",))


# -- async_store ---------------------------------------------------------------------------------


def _store_contender(count: int) -> Contender:
    async def run(path: Path) -> Measurement:
        from async_store import SqlConfig, SqlService
        from async_store.repositories import DocumentRepository

        directory = path.parent / "store"
        directory.mkdir()
        shutil.move(path, directory / "app_meta.db")
        errors = ErrorLog()
        async with SqlService(SqlConfig.in_directory(directory)) as sql:
            documents = DocumentRepository(sql.app)

            async def ingest(document_id: str, chunks: list[str], content: str) -> str:
                result = await documents.ingest(
                    KB_ID,
                    title=f"Document {document_id}",
                    content=content,
                    chunks=chunks,
                    document_id=document_id,
                )
                if result.outcome != "created" or result.chunk_count != count:
                    errors.record(LookupError(f"ingest returned {result}"))
                return result.document_id

            warm = _chunks(count, "warm")
            await ingest(str(uuid.uuid4()), warm, "\n".join(warm))
            chunks = _chunks(count, "timed")
            content = "\n".join(chunks)
            document_id = str(uuid.uuid4())
            gc.collect()
            started = time.perf_counter()
            stored_id = await ingest(document_id, chunks, content)
            seconds = time.perf_counter() - started
            stored = await sql.app.fetch_val(
                "SELECT count(*) FROM document_chunks WHERE document_id = ?", (stored_id,)
            )
            _check(errors, int(stored), count)
        return Throughput(ops=count, seconds=seconds, errors=errors.kinds())

    return Contender(STORE, run, ("async_store",))


def ingest_10k(profile: Profile) -> Scenario:
    """One document of 10,000 chunks: the repository against raw executemany."""
    count = CHUNKS_QUICK if profile.quick else CHUNKS_FULL
    return Scenario(
        name="ingest-10k",
        summary=(
            f"ingest one document of {count:,} chunks (~{CHUNK_CHARS} characters each) into a"
            " knowledge base, one transaction"
        ),
        kind="throughput",
        unit="chunks",
        baseline=RAW,
        contenders=[
            _raw_contender(RAW, count, hash_in_timed=False),
            _raw_contender(RAW_HASHING, count, hash_in_timed=True),
            _store_contender(count),
        ],
        prepare=_prepare,
        target=Target(STORE, 0.8),
        notes=(
            "target baseline: raw sqlite3 with every row precomputed (document and chunk sha256 "
            "and token counts outside the timer); 'hashes timed' builds the same rows (sha256 of "
            "document and chunks, token counts) inside the timed section. Raw: BEGIN IMMEDIATE, "
            "document row, executemany of the chunks, COMMIT, the service's PRAGMAs. "
            "async_store: DocumentRepository(sql.app).ingest(...), production mode. The "
            "knowledge base row exists beforehand; a fresh document id and content per run."
        ),
    )
