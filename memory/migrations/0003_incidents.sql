-- Alerts and incidents: rule state that survives a restart, a durable intake of alert events,
-- incidents with their alerts and timeline, and silences.

-- Pending and firing alerts from the rule engine (resolved ones are deleted).
CREATE TABLE alert_state (
    fingerprint   TEXT PRIMARY KEY,
    rule          TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'firing')),
    labels        TEXT NOT NULL,
    annotations   TEXT NOT NULL,
    value         REAL,
    active_since  TEXT NOT NULL,
    fired_at      TEXT,
    updated_at    TEXT NOT NULL
) WITHOUT ROWID;

-- Every alert event (rules and Alertmanager), committed before it is acknowledged; the
-- incident manager marks each one handled in the same transaction as its effects.
CREATE TABLE alert_events (
    id           INTEGER PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    labels       TEXT NOT NULL,
    annotations  TEXT NOT NULL,
    starts_at    TEXT NOT NULL,
    ends_at      TEXT,
    value        REAL,
    source       TEXT NOT NULL,
    at           TEXT NOT NULL,
    handled      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alert_events_unhandled ON alert_events (handled, id);
CREATE INDEX alert_events_fingerprint ON alert_events (fingerprint, id);

CREATE TABLE incidents (
    id                INTEGER PRIMARY KEY,
    group_key         TEXT NOT NULL,
    title             TEXT NOT NULL,
    severity          TEXT NOT NULL,
    labels            TEXT NOT NULL,            -- the grouping labels
    state             TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved')),
    opened_at         TEXT NOT NULL,
    resolved_at       TEXT,
    flush_at          TEXT,                     -- when its notification is next due
    notified_at       TEXT,
    notified_digest   TEXT,                     -- what the last notification said
    notifications     INTEGER NOT NULL DEFAULT 0,
    investigation     TEXT,                     -- findings text
    postmortem        TEXT
);
CREATE INDEX incidents_open ON incidents (state, group_key);
CREATE INDEX incidents_flush ON incidents (flush_at) WHERE flush_at IS NOT NULL;

CREATE TABLE incident_alerts (
    incident_id   INTEGER NOT NULL REFERENCES incidents (id),
    fingerprint   TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    labels        TEXT NOT NULL,
    annotations   TEXT NOT NULL,
    starts_at     TEXT NOT NULL,
    ends_at       TEXT,
    value         REAL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (incident_id, fingerprint)
) WITHOUT ROWID;
CREATE INDEX incident_alerts_fingerprint ON incident_alerts (fingerprint, status);

-- The timeline: alert events, notifications, investigation steps, actions, approvals, people.
CREATE TABLE incident_events (
    id           INTEGER PRIMARY KEY,
    incident_id  INTEGER NOT NULL REFERENCES incidents (id),
    at           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    actor        TEXT NOT NULL DEFAULT 'nightshift',
    detail       TEXT NOT NULL
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, id);

CREATE TABLE silences (
    id          INTEGER PRIMARY KEY,
    matchers    TEXT NOT NULL,                  -- JSON list of "name=value" / "name=~regex" …
    starts_at   TEXT NOT NULL,
    ends_at     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    comment     TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    expired_at  TEXT                            -- set when expired early by a person
);
CREATE INDEX silences_active ON silences (ends_at);

-- Remediation actions taken per alert, for the "N actions in M minutes" budget.
CREATE TABLE remediations (
    id           INTEGER PRIMARY KEY,
    incident_id  INTEGER NOT NULL REFERENCES incidents (id),
    alertname    TEXT NOT NULL,
    action       TEXT NOT NULL,
    decided_by   TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    at           TEXT NOT NULL
);
CREATE INDEX remediations_alert ON remediations (alertname, at);
