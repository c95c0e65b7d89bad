-- Resuming swarm runs after a restart: a side-effecting step's intent says whether it was still
-- waiting for its authorisation (a person's approval) or had been let through to act. An intent
-- left 'authorising' never acted and is asked again; one left 'acting' (or NULL, from before this
-- column) has an unknown outcome: verified by the tool's read-only probe or put to a person.
ALTER TABLE swarm_steps ADD COLUMN phase TEXT
    CHECK (phase IS NULL OR phase IN ('authorising', 'acting'));

-- Who the coordinator's run answered and whether a person could be asked: a resumed run asks
-- its approvals where the original would have, and tells its owner how it ended.
ALTER TABLE swarm_runs ADD COLUMN unattended INTEGER NOT NULL DEFAULT 1;
ALTER TABLE swarm_runs ADD COLUMN origin TEXT;
