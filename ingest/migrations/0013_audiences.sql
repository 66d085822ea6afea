-- Engage (Personas) audiences and computed traits (issue 16, item 4; ingest/audiences.py).
--
-- One row per Engage call stored: which profile it was about, the computation (an
-- `audience` membership, `entered` true or false, or a computed `trait` and its value),
-- where Engage computed it (computation_id, space_id, namespace) and when (`at`, the
-- call's timestamp). Every call is kept, so the history is there, not just the latest
-- value; an audience's transitions are the rows whose `entered` differs from the row
-- before it in time (ingest/store/audiences.py), so a re-sync repeating a state adds
-- none and a late call lands where its timestamp puts it.
--
-- Keyed by the call's messageId: the batch writes its rows in its one transaction under
-- the dedup keys, and reprocessing rewrites them in place. Profile merges move the rows
-- like events; deleting a person deletes them (ingest/store/deletions.py).
CREATE TABLE IF NOT EXISTS engage_computations (
    project_id     bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    message_id     text NOT NULL,
    profile_id     bigint NOT NULL REFERENCES profiles(id),
    kind           text NOT NULL CHECK (kind IN ('audience', 'trait')),
    key            text NOT NULL,
    entered        boolean CHECK ((kind = 'audience') = (entered IS NOT NULL)),
    value          jsonb,
    computation_id text,
    space_id       text,
    namespace      text,
    at             timestamptz NOT NULL,
    PRIMARY KEY (project_id, message_id)
);
-- a profile's history; an audience's members (latest row per profile)
CREATE INDEX IF NOT EXISTS engage_computations_profile_idx
    ON engage_computations (profile_id, kind, key, at);
CREATE INDEX IF NOT EXISTS engage_computations_key_idx
    ON engage_computations (project_id, kind, key, profile_id, at);
