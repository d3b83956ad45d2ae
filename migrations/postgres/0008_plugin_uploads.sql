-- Every component a slot was given, newest last: who gave it (the admin
-- token, an operator's subject; none for the watched dir or a bundled
-- one), when, the operator's optional message, where it came from
-- (upload, watched, bundled), as active or shadow, and whether it was
-- installed or refused (with the error). The latest 200 per slot are kept.
CREATE TABLE plugin_uploads (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    tenant  TEXT NOT NULL,
    slot    TEXT NOT NULL,
    hash    TEXT NOT NULL,
    origin  TEXT NOT NULL,
    actor   TEXT,
    message TEXT,
    mode    TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error   TEXT
);
CREATE INDEX plugin_uploads_slot ON plugin_uploads (tenant, slot, id);
