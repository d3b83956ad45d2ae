-- Idempotency keys of POST /api/events and /api/events/batch: the request's
-- hash and the ids it was answered with, written in the transaction that
-- stored its events. Rows older than the configured window are removed by
-- the retention sweep (and ignored before that).
CREATE TABLE publish_keys (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    hash TEXT NOT NULL,
    ids TEXT NOT NULL,
    ts INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX publish_keys_created_at ON publish_keys (created_at);
