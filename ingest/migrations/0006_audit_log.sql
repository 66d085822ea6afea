-- Every operator action that changes something: who, when, what selection, how many.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    project_id  bigint REFERENCES projects (id),
    selection   jsonb NOT NULL DEFAULT '{}',
    count       bigint
);

CREATE INDEX audit_log_project ON audit_log (project_id, id);
