-- An interrupted task run is "unsettled" until its owner is told (or it is retried once):
-- crash-safe, since the notice is queued with a dedupe key before the row is settled.
ALTER TABLE task_runs ADD COLUMN settled INTEGER NOT NULL DEFAULT 1;
