-- Stream requests (streams opened, topic history read) as the stream
-- authorizer saw them, with what was decided and by which version: the
-- latest few per tenant, for `switchyard plugin replay`. No tokens: the
-- request holds the verified claims.
CREATE TABLE stream_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    request TEXT NOT NULL,
    decision TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX stream_requests_tenant ON stream_requests (tenant, id);
