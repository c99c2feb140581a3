"""async_store: async SQLite storage for asyncio applications.

Dependencies point one way (nothing lower imports anything higher):

    errors, config, metrics, _checks, _clock, _futures, _ids, _json, _tasks, _migration_record
      → _connection, _shield, statistics, _event_records, _migration_sets, _writer_jobs
        → _readers, _writer_thread, _queries, _foreign_files, _backup_contents → _writer, _scopes
          → database, _event_log → _appends
            → migrations, events, _documents, _pipeline_runs, backup, health, logsinks, chunking,
              _writer_pause
              → repositories, state, restore, retention
                → service
                  → demo
                    → cli

``_scopes`` names ``Database`` in annotations only, imported under ``TYPE_CHECKING``.
"""

from ._connection import Row
from ._queries import Parameters
from .backup import BackupConfig, BackupManifest
from .config import DatabaseConfig, SqlConfig
from .database import Database, ReadSnapshot, Transaction
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
    StoreError,
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
from .health import HealthReport
from .migrations import MigrationSet, MigrationStatus
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
)
from .service import SqlService
from .state import AppState, StateDelta, StateManager, StateManagerFull
from .statistics import PoolStatistics

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AppState",
    "AppendResult",
    "BackupConfig",
    "BackupError",
    "BackupManifest",
    "CannotOpen",
    "Catalog",
    "CheckViolation",
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
    "DatabaseIOError",
    "DatabaseReadOnly",
    "Document",
    "DocumentRepository",
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
    "KnowledgeBaseStats",
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
    "STREAM_EXISTS",
    "Snapshot",
    "SqlConfig",
    "SqlService",
    "StateDelta",
    "StateManager",
    "StateManagerClosed",
    "StateManagerFull",
    "StoreError",
    "StreamState",
    "Transaction",
    "UniqueViolation",
    "VerificationReport",
    "__version__",
]
