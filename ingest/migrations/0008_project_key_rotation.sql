-- Key rotation with a grace period: a project has its current key (`public_key`) and at
-- most one previous key, still taken until `previous_key_expires_at`.
--
-- Two columns rather than a `project_keys` table: a rotation is one in flight at a time
-- (rotating again before the grace ends retires the older key at once, as an operator
-- rotating twice in a row means to), so a table would hold at most two live keys per
-- project anyway and every reader of `projects` (receiver, workers, admin) would need a
-- join; with columns `public_key` keeps meaning "the key to give out", unchanged for them.
-- The receiver's key cache loads the previous key with the current one (one query per
-- reload, none per call) and stops taking it at its expiry.
-- New nullable columns without defaults: catalog changes, no table rewrite.
ALTER TABLE projects ADD COLUMN IF NOT EXISTS previous_public_key text;
ALTER TABLE projects ADD COLUMN IF NOT EXISTS previous_key_expires_at timestamptz;
ALTER TABLE projects DROP CONSTRAINT IF EXISTS projects_previous_key_pair;
ALTER TABLE projects ADD CONSTRAINT projects_previous_key_pair
    CHECK ((previous_public_key IS NULL) = (previous_key_expires_at IS NULL));
-- A previous key names one project, as a current key does (keys are 128 random bits, so
-- this guards a bug, not chance). Partial: only projects mid-rotation have an entry.
CREATE UNIQUE INDEX IF NOT EXISTS projects_previous_public_key
    ON projects (previous_public_key) WHERE previous_public_key IS NOT NULL;
