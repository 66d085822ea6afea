-- Tokens of the admin API and the console (ingest/operations/tokens.py): a role, viewer
-- (reads) or operator (reads and acts), and optionally the projects it is limited to.
-- Only a SHA-256 of each token is kept: it is shown once, when created.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'),
    role         text NOT NULL CHECK (role IN ('viewer', 'operator')),
    -- NULL: every project; otherwise these projects only (never an empty list, which
    -- would be read as "no project" by some and "no limit" by others)
    project_ids  bigint[] CHECK (project_ids IS NULL OR cardinality(project_ids) > 0),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- A name is taken by one live token at a time; a revoked one frees it.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
