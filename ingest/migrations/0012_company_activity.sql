-- Company activity (issue 16, item 2): what each visitor did, per UTC day.
--
-- Kept per PROFILE, not per company: a company's activity is its visitors' rows, joined
-- through `profile_accounts` when asked (ingest/store/activity.py). So a visitor who joins
-- a company later brings their history, an account merge moves no activity row, erasing
-- a person deletes their rows, and a profile merge moves rows like it moves events
-- (summing on conflict).
--
-- `metric` is `events` (every stored call), `page_views` (page calls), `path` (page calls
-- of the path in `key`) or `signal` (calls matching the signal rule named `key`);
-- `key` is '' for the first two. Incremented in each batch's one transaction, which the
-- batch's deduplication keys guard: redelivery and replay count once.
--
-- No foreign key to profiles (a check per inserted row on the hot path): the rows of an
-- erased person are deleted with them (ingest/store/deletions.py), merged-away profiles'
-- rows move to the survivor.
CREATE TABLE IF NOT EXISTS profile_activity (
    project_id bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    profile_id bigint NOT NULL,
    day        date NOT NULL,
    metric     text NOT NULL CHECK (metric IN ('events', 'page_views', 'path', 'signal')),
    key        text NOT NULL DEFAULT '',
    n          bigint NOT NULL,
    PRIMARY KEY (profile_id, day, metric, key)
) WITH (fillfactor = 80);
-- (room in each page: a visitor's next calls of the day update their rows in place, a HOT
-- update that writes no index entry, as `n` is in no index)
-- a project's activity in a window (ranking companies), newest days first
CREATE INDEX IF NOT EXISTS profile_activity_project_day_idx
    ON profile_activity (project_id, day, profile_id);
