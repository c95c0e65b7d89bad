-- Scheduled tasks and their runs. A run row is written (claimed) before the run starts:
-- UNIQUE (task_id, slot) makes each scheduled time run at most once, across restarts.

CREATE TABLE tasks (
    id                    INTEGER PRIMARY KEY,
    name                  TEXT NOT NULL UNIQUE,
    source                TEXT NOT NULL CHECK (source IN ('config', 'runtime')),
    spec                  TEXT NOT NULL,          -- JSON: schedule, action, delivery, policies
    enabled               INTEGER NOT NULL DEFAULT 1,
    paused_reason         TEXT,                   -- set when paused (by a person or by failures)
    owner                 TEXT NOT NULL,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    failure_notified_at   TEXT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
);

CREATE TABLE task_runs (
    id           INTEGER PRIMARY KEY,
    task_id      INTEGER NOT NULL REFERENCES tasks (id),
    slot         TEXT NOT NULL,                   -- the scheduled time ("manual:…" for run-now)
    attempt      INTEGER NOT NULL DEFAULT 1,
    status       TEXT NOT NULL DEFAULT 'claimed'
                 CHECK (status IN ('claimed', 'running', 'ok', 'nothing_to_do', 'failed',
                                   'timeout', 'skipped', 'interrupted')),
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    tokens       INTEGER NOT NULL DEFAULT 0,
    output       TEXT,
    error        TEXT,
    outbox_id    INTEGER REFERENCES outbox (id),  -- the delivery, confirmed when delivered
    UNIQUE (task_id, slot)
);
CREATE INDEX task_runs_task ON task_runs (task_id, id);
