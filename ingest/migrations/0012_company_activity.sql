-- Company activity (issue 16, item 2): what each visitor did, per UTC day.
--
-- Kept per PROFILE, not per company: a company's activity is its visitors' rows, joined
-- through `profile_accounts` when asked (ingest/store/activity.py). So a visitor who joins
-- a company later brings their history, an account merge moves no activity row, erasing
-- a person deletes their rows, and a profile merge moves rows like it moves events
-- (summing on conflict).
--
-- `metric` is `events` (every stored call), `path` (page calls of the path in `key`, ''
-- for a page call without one: summed, the page views) or `signal` (calls matching the
-- signal rule named `key`); `key` is '' for `events`. Incremented in each batch's one
-- transaction, which the batch's deduplication keys guard: redelivery and replay count
-- once.
--
-- No foreign key to profiles (a check per inserted row on the hot path): the rows of an
-- erased person are deleted with them (ingest/store/deletions.py), merged-away profiles'
-- rows move to the survivor.
CREATE TABLE IF NOT EXISTS profile_activity (
    project_id bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    profile_id bigint NOT NULL,
    day        date NOT NULL,
    metric     text NOT NULL CHECK (metric IN ('events', 'path', 'signal')),
    key        text NOT NULL DEFAULT '',
    n          bigint NOT NULL,
    PRIMARY KEY (profile_id, day, metric, key)
) WITH (fillfactor = 80);
-- (room in each page: a visitor's next calls of the day update their rows in place, a HOT
-- update that writes no index entry, as `n` is in no index)
-- No second index on the hot path: a company's rows are read from its visitors
-- (profile_accounts, now indexed by project for the ranking) and their days (the primary
-- key); retention finds old days with a BRIN index (a few pages, next to free to keep up).
CREATE INDEX IF NOT EXISTS profile_activity_day_brin ON profile_activity USING brin (day);
CREATE INDEX IF NOT EXISTS profile_accounts_project_idx ON profile_accounts (project_id);
