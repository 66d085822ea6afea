-- Dead letters become replayable: what is needed to send a call through the pipeline again
-- (its source and Koala's request-level fields), and the replay state.

ALTER TABLE dead_letters
    ADD COLUMN source      text NOT NULL DEFAULT 'segment',
    ADD COLUMN shared      jsonb,
    ADD COLUMN received_at timestamptz,
    ADD COLUMN replays     integer NOT NULL DEFAULT 0,
    ADD COLUMN replayed_at timestamptz,
    ADD COLUMN edited_at   timestamptz,
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();

ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_status_check;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_status_check
    CHECK (status IN ('pending', 'replaying', 'replayed', 'discarded'));

-- Batches (Celery task ids) already committed: a batch delivered again after a crash
-- between commit and acknowledgement is skipped whole, so counters move exactly once.
CREATE TABLE processed_batches (
    task_id      text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX processed_batches_time_idx ON processed_batches (processed_at);
