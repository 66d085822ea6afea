-- Reprocessing and scheduled jobs.

-- The identifiers each event was resolved by ("kind:value", strongest first), as the rules
-- of the time derived them. Reprocessing compares them with what today's rules derive, to
-- retire identifiers no event derives any more; the identity check finds events whose
-- identifiers lead to another profile. NULL on events stored before this column: they
-- count as deriving nothing until reprocessed.
ALTER TABLE events ADD COLUMN identifiers text[];

-- Every run of a long or scheduled job: reprocessing, dead-letter auto-replay, expiry and
-- retention, identity check. Progress and the resume cursor are written in the same
-- transaction as the work they describe.
CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL
                     CHECK (kind IN ('reprocess', 'auto_replay', 'expire', 'identity_check')),
    project_id       bigint REFERENCES projects(id) ON DELETE CASCADE,
    params           jsonb NOT NULL DEFAULT '{}'::jsonb,
    trigger          text NOT NULL CHECK (trigger IN ('cli', 'api', 'schedule')),
    -- a scheduled run's period (epoch seconds // interval): one run per kind and period
    period           bigint,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'interrupted', 'done', 'failed',
                                       'cancelled', 'skipped')),
    done             bigint NOT NULL DEFAULT 0,
    total            bigint,
    counts           jsonb NOT NULL DEFAULT '{}'::jsonb,
    errors           jsonb NOT NULL DEFAULT '[]'::jsonb,
    cursor           jsonb,
    cancel_requested boolean NOT NULL DEFAULT false,
    -- the runner holding the job: a runner taken over (it stopped beating) cannot write
    runner           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    heartbeat_at     timestamptz,
    finished_at      timestamptz
);
CREATE INDEX jobs_kind_idx ON jobs (kind, id DESC);
-- A job is never started on top of itself: one active run per kind (and project).
CREATE UNIQUE INDEX jobs_one_active_idx ON jobs (kind, coalesce(project_id, 0))
    WHERE status IN ('queued', 'running');
CREATE UNIQUE INDEX jobs_one_per_period_idx ON jobs (kind, coalesce(project_id, 0), period)
    WHERE period IS NOT NULL;

-- A refusal of the email guard is recorded once per pair of profiles (reprocessing and the
-- identity check meet the same pair again); the identity check skips refused pairs.
CREATE INDEX profile_merges_refused_idx ON profile_merges (from_profile, into_profile)
    WHERE refused;
