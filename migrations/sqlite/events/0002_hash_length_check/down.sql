-- Reverse of up.sql: events as 0001_initial made it, hex check included. A row written since
-- with a hash that is not lowercase hex fails the check, and then nothing is changed.

-- The rows and the highest position ever handed out wait in two plain tables while events is
-- dropped (with its index and triggers) and created again.
CREATE TABLE events_rows AS SELECT * FROM events;

CREATE TABLE events_sequence AS SELECT seq FROM sqlite_sequence WHERE name = 'events';

DROP TABLE events;

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

INSERT INTO events(
    position, event_id, stream_id, version, type, data, metadata, recorded_at, content_hash
)
SELECT position, event_id, stream_id, version, type, data, metadata, recorded_at, content_hash
FROM events_rows ORDER BY position;

-- A position is never handed out twice, even one above the newest row (a repair removed it).
DELETE FROM sqlite_sequence WHERE name = 'events';

INSERT INTO sqlite_sequence(name, seq) SELECT 'events', seq FROM events_sequence;

DROP TABLE events_rows;

DROP TABLE events_sequence;

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
