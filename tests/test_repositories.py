"""The repositories of the high-volume app_meta tables: documents with their chunks, pipeline
runs, and the read-only catalog of the projected tables.

Every test runs on real files (``SqlConfig.in_directory``) in production and MVP mode.
Knowledge bases and pipelines are inserted directly (normally the StateManager's projector
writes them), so that these tests depend on the repositories alone. Where timestamps matter the
repositories' clock (``_now`` of ``_documents`` and ``_pipeline_runs``) is replaced by a
:class:`Clock` the test moves by hand: nothing here sleeps or looks at wall-clock durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from async_store import (
    Catalog,
    CheckViolation,
    Chunk,
    ChunkInput,
    Document,
    DocumentRepository,
    ForeignKeyViolation,
    IntegrityViolation,
    PipelineRun,
    PipelineRunRepository,
    QueryError,
    SqlConfig,
    SqlService,
    StoreError,
    UniqueViolation,
)
from async_store.repositories import (
    KnowledgeBaseStats,
    _documents,
    _pipeline_runs,
    content_hash,
    estimate_tokens,
)

# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(params=[pytest.param(False, id="production"), pytest.param(True, id="mvp")])
async def sql(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlService]:
    config = SqlConfig.in_directory(tmp_path / "data", mvp=request.param, acquire_timeout=10.0)
    async with SqlService(config) as service:
        await add_kb(service, "kb-1")
        await add_kb(service, "kb-2")
        await add_pipeline(service, "pipe-1")
        await add_pipeline(service, "pipe-2")
        yield service


@pytest.fixture
def docs(sql: SqlService) -> DocumentRepository:
    return DocumentRepository(sql.app)


@pytest.fixture
def runs(sql: SqlService) -> PipelineRunRepository:
    return PipelineRunRepository(sql.app)


async def add_kb(sql: SqlService, kb_id: str, name: str = "Docs") -> None:
    await sql.app.execute("INSERT INTO knowledge_bases(id, name) VALUES (?, ?)", (kb_id, name))


async def add_pipeline(sql: SqlService, pipeline_id: str, name: str = "Ingest") -> None:
    await sql.app.execute("INSERT INTO pipelines(id, name) VALUES (?, ?)", (pipeline_id, name))


class Clock:
    """Stands in for the repositories' ``_now``: the time only moves when a test says so."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def text(self) -> str:
        return stamp(self.now)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    for module in (_documents, _pipeline_runs):
        monkeypatch.setattr(module, "_now", fake.text)
    return fake


@dataclass
class Writes:
    """What happened on app_meta's writer while :func:`watch_writes` watched."""

    committed_change: bool = False
    """Another connection sees a new ``PRAGMA data_version``: something was committed."""
    transactions: int = 0
    """Writer transactions that ran (committed or rolled back)."""
    rolled_back: int = 0


@contextlib.contextmanager
def watch_writes(sql: SqlService) -> Iterator[Writes]:
    writes = Writes()
    with contextlib.closing(sqlite3.connect(sql.app.path)) as raw:
        before = raw.execute("PRAGMA data_version").fetchone()[0]
        stats = sql.app.statistics()
        yield writes
        after = sql.app.statistics()
        writes.committed_change = raw.execute("PRAGMA data_version").fetchone()[0] != before
        writes.rolled_back = after.failed_transactions - stats.failed_transactions
        writes.transactions = after.transactions - stats.transactions + writes.rolled_back


async def table_counts(sql: SqlService) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in ("knowledge_bases", "documents", "document_chunks", "pipelines", "pipeline_runs"):
        counts[table] = await sql.app.fetch_val(f"SELECT count(*) FROM {table}")
    return counts


async def schema(sql: SqlService) -> list[tuple[str, str]]:
    rows = await sql.app.fetch_all("SELECT type, name FROM sqlite_master ORDER BY type, name")
    return [(row[0], row[1]) for row in rows]


async def all_pages(docs: DocumentRepository, kb_id: str, limit: int) -> list[Chunk]:
    result: list[Chunk] = []
    after = 0
    while True:
        page = await docs.chunk_page(kb_id, after=after, limit=limit)
        assert len(page) <= limit
        if not page:
            return result
        result += page
        after = page[-1].id


async def ingest_corpus(docs: DocumentRepository) -> dict[str, list[str]]:
    """Four documents in kb-1 (3, 10, 1 and 20 chunks) and one in kb-2; returns kb-1's chunk
    texts by document id, in ingest order."""
    texts: dict[str, list[str]] = {}
    for n, count in enumerate((3, 10, 1, 20)):
        chunks = [f"doc {n} chunk {i}" for i in range(count)]
        result = await docs.ingest("kb-1", title=f"doc {n}", content=f"content {n}", chunks=chunks)
        texts[result.document_id] = chunks
    await docs.ingest("kb-2", title="other", content="other", chunks=["x", "y", "z"])
    return texts


# -- ingest ----------------------------------------------------------------------------------


async def test_ingest_stores_document_and_chunks(docs: DocumentRepository) -> None:
    result = await docs.ingest(
        "kb-1",
        title="Guide",
        content="Chapter one. Chapter two.",
        chunks=["Chapter one.", ChunkInput("Chapter two.", metadata={"page": 2}, token_count=7)],
        source_uri="file:///guide.txt",
        mime_type="text/markdown",
        metadata={"author": "Ada", "tags": ["a", "b"]},
    )
    assert result.outcome == "created"
    assert result.chunk_count == 2

    document = await docs.get(result.document_id)
    assert document is not None
    assert document.id == result.document_id
    assert document.kb_id == "kb-1"
    assert (document.title, document.source_uri, document.mime_type) == (
        "Guide",
        "file:///guide.txt",
        "text/markdown",
    )
    assert document.content_hash == hashlib.sha256(b"Chapter one. Chapter two.").hexdigest()
    assert document.size_bytes == len("Chapter one. Chapter two.")
    assert document.chunk_count == 2
    assert document.status == "ready"
    assert document.metadata == {"author": "Ada", "tags": ["a", "b"]}
    assert document.created_at == document.updated_at

    chunks = await docs.chunks(result.document_id)
    assert [c.chunk_index for c in chunks] == [0, 1]
    assert [c.content for c in chunks] == ["Chapter one.", "Chapter two."]
    assert [c.token_count for c in chunks] == [estimate_tokens("Chapter one."), 7]
    assert [c.content_hash for c in chunks] == [content_hash(c.content) for c in chunks]
    assert [c.metadata for c in chunks] == [{}, {"page": 2}]
    assert {(c.document_id, c.kb_id) for c in chunks} == {(result.document_id, "kb-1")}


@pytest.mark.parametrize("count", [99, 100, 250])
async def test_a_long_document_keeps_every_chunk_in_order(
    docs: DocumentRepository, count: int
) -> None:
    """Chunks go to the database 100 per statement, the rest one by one; then replaced."""
    texts = [f"chunk {n} " * (n % 7 + 1) for n in range(count)]
    result = await docs.ingest("kb-1", title="long", content="".join(texts), chunks=texts)
    chunks = await docs.chunks(result.document_id)
    assert [(c.chunk_index, c.content) for c in chunks] == list(enumerate(texts))
    assert [c.content_hash for c in chunks] == [content_hash(t) for t in texts]

    shorter = texts[: count // 2 + 1]
    again = await docs.ingest(
        "kb-1",
        title="long",
        content="".join(shorter),
        chunks=shorter,
        document_id=result.document_id,
    )
    assert (again.outcome, again.chunk_count) == ("replaced", len(shorter))
    chunks = await docs.chunks(result.document_id)
    assert [(c.chunk_index, c.content) for c in chunks] == list(enumerate(shorter))


async def test_ingest_with_explicit_document_id(docs: DocumentRepository) -> None:
    result = await docs.ingest("kb-1", title="t", content="c", chunks=["c"], document_id="doc-7")
    assert result.document_id == "doc-7"
    assert (await docs.get("doc-7")) is not None


async def test_a_document_without_chunks(docs: DocumentRepository) -> None:
    result = await docs.ingest("kb-1", title="empty", content="", chunks=[])
    assert (result.outcome, result.chunk_count) == ("created", 0)
    assert await docs.chunks(result.document_id) == []


async def test_ingest_is_atomic_for_readers(sql: SqlService, docs: DocumentRepository) -> None:
    """A reader polling while a large ingest commits sees no document or all of its chunks."""
    total = 20_000
    task = asyncio.create_task(
        docs.ingest(
            "kb-1",
            title="big",
            content="big",
            chunks=[f"c{i}" for i in range(total)],
            document_id="big",
        )
    )
    while not task.done():
        async with sql.app.read() as snapshot:
            row = await snapshot.fetch_one(
                "SELECT (SELECT chunk_count FROM documents WHERE id = 'big'),"
                " (SELECT count(*) FROM document_chunks WHERE document_id = 'big')"
            )
        assert row is not None
        assert (row[0], row[1]) in ((None, 0), (total, total))
        await asyncio.sleep(0)
    assert (await task).chunk_count == total
    assert await docs.stats("kb-1") == KnowledgeBaseStats("kb-1", 1, total, 3)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("plain ascii", id="ascii"),
        pytest.param("héllo wörld — naïve café 🌍", id="non-ascii-text"),
        pytest.param("", id="empty-text"),
        pytest.param(b"\x00\xff\xfe binary \x80", id="bytes"),
        pytest.param("日本語のテキスト".encode(), id="utf8-bytes"),
    ],
)
async def test_content_hash_and_size_are_of_the_utf8_bytes(
    docs: DocumentRepository, content: str | bytes
) -> None:
    raw = content.encode("utf-8") if isinstance(content, str) else content
    assert content_hash(content) == hashlib.sha256(raw).hexdigest()
    result = await docs.ingest("kb-1", title="t", content=content, chunks=["x"])
    document = await docs.get(result.document_id)
    assert document is not None
    assert document.content_hash == hashlib.sha256(raw).hexdigest()
    assert document.size_bytes == len(raw)
    assert await docs.find_by_hash("kb-1", hashlib.sha256(raw).hexdigest()) == document


def test_estimate_tokens() -> None:
    assert [estimate_tokens("x" * n) for n in (0, 1, 4, 5, 400)] == [0, 1, 1, 2, 100]


@pytest.mark.parametrize(
    "again",
    [
        pytest.param({}, id="same-call"),
        pytest.param({"title": "renamed", "chunks": ["other"]}, id="other-title-and-chunks"),
        pytest.param({"content": "Same text, é".encode()}, id="same-text-as-bytes"),
        pytest.param({"source_uri": "file:///moved.txt"}, id="other-source-uri"),
    ],
)
async def test_reingest_of_identical_content_is_unchanged_and_writes_nothing(
    sql: SqlService, docs: DocumentRepository, clock: Clock, again: dict[str, Any]
) -> None:
    first: dict[str, Any] = {
        "title": "Doc",
        "content": "Same text, é",
        "chunks": ["Same text,", "é"],
        "source_uri": "file:///doc.txt",
    }
    created = await docs.ingest("kb-1", **first)
    before_doc = await docs.get(created.document_id)
    before_chunks = await docs.chunks(created.document_id)
    before_counts = await table_counts(sql)
    clock.advance(60)

    with watch_writes(sql) as wrote:
        result = await docs.ingest("kb-1", **(first | again))

    assert result.document_id == created.document_id
    assert result.outcome == "unchanged"
    assert result.chunk_count == 2
    assert not wrote.committed_change, "an unchanged re-ingest committed a change"
    assert await table_counts(sql) == before_counts
    assert await docs.get(created.document_id) == before_doc
    assert await docs.chunks(created.document_id) == before_chunks


@pytest.mark.parametrize(
    "key",
    [
        pytest.param({"document_id": "doc-1"}, id="same-document-id"),
        pytest.param({"source_uri": "https://example.com/a?x=1"}, id="same-source-uri"),
    ],
)
async def test_changed_content_replaces_the_document(
    sql: SqlService, docs: DocumentRepository, clock: Clock, key: dict[str, Any]
) -> None:
    old = await docs.ingest("kb-1", title="v1", content="version 1", chunks=["a", "b", "c"], **key)
    old_doc = await docs.get(old.document_id)
    old_chunk_ids = {c.id for c in await docs.chunks(old.document_id)}
    await docs.ingest("kb-1", title="neighbour", content="neighbour", chunks=["n"])
    clock.advance(5)

    new = await docs.ingest(
        "kb-1",
        title="v2",
        content="version two, longer",
        chunks=["x", ChunkInput("y", metadata={"k": 1})],
        metadata={"rev": 2},
        **key,
    )

    assert new.document_id == old.document_id
    assert (new.outcome, new.chunk_count) == ("replaced", 2)
    document = await docs.get(old.document_id)
    assert old_doc is not None
    assert document is not None
    assert document.title == "v2"
    assert document.content_hash == content_hash("version two, longer")
    assert document.size_bytes == len("version two, longer")
    assert document.chunk_count == 2
    assert document.metadata == {"rev": 2}
    assert document.created_at == old_doc.created_at
    assert document.updated_at == clock.text() != old_doc.updated_at
    chunks = await docs.chunks(old.document_id)
    assert [(c.chunk_index, c.content, c.metadata) for c in chunks] == [
        (0, "x", {}),
        (1, "y", {"k": 1}),
    ]
    # New rows, not updated ones: a vector index holding the old ids must not find them again.
    assert not old_chunk_ids & {c.id for c in chunks}
    assert await sql.app.fetch_val("SELECT count(*) FROM documents") == 2
    assert await docs.find_by_hash("kb-1", content_hash("version 1")) is None
    assert await docs.stats("kb-1") == KnowledgeBaseStats("kb-1", 2, 3, 19 + len("neighbour"))


async def test_changed_content_without_id_or_source_is_a_new_document(
    docs: DocumentRepository,
) -> None:
    first = await docs.ingest("kb-1", title="t", content="one", chunks=["one"])
    second = await docs.ingest("kb-1", title="t", content="two", chunks=["two"])
    assert second.outcome == "created"
    assert second.document_id != first.document_id
    assert len(await docs.list_documents("kb-1")) == 2


@pytest.mark.parametrize(
    ("replacement", "error", "refused_before_writing"),
    [
        pytest.param(
            {"chunks": ["fine", ChunkInput("bad", metadata={"when": {1, 2}})]},  # type: ignore[dict-item]
            QueryError,
            True,
            id="chunk-metadata-not-json",
        ),
        pytest.param(
            {"chunks": ["fine", ChunkInput(b"bytes")]},  # type: ignore[arg-type]
            QueryError,
            True,
            id="chunk-not-text",
        ),
        pytest.param(
            {"metadata": {"nan": float("nan")}},
            QueryError,
            True,
            id="document-metadata-not-json",
        ),
        pytest.param(
            {"chunks": ["fine", "also fine", ChunkInput("last", token_count=-1)]},
            CheckViolation,
            False,
            id="last-chunk-violates-check-after-old-chunks-deleted",
        ),
        pytest.param(
            {"content": "x" * 150_000 + "\udc00" + "y" * 50_000},
            QueryError,
            True,
            id="long-content-with-a-lone-surrogate",
        ),
        pytest.param(
            {"chunks": ["fine", "also fine", "lone \ud800 surrogate"]},
            QueryError,
            True,
            id="chunk-not-encodable",
        ),
        pytest.param(
            {"title": "lone surrogate \ud800"},
            QueryError,
            True,
            id="title-not-encodable",
        ),
    ],
)
async def test_a_replace_failing_half_way_keeps_the_old_document(
    sql: SqlService,
    docs: DocumentRepository,
    replacement: dict[str, Any],
    error: type[StoreError],
    refused_before_writing: bool,
) -> None:
    await docs.ingest("kb-1", title="v1", content="v1", chunks=["a", "b"], document_id="doc")
    before_doc = await docs.get("doc")
    before_chunks = await docs.chunks("doc")
    before_counts = await table_counts(sql)
    arguments: dict[str, Any] = {"title": "v2", "content": "v2", "chunks": ["new"]}

    with watch_writes(sql) as wrote, pytest.raises(error) as raised:
        await docs.ingest("kb-1", document_id="doc", **(arguments | replacement))

    if "content" in replacement:
        assert "at 150000" in str(raised.value), "the position counts from the start"
    if replacement.get("chunks", [""])[-1] == "lone \ud800 surrogate":
        assert "chunk 2" in str(raised.value)

    assert not wrote.committed_change
    if refused_before_writing:
        assert wrote.transactions == 0, "refused input still reached the writer"
    else:
        assert wrote.rolled_back == 1
    assert await docs.get("doc") == before_doc
    assert await docs.chunks("doc") == before_chunks
    assert await table_counts(sql) == before_counts
    # The repository still works afterwards.
    replaced = await docs.ingest("kb-1", title="v2", content="v2", chunks=["n"], document_id="doc")
    assert replaced.outcome == "replaced"


async def test_ingest_into_a_missing_knowledge_base_is_refused(
    sql: SqlService, docs: DocumentRepository
) -> None:
    before = await table_counts(sql)
    with pytest.raises(ForeignKeyViolation):
        await docs.ingest("no-such-kb", title="t", content="c", chunks=["a", "b"])
    assert await table_counts(sql) == before


@pytest.mark.parametrize(
    ("key", "error"),
    [
        pytest.param({"source_uri": "file:///a"}, ForeignKeyViolation, id="same-source-uri"),
        # The id is taken (in kb-1): the primary key refuses before the foreign key is checked.
        pytest.param({"document_id": "doc"}, IntegrityViolation, id="same-document-id"),
    ],
)
async def test_reingest_into_a_missing_knowledge_base_keeps_the_old_document(
    sql: SqlService, docs: DocumentRepository, key: dict[str, Any], error: type[StoreError]
) -> None:
    await docs.ingest(
        "kb-1", title="v1", content="v1", chunks=["a"], document_id="doc", source_uri="file:///a"
    )
    before = await docs.get("doc"), await docs.chunks("doc"), await table_counts(sql)
    with pytest.raises(error):
        await docs.ingest("no-such-kb", title="v2", content="v2", chunks=["b"], **key)
    assert (await docs.get("doc"), await docs.chunks("doc"), await table_counts(sql)) == before


async def test_same_content_in_two_knowledge_bases_gives_two_documents(
    docs: DocumentRepository,
) -> None:
    one = await docs.ingest("kb-1", title="t", content="shared", chunks=["shared"])
    two = await docs.ingest("kb-2", title="t", content="shared", chunks=["shared"])
    assert (one.outcome, two.outcome) == ("created", "created")
    assert one.document_id != two.document_id
    found_1 = await docs.find_by_hash("kb-1", content_hash("shared"))
    found_2 = await docs.find_by_hash("kb-2", content_hash("shared"))
    assert found_1 is not None
    assert found_1.id == one.document_id
    assert found_2 is not None
    assert found_2.id == two.document_id


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"content": "ok", "chunks": ["bad \udc80"]}, id="chunk-text"),
        pytest.param({"content": "bad \udc80", "chunks": ["ok"]}, id="document-content"),
    ],
)
async def test_text_that_is_not_utf8_is_refused_with_a_store_error(
    sql: SqlService, docs: DocumentRepository, arguments: dict[str, Any]
) -> None:
    before = await table_counts(sql)
    with pytest.raises(QueryError):
        await docs.ingest("kb-1", title="t", **arguments)
    assert await table_counts(sql) == before


# -- paging ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limit", [pytest.param(1, id="limit-1"), pytest.param(7, id="limit-7"), pytest.param(500)]
)
async def test_walking_pages_yields_every_chunk_once_in_id_order(
    docs: DocumentRepository, limit: int
) -> None:
    texts = await ingest_corpus(docs)
    expected = [c for document_id in texts for c in await docs.chunks(document_id)]

    walked = await all_pages(docs, "kb-1", limit)

    assert walked == sorted(expected, key=lambda c: c.id)
    assert [c.content for c in walked] == [t for chunks in texts.values() for t in chunks]
    assert len({c.id for c in walked}) == len(walked) == 34
    assert {c.kb_id for c in walked} == {"kb-1"}
    first = await docs.chunk_page("kb-1", limit=limit)
    assert first == walked[:limit]
    assert await docs.chunk_page("kb-1", after=walked[-1].id, limit=limit) == []


@pytest.mark.parametrize(
    "page_size",
    [
        pytest.param(1, id="page-1"),
        pytest.param(7, id="page-7"),
        pytest.param(17, id="page-divides-total"),
        pytest.param(500, id="page-500"),
    ],
)
async def test_iter_chunks_equals_the_pages(docs: DocumentRepository, page_size: int) -> None:
    await ingest_corpus(docs)
    iterated = [chunk async for chunk in docs.iter_chunks("kb-1", page_size=page_size)]
    assert iterated == await all_pages(docs, "kb-1", page_size)
    assert len(iterated) == 34


async def test_paging_an_empty_or_missing_knowledge_base(docs: DocumentRepository) -> None:
    assert await docs.chunk_page("kb-2") == []
    assert await docs.chunk_page("no-such-kb") == []
    assert [c async for c in docs.iter_chunks("no-such-kb")] == []


@pytest.mark.parametrize("limit", [pytest.param(0, id="zero"), pytest.param(-5, id="negative")])
async def test_a_page_limit_below_one_is_refused(docs: DocumentRepository, limit: int) -> None:
    with pytest.raises(QueryError, match="limit"):
        await docs.chunk_page("kb-1", limit=limit)


async def test_chunks_ingested_while_paging_appear_only_after_the_cursor(
    docs: DocumentRepository,
) -> None:
    await ingest_corpus(docs)
    original = await all_pages(docs, "kb-1", 500)
    walked: list[Chunk] = []
    after = 0
    pages = 0
    while True:
        page = await docs.chunk_page("kb-1", after=after, limit=5)
        if not page:
            break
        walked += page
        after = page[-1].id
        pages += 1
        if pages in (2, 4):
            # New documents mid-walk (and one in another knowledge base): higher ids.
            await docs.ingest("kb-1", title=f"late {pages}", content=f"late {pages}", chunks=["L"])
            await docs.ingest("kb-2", title="noise", content=f"noise {pages}", chunks=["N"])

    ids = [c.id for c in walked]
    assert ids == sorted(set(ids)), "a chunk repeated or came out of order"
    assert walked[: len(original)] == original, "an earlier chunk was skipped or moved"
    assert [c.content for c in walked[len(original) :]] == ["L", "L"]


async def test_iter_chunks_while_ingesting_and_deleting(docs: DocumentRepository) -> None:
    texts = await ingest_corpus(docs)
    ids = list(texts)
    original = await all_pages(docs, "kb-1", 500)
    doomed = {c.id for c in original if c.document_id == ids[3]}  # the last document
    seen: list[Chunk] = []
    async for chunk in docs.iter_chunks("kb-1", page_size=4):
        seen.append(chunk)
        if len(seen) == 6:
            assert await docs.delete(ids[3])
            await docs.ingest("kb-1", title="late", content="late", chunks=["L1", "L2"])
    # The first two pages (8 chunks, none of the doomed document's) were read before the delete.
    assert seen[:8] == original[:8]
    survivors = [c for c in original if c.id not in doomed]
    assert seen[: len(survivors)] == survivors
    assert [c.content for c in seen[len(survivors) :]] == ["L1", "L2"]


# -- delete ------------------------------------------------------------------------------------


async def test_delete_cascades_to_chunks(sql: SqlService, docs: DocumentRepository) -> None:
    texts = await ingest_corpus(docs)
    victim, *others = list(texts)
    assert await docs.delete(victim) is True
    assert await docs.get(victim) is None
    assert await docs.chunks(victim) == []
    count = "SELECT count(*) FROM document_chunks WHERE document_id = ?"
    assert await sql.app.fetch_val(count, (victim,)) == 0
    for document_id in others:
        assert [c.content for c in await docs.chunks(document_id)] == texts[document_id]
    assert await docs.delete(victim) is False


async def test_delete_of_a_missing_document_is_false(
    sql: SqlService, docs: DocumentRepository
) -> None:
    await ingest_corpus(docs)
    before = await table_counts(sql)
    assert await docs.delete("no-such-document") is False
    assert await table_counts(sql) == before


async def test_deleting_a_knowledge_base_cascades(
    sql: SqlService, docs: DocumentRepository
) -> None:
    await ingest_corpus(docs)
    kb_2_chunks = await all_pages(docs, "kb-2", 500)
    await sql.app.execute("DELETE FROM knowledge_bases WHERE id = ?", ("kb-1",))
    assert await docs.list_documents("kb-1") == []
    assert await docs.chunk_page("kb-1") == []
    assert await sql.app.fetch_val("SELECT count(*) FROM documents WHERE kb_id = 'kb-1'") == 0
    assert await sql.app.fetch_val("SELECT count(*) FROM document_chunks WHERE kb_id = 'kb-1'") == 0
    assert await all_pages(docs, "kb-2", 500) == kb_2_chunks


# -- stats -------------------------------------------------------------------------------------


async def test_stats(sql: SqlService, docs: DocumentRepository) -> None:
    assert await docs.stats("kb-1") == KnowledgeBaseStats("kb-1", 0, 0, 0)
    await docs.ingest("kb-1", title="a", content="héllo", chunks=["h", "é", "llo"])
    await docs.ingest("kb-1", title="b", content=b"\x00\x01", chunks=["x"])
    await docs.ingest("kb-2", title="c", content="🌍", chunks=["🌍"])
    await add_kb(sql, "kb-0-empty")

    assert await docs.stats("kb-1") == KnowledgeBaseStats("kb-1", 2, 4, 6 + 2)
    assert await docs.stats("kb-2") == KnowledgeBaseStats("kb-2", 1, 1, 4)
    assert await docs.stats("no-such-kb") == KnowledgeBaseStats("no-such-kb", 0, 0, 0)
    assert await docs.stats_all() == [
        KnowledgeBaseStats("kb-0-empty", 0, 0, 0),
        KnowledgeBaseStats("kb-1", 2, 4, 8),
        KnowledgeBaseStats("kb-2", 1, 1, 4),
    ]


async def test_stats_follow_replace_and_delete(docs: DocumentRepository) -> None:
    await docs.ingest("kb-1", title="a", content="aaaa", chunks=["a"] * 4, document_id="a")
    await docs.ingest("kb-1", title="a", content="aa", chunks=["a"] * 2, document_id="a")
    assert await docs.stats("kb-1") == KnowledgeBaseStats("kb-1", 1, 2, 2)
    await docs.delete("a")
    assert await docs.stats("kb-1") == KnowledgeBaseStats("kb-1", 0, 0, 0)
    assert KnowledgeBaseStats("kb-1", 0, 0, 0) in await docs.stats_all()


# -- listing and lookups -----------------------------------------------------------------------


async def test_list_documents_newest_first(docs: DocumentRepository, clock: Clock) -> None:
    ids = []
    for n in range(5):
        clock.advance(1)
        result = await docs.ingest("kb-1", title=f"d{n}", content=f"d{n}", chunks=["x"])
        ids.append(result.document_id)
    await docs.ingest("kb-2", title="other", content="other", chunks=["x"])
    newest_first = ids[::-1]

    assert [d.id for d in await docs.list_documents("kb-1")] == newest_first
    assert [d.id for d in await docs.list_documents("kb-1", limit=2)] == newest_first[:2]
    assert [d.id for d in await docs.list_documents("kb-1", limit=2, offset=2)] == ids[2:0:-1]
    assert [d.id for d in await docs.list_documents("kb-1", offset=4)] == [ids[0]]
    assert await docs.list_documents("kb-1", offset=5) == []
    assert await docs.list_documents("no-such-kb") == []


async def test_get_and_find_by_hash(docs: DocumentRepository) -> None:
    result = await docs.ingest("kb-1", title="t", content="findable", chunks=["f"])
    document = await docs.get(result.document_id)
    assert isinstance(document, Document)
    assert await docs.find_by_hash("kb-1", content_hash("findable")) == document
    assert await docs.find_by_hash("kb-2", content_hash("findable")) is None
    assert await docs.find_by_hash("kb-1", content_hash("other")) is None
    assert await docs.get("no-such-document") is None


async def test_chunks_come_in_chunk_index_order(docs: DocumentRepository) -> None:
    # 12 chunks: index 10 and 11 sort after 9 numerically, not as text.
    texts = [f"part {i}" for i in range(12)]
    result = await docs.ingest("kb-1", title="t", content="parts", chunks=texts)
    chunks = await docs.chunks(result.document_id)
    assert [c.chunk_index for c in chunks] == list(range(12))
    assert [c.content for c in chunks] == texts
    assert await docs.chunks("no-such-document") == []


# -- pipeline runs -----------------------------------------------------------------------------


async def test_start_records_a_running_run(runs: PipelineRunRepository, clock: Clock) -> None:
    run = await runs.start("pipe-1")
    assert run.pipeline_id == "pipe-1"
    assert run.status == "running"
    assert run.started_at == run.heartbeat_at == clock.text()
    assert (run.finished_at, run.error, run.stats) == (None, None, {})
    assert await runs.get(run.id) == run
    named = await runs.start("pipe-1", run_id="run-42")
    assert named.id == "run-42"
    assert await runs.get("run-42") == named
    assert await runs.get("no-such-run") is None


async def test_start_uses_the_real_clock(runs: PipelineRunRepository) -> None:
    low = stamp(datetime.now(UTC))
    run = await runs.start("pipe-1")
    assert low <= run.started_at <= stamp(datetime.now(UTC))


async def test_heartbeat_moves_only_a_running_run(
    runs: PipelineRunRepository, clock: Clock
) -> None:
    run = await runs.start("pipe-1")
    clock.advance(30)
    await runs.heartbeat(run.id)
    alive = await runs.get(run.id)
    assert alive is not None
    assert alive.heartbeat_at == clock.text()
    assert alive.started_at == run.started_at

    finished = await runs.finish(run.id)
    clock.advance(30)
    await runs.heartbeat(run.id)
    assert await runs.get(run.id) == finished
    await runs.heartbeat("no-such-run")  # nothing to mark; not an error


async def test_finish_with_stats(runs: PipelineRunRepository, clock: Clock) -> None:
    run = await runs.start("pipe-1")
    clock.advance(90)
    done = await runs.finish(run.id, stats={"documents": 3, "chunks": 120, "errors": []})
    assert done.status == "succeeded"
    assert done.finished_at == clock.text()
    assert done.stats == {"documents": 3, "chunks": 120, "errors": []}
    assert done.error is None
    assert (done.id, done.started_at) == (run.id, run.started_at)
    assert await runs.get(run.id) == done


async def test_fail_with_error(runs: PipelineRunRepository, clock: Clock) -> None:
    run = await runs.start("pipe-1")
    clock.advance(1)
    failed = await runs.fail(run.id, "embedding service unreachable", stats={"done": 1})
    assert (failed.status, failed.error, failed.stats) == (
        "failed",
        "embedding service unreachable",
        {"done": 1},
    )
    assert failed.finished_at == clock.text()
    assert await runs.get(run.id) == failed


async def test_cancel(runs: PipelineRunRepository) -> None:
    run = await runs.start("pipe-1")
    cancelled = await runs.cancel(run.id)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert await runs.get(run.id) == cancelled


END = {
    "finish": lambda runs, run_id: runs.finish(run_id),
    "fail": lambda runs, run_id: runs.fail(run_id, "boom"),
    "cancel": lambda runs, run_id: runs.cancel(run_id),
}


@pytest.mark.parametrize("first", [pytest.param(name, id=f"{name}-then") for name in END])
@pytest.mark.parametrize("second", list(END))
async def test_ending_a_run_twice_is_refused(
    runs: PipelineRunRepository, first: str, second: str
) -> None:
    run = await runs.start("pipe-1")
    ended: PipelineRun = await END[first](runs, run.id)
    with pytest.raises(QueryError, match=rf"run '{run.id}' is {ended.status}, not running"):
        await END[second](runs, run.id)
    assert await runs.get(run.id) == ended


@pytest.mark.parametrize("operation", list(END))
async def test_ending_a_missing_run_is_refused(
    sql: SqlService, runs: PipelineRunRepository, operation: str
) -> None:
    with pytest.raises(QueryError, match="pipeline run 'no-such-run' does not exist"):
        await END[operation](runs, "no-such-run")
    assert await sql.app.fetch_val("SELECT count(*) FROM pipeline_runs") == 0


async def test_stats_that_are_not_json_are_refused(runs: PipelineRunRepository) -> None:
    run = await runs.start("pipe-1")
    with pytest.raises(QueryError, match="stats"):
        await runs.finish(run.id, stats={"when": datetime.now(UTC)})  # type: ignore[dict-item]
    still = await runs.get(run.id)
    assert still is not None
    assert still.status == "running"


async def test_a_run_of_a_missing_pipeline_is_refused(
    sql: SqlService, runs: PipelineRunRepository
) -> None:
    with pytest.raises(ForeignKeyViolation):
        await runs.start("no-such-pipeline")
    assert await sql.app.fetch_val("SELECT count(*) FROM pipeline_runs") == 0


async def test_a_duplicate_run_id_is_refused(runs: PipelineRunRepository) -> None:
    await runs.start("pipe-1", run_id="r")
    with pytest.raises(UniqueViolation):
        await runs.start("pipe-2", run_id="r")


async def test_list_for_pipeline_newest_first_with_before_paging(
    runs: PipelineRunRepository, clock: Clock
) -> None:
    started = []
    for _ in range(7):
        clock.advance(10)
        started.append(await runs.start("pipe-1"))
        await runs.start("pipe-2")
    await runs.finish(started[2].id)
    newest_first = [r.id for r in reversed(started)]

    assert [r.id for r in await runs.list_for_pipeline("pipe-1")] == newest_first
    walked: list[str] = []
    before: PipelineRun | None = None
    while page := await runs.list_for_pipeline("pipe-1", limit=3, before=before):
        assert len(page) <= 3
        walked += [r.id for r in page]
        before = page[-1]
    assert walked == newest_first
    assert await runs.list_for_pipeline("no-such-pipeline") == []


async def test_before_paging_does_not_skip_runs_started_at_the_same_time(
    runs: PipelineRunRepository, clock: Clock
) -> None:
    ids = {(await runs.start("pipe-1")).id for _ in range(4)}  # the clock does not move
    walked: list[str] = []
    before: PipelineRun | None = None
    while page := await runs.list_for_pipeline("pipe-1", limit=1, before=before):
        walked += [r.id for r in page]
        before = page[-1]
    assert sorted(walked) == sorted(ids)


async def test_stuck_finds_running_runs_with_an_old_heartbeat(
    runs: PipelineRunRepository, clock: Clock
) -> None:
    start = clock.now
    silent = await runs.start("pipe-1", run_id="silent")
    beating = await runs.start("pipe-2", run_id="beating")
    finished = await runs.start("pipe-1", run_id="finished")
    await runs.finish(finished.id)
    clock.advance(100)
    await runs.heartbeat(beating.id)

    async def stuck_at(seconds: float, silent_for: float) -> list[str]:
        found = await runs.stuck(silent_for=silent_for, now=start + timedelta(seconds=seconds))
        assert all(r.status == "running" and r.finished_at is None for r in found)
        return [r.id for r in found]

    assert await stuck_at(30, silent_for=60) == []
    assert await stuck_at(120, silent_for=60) == [silent.id]  # beating spoke 20 s ago
    assert await stuck_at(200, silent_for=60) == [silent.id, beating.id]
    assert await stuck_at(100, silent_for=0) == [silent.id, beating.id]

    await runs.fail(silent.id, "worker vanished")
    assert await stuck_at(10_000, silent_for=60) == [beating.id]


async def test_stuck_with_the_real_clock(runs: PipelineRunRepository) -> None:
    run = await runs.start("pipe-1")
    assert await runs.stuck(silent_for=3600) == []
    assert [r.id for r in await runs.stuck(silent_for=0)] == [run.id]


@pytest.mark.parametrize(
    "offset_hours",
    [pytest.param(-5, id="utc-minus-5"), pytest.param(9, id="utc-plus-9")],
)
async def test_stuck_accepts_now_in_any_time_zone(
    runs: PipelineRunRepository, clock: Clock, offset_hours: int
) -> None:
    run = await runs.start("pipe-1")
    zone = timezone(timedelta(hours=offset_hours))
    later = (clock.now + timedelta(seconds=120)).astimezone(zone)
    assert [r.id for r in await runs.stuck(silent_for=60, now=later)] == [run.id]
    earlier = (clock.now + timedelta(seconds=30)).astimezone(zone)
    assert await runs.stuck(silent_for=60, now=earlier) == []


# -- catalog -----------------------------------------------------------------------------------


async def test_catalog_rows_and_row(sql: SqlService) -> None:
    catalog = Catalog(sql.app)
    await sql.app.execute("INSERT INTO tools(id, name) VALUES ('t-2', 'Search'), ('t-1', 'Fetch')")
    await sql.app.execute("INSERT INTO flows(id, name) VALUES ('f-1', 'Flow')")
    await sql.app.execute(
        "INSERT INTO schedules(id, name, pipeline_id, interval_seconds)"
        " VALUES ('s-1', 'Nightly', 'pipe-1', 86400)"
    )

    kbs = await catalog.rows("knowledge_bases")
    assert [r["id"] for r in kbs] == ["kb-1", "kb-2"]
    assert kbs[0]["name"] == "Docs"
    assert kbs[0]["chunk_size"] == 1000
    assert [r["id"] for r in await catalog.rows("tools")] == ["t-1", "t-2"]
    assert [r["id"] for r in await catalog.rows("tools", limit=1, offset=1)] == ["t-2"]
    assert [r["id"] for r in await catalog.rows("pipelines")] == ["pipe-1", "pipe-2"]
    assert [r["id"] for r in await catalog.rows("flows")] == ["f-1"]
    schedule = await catalog.row("schedules", "s-1")
    assert schedule is not None
    assert (schedule["pipeline_id"], schedule["interval_seconds"]) == ("pipe-1", 86400)
    assert await catalog.row("tools", "t-1") == (await catalog.rows("tools"))[0]
    assert await catalog.row("tools", "no-such-tool") is None


async def test_catalog_settings(sql: SqlService) -> None:
    catalog = Catalog(sql.app)
    assert await catalog.settings() == {}
    assert await catalog.setting("theme") is None
    await sql.app.execute_many(
        "INSERT INTO settings(key, value) VALUES (?, ?)",
        [("theme", '"dark"'), ("limits", '{"docs":[1,2]}'), ("zero", "0"), ("none", "null")],
    )
    assert await catalog.settings() == {
        "limits": {"docs": [1, 2]},
        "none": None,
        "theme": "dark",
        "zero": 0,
    }
    assert await catalog.setting("theme") == "dark"
    assert await catalog.setting("zero", default=5) == 0
    assert await catalog.setting("missing", default="light") == "light"


@pytest.mark.parametrize(
    "table",
    [
        pytest.param("documents", id="real-but-not-projected"),
        pytest.param("settings", id="settings-table"),
        pytest.param("sqlite_master", id="sqlite-master"),
        pytest.param("Tools", id="wrong-case"),
        pytest.param("tools; DROP TABLE documents; --", id="injection"),
        pytest.param("tools WHERE 1=1 UNION SELECT * FROM documents", id="union"),
        pytest.param("", id="empty"),
    ],
)
async def test_catalog_refuses_unknown_tables(sql: SqlService, table: str) -> None:
    catalog = Catalog(sql.app)
    before = await schema(sql)
    with pytest.raises(QueryError, match="unknown table"):
        await catalog.rows(table)
    with pytest.raises(QueryError, match="unknown table"):
        await catalog.row(table, "x")
    assert await schema(sql) == before


# -- SQL injection -----------------------------------------------------------------------------

PAYLOADS = [
    pytest.param("'); DROP TABLE documents; --", id="drop-table"),
    pytest.param("x' OR '1'='1", id="or-true"),
    pytest.param('O\'Brien said "hi"; DELETE FROM knowledge_bases; --', id="quotes-and-delete"),
    pytest.param("?; :name @p $v %s {0}", id="placeholders"),
    pytest.param("50%_off\\ [a-z]*", id="like-and-glob-wildcards"),
    pytest.param("nul\x00inside", id="nul-character"),
]


@pytest.mark.parametrize("payload", PAYLOADS)
async def test_hostile_text_is_stored_verbatim(sql: SqlService, payload: str) -> None:
    await add_kb(sql, payload, name=payload)
    await add_pipeline(sql, payload, name=payload)
    docs = DocumentRepository(sql.app)
    runs = PipelineRunRepository(sql.app)
    catalog = Catalog(sql.app)
    before_schema = await schema(sql)
    await docs.ingest("kb-1", title="bystander", content="bystander", chunks=["b"])

    result = await docs.ingest(
        payload,
        title=payload,
        content=payload,
        chunks=[payload, ChunkInput(payload, metadata={payload: payload})],
        source_uri=payload,
        mime_type=payload,
        metadata={payload: [payload]},
        document_id=payload,
    )
    assert (result.document_id, result.outcome) == (payload, "created")
    document = await docs.get(payload)
    assert document is not None
    assert (document.kb_id, document.title, document.source_uri, document.mime_type) == (
        payload,
        payload,
        payload,
        payload,
    )
    assert document.metadata == {payload: [payload]}
    assert document.content_hash == content_hash(payload)
    assert [(c.content, c.metadata) for c in await docs.chunks(payload)] == [
        (payload, {}),
        (payload, {payload: payload}),
    ]
    assert [c.content for c in await docs.chunk_page(payload)] == [payload, payload]
    assert await docs.find_by_hash(payload, content_hash(payload)) == document
    assert [d.id for d in await docs.list_documents(payload)] == [payload]
    assert await docs.stats(payload) == KnowledgeBaseStats(payload, 1, 2, len(payload.encode()))
    again = await docs.ingest(payload, title=payload, content=payload, chunks=[payload])
    assert again.outcome == "unchanged"

    run = await runs.start(payload, run_id=payload)
    failed = await runs.fail(payload, payload, stats={payload: payload})
    assert failed.finished_at is not None
    assert failed == PipelineRun(
        payload,
        payload,
        "failed",
        run.started_at,
        failed.finished_at,
        {payload: payload},
        payload,
        run.heartbeat_at,
    )
    assert await runs.get(payload) == failed
    assert [r.id for r in await runs.list_for_pipeline(payload)] == [payload]

    kb_row = await catalog.row("knowledge_bases", payload)
    assert kb_row is not None
    assert kb_row["name"] == payload
    assert await catalog.setting(payload, default="unset") == "unset"

    # Nothing else happened: the schema, the bystanders and the counts are as expected.
    assert await schema(sql) == before_schema
    assert await table_counts(sql) == {
        "knowledge_bases": 3,
        "documents": 2,
        "document_chunks": 3,
        "pipelines": 3,
        "pipeline_runs": 1,
    }
    assert await docs.delete(payload) is True
    assert [d.title for d in await docs.list_documents("kb-1")] == ["bystander"]
