"""async_store: async SQLite storage for asyncio applications.

Dependencies point one way (nothing lower imports anything higher):

    errors, config, metrics, _checks, _clock, _files, _futures, _ids, _json, _tasks,
    sqlite._migration_record, logsinks._records
      → sqlite._connection, sqlite._errors, _shield, statistics, events.records,
        migrations._sets, sqlite._writer_jobs, sqlite.backup._manifest
        → database, sqlite._readers, sqlite._writer_thread, sqlite._writer_queue,
          sqlite._queries, sqlite._foreign_files, sqlite.backup._contents, health._report
          → sqlite._writer, sqlite._transaction → sqlite._snapshot, health._prometheus
            → sqlite.database, sqlite._event_recorder
              → events._appends, sqlite._bulk_insert, sqlite._log_table
                → migrations.runner, events.store, repositories._documents,
                  repositories._pipeline_runs, sqlite.backup._copy, health.probe, logsinks._sql,
                  chunking, sqlite._writer_pause, sqlite
                  → events, migrations, health, repositories, state, sqlite.backup._restore,
                    sqlite.backup._retention, logsinks, sqlite.backup._online_restore
                    → sqlite.backup
                      → service
                        → demo
                          → cli

``sqlite._transaction`` and ``sqlite._snapshot`` name ``Database`` in annotations only, imported
under ``TYPE_CHECKING``.

This package re-exports every name in the ``__all__`` of its public modules (those without a
leading underscore), so ``from async_store import X`` reaches the whole public surface. Two
exceptions: ``demo`` and ``cli`` are the command-line program, not library API; the state
entities and deltas live in ``async_store.state``.
"""

from .chunking import split_text
from .config import ENV_PREFIX, DatabaseConfig, SqlConfig, Synchronous
from .database import Database, Parameters, ReadSnapshot, Row, Transaction
from .errors import (
    BackupError,
    CannotOpen,
    CheckViolation,
    ConcurrencyError,
    ConfigError,
    DatabaseBusy,
    DatabaseCorrupt,
    DatabaseError,
    DatabaseFull,
    DatabaseIOError,
    DatabaseReadOnly,
    EntityExists,
    EntityInUse,
    EntityNotFound,
    ForeignKeyViolation,
    IntegrityViolation,
    Interrupted,
    InvalidDelta,
    MigrationError,
    NotADatabase,
    NotNullViolation,
    PoolClosed,
    PoolTimeout,
    PragmaMismatch,
    QueryError,
    ReadOnlyQuery,
    StateManagerClosed,
    StateManagerFull,
    StoreError,
    TransactionTimeout,
    UniqueViolation,
)
from .events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EncodedEvent,
    EventStore,
    ExpectedVersion,
    JsonInput,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamState,
    VerificationReport,
)
from .health import CheckpointResult, DatabaseHealth, HealthReport
from .logsinks import JsonlSink, SqlLogSink
from .metrics import KINDS, LatencyHistogram, LatencySummary, Metrics
from .migrations import Migration, MigrationSet, MigrationStatus, migration_status
from .repositories import (
    Catalog,
    Chunk,
    ChunkInput,
    Document,
    DocumentRepository,
    IngestResult,
    KnowledgeBaseStats,
    PipelineRun,
    PipelineRunRepository,
    RunStatus,
    content_hash,
    estimate_tokens,
)
from .service import SqlService
from .sqlite import SqliteDatabase
from .sqlite.backup import (
    BackupConfig,
    BackupFile,
    BackupManifest,
    BackupScheduler,
    list_backups,
    restore_offline,
    verify_backup,
)
from .sqlite.database import CheckpointMode
from .state import AppState, StateDelta, StateManager
from .statistics import PoolStatistics, WriterHold

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AppState",
    "AppendResult",
    "BackupConfig",
    "BackupError",
    "BackupFile",
    "BackupManifest",
    "BackupScheduler",
    "CannotOpen",
    "Catalog",
    "CheckViolation",
    "CheckpointMode",
    "CheckpointResult",
    "Chunk",
    "ChunkInput",
    "ConcurrencyError",
    "ConfigError",
    "Database",
    "DatabaseBusy",
    "DatabaseConfig",
    "DatabaseCorrupt",
    "DatabaseError",
    "DatabaseFull",
    "DatabaseHealth",
    "DatabaseIOError",
    "DatabaseReadOnly",
    "Document",
    "DocumentRepository",
    "ENV_PREFIX",
    "EncodedEvent",
    "EntityExists",
    "EntityInUse",
    "EntityNotFound",
    "EventStore",
    "ExpectedVersion",
    "ForeignKeyViolation",
    "HealthReport",
    "IngestResult",
    "IntegrityViolation",
    "Interrupted",
    "InvalidDelta",
    "JsonInput",
    "JsonlSink",
    "KINDS",
    "KnowledgeBaseStats",
    "LatencyHistogram",
    "LatencySummary",
    "Metrics",
    "Migration",
    "MigrationError",
    "MigrationSet",
    "MigrationStatus",
    "NO_STREAM",
    "NewEvent",
    "NotADatabase",
    "NotNullViolation",
    "Parameters",
    "PipelineRun",
    "PipelineRunRepository",
    "PoolClosed",
    "PoolStatistics",
    "PoolTimeout",
    "PragmaMismatch",
    "QueryError",
    "ReadOnlyQuery",
    "ReadSnapshot",
    "RecordedEvent",
    "Row",
    "RunStatus",
    "STREAM_EXISTS",
    "Snapshot",
    "SqlConfig",
    "SqlLogSink",
    "SqlService",
    "SqliteDatabase",
    "StateDelta",
    "StateManager",
    "StateManagerClosed",
    "StateManagerFull",
    "StoreError",
    "StreamState",
    "Synchronous",
    "Transaction",
    "TransactionTimeout",
    "UniqueViolation",
    "VerificationReport",
    "WriterHold",
    "__version__",
    "content_hash",
    "estimate_tokens",
    "list_backups",
    "migration_status",
    "restore_offline",
    "split_text",
    "verify_backup",
]
