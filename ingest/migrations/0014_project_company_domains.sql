-- Companies from work emails, per project (issue 16): a project's own exceptions to the
-- deployment's lists (ingest/companies.py). `company_free_domains` stand for no company
-- in that project (a regional ISP its visitors use); `company_work_domains` always stand
-- for a company there, even when a free-mail or disposable list names them. Both are
-- lower-case ASCII (punycode) domains, validated by the operations layer
-- (ingest/operations/projects.py); a domain is in one list at most.
--
-- Columns of `projects`, not a table: every surface that shows a project shows them with
-- no extra query, and the workers load every project's in one query (workers/project_rules.py).
-- Constant defaults: catalog changes only, no table rewrite.
ALTER TABLE projects ADD COLUMN IF NOT EXISTS company_free_domains text[] NOT NULL DEFAULT '{}';
ALTER TABLE projects ADD COLUMN IF NOT EXISTS company_work_domains text[] NOT NULL DEFAULT '{}';
