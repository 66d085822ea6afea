-- Console sign-ins. The cookie holds a random session secret; only its SHA-256 is kept,
-- with the SHA-256 of the token signed in with: each request re-checks that token, so a
-- revoked token (or a changed ADMIN_TOKEN) ends its sessions at once.
CREATE TABLE console_sessions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_hash  bytea NOT NULL UNIQUE,
    token_hash    bytea NOT NULL,
    csrf          text NOT NULL,
    actor         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);

CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
