-- recall tuning. Cheaper inserts and a runbook source.
--   recall_words: columnsize=0 (search ranks with its own idf, never bm25, so the per-row
--                 column sizes were written for nothing). The labels column also holds each
--                 label squashed into one token ("host=web-3" → "hostweb3"): a label filter is
--                 one term, not a phrase of three common ones (memory.recall checks it exactly).
--   recall_grams: columnsize=0 too. (detail=none would shrink it by a quarter, but then a
--                 substring needs LIKE, which re-reads every candidate's text: p95 2-5x slower.)
--   timelines:    "alert firing" / "alert resolved" entries repeat an alert's name and summary,
--                 which the incident's own document already holds for its first 50 alerts; they
--                 are indexed only once an incident has more alerts than that (a storm).
--   runbooks:     one row per runbook file, kept in step with the directory by the daemon.
DROP TRIGGER recall_docs_insert;
DROP TRIGGER recall_docs_delete;
DROP TABLE recall_words;
DROP TABLE recall_grams;

CREATE VIRTUAL TABLE recall_words USING fts5 (
    text, labels, source,
    content = 'recall_docs', content_rowid = 'id', columnsize = 0,
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE VIRTUAL TABLE recall_grams USING fts5 (
    text,
    content = 'recall_docs', content_rowid = 'id', columnsize = 0,
    tokenize = 'trigram'
);

-- The squashed labels, spelled out (a trigger may not call an application function).
CREATE TRIGGER recall_docs_insert AFTER INSERT ON recall_docs BEGIN
    INSERT INTO recall_words (rowid, text, labels, source)
    VALUES (new.id, new.text, new.labels || ' ' ||
            replace(replace(replace(replace(replace(replace(replace(new.labels, '=', ''), '-', ''), '.', ''), '_', ''), ':', ''), '/', ''), '@', ''),
            new.source);
    INSERT INTO recall_grams (rowid, text) VALUES (new.id, new.text);
END;

CREATE TRIGGER recall_docs_delete AFTER DELETE ON recall_docs BEGIN
    INSERT INTO recall_words (recall_words, rowid, text, labels, source)
    VALUES ('delete', old.id, old.text, old.labels || ' ' ||
            replace(replace(replace(replace(replace(replace(replace(old.labels, '=', ''), '-', ''), '.', ''), '_', ''), ':', ''), '/', ''), '@', ''),
            old.source);
    INSERT INTO recall_grams (recall_grams, rowid, text) VALUES ('delete', old.id, old.text);
END;

INSERT INTO recall_words (rowid, text, labels, source)
SELECT id, text, labels || ' ' || replace(replace(replace(replace(replace(replace(replace(labels, '=', ''), '-', ''), '.', ''), '_', ''), ':', ''), '/', ''), '@', ''), source
FROM recall_docs ORDER BY id;
INSERT INTO recall_grams (recall_grams) VALUES ('rebuild');

DROP TRIGGER recall_timeline_insert;
CREATE TRIGGER recall_timeline_insert AFTER INSERT ON incident_events
WHEN new.kind NOT IN ('alert firing', 'alert resolved')
     OR EXISTS (SELECT 1 FROM incident_alerts WHERE incident_id = new.incident_id
                LIMIT 1 OFFSET 50) BEGIN
    INSERT INTO recall_docs (source, ref, at, labels, text)
    SELECT 'timeline', new.id, new.at,
           'incident=' || new.incident_id || ' actor=' || new.actor || ' ' ||
               coalesce((SELECT group_concat(j.key || '=' || j.value, ' ')
                         FROM json_each(i.labels) j), ''),
           new.kind || ': ' || new.detail
    FROM incidents i WHERE i.id = new.incident_id;
END;

-- Runbooks: the files of incidents.runbooks_dir, one row each; digest says when to re-read.
CREATE TABLE recall_runbooks (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,      -- file name inside the runbook directory
    digest      TEXT NOT NULL,             -- size and mtime: unchanged files are not re-read
    updated_at  TEXT NOT NULL,
    text        TEXT NOT NULL
);

CREATE TRIGGER recall_runbook_insert AFTER INSERT ON recall_runbooks BEGIN
    INSERT INTO recall_docs (source, ref, at, labels, text)
    VALUES ('runbook', new.id, new.updated_at, 'runbook=' || new.name,
            new.name || char(10) || substr(new.text, 1, 64000));
END;

CREATE TRIGGER recall_runbook_update AFTER UPDATE OF text, name ON recall_runbooks BEGIN
    DELETE FROM recall_docs WHERE source = 'runbook' AND ref = old.id;
    INSERT INTO recall_docs (source, ref, at, labels, text)
    VALUES ('runbook', new.id, new.updated_at, 'runbook=' || new.name,
            new.name || char(10) || substr(new.text, 1, 64000));
END;

CREATE TRIGGER recall_runbook_delete AFTER DELETE ON recall_runbooks BEGIN
    DELETE FROM recall_docs WHERE source = 'runbook' AND ref = old.id;
END;
