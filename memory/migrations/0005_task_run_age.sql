-- Task runs are read by age (the digest, retention).
CREATE INDEX task_runs_started ON task_runs (started_at);
