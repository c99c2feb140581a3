-- Event store: an append-only log of JSON events, per-stream snapshots and consumer checkpoints.
-- Timestamps are ISO-8601 UTC text ending in Z, so that text order is time order. The defaults
-- give milliseconds (strftime %f is SS.SSS); the library may write microseconds.

CREATE TABLE events (
    -- AUTOINCREMENT: a position is never handed out twice, even if the newest rows were ever
    -- removed (archival, or a repair with the guard triggers dropped). Checkpoints store
    -- positions; a reused position would make a consumer skip the event that took it.
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    -- UNIQUE makes a retried append detectable (idempotency is checked by event_id).
    event_id     TEXT    NOT NULL UNIQUE CHECK (length(event_id) > 0),
    stream_id    TEXT    NOT NULL CHECK (length(stream_id) > 0),
    version      INTEGER NOT NULL CHECK (version >= 1),
    type         TEXT    NOT NULL CHECK (length(type) > 0),
    data         TEXT    NOT NULL CHECK (json_valid(data)),
    metadata     TEXT    CHECK (metadata IS NULL OR json_valid(metadata)),
    recorded_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Lowercase hex SHA-256 of the row content, computed by the library, so that a verify pass
    -- can recompute it and find a row altered outside the library.
    content_hash TEXT    NOT NULL
                 CHECK (length(content_hash) = 64 AND content_hash NOT GLOB '*[^0-9a-f]*'),
    -- Optimistic concurrency: two writers racing for the same next version cannot both win.
    -- Its index also serves read_stream (stream_id = ? AND version >= ? ORDER BY version).
    UNIQUE (stream_id, version)
);

-- read_all filtered by event type, in log order.
CREATE INDEX idx_events_type_position ON events (type, position);

-- The log is the source the projections are rebuilt from, and undo appends compensating events
-- instead of editing history. Refusing changes in SQL covers every path: library code, tools,
-- ad-hoc queries.
CREATE TRIGGER events_no_update
BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE of an event is not allowed');
END;

CREATE TRIGGER events_no_delete
BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE of an event is not allowed');
END;

-- INSERT OR REPLACE (and REPLACE INTO) deletes the row it collides with without firing the
-- delete trigger (recursive_triggers is off), so a retried append written that way would move
-- an old event to a new position. Refuse the collision before the insert. Side effects: a
-- duplicate append fails here (SQLITE_CONSTRAINT_TRIGGER) rather than on the UNIQUE constraint,
-- and INSERT OR IGNORE / ON CONFLICT DO NOTHING of a duplicate fails instead of being skipped.
CREATE TRIGGER events_no_replace
BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE event_id = NEW.event_id)
  OR EXISTS (SELECT 1 FROM events WHERE stream_id = NEW.stream_id AND version = NEW.version)
  OR EXISTS (SELECT 1 FROM events WHERE position = NEW.position)
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: an event with this event_id, stream version or position exists');
END;

-- WITHOUT ROWID: rows are stored in (stream_id, version) order, so the newest snapshot of a
-- stream (stream_id = ? ORDER BY version DESC LIMIT 1) is one seek with no second lookup.
-- Snapshots are few and written rarely, so the large-row cost of WITHOUT ROWID does not matter.
CREATE TABLE aggregate_snapshots (
    stream_id      TEXT    NOT NULL CHECK (length(stream_id) > 0),
    -- The stream version the state reflects; 0 is the state before any event.
    version        INTEGER NOT NULL CHECK (version >= 0),
    state          TEXT    NOT NULL CHECK (json_valid(state)),
    -- Shape of state, so that a newer library can skip snapshots it cannot read and replay.
    schema_version INTEGER NOT NULL DEFAULT 1 CHECK (schema_version >= 1),
    created_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (stream_id, version)
) WITHOUT ROWID;

-- Checkpoints of consumers that only read the log. The projector keeps its checkpoint in
-- app_meta.projection_checkpoints instead: it must change in the same transaction as the rows
-- it projects, and in production mode those live in another file.
CREATE TABLE event_checkpoints (
    name       TEXT    PRIMARY KEY CHECK (length(name) > 0),
    -- Position of the last event handled; 0 means none yet.
    position   INTEGER NOT NULL CHECK (position >= 0),
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
