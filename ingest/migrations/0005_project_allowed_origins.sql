-- The origins a project's browsers send from (ingest/cors.py): NULL takes any origin, as
-- Segment's API does; a list refuses calls whose `Origin` header is not on it.
-- A new nullable column without a default: a catalog change, no table rewrite.
ALTER TABLE projects ADD COLUMN IF NOT EXISTS allowed_origins text[];
