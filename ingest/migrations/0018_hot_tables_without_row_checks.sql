-- The tables a worker's batch writes lose their per-row foreign keys; two statement
-- triggers keep what those keys promised, at the rare statements that could break it.
--
-- Why: PostgreSQL checks a foreign key with one trigger call per inserted row, each a
-- `SELECT 1 FROM <parent> WHERE id = $1 FOR KEY SHARE`. A 1,000-call batch ran ~3,000
-- such lookups and row locks on its one project row (events, dedup keys, identities,
-- activity, ...) and ~1,500 on the profiles it had just written. `bench.batch_profile`
-- (30,000 calls, 1,000-call batches, alternating runs, 2026-11-30): dropping the keys to
-- `projects` took PostgreSQL's CPU for `message_ids.claim` from 13-16 to 10-12 us a call,
-- `activity.add` 11-13 -> 9-12, `identities.insert` 6 -> 5; dropping the keys to
-- `profiles` as well took `events.copy_rows` from 30-32 to 25 us a call and
-- `identities.insert` to 4 (bench/README.md).
--
-- What keeps the guarantee instead:
-- * a project is never deleted, it is revoked (`projects.revoked_at`): the first trigger
--   refuses a DELETE or TRUNCATE of `projects`, so a project id once valid stays valid,
--   and the ids workers write come from the receiver's lookup of an existing project;
-- * a profile is deleted only by an erasure (ingest/store/deletions.py), which deletes
--   its events, identities, Engage calls, company links and activity in the same
--   statement: the second trigger checks, once per deleting statement, that no row names
--   a deleted profile any more, and fails the statement (foreign_key_violation) if one
--   does, as the foreign keys did;
-- * the workers write profile ids they allocated and inserted in the same transaction
--   (workers/apply.py); ingest/store/integrity.py counts rows naming a missing profile
--   or project, which the recovery tests assert is none after SIGKILLs.
-- Tables nothing writes per call (dead letters, rejections, jobs, merges' records, ...)
-- keep their foreign keys.
ALTER TABLE events              DROP CONSTRAINT events_project_id_fkey,
                                DROP CONSTRAINT events_profile_id_fkey;
ALTER TABLE identities          DROP CONSTRAINT identities_project_id_fkey,
                                DROP CONSTRAINT identities_profile_id_fkey;
ALTER TABLE engage_computations DROP CONSTRAINT engage_computations_project_id_fkey,
                                DROP CONSTRAINT engage_computations_profile_id_fkey;
ALTER TABLE profile_accounts    DROP CONSTRAINT profile_accounts_project_id_fkey,
                                DROP CONSTRAINT profile_accounts_profile_id_fkey;
ALTER TABLE message_ids         DROP CONSTRAINT message_ids_project_id_fkey;
ALTER TABLE profiles            DROP CONSTRAINT profiles_project_id_fkey;
ALTER TABLE profile_activity    DROP CONSTRAINT profile_activity_project_id_fkey;
ALTER TABLE accounts            DROP CONSTRAINT accounts_project_id_fkey;
ALTER TABLE account_domains     DROP CONSTRAINT account_domains_project_id_fkey;
ALTER TABLE account_merges      DROP CONSTRAINT account_merges_project_id_fkey;
ALTER TABLE profile_merges      DROP CONSTRAINT profile_merges_project_id_fkey;

CREATE FUNCTION projects_are_never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a project is revoked, never deleted: its stored history names it'
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER projects_are_never_deleted BEFORE DELETE OR TRUNCATE ON projects
    FOR EACH STATEMENT EXECUTE FUNCTION projects_are_never_deleted();

CREATE FUNCTION deleted_profiles_leave_no_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    found text;
BEGIN
    SELECT t INTO found FROM (
        SELECT 'events' AS t WHERE EXISTS
            (SELECT 1 FROM gone JOIN events e ON e.profile_id = gone.id)
        UNION ALL SELECT 'identities' WHERE EXISTS
            (SELECT 1 FROM gone JOIN identities i ON i.profile_id = gone.id)
        UNION ALL SELECT 'engage_computations' WHERE EXISTS
            (SELECT 1 FROM gone JOIN engage_computations c ON c.profile_id = gone.id)
        UNION ALL SELECT 'profile_accounts' WHERE EXISTS
            (SELECT 1 FROM gone JOIN profile_accounts l ON l.profile_id = gone.id)
        UNION ALL SELECT 'profile_activity' WHERE EXISTS
            (SELECT 1 FROM gone JOIN profile_activity a ON a.profile_id = gone.id)
    ) named LIMIT 1;
    IF found IS NOT NULL THEN
        RAISE EXCEPTION 'a deleted profile is still named by rows of %', found
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER deleted_profiles_leave_no_rows AFTER DELETE ON profiles
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION deleted_profiles_leave_no_rows();
