-- 0010: curated facts. Each fact has a kind, a provenance (who or what said it) and whether that
-- source is trusted; a fact can be superseded (the old row stays, pointing at its successor) or
-- forgotten (soft delete, with who and when). Only live facts (neither superseded nor forgotten)
-- are recalled, snapshotted into prompts or counted against the caps per kind.
--
-- The table is rebuilt: the old UNIQUE (text) would refuse to remember again a text that was
-- forgotten or superseded; uniqueness now holds among live facts only. Row ids are kept, so the
-- recall documents (source 'fact', ref = id) stay valid.

CREATE TABLE facts_new (
    id             INTEGER PRIMARY KEY,
    text           TEXT NOT NULL,
    tags           TEXT NOT NULL DEFAULT '',
    source         TEXT NOT NULL DEFAULT '',   -- provenance: chat:slack:U123, cli, agent:…, incident:N
    created_at     TEXT NOT NULL,
    kind           TEXT NOT NULL DEFAULT 'note',  -- host | preference | procedure | contact | note | postmortem
    trusted        INTEGER NOT NULL DEFAULT 0 CHECK (trusted IN (0, 1)),
    superseded_by  INTEGER,                    -- the fact that replaced this one
    superseded_at  TEXT,
    forgotten_at   TEXT,
    forgotten_by   TEXT
);

INSERT INTO facts_new (id, text, tags, source, created_at, kind, trusted)
SELECT id, text, tags, source, created_at,
       CASE WHEN tags LIKE 'postmortem%' THEN 'postmortem' ELSE 'note' END,
       -- before provenance was recorded only the local console was known to be a person
       CASE WHEN source LIKE 'console:%' THEN 1 ELSE 0 END
FROM facts;

DROP TABLE facts;
ALTER TABLE facts_new RENAME TO facts;

CREATE UNIQUE INDEX facts_live_text ON facts (text)
WHERE superseded_by IS NULL AND forgotten_at IS NULL;
CREATE INDEX facts_live_kind ON facts (kind) WHERE superseded_by IS NULL AND forgotten_at IS NULL;
-- A postmortem fact (source "incident:N") goes with its incident.
CREATE INDEX facts_by_source ON facts (source);

-- facts_fts indexes every row (history included); queries keep to live rows.
CREATE TRIGGER facts_fts_insert AFTER INSERT ON facts BEGIN
    INSERT INTO facts_fts (rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;

CREATE TRIGGER facts_fts_delete AFTER DELETE ON facts BEGIN
    INSERT INTO facts_fts (facts_fts, rowid, text, tags)
    VALUES ('delete', old.id, old.text, old.tags);
END;

CREATE TRIGGER facts_fts_update AFTER UPDATE OF text, tags ON facts BEGIN
    INSERT INTO facts_fts (facts_fts, rowid, text, tags)
    VALUES ('delete', old.id, old.text, old.tags);
    INSERT INTO facts_fts (rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;

-- Recall holds live facts only, labelled with kind and trust.
CREATE TRIGGER recall_fact_insert AFTER INSERT ON facts
WHEN new.superseded_by IS NULL AND new.forgotten_at IS NULL BEGIN
    INSERT INTO recall_docs (source, ref, at, labels, text)
    VALUES ('fact', new.id, new.created_at,
            'kind=' || new.kind || ' trusted=' || new.trusted || ' tags=' || new.tags, new.text);
END;

CREATE TRIGGER recall_fact_update
AFTER UPDATE OF text, tags, kind, trusted, superseded_by, forgotten_at ON facts BEGIN
    DELETE FROM recall_docs WHERE source = 'fact' AND ref = old.id;
    INSERT INTO recall_docs (source, ref, at, labels, text)
    SELECT 'fact', new.id, new.created_at,
           'kind=' || new.kind || ' trusted=' || new.trusted || ' tags=' || new.tags, new.text
    WHERE new.superseded_by IS NULL AND new.forgotten_at IS NULL;
END;

CREATE TRIGGER recall_fact_delete AFTER DELETE ON facts BEGIN
    DELETE FROM recall_docs WHERE source = 'fact' AND ref = old.id;
END;

-- Which facts a conversation's prompts carry (a byte-stable snapshot for the prefix cache):
-- chosen at the conversation's first turn, chosen again after a compaction or when a fact in it
-- is superseded or forgotten. Only the ids are kept (a fact's text never changes: an edit is a
-- new fact), a few hundred bytes per conversation.
CREATE TABLE fact_snapshots (
    conversation_id  INTEGER PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    taken_at         TEXT NOT NULL,
    fact_ids         TEXT NOT NULL DEFAULT '[]'   -- JSON array, ascending
);
