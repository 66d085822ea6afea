-- Koala's acceptance rule per project (ingest/acceptance.py): `all` takes every call (what
-- every project did until now, so the default), `identified` refuses track and identify
-- calls without an email or a Koala profile_id. A constant default: a catalog change in
-- PostgreSQL 11 and later, no table rewrite.
ALTER TABLE projects ADD COLUMN IF NOT EXISTS accept text NOT NULL DEFAULT 'all'
    CONSTRAINT projects_accept_check CHECK (accept IN ('all', 'identified'));

-- Delete and suppress (Segment's "delete and suppress"): for KOALA_SUPPRESS_DAYS after a
-- deletion, later calls naming the identifiers its row records are refused as
-- `suppressed`. An operator may lift that early: when and who (ingest/operations/deletions.py,
-- audited too). Nullable columns without a default: catalog changes only.
ALTER TABLE deletions ADD COLUMN IF NOT EXISTS lifted_at timestamptz;
ALTER TABLE deletions ADD COLUMN IF NOT EXISTS lifted_by text;
