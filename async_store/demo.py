"""The main job: ``async-store demo`` (``make demo``) runs the library end to end on a data
directory (or any configuration, MVP mode included) and narrates what it does. Safe to run again
on the same databases: the ingest is idempotent and entities that exist are kept."""

from __future__ import annotations

import importlib.resources
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from .backups import BackupConfig
from .backups._retention import prune
from .chunking import split_text
from .config import SqlConfig
from .metrics import KINDS
from .repositories import DocumentRepository, PipelineRunRepository
from .service import SqlService
from .sqlite.backup import verify_backup
from .state import (
    AppState,
    KnowledgeBase,
    KnowledgeBaseAdd,
    Pipeline,
    PipelineAdd,
    Schedule,
    ScheduleAdd,
    SettingSet,
    StateDelta,
    StateManager,
    Tool,
    ToolAdd,
)

__all__ = ["DEFAULT_DATA", "run_demo"]

DEFAULT_DATA = Path("data")
"""The data directory of a demo given no configuration (``SqlConfig.from_env()`` defaults to it
too when no variable is set)."""

KNOWLEDGE_BASES = (
    KnowledgeBase(
        "kb-storage",
        "Storage internals",
        description="How the storage layer keeps data safe and fast",
        embedding_model="all-MiniLM-L6-v2",
        chunk_size=600,
        chunk_overlap=80,
    ),
    KnowledgeBase(
        "kb-rag",
        "Retrieval",
        description="Retrieval-augmented generation",
        embedding_model="all-MiniLM-L6-v2",
        chunk_size=800,
        chunk_overlap=100,
    ),
)
TOOLS = (
    Tool("tool-search", "Semantic search", kind="retrieval", config={"top_k": 5}),
    Tool("tool-summarize", "Summarize", kind="function", config={"max_words": 120}),
)
PIPELINE = Pipeline(
    "pipe-ingest",
    "Ingest the corpus",
    kb_id="kb-storage",
    steps=({"step": "load"}, {"step": "split"}, {"step": "embed"}, {"step": "index"}),
)
SCHEDULE = Schedule(
    "sched-nightly", "Nightly re-ingest", pipeline_id="pipe-ingest", cron="0 3 * * *"
)
# Which knowledge base each corpus file goes to.
CORPUS = {
    "write_ahead_logging.txt": "kb-storage",
    "group_commit.txt": "kb-storage",
    "event_sourcing.txt": "kb-storage",
    "retrieval_augmented_generation.txt": "kb-rag",
}


@dataclass
class _Narrator:
    out: TextIO

    def __call__(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def progress(self, label: str, done: int, total: int) -> None:
        """A progress bar, drawn only on a terminal."""
        if not self.out.isatty():
            return
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        print(
            f"\r  {label} [{'#' * filled:<{width}}] {done}/{total}",
            end=end,
            file=self.out,
            flush=True,
        )


async def run_demo(
    config: SqlConfig | str | os.PathLike[str] = DEFAULT_DATA, *, out: TextIO
) -> None:
    """Run the demo with ``config``, or on a data directory in production mode
    (``app_meta.db`` and ``events.db``); backups go to ``backups/`` beside app_meta.db.
    Narration goes to ``out``. Raises :class:`StoreError` when a step fails."""
    say = _Narrator(out)
    started = time.perf_counter()
    if not isinstance(config, SqlConfig):
        config = SqlConfig.in_directory(config)
    backup_dir = config.app.path.parent / "backups"
    backups = BackupConfig(directory=backup_dir, keep_last=3, keep_daily=0)

    say(f"== 1. open {_describe(config)}")
    opened = time.perf_counter()
    async with SqlService(config, backup=backups) as sql:
        say(f"   opened and migrated in {(time.perf_counter() - opened) * 1000:.1f} ms")
        for migration in await sql.migration_status():
            mark = "applied" if migration.applied else "pending"
            say(f"   migration {migration.migration_set} {migration.version:04d}: {mark}")

        async with StateManager(sql, snapshot_every=100) as state:
            say("== 2. knowledge bases, tools, a pipeline and a schedule, through the StateManager")
            await _create_entities(state, say)

            say("== 3. ingest the bundled corpus (idempotent on content hash)")
            documents = DocumentRepository(sql.app)
            ingested = await _ingest_corpus(documents, say)

            say("== 4. a pipeline run, started and finished with its stats")
            runs = PipelineRunRepository(sql.app)
            run = await runs.start(PIPELINE.id)
            run = await runs.finish(run.id, stats=ingested)
            say(f"   run {run.id[:8]}: {run.status}, stats {run.stats}")
            history = await runs.list_for_pipeline(PIPELINE.id, limit=100)
            say(
                f"   {len(history)} run(s) of {PIPELINE.id} so far; stuck runs: "
                f"{len(await runs.stuck())}"
            )

            say("== 5. a verified backup")
            manifest = await sql.backup()
            await verify_backup(manifest.directory)
            for item in manifest.files:
                say(f"   {item.name}: {item.size_bytes:,} bytes, sha256 {item.sha256[:12]}…")
            say(f"   verified; event position {manifest.event_position}; {manifest.directory}")
            removed = prune(sql.backup_root, keep_last=3, keep_daily=0, now=datetime.now(UTC))
            if removed:
                say(f"   pruned {len(removed)} older backup(s); 3 are kept")

            say("== 6. undo and redo")
            before = state.read_state().settings.get("ui.theme")
            theme = "dark" if before != "dark" else "light"
            await state.mutate(SettingSet("ui.theme", theme))
            say(f"   set ui.theme = {theme!r} (was {before!r})")
            await state.undo()
            say(f"   undo -> ui.theme = {state.read_state().settings.get('ui.theme')!r}")
            await state.redo()
            say(f"   redo -> ui.theme = {state.read_state().settings.get('ui.theme')!r}")
            await state.mutate(SettingSet("demo.last_run", datetime.now(UTC).isoformat()))
            await state.flush()
            live = state.read_state()
            say(f"   state version {live.version}; undo depth {len(live.undo_stack)}")
            # A few reads of chunks, as a search front end would make.
            for kb_id in live.knowledge_bases:
                await documents.chunk_page(kb_id, limit=5)
            report = await sql.health()

    say("== 7. restart: the service and the state come back from disk")
    async with SqlService(config, backup=backups) as sql, StateManager(sql) as state:
        restored = state.read_state()
        same = restored == live
        say(
            f"   state version {restored.version}, {_counts(restored)}: "
            f"{'identical to before the restart' if same else 'DIFFERENT from before'}"
        )
        for kb_stats in await DocumentRepository(sql.app).stats_all():
            say(
                f"   {kb_stats.kb_id}: {kb_stats.documents} documents, {kb_stats.chunks} "
                f"chunks, {kb_stats.bytes:,} bytes"
            )

    say("== 8. health")
    say(f"   status {report.status}" + "".join(f"\n   - {r}" for r in report.reasons))
    for name, db in report.databases.items():
        say(
            f"   {name}: {db.size_bytes:,} bytes, WAL {db.wal_bytes:,} bytes, "
            f"journal {db.journal_mode}, synchronous {db.synchronous}"
        )
    say("   latency (first session)  count     p50 ms     p95 ms")
    for kind in KINDS:
        summary = report.latency[kind]
        say(f"   {kind:<22} {summary.count:>7} {summary.p50_ms:>10.3f} {summary.p95_ms:>10.3f}")
    say(f"done in {time.perf_counter() - started:.1f} s")


async def _create_entities(state: StateManager, say: _Narrator) -> None:
    current = state.read_state()
    wanted: list[tuple[StateDelta, bool]] = [
        *((KnowledgeBaseAdd(kb), kb.id in current.knowledge_bases) for kb in KNOWLEDGE_BASES),
        *((ToolAdd(tool), tool.id in current.tools) for tool in TOOLS),
        (PipelineAdd(PIPELINE), PIPELINE.id in current.pipelines),
        (ScheduleAdd(SCHEDULE), SCHEDULE.id in current.schedules),
    ]
    for delta, exists in wanted:
        entity = delta.entity  # type: ignore[attr-defined]
        if exists:
            say(f"   {entity.label} {entity.id!r} exists already (kept)")
            continue
        version = await state.mutate(delta)
        say(f"   added {entity.label} {entity.id!r} -> state version {version}")
    # Documents refer to knowledge bases by foreign key: wait until they are projected.
    await state.flush()
    say(f"   projected into app_meta: {_counts(state.read_state())}")


async def _ingest_corpus(documents: DocumentRepository, say: _Narrator) -> dict[str, int]:
    corpus = importlib.resources.files("async_store") / "demo_corpus"
    files = sorted(corpus.iterdir(), key=lambda f: f.name)
    sizes = {kb.id: (kb.chunk_size, kb.chunk_overlap) for kb in KNOWLEDGE_BASES}
    totals = {"documents": 0, "chunks": 0, "created": 0, "unchanged": 0, "replaced": 0}
    for number, file in enumerate(files, start=1):
        if file.name not in CORPUS:
            continue
        kb_id = CORPUS[file.name]
        text = file.read_text(encoding="utf-8")
        size, overlap = sizes[kb_id]
        chunks = split_text(text, chunk_size=size, chunk_overlap=overlap)
        result = await documents.ingest(
            kb_id,
            title=text.splitlines()[0],
            content=text,
            chunks=chunks,
            source_uri=f"corpus://{file.name}",
            metadata={"file": file.name},
        )
        totals["documents"] += 1
        totals["chunks"] += result.chunk_count
        totals[result.outcome] += 1
        say.progress("ingest", number, len(files))
        say(f"   {file.name} -> {kb_id}: {result.outcome}, {result.chunk_count} chunks")
    return totals


def _describe(config: SqlConfig) -> str:
    app = config.app
    if config.events is None:
        return f"{app.path} in MVP mode (one file, synchronous {app.synchronous})"
    return (
        f"{app.path.parent}/ in production mode ({app.path.name} {app.synchronous}, "
        f"{config.events.path.name} {config.events.synchronous})"
    )


def _counts(state: AppState) -> str:
    return (
        f"{len(state.knowledge_bases)} knowledge bases, {len(state.tools)} tools, "
        f"{len(state.pipelines)} pipelines, {len(state.schedules)} schedules, "
        f"{len(state.settings)} settings"
    )
