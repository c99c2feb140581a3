-- Reverse of up.sql: children before parents, so that the implicit DELETE each DROP TABLE does
-- with foreign keys enforced finds no rows still referring to the table being dropped.
DROP INDEX idx_logs_created_at;

DROP TABLE logs;

DROP TABLE projection_checkpoints;

DROP INDEX idx_schedules_enabled_next_run_at;

DROP INDEX idx_schedules_flow_id;

DROP INDEX idx_schedules_pipeline_id;

DROP TABLE schedules;

DROP TABLE flows;

DROP TABLE tools;

DROP INDEX idx_pipeline_runs_running;

DROP INDEX idx_pipeline_runs_pipeline_id_started_at;

DROP TABLE pipeline_runs;

DROP INDEX idx_pipelines_kb_id;

DROP TABLE pipelines;

DROP INDEX idx_document_chunks_kb_id_id;

DROP TABLE document_chunks;

DROP INDEX idx_documents_kb_id_source_uri;

DROP INDEX idx_documents_kb_id_content_hash;

DROP INDEX idx_documents_kb_id_created_at;

DROP TABLE documents;

DROP INDEX idx_knowledge_bases_name;

DROP TABLE knowledge_bases;

DROP TABLE settings;
