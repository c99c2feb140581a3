-- Reverse of up.sql, newest object first. The guard triggers go before the table; the
-- sqlite_sequence row that AUTOINCREMENT kept for events is removed by DROP TABLE itself.
DROP TABLE event_checkpoints;

DROP TABLE aggregate_snapshots;

DROP TRIGGER events_no_replace;

DROP TRIGGER events_no_delete;

DROP TRIGGER events_no_update;

DROP INDEX idx_events_type_position;

DROP TABLE events;
