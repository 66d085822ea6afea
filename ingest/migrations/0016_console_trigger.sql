-- A job started from the console says so (it was recorded as `api` until now): the audit
-- log and the jobs list tell an operator's page from a script's call. Swapping a CHECK
-- constraint scans the table once; `jobs` holds one row per run, so it is small.
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_trigger_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_trigger_check
    CHECK (trigger IN ('cli', 'api', 'console', 'schedule'));
