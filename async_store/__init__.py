"""async_store: async SQLite storage for asyncio applications.

Dependencies point one way (nothing lower imports anything higher):

    errors, config, metrics, _checks, _clock, _futures, _ids, _json, _tasks, _migration_record,
    _log_records
      → _connection, _shield, statistics, _event_records, _migration_sets, _writer_jobs,
        _backup_manifest
        → _readers, _writer_thread, _writer_queue, _queries, _foreign_files, _backup_contents,
          _health_report
          → _writer, _transaction → _snapshot, _exposition
            → database, _event_log → _appends
              → migrations, events, _documents, _pipeline_runs, backup, health, _sql_log_sink,
                chunking, _writer_pause
                → repositories, state, restore, retention, logsinks, _online_restore
                  → service
                    → demo
                      → cli

``_transaction`` and ``_snapshot`` name ``Database`` in annotations only, imported under
``TYPE_CHECKING``.

This package re-exports every name in the ``__all__`` of its public modules (those without a
leading underscore), so ``from async_store import X`` reaches the whole public surface. Two
exceptions: ``demo`` and ``cli`` are the command-line program, not library API; the state
entities and deltas live in ``async_store.state``.
"""

from ._connection import Row
from ._queries import Parameters
from .backup import BackupConfig, BackupFile, BackupManifest, verify_backup
from .chunking import split_text
from .config import ENV_PREFIX, DatabaseConfig, SqlConfig, Synchronous
from .database import CheckpointMode, Database, ReadSnapshot, Transaction
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
from .restore import restore_offline
from .retention import BackupScheduler, list_backups
from .service import SqlService
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
