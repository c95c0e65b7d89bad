-- 0001: the initial schema. Never edit once landed: add 0002_*.sql instead.
-- Timestamps are fixed-width ISO-8601 UTC text ("2026-01-01T00:00:00.000000Z"): text order is
-- time order. JSON columns hold JSON text or NULL.

-- Conversations with people, one per (channel, key), e.g. ("slack", "C123:thread-ts").
CREATE TABLE conversations (
    id          INTEGER PRIMARY KEY,
    channel     TEXT NOT NULL,
    key         TEXT NOT NULL,
    title       TEXT NOT NULL DEFAULT '',
    summary     TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (channel, key)
);
CREATE INDEX conversations_updated ON conversations (updated_at);

-- Chat Completions messages, stored exactly (reasoning_content and tool_calls included).
CREATE TABLE messages (
    id                 INTEGER PRIMARY KEY,
    conversation_id    INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role               TEXT NOT NULL,
    content            TEXT,
    reasoning_content  TEXT,
    tool_calls         TEXT,            -- JSON array
    tool_call_id       TEXT,
    name               TEXT,
    created_at         TEXT NOT NULL,
    summarized         INTEGER NOT NULL DEFAULT 0 CHECK (summarized IN (0, 1))
);
CREATE INDEX messages_conversation ON messages (conversation_id, summarized, id);

-- Long-term facts the agent remembers, searchable with FTS5 (bm25).
CREATE TABLE facts (
    id          INTEGER PRIMARY KEY,
    text        TEXT NOT NULL UNIQUE,
    tags        TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);

CREATE VIRTUAL TABLE facts_fts USING fts5 (
    text,
    tags,
    content = 'facts',
    content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER facts_fts_insert AFTER INSERT ON facts BEGIN
    INSERT INTO facts_fts (rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;

CREATE TRIGGER facts_fts_delete AFTER DELETE ON facts BEGIN
    INSERT INTO facts_fts (facts_fts, rowid, text, tags)
    VALUES ('delete', old.id, old.text, old.tags);
END;

CREATE TRIGGER facts_fts_update AFTER UPDATE ON facts BEGIN
    INSERT INTO facts_fts (facts_fts, rowid, text, tags)
    VALUES ('delete', old.id, old.text, old.tags);
    INSERT INTO facts_fts (rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;

-- Agent runs (one per incident investigation, message reply or task) and their steps.
CREATE TABLE agent_runs (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    conversation_id  INTEGER REFERENCES conversations (id) ON DELETE SET NULL,
    status           TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    error            TEXT,
    tokens           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX agent_runs_status ON agent_runs (status);
CREATE INDEX agent_runs_conversation ON agent_runs (conversation_id);

CREATE TABLE run_steps (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES agent_runs (id) ON DELETE CASCADE,
    step_index   INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT,
    input        TEXT,                  -- JSON
    output       TEXT,                  -- JSON
    error        TEXT,
    duration_ms  REAL NOT NULL DEFAULT 0,
    tokens       INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL
);
CREATE INDEX run_steps_run ON run_steps (run_id, id);

-- Every tool call: who asked, why, arguments, result (secrets redacted by the caller).
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    tool         TEXT NOT NULL,
    tier         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    arguments    TEXT NOT NULL,         -- JSON object
    result       TEXT NOT NULL,
    ok           INTEGER NOT NULL CHECK (ok IN (0, 1)),
    duration_ms  REAL NOT NULL,
    run_id       INTEGER REFERENCES agent_runs (id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX audit_log_run ON audit_log (run_id);

-- One row per model call, for budgets and cost reports.
CREATE TABLE llm_usage (
    id                 INTEGER PRIMARY KEY,
    run_id             INTEGER REFERENCES agent_runs (id) ON DELETE SET NULL,
    model              TEXT NOT NULL,
    purpose            TEXT NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cached_tokens      INTEGER NOT NULL,
    total_tokens       INTEGER NOT NULL,
    cost_usd           REAL NOT NULL,
    latency_ms         REAL NOT NULL,
    ok                 INTEGER NOT NULL CHECK (ok IN (0, 1)),
    error              TEXT,
    created_at         TEXT NOT NULL
);
CREATE INDEX llm_usage_created ON llm_usage (created_at);
CREATE INDEX llm_usage_run ON llm_usage (run_id);

-- The durable outbox: every notification, retried until delivered or failed.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    channel          TEXT NOT NULL,
    target           TEXT NOT NULL,
    thread           TEXT,
    text             TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    platform_id      TEXT,
    error            TEXT,
    created_at       TEXT NOT NULL,
    delivered_at     TEXT,
    dedupe_key       TEXT UNIQUE
);
CREATE INDEX outbox_due ON outbox (channel, status, next_attempt_at, id);

-- Supervisor history: component crashes, restarts, give-ups.
CREATE TABLE component_events (
    id          INTEGER PRIMARY KEY,
    component   TEXT NOT NULL,
    event       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);
CREATE INDEX component_events_component ON component_events (component, id);
