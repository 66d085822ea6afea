-- transactional: false
-- Deletion of a user's data (Segment's `{"type": "delete", "userId": ...}`, sent by the
-- webhook destination when a regulation request asks for it).
--
-- Not in one transaction: the indexes on existing tables are built CONCURRENTLY, so a
-- deploy does not block the workers' writes to profiles while they build. Every statement
-- can run again: a migration that stopped halfway is simply run again (a concurrent build
-- that failed leaves an invalid index behind, hence the DROP before each CREATE).

-- One row per delete call carried out: what asked for it and what it removed. The calls'
-- own payloads are gone with the rest; this record is what an operator shows an auditor.
CREATE TABLE IF NOT EXISTS deletions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    message_id   text NOT NULL,
    identifiers  text[] NOT NULL,          -- "kind:value" the delete call named
    received_at  timestamptz NOT NULL,
    deleted_at   timestamptz NOT NULL DEFAULT now(),
    profiles     integer NOT NULL,
    events       bigint NOT NULL,
    identities   integer NOT NULL,
    dead_letters integer NOT NULL,
    rejections   integer NOT NULL
);
CREATE INDEX IF NOT EXISTS deletions_project_idx ON deletions (project_id, deleted_at);

-- Erasing a profile walks its merge tree and removes the merge records naming it; without
-- these, each profile row deleted would scan profiles and profile_merges for references
-- (foreign key checks). Merges are rare, so the partial index is small.
DROP INDEX CONCURRENTLY IF EXISTS profiles_merged_into_idx;
CREATE INDEX CONCURRENTLY profiles_merged_into_idx ON profiles (merged_into)
    WHERE merged_into IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS profile_merges_from_idx;
CREATE INDEX CONCURRENTLY profile_merges_from_idx ON profile_merges (from_profile);
DROP INDEX CONCURRENTLY IF EXISTS profile_merges_into_idx;
CREATE INDEX CONCURRENTLY profile_merges_into_idx ON profile_merges (into_profile);
