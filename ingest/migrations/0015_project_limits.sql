-- Per-project limits (ingest/limits.py): calls per second and calls queued, answered 429 +
-- Retry-After over them. NULL: the deployment's KOALA_PROJECT_RATE_LIMIT /
-- KOALA_PROJECT_QUEUE_LIMIT; 0: no limit for this project. Nullable columns without a
-- default: catalog changes only, no table rewrite.
ALTER TABLE projects ADD COLUMN IF NOT EXISTS rate_limit integer
    CONSTRAINT projects_rate_limit_check CHECK (rate_limit >= 0);
ALTER TABLE projects ADD COLUMN IF NOT EXISTS queue_limit integer
    CONSTRAINT projects_queue_limit_check CHECK (queue_limit >= 0);
