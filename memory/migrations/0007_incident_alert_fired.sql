-- How many times each alert fired within its incident: more than once is flapping.
ALTER TABLE incident_alerts ADD COLUMN fired INTEGER NOT NULL DEFAULT 1;
