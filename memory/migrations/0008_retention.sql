-- Placeholder so this branch's migrations run 1..n: the retention branch's 0008_retention.sql
-- replaces this file when both are merged (take theirs).
SELECT 1;
