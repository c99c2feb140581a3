"""async_store: async SQL storage for asyncio applications, on SQLite (the embedded default).

Start with ``docs/architecture.md``: the layers, the backend seam, the life of a write, an
append and a mutation through the code, and which file to open for what.

Dependencies point one way (nothing lower imports anything higher; a package counts as one
module, and the imports inside it are its own business):

    errors, metrics, chunking, _clock, _files, _futures, _ids, _shield, _sqlalchemy, _tasks, _urls
      → config, statistics, _checks, _json
        → database
          → events, migrations, health, repositories, logsinks
            → state, backups
              → sqlite, service
                → demo
                  → cli

``database`` is the contract every backend implements; the packages above it speak only that
contract. ``sqlite`` is the SQLite backend: it implements the contract and the pieces that
``events``, ``migrations``, ``health`` and ``backups`` declare as protocols. Nothing outside
it imports it or ``sqlite3``/``aiosqlite`` (``database.backend_of`` imports it on first use),
except this namespace, which re-exports its public names, and the command line.

This package re-exports every name in the ``__all__`` of its public modules (those without a
leading underscore), so ``from async_store import X`` reaches the whole public surface. Two
exceptions: ``demo`` and ``cli`` are the command-line program, not library API; the state
entities and deltas live in ``async_store.state``.
"""

from .backups import BackupConfig, BackupFile, BackupManifest, BackupScheduler, list_backups
from .chunking import split_text
from .config import ENV_PREFIX, DatabaseConfig, SqlConfig, Synchronous
from .database import Database, Parameters, ReadSnapshot, Row, Transaction, TransactionBlock
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
from .sqlite.backup import restore_offline, verify_backup
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
    "TransactionBlock",
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
