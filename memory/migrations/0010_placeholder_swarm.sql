-- Placeholder so this branch runs alone: migrations must be numbered 1..n. The real 0010
-- belongs to another branch; drop this file when merging.
SELECT 1;
