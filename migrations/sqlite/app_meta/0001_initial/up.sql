-- Application metadata of RAG Studio. knowledge_bases, pipelines, tools, flows, schedules and
-- settings are projections of the event log (the projector rebuilds them from zero); documents,
-- document_chunks, pipeline_runs and logs are written directly.
--
-- Conventions:
-- * TEXT ids are spelled NOT NULL PRIMARY KEY: in an ordinary rowid table SQLite lets a
--   PRIMARY KEY column hold NULL unless told otherwise (a historical quirk it keeps).
-- * Timestamps are ISO-8601 UTC text ending in Z, so that text order is time order. The defaults
--   give milliseconds (strftime %f is SS.SSS); the library may write microseconds.
-- * JSON columns are TEXT with CHECK (json_valid(...)), so a reader never meets a value that
--   json.loads rejects.
-- * SQLite does not index foreign key columns. Each one has an index below, so that ON DELETE
--   CASCADE/RESTRICT seeks the child rows instead of scanning the whole child table.
-- * The state layer must refuse whatever these CHECKs and foreign keys refuse: a projected row
--   that fails here would stop the projector at an event that is already in the log.

CREATE TABLE settings (
    key        TEXT NOT NULL PRIMARY KEY,
    -- JSON text, so that a setting keeps its type (string, number, object) across a round trip.
    value      TEXT NOT NULL CHECK (json_valid(value)),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE knowledge_bases (
    id              TEXT    NOT NULL PRIMARY KEY,
    -- Names are labels, not keys: two knowledge bases may share one.
    name            TEXT    NOT NULL CHECK (length(name) > 0),
    description     TEXT    NOT NULL DEFAULT '',
    embedding_model TEXT    NOT NULL DEFAULT '',
    chunk_size      INTEGER NOT NULL DEFAULT 1000 CHECK (chunk_size > 0),
    chunk_overlap   INTEGER NOT NULL DEFAULT 100 CHECK (chunk_overlap >= 0),
    metadata        TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- An overlap as long as the chunk would never advance through the text.
    CHECK (chunk_overlap < chunk_size)
);

CREATE INDEX idx_knowledge_bases_name ON knowledge_bases (name);

CREATE TABLE documents (
    id           TEXT    NOT NULL PRIMARY KEY,
    kb_id        TEXT    NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    title        TEXT    NOT NULL,
    source_uri   TEXT    NOT NULL DEFAULT '',
    mime_type    TEXT    NOT NULL DEFAULT 'text/plain',
    -- Lowercase hex SHA-256 of the document bytes: the key of idempotent ingest.
    content_hash TEXT    NOT NULL
                 CHECK (length(content_hash) = 64 AND content_hash NOT GLOB '*[^0-9a-f]*'),
    size_bytes   INTEGER NOT NULL CHECK (size_bytes >= 0),
    chunk_count  INTEGER NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    status       TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'ready', 'failed')),
    metadata     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Redundant with the primary key on its own; it exists as the parent key of
    -- document_chunks (document_id, kb_id), which keeps a chunk in the knowledge base of its
    -- document.
    UNIQUE (id, kb_id)
);

-- Listing the documents of a knowledge base by creation time.
CREATE INDEX idx_documents_kb_id_created_at ON documents (kb_id, created_at);

-- Idempotent ingest: the same bytes added to one knowledge base twice are found, not copied.
CREATE UNIQUE INDEX idx_documents_kb_id_content_hash ON documents (kb_id, content_hash);

-- Re-ingest of a changed source finds the previous version by where it came from.
CREATE INDEX idx_documents_kb_id_source_uri ON documents (kb_id, source_uri);

CREATE TABLE document_chunks (
    -- AUTOINCREMENT: chunk ids are what a vector index stores next to each embedding. Without it
    -- SQLite reuses the ids of the newest deleted chunks, and an embedding not yet purged would
    -- then point at another text.
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id  TEXT    NOT NULL,
    -- Denormalised from documents so that the chunks of one knowledge base can be paged
    -- (kb_id = ? AND id > ? ORDER BY id) without a join; the composite foreign key below keeps
    -- it equal to the kb_id of the document.
    kb_id        TEXT    NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    chunk_index  INTEGER NOT NULL CHECK (chunk_index >= 0),
    content      TEXT    NOT NULL,
    token_count  INTEGER NOT NULL DEFAULT 0 CHECK (token_count >= 0),
    content_hash TEXT    NOT NULL,
    metadata     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    -- Its index also serves the foreign key below (document_id leads) and reading the chunks of
    -- a document in order.
    UNIQUE (document_id, chunk_index),
    FOREIGN KEY (document_id, kb_id) REFERENCES documents (id, kb_id) ON DELETE CASCADE
);

CREATE INDEX idx_document_chunks_kb_id_id ON document_chunks (kb_id, id);

CREATE TABLE pipelines (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL CHECK (length(name) > 0),
    -- NULL for a pipeline not tied to one knowledge base. RESTRICT: a pipeline is configuration
    -- somebody wrote; removing its knowledge base must fail rather than delete it silently.
    kb_id       TEXT    REFERENCES knowledge_bases (id) ON DELETE RESTRICT,
    description TEXT    NOT NULL DEFAULT '',
    steps       TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(steps)),
    config      TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(config)),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX idx_pipelines_kb_id ON pipelines (kb_id);

CREATE TABLE pipeline_runs (
    id           TEXT NOT NULL PRIMARY KEY,
    pipeline_id  TEXT NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    status       TEXT NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    started_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at  TEXT,
    stats        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(stats)),
    error        TEXT,
    -- Last sign of life from the worker: a running run with an old heartbeat is stuck.
    heartbeat_at TEXT,
    -- finished_at is set exactly when the run is no longer running.
    CHECK ((status = 'running') = (finished_at IS NULL))
);

-- History of one pipeline, in start order.
CREATE INDEX idx_pipeline_runs_pipeline_id_started_at ON pipeline_runs (pipeline_id, started_at);

-- Stuck-run lookup. Partial, because running rows are few and the rest never need it; the
-- planner uses it only when the query says status = 'running' literally, not status = ?.
CREATE INDEX idx_pipeline_runs_running ON pipeline_runs (started_at) WHERE status = 'running';

CREATE TABLE tools (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL CHECK (length(name) > 0),
    kind        TEXT    NOT NULL DEFAULT 'function',
    description TEXT    NOT NULL DEFAULT '',
    config      TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(config)),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE flows (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL CHECK (length(name) > 0),
    description TEXT    NOT NULL DEFAULT '',
    definition  TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(definition)),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE schedules (
    id               TEXT    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL CHECK (length(name) > 0),
    -- What the schedule starts; a schedule goes away with its pipeline or flow.
    pipeline_id      TEXT    REFERENCES pipelines (id) ON DELETE CASCADE,
    flow_id          TEXT    REFERENCES flows (id) ON DELETE CASCADE,
    cron             TEXT,
    interval_seconds INTEGER CHECK (interval_seconds IS NULL OR interval_seconds > 0),
    enabled          INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    next_run_at      TEXT,
    last_run_at      TEXT,
    created_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Exactly one way to say when: a cron expression or a fixed interval.
    CHECK ((cron IS NULL) <> (interval_seconds IS NULL))
);

CREATE INDEX idx_schedules_pipeline_id ON schedules (pipeline_id);

CREATE INDEX idx_schedules_flow_id ON schedules (flow_id);

-- The scheduler loop: enabled = 1 AND next_run_at <= now, soonest first.
CREATE INDEX idx_schedules_enabled_next_run_at ON schedules (enabled, next_run_at);

-- Kept in this database, not next to the events: the projector writes a batch of rows and its
-- checkpoint in one app_meta transaction, so after a crash it resumes exactly where it stopped.
CREATE TABLE projection_checkpoints (
    name       TEXT    NOT NULL PRIMARY KEY,
    -- Position in events of the last event projected; 0 means none yet (rebuild from zero).
    position   INTEGER NOT NULL CHECK (position >= 0),
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Written in batches by the SQL logging sink. A plain rowid: nothing refers to a log row, so
-- reuse of a deleted id is harmless.
CREATE TABLE logs (
    id         INTEGER PRIMARY KEY,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    level      TEXT    NOT NULL,
    logger     TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    extra      TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(extra))
);

-- Reading a time range and pruning the oldest rows.
CREATE INDEX idx_logs_created_at ON logs (created_at);
