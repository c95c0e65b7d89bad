-- Swarm runs: a coordinator's run tree of sub-agent tasks and every step they take, written as
-- things happen. Every write a worker makes carries its epoch and is refused by the statement
-- itself (WHERE epoch = ?) once the task has been reassigned (epoch bumped).

CREATE TABLE swarm_runs (
    id            INTEGER PRIMARY KEY,
    agent_run_id  INTEGER REFERENCES agent_runs (id) ON DELETE SET NULL,  -- the coordinator's run
    actor         TEXT NOT NULL,
    goal          TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'done', 'partial', 'failed', 'cancelled', 'unknown')),
    reason        TEXT,
    max_tokens    INTEGER NOT NULL,
    max_steps     INTEGER NOT NULL,
    max_spawns    INTEGER NOT NULL,
    tokens        INTEGER NOT NULL DEFAULT 0,
    steps         INTEGER NOT NULL DEFAULT 0,
    spawns        INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX swarm_runs_status ON swarm_runs (status);

CREATE TABLE swarm_tasks (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES swarm_runs (id) ON DELETE CASCADE,
    parent_task_id  INTEGER REFERENCES swarm_tasks (id) ON DELETE CASCADE,  -- NULL: coordinator's
    depth           INTEGER NOT NULL CHECK (depth >= 1),
    goal            TEXT NOT NULL,
    role            TEXT NOT NULL,
    tools           TEXT NOT NULL,            -- JSON list of tool names (a subset of the parent's)
    max_tokens      INTEGER NOT NULL,
    max_steps       INTEGER NOT NULL,
    deadline_at     TEXT,                     -- wall-clock deadline of the current attempt
    result_shape    TEXT,                     -- JSON schema (subset) the result must match
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed', 'stalled',
                                      'cancelled', 'unknown')),
    reason          TEXT,
    attempt         INTEGER NOT NULL DEFAULT 1,
    epoch           INTEGER NOT NULL DEFAULT 0,  -- fencing token: bumped on every claim/reassign
    result          TEXT,                     -- JSON
    tokens          INTEGER NOT NULL DEFAULT 0,
    steps           INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    progress_at     TEXT,
    finished_at     TEXT
);
CREATE INDEX swarm_tasks_run ON swarm_tasks (run_id, status);
CREATE INDEX swarm_tasks_parent ON swarm_tasks (parent_task_id);

-- One row per step of one attempt (epoch). A side-effecting tool step is inserted with
-- state 'intent' before it acts and updated to 'done'/'failed' after; other steps are inserted
-- once done. LLM steps keep the model's reply (content, reasoning, tool calls), so a replay
-- costs no tokens.
CREATE TABLE swarm_steps (
    id           INTEGER PRIMARY KEY,
    task_id      INTEGER NOT NULL REFERENCES swarm_tasks (id) ON DELETE CASCADE,
    epoch        INTEGER NOT NULL,
    step_index   INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('llm', 'tool')),
    name         TEXT,
    state        TEXT NOT NULL CHECK (state IN ('intent', 'done', 'failed')),
    input        TEXT,
    output       TEXT,
    error        TEXT,
    tokens       INTEGER NOT NULL DEFAULT 0,
    duration_ms  REAL NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    finished_at  TEXT,
    UNIQUE (task_id, epoch, step_index)
);
