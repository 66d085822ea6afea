-- Companies from work email domains (issue 16): one company per domain per project.
--
-- `account_domains` says which account is the company of a (registrable) domain: the
-- account a group call or `$account` with that domain or website created, or, for a
-- domain first seen in a visitor's work email, an account with no groupId (hence
-- `group_id` may now be NULL; the unique (project_id, group_id) still holds for the rest).
-- When an account known by groupId turns out to have a domain that another account
-- already stands for, the two are merged: the one merged away keeps its row, with
-- `merged_into` naming the survivor (so its groupId still finds the company), its
-- visitors and domains move to the survivor, and `account_merges` records it, like
-- `profile_merges` for profiles.
--
-- Accounts stored before this migration get their domain's company when their group
-- calls are reprocessed (`koala-ingest reprocess`): the registrable domain needs the
-- Public Suffix List, which SQL does not have.
ALTER TABLE accounts ALTER COLUMN group_id DROP NOT NULL;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS merged_into bigint
    REFERENCES accounts(id) ON DELETE SET NULL;

CREATE TABLE IF NOT EXISTS account_domains (
    project_id bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    domain     text NOT NULL,
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, domain)
);
CREATE INDEX IF NOT EXISTS account_domains_account_idx ON account_domains (account_id);

CREATE TABLE IF NOT EXISTS account_merges (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    from_account bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    into_account bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    domain       text NOT NULL,
    reason       text NOT NULL,
    message_id   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS account_merges_project_idx ON account_merges (project_id, created_at);
