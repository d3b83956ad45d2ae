-- The audit log: every admin action, who took it (the admin token, or an
-- operator's subject), when, and what (action, tenant, slot, a component's
-- content hash, the operator's message). Never a token or a body. One log
-- for every node of a cluster.
CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    tenant  TEXT,
    slot    TEXT,
    hash    TEXT,
    message TEXT
);
CREATE INDEX audit_log_tenant ON audit_log (tenant, id);
