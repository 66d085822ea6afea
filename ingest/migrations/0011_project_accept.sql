-- Koala's acceptance rule per project (ingest/acceptance.py): `all` takes every call (what
-- every project did until now, so the default), `identified` refuses track and identify
-- calls without an email or a Koala profile_id. A constant default: a catalog change in
-- PostgreSQL 11 and later, no table rewrite.
ALTER TABLE projects ADD COLUMN IF NOT EXISTS accept text NOT NULL DEFAULT 'all'
    CONSTRAINT projects_accept_check CHECK (accept IN ('all', 'identified'));
