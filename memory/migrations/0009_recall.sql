-- One recall index over everything: messages, facts, incidents (alerts, investigation,
-- postmortem), incident timelines, task run outputs and audit entries. Triggers on the source
-- tables keep recall_docs in step, so every write path (and every retention delete) is covered;
-- triggers on recall_docs keep the two FTS5 indexes in step with it.
--   recall_words: words (porter + unicode61), bm25-ranked; source and labels are indexed columns
--                 so filters run inside the index.
--   recall_grams: trigrams for substring search (paths, identifiers, CJK): a quoted string
--                 matches as consecutive trigrams, in the index, without reading the rows.
-- Labels are "name=value" words: host=web1 service=nginx incident=12 channel=slack …

CREATE TABLE recall_docs (
    id      INTEGER PRIMARY KEY,   -- newer documents have larger ids: rowid order ≈ time order
    source  TEXT NOT NULL,         -- message | fact | incident | timeline | task_run | audit
    ref     INTEGER NOT NULL,      -- the id in the source's own table
    at      TEXT NOT NULL,
    labels  TEXT NOT NULL DEFAULT '',
    text    TEXT NOT NULL,
    UNIQUE (source, ref)
);
CREATE INDEX recall_docs_at ON recall_docs (at);

CREATE VIRTUAL TABLE recall_words USING fts5 (
    text, labels, source,
    content = 'recall_docs', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE VIRTUAL TABLE recall_grams USING fts5 (
    text,
    content = 'recall_docs', content_rowid = 'id',
    tokenize = 'trigram'
);

CREATE TRIGGER recall_docs_insert AFTER INSERT ON recall_docs BEGIN
    INSERT INTO recall_words (rowid, text, labels, source)
    VALUES (new.id, new.text, new.labels, new.source);
    INSERT INTO recall_grams (rowid, text) VALUES (new.id, new.text);
END;

CREATE TRIGGER recall_docs_delete AFTER DELETE ON recall_docs BEGIN
    INSERT INTO recall_words (recall_words, rowid, text, labels, source)
    VALUES ('delete', old.id, old.text, old.labels, old.source);
    INSERT INTO recall_grams (recall_grams, rowid, text) VALUES ('delete', old.id, old.text);
END;

-- Messages: what people and the agent said (tool output capped at 8,000 characters).
CREATE TRIGGER recall_message_insert AFTER INSERT ON messages
WHEN coalesce(new.content, '') <> '' BEGIN
    INSERT INTO recall_docs (source, ref, at, labels, text)
    SELECT 'message', new.id, new.created_at,
           'channel=' || c.channel || ' role=' || new.role || ' conversation=' || c.id,
           substr(new.content, 1, 8000)
    FROM conversations c WHERE c.id = new.conversation_id;
END;

CREATE TRIGGER recall_message_delete AFTER DELETE ON messages BEGIN
    DELETE FROM recall_docs WHERE source = 'message' AND ref = old.id;
END;

-- Facts.
CREATE TRIGGER recall_fact_insert AFTER INSERT ON facts BEGIN
    INSERT INTO recall_docs (source, ref, at, labels, text)
    VALUES ('fact', new.id, new.created_at, 'tags=' || new.tags, new.text);
END;

CREATE TRIGGER recall_fact_update AFTER UPDATE OF text, tags ON facts BEGIN
    DELETE FROM recall_docs WHERE source = 'fact' AND ref = old.id;
    INSERT INTO recall_docs (source, ref, at, labels, text)
    VALUES ('fact', new.id, new.created_at, 'tags=' || new.tags, new.text);
END;

CREATE TRIGGER recall_fact_delete AFTER DELETE ON facts BEGIN
    DELETE FROM recall_docs WHERE source = 'fact' AND ref = old.id;
END;

-- Incidents: one document each (title, its alerts' labels and annotations, investigation,
-- postmortem), rebuilt when any of them changes, so it moves to the recent end. Only an
-- incident's first 50 alerts are indexed with it (their timeline entries all are): a storm
-- grouped into one incident must not rebuild an ever larger document on every new alert.
CREATE VIEW recall_incident_doc AS
SELECT i.id AS ref,
       coalesce(i.resolved_at, i.opened_at) AS at,
       'incident=' || i.id || ' severity=' || i.severity || ' ' ||
           coalesce((SELECT group_concat(j.key || '=' || j.value, ' ')
                     FROM json_each(i.labels) j), '') AS labels,
       i.title || char(10) ||
           coalesce((SELECT group_concat(j.value, ' ')
                     FROM (SELECT labels FROM incident_alerts
                           WHERE incident_id = i.id LIMIT 50) a, json_each(a.labels) j), '')
               || char(10) ||
           coalesce((SELECT group_concat(j.value, ' ')
                     FROM (SELECT annotations FROM incident_alerts
                           WHERE incident_id = i.id LIMIT 50) a, json_each(a.annotations) j), '')
               || char(10) ||
           coalesce(i.investigation, '') || char(10) ||
           coalesce(i.postmortem, '') AS text
FROM incidents i;

CREATE TRIGGER recall_incident_insert AFTER INSERT ON incidents BEGIN
    INSERT INTO recall_docs (source, ref, at, labels, text)
    SELECT 'incident', ref, at, labels, text FROM recall_incident_doc WHERE ref = new.id;
END;

CREATE TRIGGER recall_incident_update
AFTER UPDATE OF title, labels, severity, resolved_at, investigation, postmortem ON incidents BEGIN
    DELETE FROM recall_docs WHERE source = 'incident' AND ref = old.id;
    INSERT INTO recall_docs (source, ref, at, labels, text)
    SELECT 'incident', ref, at, labels, text FROM recall_incident_doc WHERE ref = new.id;
END;

CREATE TRIGGER recall_incident_delete AFTER DELETE ON incidents BEGIN
    DELETE FROM recall_docs WHERE source = 'incident' AND ref = old.id;
END;

CREATE TRIGGER recall_incident_alert_insert AFTER INSERT ON incident_alerts
WHEN NOT EXISTS (SELECT 1 FROM incident_alerts WHERE incident_id = new.incident_id
                 LIMIT 1 OFFSET 50) BEGIN
    DELETE FROM recall_docs WHERE source = 'incident' AND ref = new.incident_id;
    INSERT INTO recall_docs (source, ref, at, labels, text)
    SELECT 'incident', ref, at, labels, text FROM recall_incident_doc
    WHERE ref = new.incident_id;
END;

-- Incident timelines: one document per entry, labelled with its incident.
CREATE TRIGGER recall_timeline_insert AFTER INSERT ON incident_events BEGIN
    INSERT INTO recall_docs (source, ref, at, labels, text)
    SELECT 'timeline', new.id, new.at,
           'incident=' || new.incident_id || ' actor=' || new.actor || ' ' ||
               coalesce((SELECT group_concat(j.key || '=' || j.value, ' ')
                         FROM json_each(i.labels) j), ''),
           new.kind || ': ' || new.detail
    FROM incidents i WHERE i.id = new.incident_id;
END;

CREATE TRIGGER recall_timeline_delete AFTER DELETE ON incident_events BEGIN
    DELETE FROM recall_docs WHERE source = 'timeline' AND ref = old.id;
END;

-- Task runs: indexed once they have an output or an error.
CREATE TRIGGER recall_task_run_update AFTER UPDATE OF output, error ON task_runs
WHEN coalesce(new.output, '') <> '' OR coalesce(new.error, '') <> '' BEGIN
    DELETE FROM recall_docs WHERE source = 'task_run' AND ref = old.id;
    INSERT INTO recall_docs (source, ref, at, labels, text)
    SELECT 'task_run', new.id, coalesce(new.finished_at, new.started_at),
           'task=' || t.name || ' status=' || new.status,
           t.name || char(10) || substr(coalesce(new.output, ''), 1, 8000) || char(10) ||
               coalesce(new.error, '')
    FROM tasks t WHERE t.id = new.task_id;
END;

CREATE TRIGGER recall_task_run_delete AFTER DELETE ON task_runs BEGIN
    DELETE FROM recall_docs WHERE source = 'task_run' AND ref = old.id;
END;

-- Audit entries: every tool call, its reason, arguments and (capped) result.
CREATE TRIGGER recall_audit_insert AFTER INSERT ON audit_log BEGIN
    INSERT INTO recall_docs (source, ref, at, labels, text)
    VALUES ('audit', new.id, new.created_at,
            'tool=' || new.tool || ' actor=' || new.actor || ' ok=' || new.ok ||
                coalesce(' run=' || new.run_id, ''),
            new.tool || ' ' || new.action || char(10) || new.reason || char(10) ||
                new.arguments || char(10) || substr(new.result, 1, 2000));
END;

CREATE TRIGGER recall_audit_delete AFTER DELETE ON audit_log BEGIN
    DELETE FROM recall_docs WHERE source = 'audit' AND ref = old.id;
END;

-- What was stored before this migration, oldest first.
INSERT INTO recall_docs (source, ref, at, labels, text)
SELECT source, ref, at, labels, text FROM (
    SELECT 'message' AS source, m.id AS ref, m.created_at AS at,
           'channel=' || c.channel || ' role=' || m.role || ' conversation=' || c.id AS labels,
           substr(m.content, 1, 8000) AS text
    FROM messages m JOIN conversations c ON c.id = m.conversation_id
    WHERE coalesce(m.content, '') <> ''
    UNION ALL
    SELECT 'fact', id, created_at, 'tags=' || tags, text FROM facts
    UNION ALL
    SELECT 'incident', ref, at, labels, text FROM recall_incident_doc
    UNION ALL
    SELECT 'timeline', e.id, e.at,
           'incident=' || e.incident_id || ' actor=' || e.actor || ' ' ||
               coalesce((SELECT group_concat(j.key || '=' || j.value, ' ')
                         FROM json_each(i.labels) j), ''),
           e.kind || ': ' || e.detail
    FROM incident_events e JOIN incidents i ON i.id = e.incident_id
    UNION ALL
    SELECT 'task_run', r.id, coalesce(r.finished_at, r.started_at),
           'task=' || t.name || ' status=' || r.status,
           t.name || char(10) || substr(coalesce(r.output, ''), 1, 8000) || char(10) ||
               coalesce(r.error, '')
    FROM task_runs r JOIN tasks t ON t.id = r.task_id
    WHERE coalesce(r.output, '') <> '' OR coalesce(r.error, '') <> ''
    UNION ALL
    SELECT 'audit', id, created_at,
           'tool=' || tool || ' actor=' || actor || ' ok=' || ok || coalesce(' run=' || run_id, ''),
           tool || ' ' || action || char(10) || reason || char(10) || arguments || char(10) ||
               substr(result, 1, 2000)
    FROM audit_log
)
ORDER BY at;
