-- A swarm run's progress message in the chat it came from (the platform's message id; channel
-- and room are in origin): a run resumed after a restart edits that same message instead of
-- posting a second one.
ALTER TABLE swarm_runs ADD COLUMN progress_message TEXT;

-- The delegating agent's estimate of how long a subtask takes: the longest start first, also
-- when a run is resumed after a restart.
ALTER TABLE swarm_tasks ADD COLUMN expected_seconds REAL
    CHECK (expected_seconds IS NULL OR expected_seconds > 0);
