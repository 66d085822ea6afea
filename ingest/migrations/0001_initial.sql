-- The store koala-ingest starts with. Later changes are new files, never edits of this one.

CREATE TABLE projects (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'),
    public_key     text NOT NULL UNIQUE,
    webhook_secret text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);

-- A visitor. A merged-away profile keeps its row with merged_into set, so old ids resolve.
CREATE TABLE profiles (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id       bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    traits           jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- per trait, the timestamp of the call that set it: a late older call never overwrites
    trait_timestamps jsonb NOT NULL DEFAULT '{}'::jsonb,
    event_count      bigint NOT NULL DEFAULT 0,
    first_seen       timestamptz,
    last_seen        timestamptz,
    merged_into      bigint REFERENCES profiles(id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_project_idx ON profiles (project_id, id);

-- What identifies a visitor: one row per (project, kind, value), so a value names one profile.
CREATE TABLE identities (
    project_id bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('email', 'profile_id', 'user_id', 'anonymous_id')),
    value      text NOT NULL,
    profile_id bigint NOT NULL REFERENCES profiles(id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, kind, value)
);
CREATE INDEX identities_profile_idx ON identities (profile_id);

-- Companies, from group calls and Koala's traits.$account.
CREATE TABLE accounts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    group_id   text NOT NULL,
    domain     text,
    name       text,
    traits     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, group_id)
);
CREATE INDEX accounts_domain_idx ON accounts (project_id, domain) WHERE domain IS NOT NULL;

CREATE TABLE profile_accounts (
    profile_id bigint NOT NULL REFERENCES profiles(id),
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    project_id bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id, account_id)
);
CREATE INDEX profile_accounts_account_idx ON profile_accounts (account_id);

-- Deduplication keys: the authority on "seen this messageId". Kept for the dedup window,
-- apart from events so that expiring keys never touches stored history.
CREATE TABLE message_ids (
    project_id   bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    message_id   text NOT NULL,
    content_hash bytea NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, message_id)
);
CREATE INDEX message_ids_first_seen_idx ON message_ids (first_seen);

-- Every stored call, with its original payload so history can be reprocessed.
CREATE TABLE events (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id         bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    message_id         text NOT NULL,
    profile_id         bigint REFERENCES profiles(id),
    type               text NOT NULL
                       CHECK (type IN ('track', 'identify', 'page', 'screen', 'group', 'alias')),
    event              text,
    name               text,
    properties         jsonb NOT NULL DEFAULT '{}'::jsonb,
    context            jsonb NOT NULL DEFAULT '{}'::jsonb,
    "timestamp"        timestamptz NOT NULL,
    original_timestamp timestamptz,
    sent_at            timestamptz,
    received_at        timestamptz NOT NULL,
    source             text NOT NULL,
    payload            jsonb NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_project_message_idx ON events (project_id, message_id);
CREATE INDEX events_profile_time_idx ON events (profile_id, "timestamp" DESC, id DESC);
CREATE INDEX events_project_time_idx ON events (project_id, "timestamp");

-- Calls that could not be stored, with the payload as received, for inspection and replay.
CREATE TABLE dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id      bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    message_id      text,
    payload         jsonb NOT NULL,
    stage           text NOT NULL,
    reason          text NOT NULL,
    error           text NOT NULL,
    traceback       text,
    attempts        integer NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'replayed', 'discarded'))
);
CREATE INDEX dead_letters_project_idx ON dead_letters (project_id, status, reason, last_failed_at);

-- Calls the receiver refused for their content, kept so an operator sees what was refused.
CREATE TABLE rejections (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id  bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    received_at timestamptz NOT NULL,
    source      text NOT NULL,
    item_index  integer,
    code        text NOT NULL,
    message     text NOT NULL,
    -- the call as received (truncated if it was over the request limit)
    payload     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejections_project_idx ON rejections (project_id, received_at);

-- Every merge of two profiles, and every merge the guard refused.
CREATE TABLE profile_merges (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    from_profile bigint NOT NULL REFERENCES profiles(id),
    into_profile bigint NOT NULL REFERENCES profiles(id),
    reason       text NOT NULL,
    message_id   text,
    refused      boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profile_merges_project_idx ON profile_merges (project_id, created_at);

-- What the workers have finished, per project, updated in each batch's own transaction so
-- the counts move exactly with the rows. `received` is counted by the receiver in Redis.
CREATE TABLE project_counters (
    project_id             bigint PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    stored                 bigint NOT NULL DEFAULT 0,
    duplicates             bigint NOT NULL DEFAULT 0,
    conflicting_duplicates bigint NOT NULL DEFAULT 0,
    rejected               bigint NOT NULL DEFAULT 0,
    dead_lettered          bigint NOT NULL DEFAULT 0,
    updated_at             timestamptz NOT NULL DEFAULT now()
);
