-- 0008: retention. Indexes on the time columns the daily prune deletes by (each batch finds its
-- oldest rows without a scan), and hourly samples of the database size for the growth rate.
CREATE INDEX alert_events_age ON alert_events (at);
CREATE INDEX outbox_age ON outbox (created_at);
CREATE INDEX audit_log_age ON audit_log (created_at);
CREATE INDEX agent_runs_age ON agent_runs (started_at);
CREATE INDEX component_events_age ON component_events (created_at);
CREATE INDEX incidents_resolved ON incidents (resolved_at) WHERE state = 'resolved';
-- An outbox row still referenced by a task run is kept (the run's delivery status reads it).
CREATE INDEX task_runs_outbox ON task_runs (outbox_id) WHERE outbox_id IS NOT NULL;
CREATE INDEX remediations_incident ON remediations (incident_id);

CREATE TABLE db_size (
    at          TEXT PRIMARY KEY,               -- when sampled
    file_bytes  INTEGER NOT NULL,               -- the database file (pages × page size)
    free_bytes  INTEGER NOT NULL                -- free pages inside it, reusable
) WITHOUT ROWID;
-- A postmortem fact (source "incident:N") goes with its incident.
CREATE INDEX facts_by_source ON facts (source);
