-- Incident memory: one structured record per resolved incident (what its alerts looked like,
-- the evidence that mattered, cause, fix, outcome), so the next incident with the same or a
-- near signature starts from it. Searchable through recall as source 'record'.

CREATE TABLE incident_records (
    id           INTEGER PRIMARY KEY,
    incident_id  INTEGER NOT NULL UNIQUE REFERENCES incidents (id),
    signature    TEXT NOT NULL,             -- alertnames '|' identifying labels, both sorted
    alertnames   TEXT NOT NULL,             -- sorted, comma-separated: the near-match key
    labels       TEXT NOT NULL,             -- JSON list of "name=value", sorted
    title        TEXT NOT NULL,
    evidence     TEXT NOT NULL DEFAULT '[]',-- JSON list of {tool, arguments, excerpt}
    cause        TEXT NOT NULL DEFAULT '',
    fix          TEXT NOT NULL DEFAULT '',
    action       TEXT NOT NULL DEFAULT '',  -- the remediation that ran, if any
    fix_worked   INTEGER CHECK (fix_worked IN (0, 1)),  -- NULL: no action ran
    outcome      TEXT NOT NULL CHECK (outcome IN ('fixed', 'self', 'open')),
    complete     INTEGER NOT NULL DEFAULT 1 CHECK (complete IN (0, 1)),
    note         TEXT NOT NULL DEFAULT '',  -- why a record is partial
    created_at   TEXT NOT NULL
);
CREATE INDEX incident_records_alertnames ON incident_records (alertnames, id);

CREATE VIEW recall_incident_record_doc AS
SELECT r.id AS ref,
       r.created_at AS at,
       'incident=' || r.incident_id || ' outcome=' || r.outcome || ' ' ||
           coalesce((SELECT group_concat(j.value, ' ') FROM json_each(r.labels) j), '') AS labels,
       r.title || char(10) || r.alertnames || char(10) || 'Cause: ' || r.cause || char(10) ||
           'Fix: ' || r.fix || ' ' || r.action || char(10) ||
           coalesce((SELECT group_concat(json_extract(j.value, '$.tool') || ' ' ||
                                         json_extract(j.value, '$.excerpt'), char(10))
                     FROM json_each(r.evidence) j), '') AS text
FROM incident_records r;

CREATE TRIGGER recall_incident_record_insert AFTER INSERT ON incident_records BEGIN
    INSERT INTO recall_docs (source, ref, at, labels, text)
    SELECT 'record', ref, at, labels, text FROM recall_incident_record_doc
    WHERE ref = new.id;
END;

CREATE TRIGGER recall_incident_record_update AFTER UPDATE ON incident_records BEGIN
    DELETE FROM recall_docs WHERE source = 'record' AND ref = old.id;
    INSERT INTO recall_docs (source, ref, at, labels, text)
    SELECT 'record', ref, at, labels, text FROM recall_incident_record_doc
    WHERE ref = new.id;
END;

CREATE TRIGGER recall_incident_record_delete AFTER DELETE ON incident_records BEGIN
    DELETE FROM recall_docs WHERE source = 'record' AND ref = old.id;
END;
